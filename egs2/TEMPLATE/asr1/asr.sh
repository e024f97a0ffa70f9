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
skip_train=false     # Skip training stages (2, 4-11; stage 3 formats only the test sets).
skip_eval=false      # Skip decoding and evaluation stages (12-13).
skip_packing=true    # Skip the packing stage (14).
skip_upload=true     # Skip the Zenodo upload of ESPnet's older layout (not available: false is an error).
skip_upload_hf=true  # Skip the Hugging Face upload stage (15).
eval_valid_set=false # Decode and score the validation set too (from ${dumpdir}/raw/org/<valid_set>).
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
bpe_nlsyms=         # Non-linguistic symbols for sentencepiece: comma-separated, or a file (one per line).
bpe_char_cover=1.0  # Character coverage when modeling BPE.
nlsyms_txt=none     # Non-linguistic symbol list if existing.
cleaner=none        # Text cleaner.
hyp_cleaner=none    # Text cleaner for the hypotheses in scoring.
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
use_word_lm=false # Word LM (not supported, as in ESPnet: true is an error).
word_vocab_size=10000 # Size of word vocabulary (for --use_word_lm).
use_ngram=false   # N-gram LM (stage 9): needs KenLM, which this recipe does not provide.
ngram_exp=        # Directory of the n-gram LM (for --use_ngram).
ngram_num=3       # Order of the n-gram LM (for --use_ngram).
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
num_splits_asr=1           # Number of splitting for the training data (each epoch reads one split).
asr_speech_fold_length=800 # fold_length for speech data during ASR training (x100 samples for raw).
asr_text_fold_length=150   # fold_length for text data during ASR training.

# Decoding related
inference_tag=    # Suffix to the result dir for decoding.
inference_config= # Config for decoding.
inference_args=   # Arguments for decoding, e.g., "--lm_weight 0.1".
inference_asr_model=  # ASR model path for decoding; default: valid.<name>.ave.pth from the first
                      # best_model_criterion of the training config (valid.acc.ave.pth when it
                      # names none, as ESPnet; valid.loss.ave.pth for transducer configs).
inference_lm=valid.loss.ave.pth       # Language model path for decoding.
inference_ngram=${ngram_num}gram.bin  # N-gram LM file for decoding (for --use_ngram).
use_streaming=false # Stage 12 decodes chunk by chunk (causal encoders; the chunk size is the
                    # decoding config's sim_chunk_length) with espnet_ssm.bin.asr_inference_streaming.
use_maskctc=false   # Stage 12 decodes with Mask-CTC (models trained with model: maskctc).
batch_size=1        # Batch size of decoding.
use_k2=false        # k2 decoding (not available here: true is an error), with its options:
k2_ctc_decoding=true
use_nbest_rescoring=true
num_paths=1000
nll_batch_size=100
k2_config=./conf/decode_asr_transformer_with_k2.yaml
download_model= # A packed model (Hugging Face repository, .zip or unpacked directory) to decode with.
score_opts=       # Extra options of sclite in stage 13.
local_score_opts= # Options of local/score.sh, run after scoring when it exists.

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
   1  Data preparation: local/data.sh \${local_data_opts} -> data/<set>/ (Kaldi style; it sees --nj as \$nj)
   2  Speed perturbation (only with --speed_perturb_factors) -> data/<train_set>_sp/
   3  Audio dump at --fs with utt2num_samples -> ${dumpdir}/raw/{org/}<set>/ (test sets only with --skip_train true)
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
  13  Scoring with NIST sclite (a unit-cost fallback when it is not installed, noted in RESULTS.md):
      score_{cer,wer,ter}/result.txt; local/score.sh if present; ${expdir}/asr_<tag>/RESULTS.md
  14  Packing, with --skip_packing false (with the LM when --use_lm true)
      -> ${expdir}/asr_<tag>/asr_<tag>_<model>.zip (loadable by ESPnet's Speech2Text)
  15  Upload to Hugging Face with --skip_upload_hf false --hf_repo <user>/<name>: the packed model and
      a model card README.md, from ${expdir}/hf_<user>_<name>/

Options:
    # General configuration
    --stage          # Processes starts from the specified stage (default="${stage}").
    --stop_stage     # Processes is stopped at the specified stage (default="${stop_stage}").
    --skip_stages    # Stages to skip, e.g. "2 4" (default="${skip_stages}").
    --skip_data_prep # Skip data preparation stages 1-5 (default="${skip_data_prep}").
    --skip_train     # Skip training stages 2 and 4-11; stage 3 formats only the test sets
                     # (and the valid set with --eval_valid_set true) (default="${skip_train}").
    --skip_eval      # Skip decoding and evaluation stages 12-13 (default="${skip_eval}").
    --skip_packing   # Skip the packing stage 14 (default="${skip_packing}").
    --skip_upload    # Zenodo upload of ESPnet's older layout: not available, false is an error
                     # (default="${skip_upload}").
    --skip_upload_hf # Skip the Hugging Face upload stage 15 (default="${skip_upload_hf}").
    --eval_valid_set # Decode and score the validation set too (default="${eval_valid_set}").
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
    --bpe_nlsyms              # Non-linguistic symbols for sentencepiece, comma-separated or a file
                              # with one per line (default="${bpe_nlsyms}").
    --bpe_char_cover          # Character coverage when modeling BPE (default="${bpe_char_cover}").
    --nlsyms_txt              # Non-linguistic symbol list if existing (default="${nlsyms_txt}").
    --cleaner                 # Text cleaner (default="${cleaner}").
    --hyp_cleaner             # Text cleaner for the hypotheses in scoring (default="${hyp_cleaner}").
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
    --use_word_lm     # Word LM: not supported (as in ESPnet), true is an error (default="${use_word_lm}").
    --word_vocab_size # Size of word vocabulary (default="${word_vocab_size}").
    --use_ngram       # N-gram LM (stage 9). Not available: it needs KenLM (lmplz, build_binary),
                      # which this recipe does not provide; true is an error (default="${use_ngram}").
    --ngram_exp       # Directory of the n-gram LM (default="${ngram_exp}").
    --ngram_num       # Order of the n-gram LM (default="${ngram_num}").
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
    --num_splits_asr       # Number of splitting for the training data (default="${num_splits_asr}").
    --asr_speech_fold_length # fold_length for speech data, x100 samples for raw (default="${asr_speech_fold_length}").
    --asr_text_fold_length   # fold_length for text data (default="${asr_text_fold_length}").

    # Decoding related
    --inference_tag       # Suffix to the result dir for decoding (default="${inference_tag}").
    --inference_config    # Config for decoding (default="${inference_config}").
    --inference_args      # Arguments for decoding (default="${inference_args}").
                          # e.g., --inference_args "--beam_size 10"
    --inference_asr_model # ASR model path for decoding (default: valid.<name>.ave.pth from the
                          # training config's first best_model_criterion, else valid.acc.ave.pth).
    --inference_lm        # Language model path for decoding (default="${inference_lm}").
    --inference_ngram     # N-gram LM file for decoding (default="${inference_ngram}").
    --download_model      # Decode with a packed model instead of a trained one: a Hugging Face
                          # repository (fetched with huggingface_hub), a packed .zip or an unpacked
                          # directory with meta.yaml (default="${download_model}").
    --batch_size          # Batch size of decoding (default="${batch_size}").
    --use_maskctc         # Decode with Mask-CTC (default="${use_maskctc}").
    --use_k2              # k2 decoding: not available (k2 is not provided), true is an error
                          # (default="${use_k2}"); its options are accepted:
    --k2_ctc_decoding     # (default="${k2_ctc_decoding}")
    --use_nbest_rescoring # (default="${use_nbest_rescoring}")
    --num_paths           # (default="${num_paths}")
    --nll_batch_size      # (default="${nll_batch_size}")
    --k2_config           # (default="${k2_config}")
    --score_opts          # Extra options of sclite (default="${score_opts}").
    --local_score_opts    # Options of local/score.sh, run after scoring when it exists (default="${local_score_opts}").
    --use_streaming       # Decode chunk by chunk with carried state: causal encoders only, CTC
                          # or transducer search, no LM; chunk size: sim_chunk_length in the
                          # decoding config (default="${use_streaming}").

    # Upload related
    --hf_repo # Hugging Face repository to upload to in stage 15, <user>/<name> (default="${hf_repo}").

    # [Task dependent] Set the datadir name created by local/data.sh
    --train_set # Name of training set (required unless --skip_train true).
    --valid_set # Name of validation set used for monitoring/tuning network training (required unless --skip_train true).
    --test_sets # Names of test sets (required unless --eval_valid_set true).
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

# Check required arguments (as ESPnet: no training set is needed to decode with --skip_train true)
if ! "${skip_train}"; then
    for _opt in train_set valid_set; do
        if [ -z "${!_opt}" ]; then
            log "Error: --${_opt} is required (unless --skip_train true)"
            exit 2
        fi
    done
fi
if ! "${eval_valid_set}" && [ -z "${test_sets}" ]; then
    log "Error: --test_sets is required (unless --eval_valid_set true)"
    exit 2
fi
if "${eval_valid_set}" && [ -z "${valid_set}" ]; then
    log "Error: --eval_valid_set true needs --valid_set"
    exit 2
fi
if [ -n "${train_set}" ] && [ "${train_set}" = "${valid_set}" ]; then
    log "Error: train_set and valid_set must be different. --train_set ${train_set} --valid_set ${valid_set}"
    exit 1
fi
_test_sets=
for dset in ${test_sets}; do
    if [ "${dset}" = "${train_set}" ]; then
        log "Error: train_set and test_sets must be different. --train_set ${train_set} --test_sets ${test_sets}"
        exit 1
    elif [ "${dset}" = "${valid_set}" ]; then
        log "Info: the valid_set '${valid_set}' is in --test_sets: it is decoded from ${dumpdir}/raw/org/${valid_set} (--eval_valid_set true) and removed from the test sets"
        eval_valid_set=true
    elif [[ " ${_test_sets} " == *" ${dset} "* ]]; then
        log "Info: ${dset} is given twice in --test_sets; once is enough"
    else
        _test_sets+="${dset} "
    fi
done
test_sets=${_test_sets% }
if [ "${feats_type}" != raw ]; then
    log "Error: --feats_type ${feats_type} is not supported by this recipe (only raw)"
    exit 2
fi
if "${use_ngram}"; then
    log "Error: --use_ngram true needs KenLM (lmplz, build_binary), which this recipe does not provide: stage 9 is not available; use --use_ngram false (the neural LM of stages 6-8 is --use_lm true)"
    exit 2
fi
if "${use_word_lm}"; then
    log "Error: --use_word_lm true: a word LM is not supported (nor in ESPnet's asr.sh); use --use_word_lm false"
    exit 2
fi
if "${use_k2}"; then
    log "Error: --use_k2 true: k2 decoding is not available in this recipe (k2 is not provided); use --use_k2 false"
    exit 2
fi
if ! "${skip_upload}"; then
    log "Error: --skip_upload false asks for the Zenodo upload of ESPnet's older layout, which is deprecated and not available here; to pack use --skip_packing false, to upload to Hugging Face --skip_upload_hf false --hf_repo <user>/<name>"
    exit 2
fi
if "${use_maskctc}" && "${use_streaming}"; then
    log "Error: --use_maskctc true and --use_streaming true are two different decoders; choose one"
    exit 2
fi
for _opt in num_splits_asr num_splits_lm batch_size asr_speech_fold_length asr_text_fold_length; do
    if ! [[ "${!_opt}" =~ ^[1-9][0-9]*$ ]]; then
        log "Error: --${_opt} must be a positive integer, got '${!_opt}'"
        exit 2
    fi
done
if [ "${asr_task}" != asr ]; then
    log "Error: --asr_task ${asr_task} is not supported by this recipe (only asr)"
    exit 2
fi
data_feats=${dumpdir}/raw

# Stages skipped by the --skip_* flags (as ESPnet's asr.sh: --skip_train keeps stage 3 for the
# test sets; a downloaded model is not packed again)
if "${skip_data_prep}"; then skip_stages+=" 1 2 3 4 5"; fi
if "${skip_train}"; then skip_stages+=" 2 4 5 6 7 8 9 10 11"; fi
if "${skip_eval}"; then skip_stages+=" 12 13"; fi
if "${skip_packing}" || [ -n "${download_model}" ]; then skip_stages+=" 14"; fi
if "${skip_upload_hf}"; then skip_stages+=" 15"; fi
if ! "${use_lm}"; then skip_stages+=" 6 7 8"; fi
log "Skipped stages: $(echo "${skip_stages}" | tr ' ' '\n' | sed '/^$/d' | sort -nu | tr '\n' ' ')"
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
    # $nj: local/data.sh can use asr.sh's --nj as its own default
    nj="${nj}" local/data.sh ${local_data_opts}
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
    if "${skip_train}"; then
        _dsets="${test_sets}"
        if "${eval_valid_set}"; then _dsets="${valid_set} ${_dsets}"; fi
    else
        _dsets="${train_set} ${valid_set} ${test_sets}"
    fi
    log "Stage 3: Format wav.scp: data/ -> ${data_feats}"
    for dset in ${_dsets}; do
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
            --input_sentence_size "${bpe_input_sentence_size}" --bpe_nlsyms "${bpe_nlsyms}" \
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
    # A background job ignores Ctrl-C: on an interrupt stop it (and through it its Slurm jobs),
    # so that a restart does not find a second trainer in the same directory.
    trap 'stop_tree '"${pid}"'; exit 130' INT
    trap 'stop_tree '"${pid}"'; exit 143' TERM HUP
    # tail exits when training does
    tail --pid="${pid}" -s 1 -n +1 -F "${exp}/train.log" 2>/dev/null | ${helper} progress &
    wait "${pid}"
    wait
    trap - INT TERM HUP
}

# stop_tree <pid>: SIGTERM to a process and all its descendants (listed first, so that none is
# missed when its parent goes).
stop_tree() {
    local pids=$1 todo=$1 p children
    while [ -n "${todo}" ]; do
        children=
        for p in ${todo}; do children+=" $(pgrep -P "${p}" || true)"; done
        # shellcheck disable=SC2086
        todo=$(echo ${children})
        pids+=" ${todo}"
    done
    # shellcheck disable=SC2086
    kill -TERM ${pids} 2>/dev/null || true
    wait 2>/dev/null || true
}

# split_once <dir> <N> <file...>: split the files into N parts in <dir> (espnet2.bin.split_scps),
# for training that reads one part per epoch; done once (<dir>/.done).
split_once() {
    local dir=$1 n=$2
    shift 2
    if [ ! -f "${dir}/.done" ]; then
        ${python} -m espnet2.bin.split_scps --scps "$@" --num_splits "${n}" --output_dir "${dir}"
        touch "${dir}/.done"
    else
        log "${dir}/.done exists. Splitting is skipped"
    fi
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
        split_once "${_split_dir}" "${num_splits_lm}" \
            "${data_feats}/lm_train.txt" "${lm_stats_dir}/train/text_shape.${lm_token_type}"
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
# (the training data: stage 11 may read them in splits instead)
_train_data_opts=" --train_data_path_and_name_and_type ${_asr_train_dir}/wav.scp,speech,sound"
_train_data_opts+=" --train_data_path_and_name_and_type ${_asr_train_dir}/text,text,text"
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
            ${_common_opts} ${_train_data_opts} \
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
    if [ "${num_splits_asr}" -gt 1 ]; then
        # Each epoch reads one split of the training data: for corpora too large to index at once.
        _split_dir="${asr_stats_dir}/splits${num_splits_asr}"
        split_once "${_split_dir}" "${num_splits_asr}" "${_asr_train_dir}/wav.scp" "${_asr_train_dir}/text" \
            "${asr_stats_dir}/train/speech_shape" "${asr_stats_dir}/train/text_shape.${token_type}"
        _opts+=" --train_data_path_and_name_and_type ${_split_dir}/wav.scp,speech,sound"
        _opts+=" --train_data_path_and_name_and_type ${_split_dir}/text,text,text"
        _opts+=" --train_shape_file ${_split_dir}/speech_shape"
        _opts+=" --train_shape_file ${_split_dir}/text_shape.${token_type}"
        _opts+=" --multiple_iterator true"
    else
        _opts+="${_train_data_opts}"
        _opts+=" --train_shape_file ${asr_stats_dir}/train/speech_shape"
        _opts+=" --train_shape_file ${asr_stats_dir}/train/text_shape.${token_type}"
    fi
    _opts+=" --valid_shape_file ${asr_stats_dir}/valid/speech_shape"
    _opts+=" --valid_shape_file ${asr_stats_dir}/valid/text_shape.${token_type}"
    _opts+=" --resume true --ignore_init_mismatch ${ignore_init_mismatch}"
    # raw audio: the speech fold length counts hundreds of samples
    _opts+=" --fold_length $((asr_speech_fold_length * 100)) --fold_length ${asr_text_fold_length}"
    _opts+=" --output_dir ${asr_exp}"

    # shellcheck disable=SC2086
    train_model "${asr_exp}" 11 ASR espnet_ssm.bin.asr_train ${_opts} ${asr_args}
fi

if [ -n "${download_model}" ] && { run_stage 12 || run_stage 13; }; then
    # As ESPnet: the model's files are linked into ${expdir}/<name>/ (its LM into .../lm/)
    if [ -e "${download_model}" ]; then
        asr_exp="${expdir}/$(basename "${download_model}" .zip)"
    else
        asr_exp="${expdir}/${download_model}"
    fi
    log "Use ${download_model} for decoding and evaluation: ${asr_exp}"
    _files=$(${helper} pretrained "${download_model}" "${asr_exp}")
    inference_asr_model=$(echo "${_files}" | awk '$1 == "asr_model_file" { print $2 }')
    _lm_file=$(echo "${_files}" | awk '$1 == "lm_file" { print $2 }')
    if [ -n "${_lm_file}" ]; then
        lm_exp="${asr_exp}/lm"
        inference_lm="${_lm_file}"
    elif "${use_lm}"; then
        log "Error: ${download_model} holds no language model: decode without one (--use_lm false)"
        exit 1
    fi
fi

if "${eval_valid_set}"; then
    _eval_sets="org/${valid_set} ${test_sets}"
else
    _eval_sets="${test_sets}"
fi

if run_stage 12; then
    log "Stage 12: Decoding: training_dir=${asr_exp}"
    if "${use_maskctc}"; then
        _inference_module=espnet_ssm.bin.asr_inference_maskctc
    elif "${use_streaming}"; then
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
    for dset in ${_eval_sets}; do
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
                --batch_size "${batch_size}" \
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
    # subword error rates when there is a BPE model (as ESPnet)
    if [ -f "${bpemodel}" ]; then
        _token_types+=" bpe"
    fi
    for dset in ${_eval_sets}; do
        _data="${data_feats}/${dset}"
        _dir="${asr_exp}/${inference_tag}/${dset}"
        ${helper} score --ref "${_data}/text" --hyp "${_dir}/text" --utt2spk "${_data}/utt2spk" \
            --out_dir "${_dir}" --token_types "${_token_types}" --bpemodel "${bpemodel}" \
            --cleaner "${cleaner}" --hyp_cleaner "${hyp_cleaner}" --nlsyms_txt "${nlsyms_txt}" \
            --score_opts "${score_opts}"
    done
    if [ -f local/score.sh ]; then
        # shellcheck disable=SC2086
        local/score.sh ${local_score_opts} "${asr_exp}"
    fi
    # Show results in Markdown syntax
    scripts/utils/show_asr_result.sh "${asr_exp}" > "${asr_exp}"/RESULTS.md
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
    if [ -z "${hf_repo}" ]; then
        log "Error: stage 15 uploads to Hugging Face and needs --hf_repo <user>/<name> (the repository must exist); or skip it with --skip_upload_hf true"
        exit 1
    fi
    _hf_dir="${expdir}/hf_${hf_repo//\//_}"
    log "Stage 15: Upload model to Hugging Face: ${hf_repo} (from ${_hf_dir})"
    if ! command -v git-lfs &> /dev/null; then
        log "Error: git-lfs is needed to upload to Hugging Face (e.g. apt-get install git-lfs)"
        exit 1
    fi
    lm_check_file "${packed_model}" "the packed model of stage 14 (--skip_packing false)"
    rm -rf "${_hf_dir}"
    git clone "https://huggingface.co/${hf_repo}" "${_hf_dir}"
    ${python} -m zipfile -e "${packed_model}" "${_hf_dir}"
    _opts=
    if [ -n "${inference_config}" ]; then
        _opts+="--inference_config ${inference_config} "
    fi
    # shellcheck disable=SC2086
    ${helper} model_card --asr_exp "${asr_exp}" --model_dir "${_hf_dir}" \
        --hf_repo "${hf_repo}" --corpus "$(basename "$(cd ../.. && pwd)")" \
        --run_args "${run_args}" ${_opts} > "${_hf_dir}/README.md"
    log "Upload to https://huggingface.co/${hf_repo}"
    (
        cd "${_hf_dir}"
        git lfs track "*.pth" "*.zip" "*.model" "*.npz" "*.png"
        git add .
        if [ -n "$(git status --porcelain)" ]; then
            git commit -m "Update model"
        fi
        git push
    )
fi

log "Successfully finished. [elapsed=${SECONDS}s]"
