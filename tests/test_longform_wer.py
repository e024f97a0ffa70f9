"""The long-form WER scorer: its counts against a plain word-level edit distance."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from espnet_ssm.streaming import LongFormSpeech2Text
from espnet_ssm.streaming import longform_wer
from test_streaming_speech2text import CAUSAL_MH_SSM, make_model_files, waveform
from test_streaming_ctc import rng  # noqa: F401  (fixture)


def edit_distance(ref, hyp):
    """Levenshtein distance between two word lists (unit costs), a plain DP loop."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i]
        for j, h in enumerate(hyp, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def write_set(root, rng, n):
    root.mkdir(parents=True)
    scp, text = [], []
    for i in range(n):
        key = f"spk-utt{i}"
        sf.write(root / f"{key}.wav", waveform(rng, rng.uniform(0.6, 1.5)).numpy(), 8000,
                 subtype="PCM_16")
        words = " ".join("".join(rng.choice(list("abc"), size=rng.integers(1, 4)))
                         for _ in range(rng.integers(1, 4)))
        scp.append(f"{key} {root / f'{key}.wav'}")
        text.append(f"{key} {words}")
    (root / "wav.scp").write_text("\n".join(scp) + "\n")
    (root / "text").write_text("\n".join(text) + "\n")
    return dict(line.split(" ", 1) for line in text)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_files(tmp_path_factory.mktemp("wer"), "mh_ssm", CAUSAL_MH_SSM)


def test_counts_equal_an_edit_distance_and_subsets_follow_segments(model, tmp_path, rng,
                                                                   capsys):
    config, model_file = model
    orig = tmp_path / "orig"
    refs = write_set(orig, rng, int(rng.integers(3, 6)))
    # a "long" set: the same files, its segments_orig naming a random non-empty subset
    long = tmp_path / "orig_long"
    write_set(long, rng, 2)
    used = sorted(rng.choice(sorted(refs), size=int(rng.integers(1, len(refs))), replace=False))
    (long / "segments_orig").write_text(
        "".join(f"rec0 {u} 0.00 1.00\n" for u in used))
    s2t = LongFormSpeech2Text(config, model_file)
    hyps = {k: (s2t(torch_audio(orig / f"{k}.wav")).text or "").split() for k in refs}
    errors = sum(edit_distance(refs[k].split(), hyps[k]) for k in refs)
    words = sum(len(refs[k].split()) for k in refs)

    got = longform_wer.score_set(s2t, orig)
    assert (got.recordings, got.errors, got.words) == (len(refs), errors, words)
    sub = longform_wer.score_set(s2t, orig, set(used))
    assert sub.recordings == len(used)
    assert sub.errors == sum(edit_distance(refs[k].split(), hyps[k]) for k in used)

    model_dir = config.parent
    longform_wer.main(["--exp_dir", str(model_dir), "--model_file", model_file.name,
                       "--same_utterances", str(orig), str(long)])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| orig")]
    assert [r.split(" | ")[1] for r in rows] == [str(len(refs)), "2", str(len(used))]
    assert f"({errors}/{words})" in rows[0]


def test_a_recording_without_transcript_is_named(model, tmp_path, rng):
    config, model_file = model
    refs = write_set(tmp_path / "d", rng, 2)
    missing = sorted(refs)[0]
    (tmp_path / "d" / "text").write_text(
        "".join(f"{k} {v}\n" for k, v in refs.items() if k != missing))
    with pytest.raises(ValueError, match=missing):
        longform_wer.score_set(LongFormSpeech2Text(config, model_file), tmp_path / "d")


def torch_audio(path):
    import torch

    return torch.from_numpy(sf.read(path, dtype="float32")[0].astype(np.float32))


def test_a_written_table_reads_back(tmp_path, rng):
    scores = [longform_wer.SetScore(name, int(rng.integers(1, 500)), round(float(rng.uniform(0.5, 90)), 1),
                                    int(rng.integers(0, 3000)), int(rng.integers(1, 3000)))
              for name in ("test_synth", "test_synth_long45", longform_wer.same_utterances_name("test_synth"))]
    path = tmp_path / "t.md"
    path.write_text(longform_wer.table("WER of a (b | c)", scores) + "\n")
    assert longform_wer.read_table(path) == scores  # title and header lines are not rows
