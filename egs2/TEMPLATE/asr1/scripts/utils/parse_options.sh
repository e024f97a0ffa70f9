#!/usr/bin/env bash
# Command-line options for the recipe scripts; source it after setting the defaults:
#
#   stage=1            # every variable set before sourcing is an option: --stage 3
#   . scripts/utils/parse_options.sh
#
# --name value and --name=value set the variable "name" (dashes in the name become
# underscores; option names are lower case). A variable whose default is true or false
# only takes true or false.
# --help / -h prints ${help_message}. An unknown option prints the usage and exits with 1.
# Parsing stops at the first argument that is not an option; it stays in "$@".

_usage() { printf '%s\n' "${help_message:-Usage: $0 [options]}" 1>&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            printf '%s\n' "${help_message:-Usage: $0 [options]}"
            exit 0 ;;
        --*=*)
            _name="${1%%=*}"; _value="${1#*=}"; shift ;;
        --*)
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value" 1>&2; _usage; exit 1
            fi
            _name="$1"; _value="$2"; shift 2 ;;
        *)
            break ;;
    esac
    _name="${_name#--}"
    _name="${_name//-/_}"
    if [[ ! "${_name}" =~ ^[a-z][a-z0-9_]*$ ]] || [ -z "${!_name+set}" ] \
            || [ "${_name}" = help_message ]; then
        echo "$0: unknown option --${_name}" 1>&2
        _usage
        exit 1
    fi
    if [ "${!_name}" = true ] || [ "${!_name}" = false ]; then
        if [ "${_value}" != true ] && [ "${_value}" != false ]; then
            echo "$0: option --${_name} takes true or false, got '${_value}'" 1>&2
            exit 1
        fi
    fi
    printf -v "${_name}" '%s' "${_value}"
done
unset _name _value
true
