"""Job backend for the recipe: Kaldi ``run.pl``/``slurm.pl``-style command runner.

Usage (what ``cmd.sh``'s ``train_cmd`` / ``cuda_cmd`` / ``decode_cmd`` expand to)::

    jobs.py [--backend local|slurm] [--gpu N] [--num_threads N] [--mem 4G] [--time 1:00:00]
            [--partition P] [--name NAME] [--max_jobs_run N] [--num_nodes N]
            [JOB=1:N] <log> <command> [args...]

Every occurrence of ``JOB`` in ``<log>`` and in the command is replaced by the job index. Each
job's output goes to its own log file, which starts with the command line and ends with
``# Ended (code C) at ...``. The runner waits for all jobs; when any fails it exits non-zero and
names the failed jobs' log files. ``local`` runs the jobs as parallel background processes;
``slurm`` submits each with ``sbatch --wait`` (so the exit status of the job comes back).

Arguments without white space are passed to bash as they are (so ``|`` and ``>`` act as shell
operators, as with run.pl); arguments with white space are quoted.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

JOB_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+):(\d+)$")


def shell_join(args: Sequence[str]) -> str:
    """Join like run.pl: plain words as they are, words with white space quoted."""
    return " ".join(a if a and not re.search(r"\s", a) else shlex.quote(a) for a in args)


def job_script(command: str, cwd: str, num_threads: Optional[int]) -> str:
    """The bash script one job runs; it writes the log header and footer itself."""
    threads = f"export OMP_NUM_THREADS={num_threads}\n" if num_threads else ""
    return (
        "#!/usr/bin/env bash\n"
        f"cd {shlex.quote(cwd)}\n"
        f"{threads}"
        f"echo {shlex.quote('# ' + command)}\n"
        'echo "# Started at $(date)"\necho "#"\n'
        "start=$(date +%s)\n"
        f"( {command} ) 2>&1\n"
        "ret=$?\n"
        f'echo "# Accounting: time=$(( $(date +%s) - start )) threads={num_threads or 1}"\n'
        'echo "# Ended (code $ret) at $(date), elapsed time $(( $(date +%s) - start )) seconds"\n'
        "exit $ret\n"
    )


OPTIONS = {  # option -> (type, default)
    "backend": (str, "local"), "gpu": (int, 0), "num_threads": (int, None), "mem": (str, None),
    "time": (str, None), "partition": (str, None), "name": (str, None), "max_jobs_run": (int, 0),
    "num_nodes": (int, 1),
}
USAGE = "usage: jobs.py [--backend local|slurm] [--gpu N] [--num_threads N] ... [JOB=1:N] <log> <command> [args...]"


class UsageError(ValueError):
    pass


def parse(argv: Sequence[str]) -> Tuple[argparse.Namespace, Optional[Tuple[str, int, int]], str, List[str]]:
    """Split ``argv`` into (options, job range, log, command).

    Options are read only up to the first word that is not an option, so the command's own
    ``--options`` are left alone.
    """
    values = {k: d for k, (_, d) in OPTIONS.items()}
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        name, eq, value = argv[i][2:].partition("=")
        name = name.replace("-", "_")
        if name not in OPTIONS:
            raise UsageError(f"unknown option --{name}\n{USAGE}")
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"option --{name} needs a value\n{USAGE}")
            value, i = argv[i + 1], i + 1
        try:
            values[name] = OPTIONS[name][0](value)
        except ValueError:
            raise UsageError(f"option --{name}: bad value {value!r}") from None
        i += 1
    if values["backend"] not in ("local", "slurm"):
        raise UsageError(f"--backend must be local or slurm, got {values['backend']}")
    rest = list(argv[i:])
    job_range = None
    if rest and JOB_RANGE.match(rest[0]):
        var, first, last = JOB_RANGE.match(rest.pop(0)).groups()
        if int(first) > int(last):
            raise UsageError(f"empty job range {var}={first}:{last}")
        job_range = (var, int(first), int(last))
    if len(rest) < 2:
        raise UsageError(f"expected <log> <command> [args...]\n{USAGE}")
    return argparse.Namespace(**values), job_range, rest[0], rest[1:]


def run(argv: Sequence[str]) -> int:
    """Run the jobs described by ``argv``; return the exit status for the caller."""
    opts, job_range, log, command = parse(argv)
    var, first, last = job_range or ("", 1, 1)
    jobs = []
    for j in range(first, last + 1):
        def sub(s: str) -> str:
            return s.replace(var, str(j)) if var else s

        jobs.append((j, Path(sub(log)), shell_join([sub(a) for a in command])))
    procs: List[Tuple[int, Path, subprocess.Popen]] = []
    failed: List[Tuple[int, Path, int]] = []
    limit = opts.max_jobs_run or len(jobs)

    def reap(block: bool) -> None:
        for item in list(procs):
            j, lg, proc = item
            code = proc.wait() if block else proc.poll()
            if code is not None:
                procs.remove(item)
                if code != 0:
                    failed.append((j, lg, code))

    try:
        for j, lg, cmd in jobs:
            while len(procs) >= limit:
                reap(block=False)
                time.sleep(0.05)
            lg.parent.mkdir(parents=True, exist_ok=True)
            script = job_script(cmd, os.getcwd(), opts.num_threads)
            procs.append((j, lg, _start(opts, script, lg, j)))
        while procs:
            reap(block=False)
            time.sleep(0.05)
    except KeyboardInterrupt:
        for _, _, proc in procs:
            proc.send_signal(signal.SIGTERM)
        raise
    if failed:
        failed.sort()
        names = ", ".join(str(lg) for _, lg, _ in failed)
        print(f"jobs.py: {len(failed)} of {len(jobs)} job(s) failed; see the log(s): {names}", file=sys.stderr)
        j, lg, code = failed[0]
        if lg.is_file():
            tail = lg.read_text(errors="replace").splitlines()[-15:]
            print(f"jobs.py: last lines of {lg} (exit code {code}):", file=sys.stderr)
            print("\n".join("    " + t for t in tail), file=sys.stderr)
        return 1
    return 0


def _start(opts: argparse.Namespace, script: str, log: Path, j: int) -> subprocess.Popen:
    if opts.backend == "local":
        with open(log, "w") as f:
            return subprocess.Popen(["bash", "-c", script], stdout=f, stderr=subprocess.STDOUT)
    qdir = log.parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    script_path = qdir / (log.stem + ".sh")
    script_path.write_text(script)
    cmd = ["sbatch", "--wait", "--parsable", "--output", str(log), "--open-mode", "truncate"]
    cmd += ["--job-name", f"{opts.name or log.stem}"]
    cmd += ["--cpus-per-task", str(opts.num_threads or 1), "--nodes", str(opts.num_nodes)]
    if opts.gpu:
        cmd += [f"--gres=gpu:{opts.gpu}"]
    if opts.mem:
        cmd += ["--mem", opts.mem]
    if opts.time:
        cmd += ["--time", opts.time]
    if opts.partition:
        cmd += ["--partition", opts.partition]
    return subprocess.Popen(cmd + [str(script_path)], stdout=subprocess.DEVNULL)


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        sys.exit(run(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        sys.exit(f"jobs.py: {e}")


if __name__ == "__main__":
    main()
