# Job backend for the recipe's parallel jobs (the role of Kaldi's run.pl / slurm.pl).
#
#   local: jobs run as parallel background processes on this machine (default)
#   slurm: each job is submitted with `sbatch --wait`; edit the partitions and memory below
#
# Choose with `export cmd_backend=slurm` before running, or edit the default here.
# Every command takes Kaldi-style options first: [--gpu N] [--num_threads N] [--mem 4G] ...
# followed by [JOB=1:N] <log> <command>; see scripts/utils/run_jobs.sh.
cmd_backend=${cmd_backend:-local}

if [ "${cmd_backend}" = local ]; then
    # CPU jobs that run nj at a time use one thread each.
    export train_cmd="scripts/utils/run_jobs.sh --backend local --num_threads 1"
    export cuda_cmd="scripts/utils/run_jobs.sh --backend local"
    export decode_cmd="scripts/utils/run_jobs.sh --backend local --num_threads 1"
elif [ "${cmd_backend}" = slurm ]; then
    export train_cmd="scripts/utils/run_jobs.sh --backend slurm --mem 4G"
    export cuda_cmd="scripts/utils/run_jobs.sh --backend slurm --mem 32G --num_threads 8"
    export decode_cmd="scripts/utils/run_jobs.sh --backend slurm --mem 8G"
else
    echo "$0: Error: Unknown cmd_backend=${cmd_backend} (local or slurm)" 1>&2
    return 1
fi
