#!/usr/bin/env bash
# Show the system environments and the evaluation results in Markdown format (RESULTS.md).
# Usage: scripts/utils/show_asr_result.sh [--mindepth 0] [--maxdepth 10] [exp]   (default exp: exp/)
exec python3 "$(dirname "$0")/../../pyscripts/helper.py" results --generated_by "$0" "$@"
