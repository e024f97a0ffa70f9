#!/usr/bin/env bash
# Shared helpers of the recipe scripts; source it: . scripts/utils/log.sh

# log <message>: time-stamped message naming the calling script, line and function.
log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# min <n> <n>...: the smallest integer argument.
min() {
    local a b
    a=$1
    for b in "$@"; do
        if [ "${b}" -le "${a}" ]; then a="${b}"; fi
    done
    echo "${a}"
}
