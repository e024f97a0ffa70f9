"""The long-form test-set builder (egs2/librispeech/asr1/local/make_longform_sets.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from espnet_ssm.recipe.datadir import load_data_dir, validate
from test_streaming_ctc import rng  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "egs2/librispeech/asr1/local/make_longform_sets.py"
FS = 1000  # a low rate keeps the files small; the builder is rate-agnostic


def load_script():
    spec = importlib.util.spec_from_file_location("make_longform_sets", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def make_src(root: Path, rng, speakers=("1272-128104", "2035-147960"), n_per_spk=12,
             pipe_every=0, seconds=(3, 12)):
    """Source data dir: utterances of ``seconds`` (a range) with random int16 audio; returns
    their audio."""
    wav_dir = root / "wavs"
    wav_dir.mkdir(parents=True)
    lines = {"wav.scp": [], "text": [], "utt2spk": []}
    audio = {}
    k = 0
    for spk in speakers:
        for i in range(n_per_spk):
            utt = f"{spk}-{i:04d}"
            x = rng.integers(-3000, 3000, size=int(rng.uniform(*seconds) * FS)).astype(np.int16)
            path = wav_dir / f"{utt}.flac"
            sf.write(path, x, FS, subtype="PCM_16")
            audio[utt] = x
            k += 1
            spec = f"flac -c -d -s {path} |" if pipe_every and k % pipe_every == 0 else str(path)
            lines["wav.scp"].append(f"{utt} {spec}")
            lines["text"].append(f"{utt} WORD{k} SAID BY {spk.replace('-', '')}")
            lines["utt2spk"].append(f"{utt} {spk}")
    src = root / "src"
    src.mkdir()
    for name, ls in lines.items():
        (src / name).write_text("\n".join(sorted(ls)) + "\n")
    spk2utt = {}
    for line in sorted(lines["utt2spk"]):
        u, s = line.split()
        spk2utt.setdefault(s, []).append(u)
    (src / "spk2utt").write_text(
        "".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items()))
    )
    return src, audio


def check_output(dst: Path, src: Path, audio, lo, hi, across):
    validate(dst)
    tables = load_data_dir(dst)
    src_text = load_data_dir(src)["text"]
    src_spk = load_data_dir(src)["utt2spk"]
    segments = {}
    for line in (dst / "segments_orig").read_text().splitlines():
        rec, utt, start, end = line.split()
        segments.setdefault(rec, []).append((utt, float(start), float(end)))
    left_out = [line.split()[0] for line in (dst / "left_out").read_text().splitlines()]
    used = [u for segs in segments.values() for u, _, _ in segs]
    # every source utterance is either used exactly once or listed as left out
    assert sorted(used + left_out) == sorted(audio)
    for rec, segs in segments.items():
        segs.sort(key=lambda s: s[1])
        utts = [u for u, _, _ in segs]
        assert utts == sorted(utts)  # consecutive, in order
        if not across:
            assert {src_spk[u] for u in utts} == {tables["utt2spk"][rec]}
        x, rate = sf.read(tables["wav.scp"][rec], dtype="int16")
        assert rate == FS and lo * FS <= len(x) <= hi * FS
        assert int(tables["utt2num_samples"][rec]) == len(x)
        np.testing.assert_array_equal(x, np.concatenate([audio[u] for u in utts]))
        for u, start, end in segs:
            a = int(round(start * FS))
            np.testing.assert_array_equal(x[a : a + len(audio[u])], audio[u])
            assert end - start == pytest.approx(len(audio[u]) / FS, abs=1e-3)
        assert tables["text"][rec] == " ".join(src_text[u] for u in utts)
    return segments


def test_per_speaker_recordings_of_45_to_60_seconds(tmp_path, rng):
    mod = load_script()
    src, audio = make_src(tmp_path, rng, pipe_every=5)
    dst = tmp_path / "long45"
    assert mod.main(["--src", str(src), "--dst", str(dst), "--min_seconds", "45",
                     "--max_seconds", "60"]) == 0
    segments = check_output(dst, src, audio, 45, 60, across=False)
    assert segments  # 12 utterances of 3-12 s per speaker: at least one recording each
    assert {rec.rsplit("-", 2)[0] for rec in segments} <= {"1272-128104", "2035-147960"}


def test_a_readers_chapters_can_be_joined(tmp_path, rng):
    mod = load_script()
    # two chapters of reader 1272, 3 utterances of 7-12 s each: 21-36 s per chapter, 42-72 s
    # together, so a recording of >= 37 s exists only if the reader's chapters are joined
    src, audio = make_src(tmp_path, rng, speakers=("1272-128104", "1272-135031"), n_per_spk=3,
                          seconds=(7, 12))
    args = ["--src", str(src), "--min_seconds", "37", "--max_seconds", "80"]
    assert mod.main(args + ["--dst", str(tmp_path / "per_chapter")]) == 1
    dst = tmp_path / "per_reader"
    assert mod.main(args + ["--dst", str(dst), "--speaker_prefix_sep", "-"]) == 0
    segments = check_output(dst, src, audio, 37, 80, across=True)
    tables = load_data_dir(dst)
    for rec, segs in segments.items():
        assert tables["utt2spk"][rec] == "1272"
        assert {u.rsplit("-", 1)[0] for u, _, _ in segs} == {"1272-128104", "1272-135031"}
    assert mod.main(args + ["--dst", str(tmp_path / "x"), "--speaker_prefix_sep", ""]) == 1


def test_across_speakers(tmp_path, rng):
    mod = load_script()
    src, audio = make_src(tmp_path, rng, n_per_spk=15)
    dst = tmp_path / "long2min"
    assert mod.main(["--src", str(src), "--dst", str(dst), "--min_seconds", "120",
                     "--max_seconds", "150", "--across_speakers"]) == 0
    segments = check_output(dst, src, audio, 120, 150, across=True)
    assert segments
    tables = load_data_dir(dst)
    assert all(tables["utt2spk"][rec] == rec for rec in segments)  # one pseudo-speaker each


def test_grouping_rules():
    mod = load_script()
    U = mod.Utterance
    utts = [U("a", "s", 30), U("b", "s", 20), U("c", "s", 70), U("d", "s", 40), U("e", "s", 25),
            U("f", "s", 10)]
    recs, left = mod.group(utts, 45, 60)
    # a+b reaches 45; c alone exceeds 60; d+e would exceed 60 before reaching 45, so d is
    # abandoned; e+f (35) never reaches 45.
    assert [[u.utt for u in r.utts] for r in recs] == [["a", "b"]]
    left = dict(left)
    assert sorted(left) == ["c", "d", "e", "f"]
    assert "longer" in left["c"] and "could not reach" in left["d"]
    assert "remainder" in left["e"] and "remainder" in left["f"]


def test_too_little_audio_is_an_error(tmp_path, rng):
    mod = load_script()
    src, _ = make_src(tmp_path, rng, n_per_spk=2)
    rc = mod.main(["--src", str(src), "--dst", str(tmp_path / "x"), "--min_seconds", "600",
                   "--max_seconds", "700"])
    assert rc == 1


def test_bad_arguments_and_unreadable_audio(tmp_path, rng, capsys):
    mod = load_script()
    src, _ = make_src(tmp_path, rng, n_per_spk=2)
    assert mod.main(["--src", str(src), "--dst", str(tmp_path / "x"), "--min_seconds", "60",
                     "--max_seconds", "45"]) == 1
    assert "min_seconds" in capsys.readouterr().err
    scp = (src / "wav.scp").read_text().splitlines()
    broken = scp[0].split()[0]
    scp[0] = f"{broken} {tmp_path / 'missing.flac'}"
    (src / "wav.scp").write_text("\n".join(scp) + "\n")
    assert mod.main(["--src", str(src), "--dst", str(tmp_path / "y"), "--min_seconds", "5",
                     "--max_seconds", "30"]) == 1
    assert broken in capsys.readouterr().err
