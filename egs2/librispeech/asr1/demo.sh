#!/usr/bin/env bash
# The demo: this recipe's stages 1-14, unchanged, on a small synthetic corpus in LibriSpeech's
# own layout (open-vocabulary English text read by espeak-ng voices; the test voices do not occur
# in training; a second test part whose text comes from another source; an LM text like openslr
# 11's), with a small espnet-ssm encoder and an LSTM LM on the CPU. The test parts are decoded
# twice, with the LM and greedily without it. Ends with the wall time of each step, the error-rate
# tables, example transcripts and where the packed model and the training curves are.
#
#   cd egs2/librispeech/asr1 && ./demo.sh          (what `make demo` runs)
set -e
set -u
set -o pipefail

. scripts/utils/log.sh
SECONDS=0

stage=1            # recipe stage to start from (the corpus is made first; a finished one is reused)
stop_stage=14      # last recipe stage
corpus_dir=demo_corpus # the corpus is written to <corpus_dir>/LibriSpeech/
# 2100 training utterances and 20k LM sentences (rather than 2400 and 30k) make room for the LM
# stages within the demo's 15 minutes.
parts="train-synth dev-synth test-synth test-other-source" # the last part's text is from another source
sizes="2100 100 200 200" # utterances in each part
lm_text_sentences=20000 # sentences in the corpus' LM text (no dev/test sentence among them)
seed=0
nj=2
asr_config=conf/demo/train_asr_demo_ssm_conformer.yaml
use_lm=true        # train the LM (stages 6-8) and decode with it
lm_config=conf/demo/train_lm_demo.yaml
inference_config=  # default: conf/demo/decode_asr_demo_lm.yaml, or decode_asr_demo.yaml (greedy CTC) without LM
use_streaming=false # stage 12 decodes chunk by chunk (causal models; needs --use_lm false)
token_type=char
nbpe=512           # units when --token_type bpe
asr_args=
asr_tag=           # default: <asr_config name>_raw_en_<token_type>[<nbpe>]
eval_valid_set=false # stage 12-13 also decode and score the dev part

help_message=$(cat << EOF
Usage: $0 [options]
  --stage / --stop_stage  # recipe stages to run (default: ${stage} / ${stop_stage}); the corpus is made first
  --corpus_dir            # where the synthetic LibriSpeech goes (default: ${corpus_dir})
  --sizes                 # utterances in train, dev, test, test-other-source (default: "${sizes}")
  --lm_text_sentences     # sentences in the LM text (default: ${lm_text_sentences})
  --seed                  # corpus seed (default: ${seed})
  --nj                    # parallel jobs (default: ${nj})
  --asr_config            # training config (default: ${asr_config})
  --use_lm                # LM stages 6-8 and decoding with the LM (default: ${use_lm})
  --lm_config             # LM training config (default: ${lm_config})
  --inference_config      # decoding config (default: conf/demo/decode_asr_demo_lm.yaml with the LM,
                          # conf/demo/decode_asr_demo.yaml without)
  --use_streaming         # stage 12 decodes chunk by chunk, causal models only (default: ${use_streaming})
  --token_type / --nbpe   # (default: ${token_type} / ${nbpe})
  --asr_args              # extra training options, e.g. "--max_epoch 2"
  --asr_tag               # experiment name exp/asr_<asr_tag> (default: <asr_config name>_raw_en_<token_type>)
  --eval_valid_set        # stages 12-13 also decode and score the dev part (default: ${eval_valid_set})
EOF
)
. scripts/utils/parse_options.sh
if [ $# -ne 0 ]; then
    echo "${help_message}" 1>&2
    exit 2
fi
. ./path.sh

test_sets=
for _part in ${parts#* * }; do
    test_sets+="${_part//-/_} "
done
if [ -z "${inference_config}" ]; then
    if "${use_lm}"; then
        inference_config=conf/demo/decode_asr_demo_lm.yaml
    else
        inference_config=conf/demo/decode_asr_demo.yaml
    fi
fi
if [ -z "${asr_tag}" ]; then
    asr_tag="$(basename "${asr_config}" .yaml)_raw_en_${token_type}"
    if [ "${token_type}" = bpe ]; then
        asr_tag+="${nbpe}"
    fi
fi
asr_exp="exp/asr_${asr_tag}"
stage_times="exp/demo_stage_times_${asr_tag}.tsv" # "<step>\t<seconds>" per step, for the closing table
if [ "${stage}" -gt 1 ] || [ "${stop_stage}" -lt 14 ]; then
    # a partial run times itself apart, so that the whole run's times (the demo's time) stay
    stage_times="exp/demo_stage_times_${asr_tag}_stages${stage}-${stop_stage}.tsv"
fi
mkdir -p exp
: > "${stage_times}"

# timed <step> <command...>: run a step and append its wall time to ${stage_times}.
timed() {
    local step=$1 start=${SECONDS}
    shift
    "$@"
    printf '%s\t%d\n' "${step}" $((SECONDS - start)) >> "${stage_times}"
}

log "Synthesising the demo corpus (${sizes} utterances) in ${corpus_dir}/LibriSpeech"
timed corpus python3 pyscripts/helper.py synth_corpus "${corpus_dir}" --parts ${parts} --sizes ${sizes} \
    --seed "${seed}" --nj "${nj}" --lm_text_sentences "${lm_text_sentences}"

run_opts=(
    --ngpu 0
    --nj "${nj}"
    --inference_nj "${nj}"
    --local_data_opts "--librispeech_dir ${corpus_dir} --download false --parts ${parts// /,} --train_parts train-synth --train_set train_synth --valid_parts dev-synth --valid_set dev_synth --lm_text ${use_lm}"
    --train_set train_synth
    --valid_set dev_synth
    --test_sets "${test_sets% }"
    --speed_perturb_factors ""
    --token_type "${token_type}"
    --nbpe "${nbpe}"
    --asr_config "${asr_config}"
    --asr_args "${asr_args}"
    --asr_tag "${asr_tag}"
    --use_lm "${use_lm}"
    --lm_config "${lm_config}"
    --lm_train_text "data/train_synth/text data/local/other_text/text"
    --bpe_train_text data/train_synth/text
    --inference_config "${inference_config}"
    --inference_asr_model valid.loss.ave.pth
    --use_streaming "${use_streaming}"
    --eval_valid_set "${eval_valid_set}"
    --skip_packing false
)
# One run.sh call per stage (the same stages a single call would run) so that each is timed.
_stages="1 2 3 4 5 10 11 12 13 14"
if "${use_lm}"; then
    _stages="1 2 3 4 5 6 7 8 10 11 12 13 14"
fi
for s in ${_stages}; do
    if [ "${s}" -ge "${stage}" ] && [ "${s}" -le "${stop_stage}" ]; then
        timed "stage ${s}" ./run.sh --stage "${s}" --stop_stage "${s}" "${run_opts[@]}"
    fi
    if [ "${s}" = 13 ] && "${use_lm}" && [ "${stage}" -le 12 ] && [ "${stop_stage}" -ge 13 ]; then
        # The same acoustic model without the LM: greedy CTC (a few seconds per test part).
        timed "stages 12-13 greedy" ./run.sh --stage 12 --stop_stage 13 "${run_opts[@]}" \
            --use_lm false --inference_config conf/demo/decode_asr_demo.yaml
    fi
done

if [ "${stop_stage}" -ge 13 ]; then
    python3 pyscripts/helper.py summary --asr_exp "${asr_exp}" --data_feats dump/raw --elapsed "${SECONDS}" \
        --stage_times "${stage_times}" --decode_config "${inference_config}"
fi
