#!/usr/bin/env bash
# Job backend used by cmd.sh (the role of Kaldi's run.pl / slurm.pl); see
# espnet_ssm/recipe/jobs.py for the options:
#   run_jobs.sh [--backend local|slurm] [--gpu N] ... [JOB=1:N] <log> <command> [args...]
exec python3 "$(dirname "$0")/../../pyscripts/helper.py" jobs "$@"
