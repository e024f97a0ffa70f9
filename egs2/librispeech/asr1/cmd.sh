# Job backend for the recipe's parallel jobs (the role of ESPnet's cmd.sh):
#
#   local: jobs run as parallel background processes on this machine (default); GPU jobs are
#          spread over the visible GPUs
#   slurm: each job is submitted with sbatch; partitions, time limits and resources come from
#          conf/slurm.conf when it exists, else from local/slurm.conf (or export slurm_conf=<file>)
#
# Choose with `export cmd_backend=slurm` before running, or edit the default here.
# Every command takes Kaldi-style options first: [--gpu N] [--num_threads N] [--mem 4G] [--time T] ...
# followed by [JOB=1:N] <log> <command>; see espnet_ssm/recipe/jobs.py. Each job's OMP_NUM_THREADS
# is its CPUs divided by its processes (one per GPU).
cmd_backend=${cmd_backend:-local}

if [ "${cmd_backend}" = local ]; then
    # CPU jobs that run nj at a time use one thread each.
    export train_cmd="scripts/utils/run.pl --num_threads 1"
    export cuda_cmd="scripts/utils/run.pl"
    export decode_cmd="scripts/utils/run.pl --num_threads 1"
elif [ "${cmd_backend}" = slurm ]; then
    if [ -z "${slurm_conf:-}" ]; then
        slurm_conf=conf/slurm.conf
        [ -f "${slurm_conf}" ] || slurm_conf=local/slurm.conf
    fi
    if [ ! -f "${slurm_conf}" ]; then
        echo "$0: Error: slurm_conf=${slurm_conf} not found" 1>&2
        return 1
    fi
    export train_cmd="scripts/utils/slurm.pl --config ${slurm_conf} --mem 4G"
    # Training runs for days: its own time limit; 8 CPUs shared by the job's processes.
    export cuda_cmd="scripts/utils/slurm.pl --config ${slurm_conf} --mem 32G --num_threads 8 --time 5-00:00:00"
    export decode_cmd="scripts/utils/slurm.pl --config ${slurm_conf} --mem 8G"
else
    echo "$0: Error: Unknown cmd_backend=${cmd_backend} (local or slurm)" 1>&2
    return 1
fi
