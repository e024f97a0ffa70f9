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
#  4. LM text (only with --lm_text true): openslr 11's librispeech-lm-norm.txt.gz, taken from
#     data/local/other_text/ (where ESPnet's recipe keeps it), <librispeech_dir>/ or
#     <librispeech_dir>/LibriSpeech/, or downloaded (resumable, size and gzip checked), into
#     data/local/other_text/text with ids librispeech_lng_<8 digits>; the recipe's
#     --lm_train_text adds it to the training transcripts
set -e
set -u
set -o pipefail

. scripts/utils/log.sh
SECONDS=0

. ./db.sh
. ./path.sh

stage=1
stop_stage=4
librispeech_dir="${LIBRISPEECH}"
download=true
url_base=https://www.openslr.org/resources/12
parts="dev-clean test-clean dev-other test-other train-clean-100 train-clean-360 train-other-500"
train_parts="train-clean-100 train-clean-360 train-other-500"
train_set=train_960
valid_parts="dev-clean dev-other"
valid_set=dev
lm_text=true
lm_url_base=https://www.openslr.org/resources/11
nj=${nj:-4} # asr.sh runs stage 1 with its --nj in $nj
python=python3

help_message=$(cat << EOF
Usage: $0 [options]
  --stage / --stop_stage  # 1 download, 2 data prep, 3 combine, 4 LM text (default: ${stage} / ${stop_stage})
  --librispeech_dir       # directory holding LibriSpeech/<part>/ (default: \${LIBRISPEECH} from db.sh = ${librispeech_dir})
  --download              # download parts that are missing (default: ${download})
  --url_base              # openslr mirror (default: ${url_base})
  --parts                 # parts to prepare, separated by spaces or commas (default: ${parts})
  --train_parts           # parts combined into data/<train_set> (default: ${train_parts})
  --train_set             # (default: ${train_set})
  --valid_parts           # parts combined into data/<valid_set> (default: ${valid_parts})
  --valid_set             # (default: ${valid_set})
  --lm_text               # stage 4: prepare LM text data/local/other_text/text (default: ${lm_text};
                          # false when no LM is trained, e.g. with asr.sh --use_lm false)
  --lm_url_base           # openslr mirror of the LM text (default: ${lm_url_base})
  --nj                    # threads for checking the flac files (default: asr.sh's --nj when run
                          # from it, else 4; now ${nj})
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

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && "${lm_text}"; then
    log "Stage 4: LM text -> data/local/other_text/text"
    _lm_gz=
    for _f in data/local/other_text/librispeech-lm-norm.txt.gz "${librispeech_dir}/librispeech-lm-norm.txt.gz" \
            "${librispeech_dir}/LibriSpeech/librispeech-lm-norm.txt.gz"; do
        if [ -f "${_f}" ]; then _lm_gz=${_f}; break; fi
    done
    if [ -z "${_lm_gz}" ]; then
        if "${download}"; then
            ${helper} download "${librispeech_dir}" --lm_text --lm_url_base "${lm_url_base}"
            _lm_gz="${librispeech_dir}/librispeech-lm-norm.txt.gz"
        else
            log "Error: ${librispeech_dir}/librispeech-lm-norm.txt.gz not found and --download false (or use --lm_text false)"
            exit 1
        fi
    fi
    _out=data/local/other_text/text
    # Rebuilt only when the archive is newer: the real one has about 40 M lines.
    if [ ! -s "${_out}" ] || [ "${_lm_gz}" -nt "${_out}" ]; then
        mkdir -p "$(dirname "${_out}")"
        # One utterance id per sentence, as ESPnet's recipe does, so the text is a Kaldi text file.
        gzip -dc "${_lm_gz}" | awk '{ printf("librispeech_lng_%08d %s\n", NR, $0) }' > "${_out}.tmp"
        mv "${_out}.tmp" "${_out}"
    fi
    log "LM text: ${_out} ($(<"${_out}" wc -l) sentences from ${_lm_gz})"
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
