#!/usr/bin/env bash
# LibriSpeech 960 h with an espnet-ssm encoder: ESPnet's usual entry point.
#   ./run.sh                         all stages (1 download/prep ... 13 scoring; 14 packing with
#                                    --skip_packing false)
#   ./run.sh --stage 11 --ngpu 4     resume training; any asr.sh option can be given (see --help)
#   ./run.sh --use_lm false --local_data_opts "--lm_text false"   no LM (and no LM text download)
set -e
set -u
set -o pipefail

train_set="train_960"
valid_set="dev"
test_sets="test_clean test_other dev_clean dev_other"

asr_config=conf/tuning/train_asr_ssm_conformer.yaml
lm_config=conf/tuning/train_lm_transformer2.yaml
inference_config=conf/decode_asr.yaml

./asr.sh \
    --lang en \
    --ngpu 4 \
    --nj 16 \
    --inference_nj 16 \
    --nbpe 5000 \
    --max_wav_duration 30 \
    --speed_perturb_factors "0.9 1.0 1.1" \
    --asr_config "${asr_config}" \
    --use_lm true \
    --lm_config "${lm_config}" \
    --inference_config "${inference_config}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --lm_train_text "data/${train_set}/text data/local/other_text/text" \
    --bpe_train_text "data/${train_set}/text" "$@"
