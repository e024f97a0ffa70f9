"""Job backend for the recipe: Kaldi ``run.pl``/``slurm.pl``-style command runner.

Usage (what ``cmd.sh``'s ``train_cmd`` / ``cuda_cmd`` / ``decode_cmd`` expand to)::

    jobs.py [--backend local|slurm] [--config slurm.conf] [--gpu N] [--num_threads N] [--mem 4G]
            [--time 1:00:00] [--partition P] [--name NAME] [--max_jobs_run N] [--num_nodes N]
            [JOB=1:N] <log> <command> [args...]

Every occurrence of ``JOB`` in ``<log>`` and in the command is replaced by the job index. Each
job's output goes to its own log file, which starts with the command line and ends with
``# Ended (code C) at ...``. The runner waits for all jobs; when any fails it exits non-zero and
names the failed jobs' log files.

``local`` runs the jobs as parallel background processes. A job with ``--gpu N`` gets its own
``CUDA_VISIBLE_DEVICES``: the visible GPUs (``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi -L``) are
handed out N at a time, round robin over the jobs.

``slurm`` submits each job with ``sbatch --wait --parsable`` (so the exit status of the job comes
back). The sbatch options come from ``--config``, a file in the format of ESPnet's / Kaldi's
``conf/slurm.conf``::

    command sbatch --export=ALL          # the submit command and its fixed options
    default gpu=0                        # the value an option takes when it is not given
    option gpu=0 -p cpu                  # options for one exact value ...
    option gpu=* -p gpu --gres=gpu:$0    # ... or for any other value ($0 = the value)

``--gpu``, ``--num_threads``, ``--mem``, ``--time``, ``--name``, ``--num_nodes`` and
``--partition`` are translated through it; one without a line there is an error.

Threads: a job exports ``OMP_NUM_THREADS`` = its CPUs (``--num_threads``; under Slurm the
allocation's ``SLURM_CPUS_PER_TASK``; locally, unless already set, the machine's CPUs shared
among the jobs running at once) divided by its processes (``--gpu`` N trains N processes).

An interrupt (SIGINT, SIGTERM, SIGHUP) stops every local job with all its child processes and
``scancel``s every submitted Slurm job before the runner exits.

Arguments without white space are passed to bash as they are (so ``|`` and ``>`` act as shell
operators, as with run.pl); arguments with white space are quoted.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

JOB_RANGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+):(\d+)$")


def shell_join(args: Sequence[str]) -> str:
    """Join like run.pl: plain words as they are, words with white space quoted."""
    return " ".join(a if a and not re.search(r"\s", a) else shlex.quote(a) for a in args)


def job_script(command: str, cwd: str, cpus: Optional[str], procs: int, env: Dict[str, str]) -> str:
    """The bash script one job runs; it writes the log header and footer itself.

    ``cpus`` is a shell word for the job's CPU count (None: leave ``OMP_NUM_THREADS`` alone);
    each of the job's ``procs`` processes gets an equal share of them.
    """
    lines = ["#!/usr/bin/env bash", f"cd {shlex.quote(cwd)}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    if cpus is not None:
        lines += [f"_cpus={cpus}", f"export OMP_NUM_THREADS=$(( _cpus / {procs} > 0 ? _cpus / {procs} : 1 ))"]
    lines += [
        f"echo {shlex.quote('# ' + command)}",
        'echo "# Started at $(date)"',
        'echo "#"',
        "start=$(date +%s)",
        f"( {command} ) 2>&1",
        "ret=$?",
        'echo "# Accounting: time=$(( $(date +%s) - start )) threads=${OMP_NUM_THREADS:-1}"',
        'echo "# Ended (code $ret) at $(date), elapsed time $(( $(date +%s) - start )) seconds"',
        "exit $ret",
    ]
    return "\n".join(lines) + "\n"


OPTIONS = {  # option -> (type, default)
    "backend": (str, "local"), "config": (str, None), "gpu": (int, 0), "num_threads": (int, None),
    "mem": (str, None), "time": (str, None), "partition": (str, None), "name": (str, None),
    "max_jobs_run": (int, 0), "num_nodes": (int, 1),
}
# Options translated into sbatch options through the Slurm config.
SLURM_OPTIONS = ("gpu", "num_threads", "mem", "time", "name", "num_nodes", "partition")
USAGE = ("usage: jobs.py [--backend local|slurm] [--config slurm.conf] [--gpu N] [--num_threads N] ... "
         "[JOB=1:N] <log> <command> [args...]")


class UsageError(ValueError):
    pass


@dataclass
class SlurmConfig:
    """A ``conf/slurm.conf``-style file: submit command, defaults and per-option sbatch options."""

    path: str
    command: List[str] = field(default_factory=lambda: ["sbatch"])
    defaults: Dict[str, str] = field(default_factory=dict)
    exact: Dict[Tuple[str, str], List[str]] = field(default_factory=dict)
    wildcard: Dict[str, List[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str) -> "SlurmConfig":
        """Parse ``path``; a line that is none of command/default/option is an error naming it."""
        conf = cls(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--config: cannot read {path}: {e.strerror}") from None
        for n, raw in enumerate(text.splitlines(), 1):
            line = re.sub(r"(^|\s)#.*", "", raw).strip()
            if not line:
                continue
            words = line.split()
            kind, rest = words[0], words[1:]
            if kind == "command" and rest:
                conf.command = rest
                continue
            m = re.fullmatch(r"([a-z_]+)=(\S+)", rest[0]) if rest else None
            if kind == "default" and m and len(rest) == 1:
                conf.defaults[m.group(1)] = m.group(2)
            elif kind == "option" and m:
                if m.group(2) == "*":
                    conf.wildcard[m.group(1)] = rest[1:]
                else:
                    conf.exact[(m.group(1), m.group(2))] = rest[1:]
            else:
                raise UsageError(f"{path}:{n}: expected 'command ...', 'default NAME=VALUE' or "
                                 f"'option NAME=VALUE|* [sbatch options]', got: {raw.strip()}")
        return conf

    def sbatch_args(self, given: Dict[str, str]) -> List[str]:
        """sbatch options for the given option values (the config's defaults filled in)."""
        values = dict(self.defaults)
        values.update(given)
        out: List[str] = []
        for name, value in values.items():
            if (name, value) in self.exact:
                out += self.exact[(name, value)]
            elif name in self.wildcard:
                out += [w.replace("$0", value) for w in self.wildcard[name]]
            else:
                raise UsageError(f"{self.path} has no 'option {name}=...' line for --{name} {value}")
        return out


def parse(argv: Sequence[str]) -> Tuple[argparse.Namespace, Optional[Tuple[str, int, int]], str, List[str]]:
    """Split ``argv`` into (options, job range, log, command).

    Options are read only up to the first word that is not an option, so the command's own
    ``--options`` are left alone. ``options.given`` lists the options set on the command line.
    """
    values = {k: d for k, (_, d) in OPTIONS.items()}
    given: List[str] = []
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
        given.append(name)
        i += 1
    if values["backend"] not in ("local", "slurm"):
        raise UsageError(f"--backend must be local or slurm, got {values['backend']}")
    if values["backend"] == "slurm" and not values["config"]:
        raise UsageError("--backend slurm needs --config <slurm.conf> (see cmd.sh)")
    rest = list(argv[i:])
    job_range = None
    if rest and JOB_RANGE.match(rest[0]):
        var, first, last = JOB_RANGE.match(rest.pop(0)).groups()
        if int(first) > int(last):
            raise UsageError(f"empty job range {var}={first}:{last}")
        job_range = (var, int(first), int(last))
    if len(rest) < 2:
        raise UsageError(f"expected <log> <command> [args...]\n{USAGE}")
    return argparse.Namespace(**values, given=given), job_range, rest[0], rest[1:]


def visible_gpus() -> List[str]:
    """The GPUs jobs may use: ``CUDA_VISIBLE_DEVICES`` when set, else those ``nvidia-smi -L`` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def descendants(pid: int) -> List[int]:
    """``pid``'s child processes, their children, ... (read from /proc; empty where there is none)."""
    children: Dict[int, List[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Interrupted(Exception):
    """A signal asked the runner to stop."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Job:
    index: int
    log: Path
    proc: subprocess.Popen
    slurm_id: List[str] = field(default_factory=list)  # filled by `reader` once sbatch has submitted
    reader: Optional[threading.Thread] = None

    def read_slurm_id(self) -> None:
        """Start a thread that takes the job id from ``sbatch --parsable``'s first output line."""
        def read() -> None:
            line = self.proc.stdout.readline().strip()
            if line:
                self.slurm_id.append(line.split(";")[0])
            self.proc.stdout.read()  # sbatch --wait prints nothing more; keep the pipe drained

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()


def run(argv: Sequence[str]) -> int:
    """Run the jobs described by ``argv``; return the exit status for the caller."""
    opts, job_range, log, command = parse(argv)
    conf = SlurmConfig.read(opts.config) if opts.backend == "slurm" else None
    var, first, last = job_range or ("", 1, 1)
    todo = []
    for j in range(first, last + 1):
        def sub(s: str) -> str:
            return s.replace(var, str(j)) if var else s

        todo.append((j, Path(sub(log)), shell_join([sub(a) for a in command])))
    limit = opts.max_jobs_run or len(todo)
    gpus = visible_gpus() if opts.backend == "local" and opts.gpu > 0 else []
    procs_per_job = max(1, opts.gpu)
    running: List[Job] = []
    submitted: List[Job] = []
    failed: List[Tuple[int, Path, int]] = []

    def reap() -> None:
        for job in list(running):
            code = job.proc.poll()
            if code is not None:
                running.remove(job)
                if code != 0:
                    failed.append((job.index, job.log, code))

    def on_signal(signum, _frame):
        raise Interrupted(signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        for n, (j, lg, cmd) in enumerate(todo):
            while len(running) >= limit:
                reap()
                time.sleep(0.05)
            lg.parent.mkdir(parents=True, exist_ok=True)
            env = {}
            if gpus:
                first_gpu = n * opts.gpu
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[(first_gpu + k) % len(gpus)] for k in range(opts.gpu))
            if opts.num_threads:
                cpus: Optional[str] = str(opts.num_threads)
            elif conf is not None:
                cpus = "${SLURM_CPUS_PER_TASK:-1}"
            elif "OMP_NUM_THREADS" in os.environ:
                cpus = None  # the caller's choice stays
            else:
                cpus = str(max(1, (os.cpu_count() or 1) // min(limit, len(todo))))
            script = job_script(cmd, os.getcwd(), cpus, procs_per_job, env)
            job = Job(j, lg, _start(opts, conf, script, lg))
            running.append(job)
            if conf is not None:
                job.read_slurm_id()
                submitted.append(job)
        while running:
            reap()
            time.sleep(0.05)
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stop(running, submitted)
        print(f"jobs.py: interrupted ({signal.Signals(signum).name}); stopped {len(running)} running job(s)"
              + (f", cancelled Slurm job(s) {' '.join(i for j in submitted for i in j.slurm_id)}" if submitted else ""),
              file=sys.stderr)
        return 128 + signum
    if failed:
        failed.sort()
        names = ", ".join(str(lg) for _, lg, _ in failed)
        print(f"jobs.py: {len(failed)} of {len(todo)} job(s) failed; see the log(s): {names}", file=sys.stderr)
        j, lg, code = failed[0]
        if lg.is_file():
            tail = lg.read_text(errors="replace").splitlines()[-15:]
            print(f"jobs.py: last lines of {lg} (exit code {code}):", file=sys.stderr)
            print("\n".join("    " + t for t in tail), file=sys.stderr)
        return 1
    return 0


def stop(running: Sequence[Job], submitted: Sequence[Job]) -> None:
    """Cancel the submitted Slurm jobs and terminate the local processes with all their children."""
    for job in submitted:
        if not job.slurm_id and job.reader is not None and job.proc.poll() is None:
            job.reader.join(timeout=5)  # submitted just now: its id is on the way
    ids = [i for job in submitted for i in job.slurm_id]
    if ids:
        subprocess.run(["scancel", *ids], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = [p for job in running for p in [job.proc.pid, *descendants(job.proc.pid)]]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for job in running:
        try:
            job.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            job.proc.kill()


def _start(opts: argparse.Namespace, conf: Optional[SlurmConfig], script: str, log: Path) -> subprocess.Popen:
    if conf is None:
        with open(log, "w") as f:
            return subprocess.Popen(["bash", "-c", script], stdout=f, stderr=subprocess.STDOUT)
    qdir = log.parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    script_path = qdir / (log.stem + ".sh")
    script_path.write_text(script)
    given = {k: str(getattr(opts, k)) for k in SLURM_OPTIONS if k in opts.given}
    given.setdefault("name", log.stem)
    cmd = conf.command + conf.sbatch_args(given)
    cmd += ["--wait", "--parsable", "--output", str(log), "--open-mode", "truncate", str(script_path)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    try:
        sys.exit(run(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        sys.exit(f"jobs.py: {e}")


if __name__ == "__main__":
    main()
