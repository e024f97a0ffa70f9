#!/usr/bin/env bash
# WER of a trained model on a test set's original utterances vs the same speech concatenated
# into 45-60 s recordings (built with local/make_longform_sets.py unless present), every
# recording recognised in one pass (a reader's utterances are joined across chapters: test
# sets have few per chapter). Prints a markdown table and writes it to
# <exp_dir>/longform_wer_<test set>.md.
# Usage (from the recipe directory: config.yaml paths are relative to it):
#   local/score_longform.sh <exp_dir> <src-data-dir> [model_file] [python]
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 4 ]; then
    echo "Usage: $0 <exp_dir> <src-data-dir> [model_file (valid.loss.ave.pth)] [python]" >&2
    exit 1
fi
exp=${1%/}
src=${2%/}
model=${3:-valid.loss.ave.pth}
python=${4:-python3}
here=$(dirname "$0")
if [ ! -f "${src}_long45/wav.scp" ]; then
    "${python}" "${here}/make_longform_sets.py" --src "${src}" --dst "${src}_long45" \
        --min_seconds 45 --max_seconds 60 --speaker_prefix_sep -
fi
"${python}" -m espnet_ssm.streaming.longform_wer --exp_dir "${exp}" --model_file "${model}" \
    --same_utterances "${src}" "${src}_long45" | tee "${exp}/longform_wer_$(basename "${src}").md"
