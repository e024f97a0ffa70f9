#!/usr/bin/env bash
# Stage 1 of the LibriSpeech recipe: get the corpus and prepare Kaldi-style data directories.
#
#  1. download the parts from openslr (resumable, size and SHA-256 checked), unless they are
#     already under <librispeech_dir>/LibriSpeech/<part>/ (an existing copy is used as it is)
#  2. prepare data/<part with - replaced by _>/ for every part (wav.scp, text, utt2spk, spk2utt,
#     spk2gender); a missing or corrupt flac, a transcript line without audio or audio without
#     a transcript stops here with the list of offending files
#  3. combine the training parts into data/<train_set> and the validation parts into
#     data/<valid_set>
set -e
set -u
set -o pipefail

. scripts/utils/log.sh
SECONDS=0

. ./db.sh
. ./path.sh

stage=1
stop_stage=3
librispeech_dir="${LIBRISPEECH}"
download=true
url_base=https://www.openslr.org/resources/12
parts="dev-clean test-clean dev-other test-other train-clean-100 train-clean-360 train-other-500"
train_parts="train-clean-100 train-clean-360 train-other-500"
train_set=train_960
valid_parts="dev-clean dev-other"
valid_set=dev
nj=4
python=python3

help_message=$(cat << EOF
Usage: $0 [options]
  --stage / --stop_stage  # 1 download, 2 data prep, 3 combine (default: ${stage} / ${stop_stage})
  --librispeech_dir       # directory holding LibriSpeech/<part>/ (default: \${LIBRISPEECH} from db.sh = ${librispeech_dir})
  --download              # download parts that are missing (default: ${download})
  --url_base              # openslr mirror (default: ${url_base})
  --parts                 # parts to prepare, separated by spaces or commas (default: ${parts})
  --train_parts           # parts combined into data/<train_set> (default: ${train_parts})
  --train_set             # (default: ${train_set})
  --valid_parts           # parts combined into data/<valid_set> (default: ${valid_parts})
  --valid_set             # (default: ${valid_set})
  --nj                    # threads for checking the flac files (default: ${nj})
EOF
)
. scripts/utils/parse_options.sh

if [ $# -ne 0 ]; then
    echo "${help_message}" 1>&2
    exit 2
fi
helper="${python} pyscripts/helper.py"
# Lists may use commas, so that they survive asr.sh's --local_data_opts word splitting.
parts=${parts//,/ }
train_parts=${train_parts//,/ }
valid_parts=${valid_parts//,/ }

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: get LibriSpeech parts (${parts}) into ${librispeech_dir}/LibriSpeech"
    for part in ${parts}; do
        if [ -d "${librispeech_dir}/LibriSpeech/${part}" ]; then
            log "${librispeech_dir}/LibriSpeech/${part} exists"
        elif "${download}"; then
            ${helper} download "${librispeech_dir}" "${part}" --url_base "${url_base}"
        else
            log "Error: ${librispeech_dir}/LibriSpeech/${part} not found and --download false"
            exit 1
        fi
    done
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "Stage 2: data preparation"
    for part in ${parts}; do
        ${helper} librispeech --nj "${nj}" "${librispeech_dir}/LibriSpeech/${part}" "data/${part//-/_}"
    done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    log "Stage 3: combine ${train_parts} -> data/${train_set}, ${valid_parts} -> data/${valid_set}"
    for pair in "${train_set}:${train_parts}" "${valid_set}:${valid_parts}"; do
        _set=${pair%%:*}
        _dirs=""
        for part in ${pair#*:}; do
            _dirs+="data/${part//-/_} "
        done
        if [ "${_dirs}" != "data/${_set} " ]; then
            ${helper} datadir combine "data/${_set}" ${_dirs}
        fi
    done
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
