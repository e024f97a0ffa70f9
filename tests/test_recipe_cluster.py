"""The recipe's job backend on a cluster and on a GPU machine, with fake Slurm commands.

``sbatch``, ``srun`` and ``scancel`` are stand-ins on PATH that record their arguments:
cmd.sh's Slurm settings come from a ``conf/slurm.conf``-style file, ESPnet's launcher starts
multi-node training with ``srun``, each job's thread count follows its CPUs and processes, an
interrupt cancels the submitted jobs, and local GPU jobs are spread over the visible GPUs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from espnet_ssm.recipe import datadir
from test_recipe_e2e import recipe_copy

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs2" / "TEMPLATE" / "asr1"
RECIPE = REPO / "egs2" / "librispeech" / "asr1"
SLURM_CONF = RECIPE / "local" / "slurm.conf"

FAKE_SBATCH = """#!/usr/bin/env bash
# Records its arguments, prints a job id (as --parsable does), then runs the batch script as
# Slurm would (SLURM_CPUS_PER_TASK from --cpus-per-task), or hangs with FAKE_HANG set.
echo "$*" >> "$FAKE_CALLS/sbatch"
out=/dev/null; cpus=
while [ $# -gt 1 ]; do
    case "$1" in --output) out=$2; shift ;; --cpus-per-task) cpus=$2; shift ;; esac
    shift
done
n=$(basename "${out}" | tr -dc 0-9)
id=$((1000 + ${n:-0}))  # x.3.log -> 1003
echo "${id}"
[ -n "${FAKE_HANG:-}" ] && exec sleep 600
[ -n "${FAKE_SKIP:-}" ] && exit 0
SLURM_CPUS_PER_TASK=${cpus} SLURM_JOB_ID=${id} bash "$1" > "${out}" 2>&1
"""
FAKE_SRUN = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_CALLS/srun"
while [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"""
FAKE_SCANCEL = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_CALLS/scancel"
"""


@pytest.fixture
def slurm(tmp_path) -> Dict[str, str]:
    """An environment whose PATH starts with the fake sbatch/srun/scancel; calls go to FAKE_CALLS."""
    bin_dir, calls = tmp_path / "fakebin", tmp_path / "calls"
    bin_dir.mkdir()
    calls.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # python3 in the job scripts is this interpreter
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, FAKE_CALLS=str(calls))
    env.pop("OMP_NUM_THREADS", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def calls(env: Dict[str, str], name: str) -> List[str]:
    path = Path(env["FAKE_CALLS"]) / name
    return path.read_text().splitlines() if path.is_file() else []


def run_pl(backend: str, args: Sequence[str], cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    """scripts/utils/run.pl or slurm.pl (the names cmd.sh uses) with ``args``."""
    script = TEMPLATE / "scripts" / "utils" / ("slurm.pl" if backend == "slurm" else "run.pl")
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_slurm_conf_translates_options(tmp_path, slurm):
    """Partition by GPU use, time, memory, CPUs and job name come from the slurm.conf file."""
    proc = run_pl("slurm", ["--config", str(SLURM_CONF), "--gpu", "2", "--mem", "8G", "--num_threads", "8",
                            "--time", "2-00:00:00", "JOB=1:2", "l/j.JOB.log", "test", "JOB", "-eq", "1"], tmp_path, slurm)
    assert proc.returncode == 1 and "l/j.2.log" in proc.stderr  # job 2's exit status came back
    sb = calls(slurm, "sbatch")
    assert len(sb) == 2
    for call in sb:
        words = call.split()
        assert words[:1] == ["--export=ALL"] and "--wait" in words and "--parsable" in words
        assert "--partition gpu --gres=gpu:2" in call and "--mem 8G" in call and "--cpus-per-task 8" in call
        assert "--time 2-00:00:00" in call and "--time 24:00:00" not in call
    assert sorted(c.split("--job-name ")[1].split()[0] for c in sb) == ["j.1", "j.2"]
    assert "# Ended (code 0)" in (tmp_path / "l" / "j.1.log").read_text()
    # CPU jobs: the cpu partition and the file's default time limit
    proc = run_pl("slurm", ["--config", str(SLURM_CONF), "--name", "stats", "x.log", "true"], tmp_path, slurm)
    assert proc.returncode == 0, proc.stderr
    cpu = calls(slurm, "sbatch")[-1]
    assert "--partition cpu" in cpu and "--time 24:00:00" in cpu and "--job-name stats" in cpu and "gres" not in cpu


def test_slurm_conf_errors_name_the_file(tmp_path, slurm):
    conf = tmp_path / "slurm.conf"
    conf.write_text("command sbatch\noption gpu=* --gres=gpu:$0\n")
    proc = run_pl("slurm", ["--config", str(conf), "--mem", "4G", "x.log", "true"], tmp_path, slurm)
    assert proc.returncode != 0 and f"{conf} has no 'option mem=...' line for --mem 4G" in proc.stderr
    conf.write_text("command sbatch\noptoin gpu=* --gres=gpu:$0\n")
    proc = run_pl("slurm", ["--config", str(conf), "x.log", "true"], tmp_path, slurm)
    assert proc.returncode != 0 and f"{conf}:2: expected" in proc.stderr
    proc = run_pl("slurm", ["x.log", "true"], tmp_path, slurm)
    assert proc.returncode != 0 and "--backend slurm needs --config" in proc.stderr
    assert not calls(slurm, "sbatch")


def test_cmd_sh_reads_slurm_conf(tmp_path):
    """cmd.sh: conf/slurm.conf when it exists, else the recipe's local/slurm.conf, or $slurm_conf."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "slurm.conf").write_text("command sbatch\n")
    (tmp_path / "cmd.sh").symlink_to(RECIPE / "cmd.sh")

    def cmds(**env: str) -> str:
        code = '. ./cmd.sh && echo "$train_cmd|$cuda_cmd|$decode_cmd"'
        proc = subprocess.run(["bash", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                              env=dict(os.environ, cmd_backend="slurm", **env))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = cmds()
    assert out.count("scripts/utils/slurm.pl --config local/slurm.conf") == 3
    assert "--time 5-00:00:00" in out.split("|")[1]  # training gets its own time limit
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "slurm.conf").write_text("command sbatch\n")
    assert cmds().count("--config conf/slurm.conf") == 3
    site = tmp_path / "site.conf"
    site.write_text("command sbatch\n")
    assert cmds(slurm_conf=str(site)).count(f"--config {site}") == 3
    proc = subprocess.run(["bash", "-c", ". ./cmd.sh"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, cmd_backend="slurm", slurm_conf="/no/such.conf"))
    assert proc.returncode != 0 and "slurm_conf=/no/such.conf not found" in proc.stderr
    local = subprocess.run(["bash", "-c", '. ./cmd.sh && echo "$cuda_cmd"'], cwd=tmp_path, capture_output=True,
                           text=True, env=dict(os.environ, cmd_backend="local"))
    assert local.stdout.strip() == "scripts/utils/run.pl"


def test_multi_node_training_goes_through_srun(tmp_path, slurm):
    """ESPnet's launcher, given cmd.sh's slurm.pl, submits one job over the nodes that runs srun."""
    log = tmp_path / "exp" / "train.log"
    proc = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.launch", "--cmd", f"scripts/utils/slurm.pl --config {SLURM_CONF}",
         "--log", str(log), "--ngpu", "2", "--num_nodes", "3", "--init_file_prefix", str(tmp_path / ".dist_init_"),
         "--", "echo", "trainer"], cwd=TEMPLATE, capture_output=True, text=True, env=slurm)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sb,) = calls(slurm, "sbatch")
    assert "--nodes 3 --ntasks-per-node 1" in sb and "--gres=gpu:2" in sb and "--partition gpu" in sb
    (srun,) = calls(slurm, "srun")
    assert srun.startswith("--export=ALL echo trainer ") and "--dist_launcher slurm" in srun
    assert "trainer --ngpu 2" in log.read_text()


def test_threads_follow_the_jobs_resources(tmp_path, slurm):
    """OMP_NUM_THREADS = the job's CPUs / its processes (one per GPU), locally and under Slurm."""
    show = ["echo", "threads=$OMP_NUM_THREADS"]
    run_pl("local", ["--gpu", "2", "--num_threads", "8", "a.log", *show], tmp_path, slurm)
    assert "threads=4" in (tmp_path / "a.log").read_text()
    run_pl("local", ["--num_threads", "3", "b.log", *show], tmp_path, slurm)
    assert "threads=3" in (tmp_path / "b.log").read_text()
    run_pl("slurm", ["--config", str(SLURM_CONF), "--gpu", "4", "--num_threads", "8", "c.log", *show], tmp_path, slurm)
    assert "threads=2" in (tmp_path / "c.log").read_text()
    run_pl("slurm", ["--config", str(SLURM_CONF), "d.log", *show], tmp_path, slurm)  # Slurm's default: 1 CPU
    assert "threads=1" in (tmp_path / "d.log").read_text()
    kept = dict(slurm, OMP_NUM_THREADS="5")  # set by the caller: kept for local jobs
    run_pl("local", ["e.log", *show], tmp_path, kept)
    assert "threads=5" in (tmp_path / "e.log").read_text()


def test_local_gpu_jobs_spread_over_visible_gpus(tmp_path, slurm):
    def gpus_of_jobs(env: Dict[str, str], gpu: int, n: int, name: str) -> List[str]:
        proc = run_pl("local", ["--gpu", str(gpu), f"JOB=1:{n}", f"{name}.JOB.log", "echo",
                                "gpus=${CUDA_VISIBLE_DEVICES-unset}"], tmp_path, env)
        assert proc.returncode == 0, proc.stderr
        return [next(x for x in (tmp_path / f"{name}.{j}.log").read_text().splitlines() if x.startswith("gpus="))[5:]
                for j in range(1, n + 1)]

    assert gpus_of_jobs(dict(slurm, CUDA_VISIBLE_DEVICES="3,5"), 1, 4, "a") == ["3", "5", "3", "5"]
    assert gpus_of_jobs(dict(slurm, CUDA_VISIBLE_DEVICES="0,1,2,3"), 2, 2, "b") == ["0,1", "2,3"]
    assert gpus_of_jobs(dict(slurm, CUDA_VISIBLE_DEVICES="0,1"), 0, 1, "c") == ["0,1"]  # CPU job: untouched
    # no CUDA_VISIBLE_DEVICES: the GPUs nvidia-smi lists
    smi = Path(slurm["PATH"].split(":")[0]) / "nvidia-smi"
    smi.write_text("#!/usr/bin/env bash\necho 'GPU 0: H100 (UUID: a)'\necho 'GPU 1: H100 (UUID: b)'\n")
    smi.chmod(0o755)
    assert gpus_of_jobs(slurm, 1, 3, "d") == ["0", "1", "0"]


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_submitted_jobs(tmp_path, slurm, signum):
    env = dict(slurm, FAKE_HANG="1")
    script = TEMPLATE / "scripts" / "utils" / "slurm.pl"
    proc = subprocess.Popen([str(script), "--config", str(SLURM_CONF), "JOB=1:3", "l/x.JOB.log", "sleep", "600"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(calls(env, "sbatch")) == 3)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum
    assert calls(env, "scancel") == ["1001 1002 1003"]
    assert "cancelled Slurm job(s) 1001 1002 1003" in err


def test_interrupt_stops_local_jobs_with_their_children(tmp_path, slurm):
    pids = tmp_path / "pids"
    proc = subprocess.Popen([str(TEMPLATE / "scripts" / "utils" / "run.pl"), "JOB=1:2", "l/y.JOB.log", "bash", "-c",
                             f"sleep 600 & echo $! >> {pids}; wait"], cwd=tmp_path, env=slurm)
    wait_for(lambda: pids.is_file() and len(pids.read_text().split()) == 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    for pid in pids.read_text().split():  # the grandchildren are gone too
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], 10)


def test_interrupted_training_cancels_its_slurm_job(tmp_path, slurm):
    """Ctrl-C during stage 11 (the trainer runs in the background, which ignores SIGINT) reaches the
    job runner, which scancels the training job: a restart finds no second trainer."""
    work = recipe_copy(tmp_path)
    env = dict(slurm, FAKE_HANG="1", cmd_backend="slurm")
    proc = subprocess.Popen(["./asr.sh", "--stage", "11", "--stop_stage", "11", "--ngpu", "0", "--use_lm", "false",
                             "--train_set", "tr", "--valid_set", "dv", "--test_sets", "ts", "--token_type", "char",
                             "--asr_tag", "x"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    wait_for(lambda: len(calls(env, "sbatch")) == 1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:]
    assert "--job-name asr_x" in calls(env, "sbatch")[0] and "--time 5-00:00:00" in calls(env, "sbatch")[0]
    assert calls(env, "scancel") == ["1000"]

    def leftover():
        return subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()

    # the killed children may still be exiting when asr.sh has returned: give them a moment
    try:
        wait_for(lambda: not leftover(), timeout=15.0)
    except AssertionError:
        raise AssertionError(f"processes of the interrupted run still alive: {leftover()}")


def test_training_on_splits(tmp_path, slurm):
    """--num_splits_asr 2: stage 11 splits the training data once and trains on the splits only."""
    work = recipe_copy(tmp_path)
    utts = [f"s-u{i}" for i in range(4)]
    for d, files in ((work / "dump/raw/tr", ("wav.scp", "text")),
                     (work / "exp/asr_stats_raw_char/train", ("speech_shape", "text_shape.char"))):
        d.mkdir(parents=True)
        for f in files:
            datadir.write_table(d / f, {u: "x" for u in utts})
    env = dict(slurm, FAKE_SKIP="1", cmd_backend="slurm")
    args = ["./asr.sh", "--stage", "11", "--stop_stage", "11", "--ngpu", "0", "--use_lm", "false", "--train_set", "tr",
            "--valid_set", "dv", "--test_sets", "ts", "--token_type", "char", "--asr_tag", "x", "--num_splits_asr", "2",
            "--asr_speech_fold_length", "500", "--asr_text_fold_length", "100"]
    for _ in range(2):
        proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "splits2/.done exists" in proc.stdout  # split once
    split = work / "exp/asr_stats_raw_char/splits2"
    for f in ("wav.scp", "text", "speech_shape", "text_shape.char"):
        assert sorted(p.name for p in split.glob(f"{f}/split.*")) == ["split.0", "split.1"], f
    train = next(x for x in (work / "exp/asr_x/q/train.sh").read_text().splitlines() if x.startswith("( "))
    assert train.count("--train_data_path_and_name_and_type") == 2 and "--multiple_iterator true" in train
    assert f"--train_data_path_and_name_and_type {split.relative_to(work)}/wav.scp,speech,sound" in train
    assert "--fold_length 50000 --fold_length 100" in train


def test_split_streams_large_files(tmp_path):
    """Stage 6's split of the LM text holds no more than a line in memory."""
    text = tmp_path / "lm_train.txt"
    with open(text, "w") as f:
        for i in range(200_000):
            f.write(f"librispeech_lng_{i:08d} SOME WORDS OF A SENTENCE\n")
    outs = [tmp_path / f"split.{j}" for j in range(1, 4)]
    tracemalloc.start()
    datadir.split_scp(text, outs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak  # the file is 9 MB
    parts = [o.read_text().splitlines() for o in outs]
    assert [len(p) for p in parts] == [66667, 66667, 66666]
    assert sum(parts, []) == text.read_text().splitlines()
