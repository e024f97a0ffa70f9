#!/usr/bin/env bash
# Build the three long-form test sets from one data directory:
#   <src>_long45     45-60 s recordings, one speaker each (the Speech-Mamba paper's setting)
#   <src>_long10min  10-11 minute recordings (across speakers)
#   <src>_long60min  60-62 minute recordings (across speakers)
# Usage: local/make_longform_sets.sh data/test_clean [python]
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "Usage: $0 <src-data-dir> [python]" >&2
    exit 1
fi
src=${1%/}
python=${2:-python3}
here=$(dirname "$0")
"${python}" "${here}/make_longform_sets.py" --src "${src}" --dst "${src}_long45" \
    --min_seconds 45 --max_seconds 60
"${python}" "${here}/make_longform_sets.py" --src "${src}" --dst "${src}_long10min" \
    --min_seconds 600 --max_seconds 660 --across_speakers
"${python}" "${here}/make_longform_sets.py" --src "${src}" --dst "${src}_long60min" \
    --min_seconds 3600 --max_seconds 3720 --across_speakers
