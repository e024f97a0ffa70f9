#!/usr/bin/env bash
# Encoder families side by side on the demo corpus (benchmarks/compare_encoders.py --help):
# every family's demo config at the Conformer's parameter count, trained and decoded (greedy CTC,
# no LM) by the recipe's demo.sh, with several seeds; prints a Markdown table.
#   nice -n 10 benchmarks/compare_encoders.sh [--quick] [--families a,b] [--seeds 0,1] [--epochs N] [--nj N]
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
python=${repo}/.venv/bin/python
[ -x "${python}" ] || python=python3
exec "${python}" "${repo}/benchmarks/compare_encoders.py" "$@"
