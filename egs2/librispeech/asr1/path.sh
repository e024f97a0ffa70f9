# Environment for the recipe (sourced by asr.sh and local/*.sh).
# MAIN_ROOT is the espnet-ssm checkout: found from this file's real location, so that a copy of
# the recipe directory made of symbolic links works too.
MAIN_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd)
export MAIN_ROOT
# Use the project's virtual environment (made by `make setup`) unless one is active already.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "${MAIN_ROOT}/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${MAIN_ROOT}/.venv/bin/activate"
fi
# espnet_ssm is importable even when it is not pip-installed.
export PYTHONPATH="${MAIN_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONIOENCODING=UTF-8
export LC_ALL=C
