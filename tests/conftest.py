"""Shared fixtures: a tiny generated ASR dataset in ESPnet's data-directory format."""
from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


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
def tiny_asr_data(tmp_path: Path) -> TinyASRData:
    return make_tiny_asr_data(tmp_path / "data", seed=int.from_bytes(os.urandom(2), "little"))
