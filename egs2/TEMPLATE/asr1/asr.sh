#!/usr/bin/env bash
# ASR recipe driver with ESPnet's stage numbers, options, directory layout and output formats.
# Run it from a recipe directory (egs2/<corpus>/asr1) through that recipe's run.sh.
set -e
set -u
set -o pipefail

. scripts/utils/log.sh
SECONDS=0
run_args=$(printf '%q ' "$0" "$@")

# General configuration
stage=1              # Processes starts from the specified stage.
stop_stage=10000     # Processes is stopped at the specified stage.
skip_stages=         # Stages to skip, e.g. "2 4".
skip_data_prep=false # Skip data preparation stages (1-5).
skip_train=false     # Skip training stages (2-5, 10-11).
skip_eval=false      # Skip decoding and evaluation stages (12-13).
skip_packing=false   # Skip the packing stage (14).
skip_upload_hf=false # Skip the model-card / Hugging Face stage (15).
ngpu=1               # The number of gpus ("0" uses cpu, otherwise use gpu).
num_nodes=1          # The number of nodes.
nj=32                # The number of parallel jobs.
inference_nj=32      # The number of parallel jobs in decoding.
gpu_inference=false  # Whether to perform gpu decoding.
dumpdir=dump         # Directory to dump features.
expdir=exp           # Directory to save experiments.
python=python3       # Specify python to execute espnet commands.

# Data preparation related
local_data_opts= # The options given to local/data.sh.

# Speed perturbation related
speed_perturb_factors= # perturbation factors, e.g. "0.9 1.0 1.1" (separated by space).

# Feature extraction related
feats_type=raw       # Feature type (only raw is supported).
audio_format=flac    # Audio format: flac or wav.
fs=16k               # Sampling rate.
min_wav_duration=0.1 # Minimum duration in second.
max_wav_duration=20  # Maximum duration in second.

# Tokenization related
token_type=bpe      # Tokenization type (char, word or bpe).
nbpe=30             # The number of BPE vocabulary.
bpemode=unigram     # Mode of BPE (unigram or bpe).
oov="<unk>"         # Out of vocabulary symbol.
blank="<blank>"     # CTC blank symbol.
sos_eos="<sos/eos>" # sos and eos symbol.
bpe_input_sentence_size=100000000 # Size of input sentence for BPE.
bpe_char_cover=1.0  # Character coverage when modeling BPE.
nlsyms_txt=none     # Non-linguistic symbol list if existing.
cleaner=none        # Text cleaner.
g2p=none            # g2p method (needed if token_type=phn).
lang=noinfo         # The language type of corpus.

# Language model related
use_lm=true       # Use language model for ASR decoding.
lm_tag=           # Suffix to the result dir for language model training.
lm_exp=           # Specify the directory path for LM experiment.
lm_stats_dir=     # Specify the directory path for LM statistics.
lm_config=        # Config for language model training.
lm_args=          # Arguments for language model training, e.g., "--max_epoch 10".
num_splits_lm=1   # Number of splitting for lm corpus.
use_ngram=false   # N-gram LM (stage 9): needs KenLM, which this recipe does not provide.
lm_fold_length=150 # fold_length for LM training.

# ASR model related
asr_task=asr           # ASR task mode (only asr).
asr_tag=               # Suffix to the result dir for asr model training.
asr_exp=               # Specify the directory path for ASR experiment.
asr_stats_dir=         # Specify the directory path for ASR statistics.
asr_config=            # Config for asr model training.
asr_args=              # Arguments for asr model training, e.g., "--max_epoch 10".
pretrained_model=      # Pretrained model to load.
ignore_init_mismatch=false # Ignore initial mismatch.
feats_normalize=global_mvn # Normalization layer type.

# Decoding related
inference_tag=    # Suffix to the result dir for decoding.
inference_config= # Config for decoding.
inference_args=   # Arguments for decoding, e.g., "--lm_weight 0.1".
inference_asr_model=  # ASR model path for decoding; default: valid.<name>.ave.pth from the first
                      # best_model_criterion of the training config (valid.acc.ave.pth when it
                      # names none, as ESPnet; valid.loss.ave.pth for transducer configs).
inference_lm=valid.loss.ave.pth       # Language model path for decoding.
use_streaming=false # Stage 12 decodes chunk by chunk (causal encoders; the chunk size is the
                    # decoding config's sim_chunk_length) with espnet_ssm.bin.asr_inference_streaming.

# Upload related
hf_repo= # Hugging Face repository (<user>/<name>) to upload the packed model to in stage 15.

# [Task dependent] Set the datadir name created by local/data.sh
train_set=     # Name of training set.
valid_set=     # Name of validation set used for monitoring/tuning network training.
test_sets=     # Names of test sets. Multiple items (e.g., both dev and eval sets) can be specified.
bpe_train_text= # Text file path of bpe training set.
lm_train_text=  # Text file path of language model training set.
lm_dev_text=    # Text file path of language model development set.
lm_test_text=   # Text file path of language model evaluation set.

help_message=$(cat << EOF
Usage: $0 --train_set "<train_set_name>" --valid_set "<valid_set_name>" --test_sets "<test_set_names>"

Stages (run a range with --stage N --stop_stage M, skip some with --skip_stages "N M"):
   1  Data preparation: local/data.sh \${local_data_opts} -> data/<set>/ (Kaldi style)
   2  Speed perturbation (only with --speed_perturb_factors) -> data/<train_set>_sp/
   3  Audio dump at --fs with utt2num_samples -> ${dumpdir}/raw/{org/}<set>/
   4  Remove short/long utterances and empty transcripts (train/valid) -> ${dumpdir}/raw/<set>/;
      LM training text (ids kept) -> ${dumpdir}/raw/lm_train.txt
   5  Token list: bpe (sentencepiece ${bpemode}), char or word -> data/<lang>_token_list/
   6  LM statistics collection (only with --use_lm true) -> ${expdir}/lm_stats_*/
   7  LM training on ${dumpdir}/raw/lm_train.txt (written in stage 4 from --lm_train_text) -> ${expdir}/lm_<tag>/
   8  LM perplexity of --lm_test_text -> ${expdir}/lm_<tag>/perplexity_test/ppl
   9  N-gram LM (--use_ngram true): not available (KenLM is not provided); fails with a message
  10  ASR statistics collection -> ${expdir}/asr_stats_*/
  11  ASR training (resumable with --resume true; ESPnet's launcher when --ngpu > 1) -> ${expdir}/asr_<tag>/
  12  Decoding in --inference_nj parallel jobs (with the LM when --use_lm true), real-time factor
      -> ${expdir}/asr_<tag>/<inference_tag>/<set>/
  13  Scoring: sclite-style score_{cer,wer,ter}/result.txt, ${expdir}/asr_<tag>/RESULTS.md
  14  Packing (with the LM when --use_lm true) -> ${expdir}/asr_<tag>/asr_<tag>_<model>.zip
      (loadable by ESPnet's Speech2Text after import espnet_ssm)
  15  Model card README.md in ${expdir}/hf_<name>/; upload to Hugging Face only when --hf_repo is given

Options:
    # General configuration
    --stage          # Processes starts from the specified stage (default="${stage}").
    --stop_stage     # Processes is stopped at the specified stage (default="${stop_stage}").
    --skip_stages    # Stages to skip, e.g. "2 4" (default="${skip_stages}").
    --skip_data_prep # Skip data preparation stages 1-5 (default="${skip_data_prep}").
    --skip_train     # Skip training stages 2-11 (default="${skip_train}").
    --skip_eval      # Skip decoding and evaluation stages 12-13 (default="${skip_eval}").
    --skip_packing   # Skip the packing stage 14 (default="${skip_packing}").
    --skip_upload_hf # Skip the model card / upload stage 15 (default="${skip_upload_hf}").
    --ngpu           # The number of gpus ("0" uses cpu, otherwise use gpu, default="${ngpu}").
    --num_nodes      # The number of nodes (default="${num_nodes}").
    --nj             # The number of parallel jobs (default="${nj}").
    --inference_nj   # The number of parallel jobs in decoding (default="${inference_nj}").
    --gpu_inference  # Whether to perform gpu decoding (default="${gpu_inference}").
    --dumpdir        # Directory to dump features (default="${dumpdir}").
    --expdir         # Directory to save experiments (default="${expdir}").
    --python         # Specify python to execute espnet commands (default="${python}").

    # Data preparation related
    --local_data_opts # The options given to local/data.sh (default="${local_data_opts}").

    # Speed perturbation related
    --speed_perturb_factors # speed perturbation factors, e.g. "0.9 1.0 1.1" (default="${speed_perturb_factors}").

    # Feature extraction related
    --feats_type       # Feature type (only raw, default="${feats_type}").
    --audio_format     # Audio format: flac or wav (default="${audio_format}").
    --fs               # Sampling rate (default="${fs}").
    --min_wav_duration # Minimum duration in second (default="${min_wav_duration}").
    --max_wav_duration # Maximum duration in second (default="${max_wav_duration}").

    # Tokenization related
    --token_type              # Tokenization type (char, word or bpe, default="${token_type}").
    --nbpe                    # The number of BPE vocabulary (default="${nbpe}").
    --bpemode                 # Mode of BPE (unigram or bpe, default="${bpemode}").
    --oov                     # Out of vocabulary symbol (default="${oov}").
    --blank                   # CTC blank symbol (default="${blank}").
    --sos_eos                 # sos and eos symbole (default="${sos_eos}").
    --bpe_input_sentence_size # Size of input sentence for BPE (default="${bpe_input_sentence_size}").
    --bpe_char_cover          # Character coverage when modeling BPE (default="${bpe_char_cover}").
    --nlsyms_txt              # Non-linguistic symbol list if existing (default="${nlsyms_txt}").
    --cleaner                 # Text cleaner (default="${cleaner}").
    --g2p                     # g2p method (default="${g2p}").
    --lang                    # The language type of corpus (default=${lang}).

    # Language model related
    --use_lm          # Use language model for ASR decoding (default="${use_lm}").
    --lm_tag          # Suffix to the result dir for language model training (default="${lm_tag}").
    --lm_exp          # Specify the directory path for LM experiment.
                      # If this option is specified, lm_tag is ignored (default="${lm_exp}").
    --lm_stats_dir    # Specify the directory path for LM statistics (default="${lm_stats_dir}").
    --lm_config       # Config for language model training (default="${lm_config}").
    --lm_args         # Arguments for language model training (default="${lm_args}").
                      # e.g., --lm_args "--max_epoch 10"
                      # Note that it will overwrite args in lm config.
    --num_splits_lm   # Number of splitting for lm corpus (default="${num_splits_lm}").
    --use_ngram       # N-gram LM (stage 9). Not available: it needs KenLM (lmplz, build_binary),
                      # which this recipe does not provide; true is an error (default="${use_ngram}").
    --lm_fold_length  # fold_length for LM training (default="${lm_fold_length}").

    # ASR model related
    --asr_task             # ASR task mode (only asr, default="${asr_task}").
    --asr_tag              # Suffix to the result dir for asr model training (default="${asr_tag}").
    --asr_exp              # Specify the directory path for ASR experiment (default="${asr_exp}").
    --asr_stats_dir        # Specify the directory path for ASR statistics (default="${asr_stats_dir}").
    --asr_config           # Config for asr model training (default="${asr_config}").
    --asr_args             # Arguments for asr model training (default="${asr_args}").
                           # e.g., --asr_args "--max_epoch 10"
    --pretrained_model     # Pretrained model to load (default="${pretrained_model}").
    --ignore_init_mismatch # Ignore mismatch parameter init with pretrained model (default="${ignore_init_mismatch}").
    --feats_normalize      # Normalization layer type (default="${feats_normalize}").

    # Decoding related
    --inference_tag       # Suffix to the result dir for decoding (default="${inference_tag}").
    --inference_config    # Config for decoding (default="${inference_config}").
    --inference_args      # Arguments for decoding (default="${inference_args}").
                          # e.g., --inference_args "--beam_size 10"
    --inference_asr_model # ASR model path for decoding (default: valid.<name>.ave.pth from the
                          # training config's first best_model_criterion, else valid.acc.ave.pth).
    --inference_lm        # Language model path for decoding (default="${inference_lm}").
    --use_streaming       # Decode chunk by chunk with carried state: causal encoders only, CTC
                          # or transducer search, no LM; chunk size: sim_chunk_length in the
                          # decoding config (default="${use_streaming}").

    # Upload related
    --hf_repo # Hugging Face repository to upload to in stage 15 (default="${hf_repo}").

    # [Task dependent] Set the datadir name created by local/data.sh
    --train_set # Name of training set (required).
    --valid_set # Name of validation set used for monitoring/tuning network training (required).
    --test_sets # Names of test sets (required).
    --bpe_train_text # Text file path of bpe training set (default: the training set's text).
    --lm_train_text  # Text file path(s) of language model training set, separated by spaces
                     # (default: the training set's text). Written to ${dumpdir}/raw/lm_train.txt in stage 4.
    --lm_dev_text    # Text file path of language model development set (default: the valid set's text).
    --lm_test_text   # Text file path of language model evaluation set (default: the first test set's text).
EOF
)

log "$0 $*"
. scripts/utils/parse_options.sh

if [ $# -ne 0 ]; then
    echo "$0: unexpected argument(s): $*" 1>&2
    echo "${help_message}" 1>&2
    exit 2
fi

. ./path.sh
. ./cmd.sh

helper="${python} pyscripts/helper.py"

if [ -z "${inference_asr_model}" ]; then
    # the averaged model the training config ranks by (transducer configs: validation loss)
    inference_asr_model=$(${python} -c '
import sys, yaml
conf = (yaml.safe_load(open(sys.argv[1])) if sys.argv[1] else None) or {}
crit = (conf.get("best_model_criterion") or [["valid", "acc", "max"]])[0]
print(f"{crit[0]}.{crit[1]}.ave.pth")' "${asr_config}")
fi

# Check required arguments
if [ -z "${train_set}" ] || [ -z "${valid_set}" ] || [ -z "${test_sets}" ]; then
    log "Error: --train_set, --valid_set and --test_sets are required"
    exit 2
fi
if [ "${train_set}" = "${valid_set}" ]; then
    log "Error: train_set and valid_set must be different. --train_set ${train_set} --valid_set ${valid_set}"
    exit 1
fi
for dset in ${test_sets}; do
    if [ "${dset}" = "${train_set}" ]; then
        log "Error: train_set and test_sets must be different. --train_set ${train_set} --test_sets ${test_sets}"
        exit 1
    fi
done
if [ "${feats_type}" != raw ]; then
    log "Error: --feats_type ${feats_type} is not supported by this recipe (only raw)"
    exit 2
fi
if "${use_ngram}"; then
    log "Error: --use_ngram true needs KenLM (lmplz, build_binary), which this recipe does not provide: stage 9 is not available; use --use_ngram false (the neural LM of stages 6-8 is --use_lm true)"
    exit 2
fi
if [ "${asr_task}" != asr ]; then
    log "Error: --asr_task ${asr_task} is not supported by this recipe (only asr)"
    exit 2
fi
data_feats=${dumpdir}/raw

# Stages skipped by the --skip_* flags
if "${skip_data_prep}"; then skip_stages+=" 1 2 3 4 5"; fi
if "${skip_train}"; then skip_stages+=" 2 3 4 5 6 7 8 9 10 11"; fi
if "${skip_eval}"; then skip_stages+=" 12 13"; fi
if "${skip_packing}"; then skip_stages+=" 14"; fi
if "${skip_upload_hf}"; then skip_stages+=" 15"; fi
if ! "${use_lm}"; then skip_stages+=" 6 7 8"; fi
run_stage() { # run_stage N: whether stage N is in [stage, stop_stage] and not skipped
    [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ] && [[ " ${skip_stages} " != *" $1 "* ]]
}
if [ -n "${asr_config}" ] && [ ! -f "${asr_config}" ] && { run_stage 10 || run_stage 11; }; then
    log "Error: --asr_config ${asr_config} not found"
    exit 2
fi

# Check tokenization type
if [ "${lang}" != noinfo ]; then
    token_listdir=data/${lang}_token_list
else
    token_listdir=data/token_list
fi
bpedir="${token_listdir}/bpe_${bpemode}${nbpe}"
bpemodel="${bpedir}"/bpe.model
bpetoken_list="${bpedir}"/tokens.txt
chartoken_list="${token_listdir}"/char/tokens.txt
wordtoken_list="${token_listdir}"/word/tokens.txt
if [ "${token_type}" = bpe ]; then
    token_list="${bpetoken_list}"
elif [ "${token_type}" = char ]; then
    token_list="${chartoken_list}"
    bpemodel=none
elif [ "${token_type}" = word ]; then
    token_list="${wordtoken_list}"
    bpemodel=none
else
    log "Error: not supported --token_type '${token_type}' (char, word or bpe)"
    exit 2
fi

# Set tag for naming of model directory
if [ -z "${asr_tag}" ]; then
    if [ -n "${asr_config}" ]; then
        asr_tag="$(basename "${asr_config}" .yaml)_${feats_type}"
    else
        asr_tag="train_${feats_type}"
    fi
    if [ "${lang}" != noinfo ]; then
        asr_tag+="_${lang}_${token_type}"
    else
        asr_tag+="_${token_type}"
    fi
    if [ "${token_type}" = bpe ]; then
        asr_tag+="${nbpe}"
    fi
    # Add overwritten arg's info
    if [ -n "${asr_args}" ]; then
        asr_tag+="$(echo "${asr_args}" | sed -e "s/--/\_/g" -e "s/[ |=/]//g")"
    fi
    if [ -n "${speed_perturb_factors}" ]; then
        asr_tag+="_sp"
    fi
fi
# The directory used for collect-stats mode
if [ -z "${asr_stats_dir}" ]; then
    if [ "${lang}" != noinfo ]; then
        asr_stats_dir="${expdir}/asr_stats_${feats_type}_${lang}_${token_type}"
    else
        asr_stats_dir="${expdir}/asr_stats_${feats_type}_${token_type}"
    fi
    if [ "${token_type}" = bpe ]; then
        asr_stats_dir+="${nbpe}"
    fi
    if [ -n "${speed_perturb_factors}" ]; then
        asr_stats_dir+="_sp"
    fi
fi
# The directory used for training commands
if [ -z "${asr_exp}" ]; then
    asr_exp="${expdir}/asr_${asr_tag}"
fi

# The LM uses the ASR token list (ESPnet's default: the same token type as the ASR model).
lm_token_type="${token_type}"
lm_token_list="${token_list}"
if [ -z "${lm_tag}" ]; then
    if [ -n "${lm_config}" ]; then
        lm_tag="$(basename "${lm_config}" .yaml)"
    else
        lm_tag="train"
    fi
    if [ "${lang}" != noinfo ]; then
        lm_tag+="_${lang}_${lm_token_type}"
    else
        lm_tag+="_${lm_token_type}"
    fi
    if [ "${lm_token_type}" = bpe ]; then
        lm_tag+="${nbpe}"
    fi
    if [ -n "${lm_args}" ]; then
        lm_tag+="$(echo "${lm_args}" | sed -e "s/--/\_/g" -e "s/[ |=/]//g")"
    fi
fi
if [ -z "${lm_stats_dir}" ]; then
    if [ "${lang}" != noinfo ]; then
        lm_stats_dir="${expdir}/lm_stats_${lang}_${lm_token_type}"
    else
        lm_stats_dir="${expdir}/lm_stats_${lm_token_type}"
    fi
    if [ "${lm_token_type}" = bpe ]; then
        lm_stats_dir+="${nbpe}"
    fi
fi
if [ -z "${lm_exp}" ]; then
    lm_exp="${expdir}/lm_${lm_tag}"
fi

if [ -z "${inference_tag}" ]; then
    if [ -n "${inference_config}" ]; then
        inference_tag="$(basename "${inference_config}" .yaml)"
    else
        inference_tag=inference
    fi
    # Add overwritten arg's info
    if [ -n "${inference_args}" ]; then
        inference_tag+="$(echo "${inference_args}" | sed -e "s/--/\_/g" -e "s/[ |=]//g")"
    fi
    if "${use_lm}"; then
        inference_tag+="_lm_$(basename "${lm_exp}")_$(echo "${inference_lm}" | sed -e "s/\//_/g" -e "s/\.[^.]*$//g")"
    fi
    inference_tag+="_asr_model_$(echo "${inference_asr_model}" | sed -e "s/\//_/g" -e "s/\.[^.]*$//g")"
fi

# ========================== Main stages start from here. ==========================

if run_stage 1; then
    log "Stage 1: Data preparation for data/${train_set}, data/${valid_set}, etc."
    # [Task dependent] Need to create data.sh for new corpus
    local/data.sh ${local_data_opts}
fi

if run_stage 2; then
    if [ -n "${speed_perturb_factors}" ]; then
        log "Stage 2: Speed perturbation: data/${train_set} -> data/${train_set}_sp"
        _dirs=""
        for factor in ${speed_perturb_factors}; do
            if awk -v f="${factor}" 'BEGIN { exit !(f + 0 != 1.0) }'; then
                ${helper} perturb "data/${train_set}" "data/${train_set}_sp${factor}" "${factor}"
                _dirs+="data/${train_set}_sp${factor} "
            else
                # If speed factor is 1, same as the original
                _dirs+="data/${train_set} "
            fi
        done
        ${helper} datadir combine "data/${train_set}_sp" ${_dirs}
    else
        log "Skip stage 2: Speed perturbation (no --speed_perturb_factors)"
    fi
fi

if [ -n "${speed_perturb_factors}" ]; then
    train_set="${train_set}_sp"
fi

# Use the same text as ASR for LM training if not specified.
[ -z "${lm_train_text}" ] && lm_train_text="${data_feats}/${train_set}/text"
[ -z "${lm_dev_text}" ] && lm_dev_text="${data_feats}/${valid_set}/text"
[ -z "${lm_test_text}" ] && lm_test_text="${data_feats}/${test_sets%% *}/text"

if run_stage 3; then
    log "Stage 3: Format wav.scp: data/ -> ${data_feats}"
    for dset in "${train_set}" "${valid_set}" ${test_sets}; do
        if [ "${dset}" = "${train_set}" ] || [ "${dset}" = "${valid_set}" ]; then
            _suf="/org"
        else
            _suf=""
        fi
        _src="data/${dset}"
        _dst="${data_feats}${_suf}/${dset}"
        ${helper} datadir validate "${_src}"
        rm -rf "${_dst}"
        mkdir -p "${_dst}/logs"
        _nj=$(min "${nj}" "$(<"${_src}/wav.scp" wc -l)")
        ${helper} datadir split "${_src}/wav.scp" "${_nj}" "${_dst}/logs/wav.JOB.scp"
        ${train_cmd} JOB=1:"${_nj}" "${_dst}"/logs/format_wav.JOB.log \
            ${helper} format_wav --fs "${fs}" --audio_format "${audio_format}" \
                "${_dst}/logs/wav.JOB.scp" "${_dst}/data/format.JOB"
        for f in wav.scp utt2num_samples; do
            cat "${_dst}"/data/format.*/"${f}" | LC_ALL=C sort > "${_dst}/${f}"
        done
        for f in text utt2spk spk2utt spk2gender utt2uniq; do
            if [ -f "${_src}/${f}" ]; then cp "${_src}/${f}" "${_dst}/${f}"; fi
        done
        echo "${feats_type}" > "${_dst}/feats_type"
        echo "${audio_format}" > "${_dst}/audio_format"
        ${helper} datadir validate "${_dst}"
    done
fi

if run_stage 4; then
    log "Stage 4: Remove long/short data: ${data_feats}/org -> ${data_feats}"
    if "${use_lm}"; then
        for f in ${lm_train_text}; do
            if [ ! -f "${f}" ]; then
                log "Error: LM training text ${f} (from --lm_train_text) not found"
                exit 1
            fi
        done
    fi
    for dset in "${train_set}" "${valid_set}"; do
        ${helper} filter_data --fs "${fs}" --min_wav_duration "${min_wav_duration}" \
            --max_wav_duration "${max_wav_duration}" "${data_feats}/org/${dset}" "${data_feats}/${dset}"
    done
    if "${use_lm}"; then
        log "LM training text: ${lm_train_text} -> ${data_feats}/lm_train.txt"
        # Kaldi text lines with their ids (the LM trainer reads "<id> <text>"). As in ESPnet, ids
        # get the part of the file name before "text" (none for files named text) as a suffix,
        # and lines with no text are dropped.
        for f in ${lm_train_text}; do
            _suffix=$(basename "${f}")
            _suffix=${_suffix/text/}
            awk -v suffix="${_suffix}" 'NF > 1 { $1 = $1 suffix; print }' "${f}"
        done > "${data_feats}/lm_train.txt.tmp"
        mv "${data_feats}/lm_train.txt.tmp" "${data_feats}/lm_train.txt"
        log "LM training text: $(<"${data_feats}/lm_train.txt" wc -l) sentences"
    fi
fi

if [ -z "${bpe_train_text}" ]; then
    bpe_train_text="${data_feats}/${train_set}/text"
fi

if run_stage 5; then
    if [ "${token_type}" = bpe ]; then
        log "Stage 5: Generate token_list from ${bpe_train_text} using BPE"
        ${helper} tokens --text "${bpe_train_text}" --out_dir "${bpedir}" --nbpe "${nbpe}" \
            --bpemode "${bpemode}" --character_coverage "${bpe_char_cover}" \
            --input_sentence_size "${bpe_input_sentence_size}" --nlsyms_txt "${nlsyms_txt}" \
            --blank "${blank}" --oov "${oov}" --sos_eos "${sos_eos}"
    else
        log "Stage 5: Generate character level token_list from ${bpe_train_text}"
        mkdir -p "$(dirname "${token_list}")"
        ${python} -m espnet_ssm.bin.tokenize_text \
            --token_type "${token_type}" \
            --input "${bpe_train_text}" --output "${token_list}" \
            --non_linguistic_symbols "${nlsyms_txt}" \
            --field 2- \
            --cleaner "${cleaner}" \
            --g2p "${g2p}" \
            --write_vocabulary true \
            --add_symbol "${blank}:0" \
            --add_symbol "${oov}:1" \
            --add_symbol "${sos_eos}:-1"
    fi
    log "Token list: ${token_list} ($(<"${token_list}" wc -l) tokens)"
fi

# ========================== Data preparation is done here. ==========================

# train_model <exp dir> <stage> <what> <entry module> <options...>: write <exp dir>/run.sh, which
# resumes from <stage>, then train, through ESPnet's launcher (one process per GPU / node) when
# --ngpu > 1 or --num_nodes > 1, else as one job; the trainer's epoch summaries are shown as it runs.
train_model() {
    local exp=$1 resume_stage=$2 what=$3 entry=$4
    shift 4
    mkdir -p "${exp}"
    echo "${run_args} --stage ${resume_stage} \"\$@\"; exit \$?" > "${exp}/run.sh"
    chmod +x "${exp}/run.sh"
    log "Generate '${exp}/run.sh'. You can resume the process from stage ${resume_stage} using this script"
    log "${what} training started... log: '${exp}/train.log'"
    local jobname
    jobname="$(basename "${exp}")"
    if [ "${ngpu}" -gt 1 ] || [ "${num_nodes}" -gt 1 ]; then
        ${python} -m espnet_ssm.bin.launch \
            --cmd "${cuda_cmd} --name ${jobname}" \
            --log "${exp}"/train.log \
            --ngpu "${ngpu}" \
            --num_nodes "${num_nodes}" \
            --init_file_prefix "${exp}"/.dist_init_ \
            --multiprocessing_distributed true -- \
            ${python} -m "${entry}" "$@" &
    else
        # One process: what the launcher would run, without its extra interpreter start.
        scripts/utils/rotate_log.sh "${exp}/train.log"
        ${cuda_cmd} --gpu "${ngpu}" --name "${jobname}" "${exp}"/train.log \
            ${python} -m "${entry}" "$@" --ngpu "${ngpu}" &
    fi
    local pid=$!
    # tail exits when training does
    tail --pid="${pid}" -s 1 -n +1 -F "${exp}/train.log" 2>/dev/null | ${helper} progress &
    wait "${pid}"
    wait
}

# ========================== Language model (stages 6-9) ==========================
# ESPnet's own LM entry points: a language model needs nothing of espnet_ssm (whose import,
# for the encoder registry, costs about 10 s per process).

# lm_check_file <file> <what>: stop with a message naming a missing LM input.
lm_check_file() {
    if [ ! -f "$1" ]; then
        log "Error: $1 not found ($2)"
        exit 1
    fi
}
# The options stages 6 and 7 share (and ESPnet's asr.sh passes to lm_train).
_lm_common_opts="--use_preprocessor true --bpemodel ${bpemodel} --token_type ${lm_token_type}"
_lm_common_opts+=" --token_list ${lm_token_list} --non_linguistic_symbols ${nlsyms_txt}"
_lm_common_opts+=" --cleaner ${cleaner} --g2p ${g2p}"
if [ -n "${lm_config}" ]; then
    _lm_common_opts+=" --config ${lm_config}"
fi

if run_stage 6; then
    log "Stage 6: LM collect stats: train_set=${data_feats}/lm_train.txt, dev_set=${lm_dev_text}"
    lm_check_file "${data_feats}/lm_train.txt" "written by stage 4 from --lm_train_text"
    lm_check_file "${lm_dev_text}" "--lm_dev_text"
    lm_check_file "${lm_token_list}" "the token list of stage 5"
    if [ -n "${lm_config}" ]; then lm_check_file "${lm_config}" "--lm_config"; fi
    _logdir="${lm_stats_dir}/logdir"
    rm -rf "${_logdir}"
    mkdir -p "${_logdir}"
    _nj=$(min "${nj}" "$(<"${data_feats}/lm_train.txt" wc -l)" "$(<"${lm_dev_text}" wc -l)")
    ${helper} datadir split "${data_feats}/lm_train.txt" "${_nj}" "${_logdir}/train.JOB.scp"
    ${helper} datadir split "${lm_dev_text}" "${_nj}" "${_logdir}/dev.JOB.scp"
    echo "${run_args} --stage 6 \"\$@\"; exit \$?" > "${_logdir}/run.sh"
    chmod +x "${_logdir}/run.sh"
    log "Generate '${lm_stats_dir}/run.sh'. You can resume the process from stage 6 using this script"
    cp "${_logdir}/run.sh" "${lm_stats_dir}/run.sh"
    log "LM collect-stats started... log: '${_logdir}/stats.*.log'"
    # shellcheck disable=SC2086
    ${train_cmd} JOB=1:"${_nj}" "${_logdir}"/stats.JOB.log \
        ${python} -m espnet2.bin.lm_train \
            --collect_stats true \
            ${_lm_common_opts} \
            --train_data_path_and_name_and_type "${data_feats}/lm_train.txt,text,text" \
            --valid_data_path_and_name_and_type "${lm_dev_text},text,text" \
            --train_shape_file "${_logdir}/train.JOB.scp" \
            --valid_shape_file "${_logdir}/dev.JOB.scp" \
            --output_dir "${_logdir}/stats.JOB" \
            ${lm_args}
    _input_dirs=""
    for i in $(seq "${_nj}"); do
        _input_dirs+=" --input_dir ${_logdir}/stats.${i}"
    done
    # shellcheck disable=SC2086
    ${python} -m espnet_ssm.bin.aggregate_stats_dirs ${_input_dirs} --output_dir "${lm_stats_dir}"
    # Append the num-tokens at the last dimensions. This is used for batch-bins count
    for _set in train valid; do
        <"${lm_stats_dir}/${_set}/text_shape" \
            awk -v N="$(<"${lm_token_list}" wc -l)" '{ print $0 "," N }' \
            >"${lm_stats_dir}/${_set}/text_shape.${lm_token_type}"
    done
fi

if run_stage 7; then
    log "Stage 7: LM Training: train_set=${data_feats}/lm_train.txt, dev_set=${lm_dev_text}"
    lm_check_file "${lm_stats_dir}/train/text_shape.${lm_token_type}" "written by stage 6"
    lm_check_file "${lm_dev_text}" "--lm_dev_text"
    _opts="${_lm_common_opts}"
    if [ "${num_splits_lm}" -gt 1 ]; then
        # Each epoch reads one split of the text: for LM texts too large to hold in memory.
        _split_dir="${lm_stats_dir}/splits${num_splits_lm}"
        if [ ! -f "${_split_dir}/.done" ]; then
            ${python} -m espnet2.bin.split_scps \
                --scps "${data_feats}/lm_train.txt" "${lm_stats_dir}/train/text_shape.${lm_token_type}" \
                --num_splits "${num_splits_lm}" \
                --output_dir "${_split_dir}"
            touch "${_split_dir}/.done"
        else
            log "${_split_dir}/.done exists. Spliting is skipped"
        fi
        _opts+=" --train_data_path_and_name_and_type ${_split_dir}/lm_train.txt,text,text"
        _opts+=" --train_shape_file ${_split_dir}/text_shape.${lm_token_type}"
        _opts+=" --multiple_iterator true"
    else
        _opts+=" --train_data_path_and_name_and_type ${data_feats}/lm_train.txt,text,text"
        _opts+=" --train_shape_file ${lm_stats_dir}/train/text_shape.${lm_token_type}"
    fi
    _opts+=" --valid_data_path_and_name_and_type ${lm_dev_text},text,text"
    _opts+=" --valid_shape_file ${lm_stats_dir}/valid/text_shape.${lm_token_type}"
    _opts+=" --fold_length ${lm_fold_length} --resume true --output_dir ${lm_exp}"

    # shellcheck disable=SC2086
    train_model "${lm_exp}" 7 LM espnet2.bin.lm_train ${_opts} ${lm_args}
fi

if run_stage 8; then
    log "Stage 8: Calc perplexity: ${lm_test_text}"
    lm_check_file "${lm_test_text}" "--lm_test_text"
    lm_check_file "${lm_exp}/${inference_lm}" "--inference_lm; trained in stage 7"
    mkdir -p "${lm_exp}/perplexity_test"
    log "Perplexity calculation started... log: '${lm_exp}/perplexity_test/lm_calc_perplexity.log'"
    ${cuda_cmd} --gpu "${ngpu}" "${lm_exp}"/perplexity_test/lm_calc_perplexity.log \
        ${python} -m espnet2.bin.lm_calc_perplexity \
            --ngpu "${ngpu}" \
            --data_path_and_name_and_type "${lm_test_text},text,text" \
            --train_config "${lm_exp}"/config.yaml \
            --model_file "${lm_exp}/${inference_lm}" \
            --output_dir "${lm_exp}/perplexity_test"
    log "PPL: ${lm_test_text}: $(cat "${lm_exp}/perplexity_test/ppl")"
fi

if ! "${use_lm}" && { [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 6 ]; }; then
    log "Skip stages 6-8: --use_lm false"
fi
# Stage 9 (n-gram LM) only runs with --use_ngram true, which stops with an error above.

# Options shared by statistics collection (stage 10) and training (stage 11)
_asr_train_dir="${data_feats}/${train_set}"
_asr_valid_dir="${data_feats}/${valid_set}"
_common_opts="--use_preprocessor true --bpemodel ${bpemodel} --token_type ${token_type} --token_list ${token_list}"
_common_opts+=" --non_linguistic_symbols ${nlsyms_txt} --cleaner ${cleaner} --g2p ${g2p}"
_common_opts+=" --frontend_conf fs=${fs}"
if [ -n "${asr_config}" ]; then
    _common_opts+=" --config ${asr_config}"
fi
_common_opts+=" --train_data_path_and_name_and_type ${_asr_train_dir}/wav.scp,speech,sound"
_common_opts+=" --train_data_path_and_name_and_type ${_asr_train_dir}/text,text,text"
_common_opts+=" --valid_data_path_and_name_and_type ${_asr_valid_dir}/wav.scp,speech,sound"
_common_opts+=" --valid_data_path_and_name_and_type ${_asr_valid_dir}/text,text,text"

if run_stage 10; then
    log "Stage 10: ASR collect stats: train_set=${_asr_train_dir}, valid_set=${_asr_valid_dir}"
    _logdir="${asr_stats_dir}/logdir"
    rm -rf "${_logdir}"
    mkdir -p "${_logdir}"
    # Split the key files into nj parts; each job computes statistics of its part.
    _nj=$(min "${nj}" "$(<"${_asr_train_dir}/wav.scp" wc -l)" "$(<"${_asr_valid_dir}/wav.scp" wc -l)")
    ${helper} datadir split "${_asr_train_dir}/wav.scp" "${_nj}" "${_logdir}/train.JOB.scp"
    ${helper} datadir split "${_asr_valid_dir}/wav.scp" "${_nj}" "${_logdir}/valid.JOB.scp"
    echo "${run_args} --stage 10 \"\$@\"; exit \$?" > "${_logdir}/run.sh"
    chmod +x "${_logdir}/run.sh"

    log "Generate '${asr_stats_dir}/run.sh'. You can resume the process from stage 10 using this script"
    cp "${_logdir}/run.sh" "${asr_stats_dir}/run.sh"
    log "ASR collect-stats started... log: '${_logdir}/stats.*.log'"
    # shellcheck disable=SC2086
    ${train_cmd} JOB=1:"${_nj}" "${_logdir}"/stats.JOB.log \
        ${python} -m espnet_ssm.bin.asr_train \
            --collect_stats true \
            ${_common_opts} \
            --train_shape_file "${_logdir}/train.JOB.scp" \
            --valid_shape_file "${_logdir}/valid.JOB.scp" \
            --output_dir "${_logdir}/stats.JOB" \
            ${asr_args}

    # Aggregate the statistics of the jobs
    _input_dirs=""
    for i in $(seq "${_nj}"); do
        _input_dirs+=" --input_dir ${_logdir}/stats.${i}"
    done
    # shellcheck disable=SC2086
    ${python} -m espnet_ssm.bin.aggregate_stats_dirs ${_input_dirs} --output_dir "${asr_stats_dir}"

    # Append the num-tokens at the last dimensions. This is used for batch-bins count
    for _set in train valid; do
        <"${asr_stats_dir}/${_set}/text_shape" \
            awk -v N="$(<"${token_list}" wc -l)" '{ print $0 "," N }' \
            >"${asr_stats_dir}/${_set}/text_shape.${token_type}"
    done
fi

if run_stage 11; then
    log "Stage 11: ASR Training: train_set=${_asr_train_dir}, valid_set=${_asr_valid_dir}"
    _opts="${_common_opts}"
    if [ "${feats_normalize}" = global_mvn ]; then
        # Default normalization is utterance_mvn and changes to global_mvn
        _opts+=" --normalize=global_mvn --normalize_conf stats_file=${asr_stats_dir}/train/feats_stats.npz"
    elif [ "${feats_normalize}" != none ]; then
        _opts+=" --normalize=${feats_normalize}"
    fi
    if [ -n "${pretrained_model}" ]; then
        _opts+=" --init_param ${pretrained_model}"
    fi
    _opts+=" --train_shape_file ${asr_stats_dir}/train/speech_shape"
    _opts+=" --train_shape_file ${asr_stats_dir}/train/text_shape.${token_type}"
    _opts+=" --valid_shape_file ${asr_stats_dir}/valid/speech_shape"
    _opts+=" --valid_shape_file ${asr_stats_dir}/valid/text_shape.${token_type}"
    _opts+=" --resume true --ignore_init_mismatch ${ignore_init_mismatch}"
    _opts+=" --fold_length 80000 --fold_length 150 --output_dir ${asr_exp}"

    # shellcheck disable=SC2086
    train_model "${asr_exp}" 11 ASR espnet_ssm.bin.asr_train ${_opts} ${asr_args}
fi

if run_stage 12; then
    log "Stage 12: Decoding: training_dir=${asr_exp}"
    if "${use_streaming}"; then
        if "${use_lm}"; then
            log "Error: --use_streaming true decodes with the CTC or transducer search alone, without a language model: add --use_lm false"
            exit 1
        fi
        _inference_module=espnet_ssm.bin.asr_inference_streaming
    else
        _inference_module=espnet_ssm.bin.asr_inference
    fi
    if "${gpu_inference}"; then
        _cmd="${cuda_cmd}"
        _ngpu=1
    else
        _cmd="${decode_cmd}"
        _ngpu=0
    fi
    _opts=
    if [ -n "${inference_config}" ]; then
        _opts+="--config ${inference_config} "
    fi
    if "${use_lm}"; then
        lm_check_file "${lm_exp}/${inference_lm}" "the LM for decoding (--inference_lm; trained in stage 7); or use --use_lm false"
        _opts+="--lm_train_config ${lm_exp}/config.yaml "
        _opts+="--lm_file ${lm_exp}/${inference_lm} "
    fi
    if [ ! -f "${asr_exp}/${inference_asr_model}" ]; then
        log "Error: ${asr_exp}/${inference_asr_model} not found (see --inference_asr_model; trained models: $(cd "${asr_exp}" && ls -- *.pth 2>/dev/null | tr '\n' ' '))"
        exit 1
    fi
    for dset in ${test_sets}; do
        _data="${data_feats}/${dset}"
        _dir="${asr_exp}/${inference_tag}/${dset}"
        _logdir="${_dir}/logdir"
        rm -rf "${_logdir}"
        mkdir -p "${_logdir}"
        # 1. Split the key file
        key_file=${_data}/wav.scp
        _nj=$(min "${inference_nj}" "$(<"${key_file}" wc -l)")
        ${helper} datadir split "${key_file}" "${_nj}" "${_logdir}/keys.JOB.scp"
        # 2. Submit decoding jobs
        log "Decoding started... log: '${_logdir}/asr_inference.*.log'"
        # shellcheck disable=SC2086
        ${_cmd} --gpu "${_ngpu}" JOB=1:"${_nj}" "${_logdir}"/asr_inference.JOB.log \
            ${python} -m "${_inference_module}" \
                --batch_size 1 \
                --ngpu "${_ngpu}" \
                --data_path_and_name_and_type "${_data}/wav.scp,speech,sound" \
                --key_file "${_logdir}"/keys.JOB.scp \
                --asr_train_config "${asr_exp}"/config.yaml \
                --asr_model_file "${asr_exp}"/"${inference_asr_model}" \
                --output_dir "${_logdir}"/output.JOB \
                ${_opts} ${inference_args}
        # 3. Calculate the real-time factor from the decoding logs
        ${helper} rtf --log_dir "${_logdir}" --fs "${fs}" > "${_logdir}/calculate_rtf.log"
        log "$(tr '\n' ' ' < "${_logdir}/calculate_rtf.log")"
        # 4. Concatenate the outputs of the jobs
        for f in token token_int score text; do
            for i in $(seq "${_nj}"); do
                cat "${_logdir}/output.${i}/1best_recog/${f}"
            done | LC_ALL=C sort -k1 > "${_dir}/${f}"
        done
        ${helper} datadir check_keys "${key_file}" "${_dir}/text"
    done
fi

if run_stage 13; then
    log "Stage 13: Scoring"
    _token_types="char word"
    if [ "${token_type}" = bpe ]; then
        _token_types+=" bpe"
    fi
    for dset in ${test_sets}; do
        _data="${data_feats}/${dset}"
        _dir="${asr_exp}/${inference_tag}/${dset}"
        ${helper} score --ref "${_data}/text" --hyp "${_dir}/text" --utt2spk "${_data}/utt2spk" \
            --out_dir "${_dir}" --token_types "${_token_types}" --bpemodel "${bpemodel}" \
            --cleaner "${cleaner}" --nlsyms_txt "${nlsyms_txt}"
    done
    # Show results in Markdown syntax
    _opts=
    if [ -n "${asr_config}" ]; then
        _opts+="--asr_config ${asr_config} "
    fi
    if "${use_lm}"; then
        _opts+="--lm_config ${lm_config:-${lm_exp}/config.yaml} "
    fi
    # shellcheck disable=SC2086
    scripts/utils/show_asr_result.sh ${_opts} "${asr_exp}" > "${asr_exp}"/RESULTS.md
    cat "${asr_exp}"/RESULTS.md
fi

packed_model="${asr_exp}/${asr_exp##*/}_${inference_asr_model%.*}.zip"
if run_stage 14; then
    log "Stage 14: Pack model: ${packed_model}"
    _opts=
    if [ "${feats_normalize}" = global_mvn ]; then
        _opts+="--option ${asr_stats_dir}/train/feats_stats.npz "
    fi
    if [ "${token_type}" = bpe ]; then
        _opts+="--option ${bpemodel} "
    fi
    if [ "${nlsyms_txt}" != none ]; then
        _opts+="--option ${nlsyms_txt} "
    fi
    if "${use_lm}"; then
        _opts+="--lm_train_config ${lm_exp}/config.yaml "
        _opts+="--lm_file ${lm_exp}/${inference_lm} "
        if [ -f "${lm_exp}/perplexity_test/ppl" ]; then
            _opts+="--option ${lm_exp}/perplexity_test/ppl "
        fi
        if [ -d "${lm_exp}/images" ]; then
            _opts+="--option ${lm_exp}/images "
        fi
    fi
    if [ -d "${asr_exp}/images" ]; then
        _opts+="--option ${asr_exp}/images "
    else
        log "Warning: ${asr_exp}/images not found (training curves need matplotlib); packing without it"
    fi
    # shellcheck disable=SC2086
    ${python} -m espnet_ssm.bin.pack asr \
        --asr_train_config "${asr_exp}"/config.yaml \
        --asr_model_file "${asr_exp}"/"${inference_asr_model}" \
        ${_opts} \
        --option "${asr_exp}"/RESULTS.md \
        --outpath "${packed_model}"
fi

if run_stage 15; then
    if [ -n "${hf_repo}" ]; then
        _hf_dir="${expdir}/hf_${hf_repo//\//_}"
    else
        _hf_dir="${expdir}/hf_${asr_exp##*/}"
    fi
    log "Stage 15: Model card: ${_hf_dir}/README.md"
    if [ -n "${hf_repo}" ]; then
        if ! command -v git-lfs &> /dev/null; then
            log "Error: git-lfs is needed to upload to Hugging Face (e.g. apt-get install git-lfs)"
            exit 1
        fi
        rm -rf "${_hf_dir}"
        git clone "https://huggingface.co/${hf_repo}" "${_hf_dir}"
    else
        rm -rf "${_hf_dir}"
        mkdir -p "${_hf_dir}"
    fi
    ${python} -m zipfile -e "${packed_model}" "${_hf_dir}"
    _opts=
    if [ -n "${inference_config}" ]; then
        _opts+="--inference_config ${inference_config} "
    fi
    # shellcheck disable=SC2086
    ${helper} model_card --asr_exp "${asr_exp}" --model_dir "${_hf_dir}" \
        --hf_repo "${hf_repo:-<user>/<repository>}" --corpus "$(basename "$(cd ../.. && pwd)")" \
        --run_args "${run_args}" ${_opts} > "${_hf_dir}/README.md"
    if [ -n "${hf_repo}" ]; then
        log "Upload to https://huggingface.co/${hf_repo}"
        (
            cd "${_hf_dir}"
            git lfs track "*.pth" "*.zip" "*.model" "*.npz" "*.png"
            git add .
            git commit -m "Update model"
            git push
        )
    else
        log "No --hf_repo given: the card and files are in ${_hf_dir} and nothing was uploaded"
    fi
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
