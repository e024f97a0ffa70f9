#!/usr/bin/env bash
# Show the system environments and the evaluation results in Markdown format (RESULTS.md).
# Usage: scripts/utils/show_asr_result.sh [--mindepth 0] [--maxdepth 10] [--asr_config <yaml>] [--lm_config <yaml>] [exp]
#        (default exp: exp/; the configs add "- ASR config:" / "- LM config:" lines)
exec python3 "$(dirname "$0")/../../pyscripts/helper.py" results --generated_by "$0" "$@"
