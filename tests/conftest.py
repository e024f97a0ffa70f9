"""Shared fixtures: a tiny generated ASR dataset in ESPnet's data-directory format, and the
random seed of each test.

Every test runs with its own seed: torch's, numpy's and Python's global generators are seeded
with it before the test's fixtures are set up, and the ``seed`` / ``rng`` fixtures hand it out.
A failing test reports its seed in a "seed" section together with the command that replays it
(``TEST_SEED=<seed> pytest <test id>``); without ``TEST_SEED`` each run draws fresh seeds.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import string
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SEED_ENV = "TEST_SEED"
SEED_KEY = pytest.StashKey[int]()


# ----------------------------------------------------------------------------- seeds
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Seed the global generators before the test's fixtures (module-scoped ones included)."""
    given = os.environ.get(SEED_ENV)
    seed = int(given) if given else int.from_bytes(os.urandom(4), "little")
    item.stash[SEED_KEY] = seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and SEED_KEY in item.stash:
        seed = item.stash[SEED_KEY]
        report.sections.append(("seed", f"{SEED_ENV}={seed} pytest '{item.nodeid}'"))


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """This test's seed (the global generators are already seeded with it)."""
    return request.node.stash[SEED_KEY]


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """A numpy generator seeded with this test's seed."""
    return np.random.default_rng(seed)


@dataclass
class TinyASRData:
    """Paths of a tiny dataset usable with ``--train_data_path_and_name_and_type``."""

    root: Path
    wav_scp: Path
    text: Path
    speech_shape: Path
    text_shape: Path
    token_list: Path
    utt_ids: List[str]

    def train_args(self) -> List[str]:
        """ESPnet training options that read this dataset as both train and valid set."""
        args = []
        for split in ("train", "valid"):
            args += [
                f"--{split}_data_path_and_name_and_type", f"{self.wav_scp},speech,sound",
                f"--{split}_data_path_and_name_and_type", f"{self.text},text,text",
                f"--{split}_shape_file", str(self.speech_shape),
                f"--{split}_shape_file", str(self.text_shape),
            ]
        return args + ["--token_list", str(self.token_list), "--token_type", "char"]


def make_tiny_asr_data(root: Path, n_utts: int = 8, seed: int = 0) -> TinyASRData:
    """Write ``n_utts`` short 16 kHz noisy tone recordings with random letter transcripts."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    wav_dir = root / "wav"
    wav_dir.mkdir(exist_ok=True)
    letters = list(string.ascii_uppercase[:8])
    ids, wav_lines, text_lines, sshape, tshape = [], [], [], [], []
    for i in range(n_utts):
        utt = f"spk{i % 2}-utt{i:03d}"
        n = int(16000 * rng.uniform(0.4, 0.8))
        t = np.arange(n) / 16000
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.05 * rng.standard_normal(n)
        path = wav_dir / f"{utt}.wav"
        sf.write(path, audio.astype(np.float32), 16000)
        words = " ".join("".join(rng.choice(letters, size=rng.integers(2, 5))) for _ in range(2))
        ids.append(utt)
        wav_lines.append(f"{utt} {path}")
        text_lines.append(f"{utt} {words}")
        sshape.append(f"{utt} {n}")
        tshape.append(f"{utt} {len(words)}")
    (root / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    (root / "text").write_text("\n".join(text_lines) + "\n")
    (root / "speech_shape").write_text("\n".join(sshape) + "\n")
    (root / "text_shape").write_text("\n".join(tshape) + "\n")
    tokens = ["<blank>", "<unk>", "<space>"] + letters + ["<sos/eos>"]
    (root / "tokens.txt").write_text("\n".join(tokens) + "\n")
    return TinyASRData(
        root, root / "wav.scp", root / "text", root / "speech_shape", root / "text_shape",
        root / "tokens.txt", ids,
    )


@pytest.fixture
def tiny_asr_data(tmp_path: Path, seed: int) -> TinyASRData:
    return make_tiny_asr_data(tmp_path / "data", seed=seed)


# A torchrun gloo worker of torch 2.11 sometimes dies with this C++ abort (SIGABRT, no Python
# traceback) in a tiny CPU DDP run, seemingly while it winds down; torchrun then kills the other.
GLOO_WORKER_ABORT = "terminate called without an active exception"


def free_port() -> int:
    """A TCP port that was free a moment ago (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_training(entry_module: str, args: Sequence[str], out: Path, logs: Path
                 ) -> Callable[[int], List[str]]:
    """The command (given the rendezvous port) of a one-epoch, two-worker CPU DDP run of
    ``python -m entry_module args`` under torchrun, workers' logs in ``logs``."""
    return lambda port: [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(port),
        "--log_dir", str(logs), "--tee", "3",
        "-m", entry_module, *args,
        "--output_dir", str(out), "--ngpu", "0", "--dist_backend", "gloo",
        "--multiprocessing_distributed", "false", "--max_epoch", "1",
        "--batch_type", "unsorted", "--batch_size", "4", "--num_workers", "0",
        "--use_tensorboard", "false", "--num_att_plot", "0",
    ]


def run_ddp(command: Callable[[int], List[str]], clear: Sequence[Path],
            **run_options) -> subprocess.CompletedProcess:
    """``subprocess.run(command(port))`` of a torchrun job, repeated once (fresh port, ``clear``
    emptied) when a worker died of :data:`GLOO_WORKER_ABORT` and of nothing else we can see: an
    upstream teardown race, not a failure of the code under test. Any other failure, or the abort
    twice in a row, is returned as it is for the test to fail on."""
    for attempt in (1, 2):
        proc = subprocess.run(command(free_port()), capture_output=True, text=True, **run_options)
        # a worker's own Python traceback reaches stderr prefixed by torchrun's "[defaultN]:"
        worker_traceback = "]:Traceback (most recent call last)" in proc.stderr
        if proc.returncode == 0 or attempt == 2 or GLOO_WORKER_ABORT not in proc.stderr \
                or worker_traceback:
            return proc
        warnings.warn(f"a gloo worker aborted ({GLOO_WORKER_ABORT!r}); running the job again")
        for path in clear:
            shutil.rmtree(path, ignore_errors=True)
    return proc
