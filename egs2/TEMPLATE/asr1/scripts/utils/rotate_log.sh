#!/usr/bin/env bash
# rotate_log.sh <log> [max]: keep earlier runs' logs as <name>.1.log (newest) ... <name>.<max>.log,
# as ESPnet's launcher does for train.log, so that a resumed training keeps its history.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "Usage: $0 <log> [max=1000]" 1>&2
    exit 1
fi
log=$1
max=${2:-1000}
stem="${log%.log}"
[ -f "${log}" ] || exit 0
rm -f "${stem}.${max}.log"
for ((i = max - 1; i >= 1; i--)); do
    if [ -f "${stem}.${i}.log" ]; then mv "${stem}.${i}.log" "${stem}.$((i + 1)).log"; fi
done
mv "${log}" "${stem}.1.log"
