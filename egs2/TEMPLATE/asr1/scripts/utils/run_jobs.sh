#!/usr/bin/env bash
# Job backend used by cmd.sh (see espnet_ssm/recipe/jobs.py for the options):
#   run_jobs.sh [--backend local|slurm] [--gpu N] ... [JOB=1:N] <log> <command> [args...]
# Called through its links run.pl (local jobs) and slurm.pl (Slurm; needs --config), the names
# ESPnet's launcher looks for: with slurm.pl it starts multi-node training with srun.
case "$(basename "$0")" in
    run.pl) set -- --backend local "$@" ;;
    slurm.pl) set -- --backend slurm "$@" ;;
esac
exec python3 "$(dirname "$0")/../../pyscripts/helper.py" jobs "$@"
