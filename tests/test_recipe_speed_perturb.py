"""Speed perturbation end to end: asr.sh stages 2-4 with ``--speed_perturb_factors "0.9 1.0 1.1"``
on a tiny generated corpus (pure tones, so that a speed change shows as a pitch change).

What ESPnet's recipe gives and this one must too: ``data/<train>_sp`` holds every training
utterance three times, the 0.9 and 1.1 copies with utterance and speaker ids prefixed ``sp0.9-``
/ ``sp1.1-`` and the 1.0 copy unchanged, ``utt2uniq`` naming each copy's source; texts are
copied; each copy of factor f lasts 1/f of the original (within one 10 ms frame) and is *speed*
perturbed (the tone's frequency times f, as sox ``speed`` does, not a tempo change); the dumped
sets (stage 3) and the filtered sets (stage 4) drop nothing; the valid and test sets are not
perturbed.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf

from espnet_ssm.recipe import datadir
from test_recipe_e2e import recipe_copy

FS = 16000
FRAME = FS // 100  # one 10 ms frame
FACTORS = ("0.9", "1.0", "1.1")


def write_set(work: Path, name: str, utts: Dict[str, tuple]) -> None:
    """data/<name>: one flac per utterance, a tone of (seconds, Hz), and its text."""
    audio = work / "audio" / name
    audio.mkdir(parents=True)
    wav, text, utt2spk = {}, {}, {}
    for utt, (seconds, hz, words) in utts.items():
        t = np.arange(int(seconds * FS)) / FS
        path = audio / f"{utt}.flac"
        sf.write(path, 0.5 * np.sin(2 * np.pi * hz * t), FS, format="FLAC", subtype="PCM_16")
        wav[utt], text[utt], utt2spk[utt] = str(path), words, utt.split("-")[0]
    datadir.write_data_dir(work / "data" / name, {"wav.scp": wav, "text": text,
                                                  "utt2spk": utt2spk})


def dominant_hz(x: np.ndarray) -> float:
    """Frequency of the strongest component (Hann window, spectrum zero-padded to 1 Hz bins)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=FS))
    return float(np.argmax(spectrum))


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory):
    """Run stages 2-4; return (work dir, {utt: (samples, Hz, text)} of the training set)."""
    work = recipe_copy(tmp_path_factory.mktemp("sp"))
    # the global generator is seeded with the seed of the first test that uses this fixture
    rng = np.random.default_rng(np.random.randint(2**31))
    train = {
        f"{spk}-utt{i}": (float(rng.uniform(0.5, 0.9)), float(rng.uniform(300, 2000)),
                          f"WORD{i} {spk.upper()}")
        for i, spk in enumerate(["spka", "spkb", "spka", "spkc"])
    }
    write_set(work, "tr", train)
    write_set(work, "dv", {"spkd-utt0": (0.6, 440.0, "DEV")})
    write_set(work, "ts", {"spke-utt0": (0.6, 440.0, "TEST")})
    args = ["./asr.sh", "--stage", "2", "--stop_stage", "4", "--ngpu", "0", "--nj", "2",
            "--use_lm", "false", "--train_set", "tr", "--valid_set", "dv", "--test_sets", "ts",
            "--token_type", "char", "--asr_tag", "x", "--speed_perturb_factors", " ".join(FACTORS)]
    proc = subprocess.run(args, cwd=work, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lengths = {u: int(sec * FS) for u, (sec, _, _) in train.items()}
    return work, {u: (lengths[u], hz, words) for u, (_, hz, words) in train.items()}


def prefixed(utt: str, factor: str) -> str:
    return utt if factor == "1.0" else f"sp{factor}-{utt}"


def test_every_utterance_three_times_with_espnet_prefixes(perturbed):
    work, train = perturbed
    sp = datadir.load_data_dir(work / "data" / "tr_sp")
    want = {prefixed(u, f): (u, f) for u in train for f in FACTORS}
    assert datadir.validate(work / "data" / "tr_sp") == len(want) == 3 * len(train)
    assert set(sp["wav.scp"]) == set(sp["text"]) == set(want)
    assert sp["utt2uniq"] == {new: utt for new, (utt, _) in want.items()}  # as Kaldi combines
    for new, (utt, factor) in want.items():
        assert sp["text"][new] == train[utt][2]
        spk = utt.split("-")[0]
        assert sp["utt2spk"][new] == (spk if factor == "1.0" else f"sp{factor}-{spk}")


def test_dumped_copies_last_one_over_the_factor_and_are_speed_changed(perturbed):
    """Stage 3's dump: length n / f within a frame (the 1.0 copy exactly n), tone at f x Hz."""
    work, train = perturbed
    dump = work / "dump" / "raw" / "org" / "tr_sp"
    num = {u: int(n) for u, n in datadir.read_table(dump / "utt2num_samples").items()}
    wav = datadir.read_table(dump / "wav.scp")
    text = datadir.read_table(dump / "text")
    assert set(num) == set(wav) == set(text) == {prefixed(u, f) for u in train for f in FACTORS}
    for utt, (n, hz, words) in train.items():
        for factor in FACTORS:
            new, f = prefixed(utt, factor), float(factor)
            if factor == "1.0":
                assert num[new] == n
            assert abs(num[new] - n / f) <= FRAME, (new, num[new], n / f)
            x, fs = sf.read(wav[new])
            assert fs == FS and len(x) == num[new] and text[new] == words
            assert abs(dominant_hz(x) - hz * f) <= 2.0, (new, dominant_hz(x), hz * f)


def test_stage4_keeps_everything_and_other_sets_are_not_perturbed(perturbed):
    work, train = perturbed
    raw = work / "dump" / "raw"
    assert datadir.validate(raw / "tr_sp") == 3 * len(train)
    assert set(datadir.read_table(raw / "tr_sp" / "text")) == set(
        datadir.read_table(raw / "org" / "tr_sp" / "text"))
    assert datadir.read_table(raw / "tr_sp" / "utt2uniq") == datadir.read_table(
        work / "data" / "tr_sp" / "utt2uniq")
    assert set(datadir.read_table(raw / "dv" / "text")) == {"spkd-utt0"}
    assert set(datadir.read_table(raw / "ts" / "text")) == {"spke-utt0"}
    assert not (work / "data" / "dv_sp").exists() and not (raw / "org" / "tr").exists()
