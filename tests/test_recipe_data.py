"""Recipe data helpers: LibriSpeech preparation and its bad-input errors, Kaldi data directories,
filtering, speed perturbation, audio dump, sentencepiece token lists (the synthetic demo corpus:
test_demo_corpus.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import sentencepiece as spm
import soundfile as sf

from espnet_ssm.recipe import datadir, filter_data, format_wav, librispeech, perturb, tokens
from espnet_ssm.recipe.datadir import DataDirError
from espnet_ssm.recipe.librispeech import CorpusError

FS = 16000


def write_flac(path: Path, seconds: float, rng: np.random.Generator, fs: int = FS) -> int:
    n = int(seconds * fs)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.1 * rng.standard_normal(n)).astype(np.float32), fs, format="FLAC", subtype="PCM_16")
    return n


def make_corpus(root: Path, rng: np.random.Generator, part: str = "dev-clean") -> Dict[str, str]:
    """LibriSpeech layout: readers 11 (F) and 22 (M), two chapters each, three utterances each."""
    texts = {}
    for reader in ("11", "22"):
        for chapter in ("100", "200"):
            d = root / "LibriSpeech" / part / reader / chapter
            lines = []
            for k in range(3):
                utt = f"{reader}-{chapter}-{k:04d}"
                write_flac(d / f"{utt}.flac", rng.uniform(0.2, 0.4), rng)
                words = " ".join(rng.choice(["HELLO", "WORLD", "IT'S", "A", "TEST"], size=rng.integers(1, 5)))
                texts[utt] = words
                lines.append(f"{utt} {words}\n")
            (d / f"{reader}-{chapter}.trans.txt").write_text("".join(lines))
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text(
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n"
        "11   | F | dev-clean        |  8.01 | Somebody\n"
        "22   | M | dev-clean        |  8.02 | Somebody Else\n"
    )
    return texts


@pytest.fixture
def corpus(tmp_path: Path, rng: np.random.Generator):
    texts = make_corpus(tmp_path / "corpus", rng)
    return tmp_path / "corpus" / "LibriSpeech" / "dev-clean", texts


# ----------------------------------------------------------------------------- LibriSpeech prep
def test_prepare_part_writes_kaldi_data_dir(corpus, tmp_path):
    part, texts = corpus
    out = tmp_path / "data" / "dev_clean"
    assert librispeech.prepare_part(part, out) == len(texts)
    wav = datadir.read_table(out / "wav.scp")
    assert set(wav) == set(texts)
    for utt, path in wav.items():
        reader, chapter, _ = utt.split("-")
        assert Path(path).is_absolute() and Path(path) == (part / reader / chapter / f"{utt}.flac").resolve()
    assert datadir.read_table(out / "text") == texts
    utt2spk = datadir.read_table(out / "utt2spk")
    assert utt2spk == {u: "-".join(u.split("-")[:2]) for u in texts}  # speaker = reader-chapter
    spk2utt = datadir.read_table(out / "spk2utt")
    assert {s: v.split() for s, v in spk2utt.items()} == {
        s: sorted(u for u in texts if utt2spk[u] == s) for s in set(utt2spk.values())
    }
    genders = datadir.read_table(out / "spk2gender")
    assert genders == {s: ("f" if s.startswith("11-") else "m") for s in spk2utt}
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "spk2gender"):
        keys = [line.split(" ")[0] for line in (out / name).read_text().splitlines()]
        assert keys == sorted(keys), f"{name} not sorted"


def _expect_corpus_error(part: Path, tmp_path: Path, *needles: str) -> str:
    with pytest.raises(CorpusError) as e:
        librispeech.prepare_part(part, tmp_path / "out")
    msg = str(e.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in error:\n{msg}"
    assert not (tmp_path / "out" / "wav.scp").exists(), "nothing may be written for a bad corpus"
    return msg


def test_missing_flacs_are_all_listed(corpus, tmp_path):
    part, _ = corpus
    gone = [part / "11" / "100" / "11-100-0001.flac", part / "22" / "200" / "22-200-0002.flac"]
    for p in gone:
        p.unlink()
    msg = _expect_corpus_error(part, tmp_path, *[str(p) for p in gone])
    assert msg.count("transcript line without audio") == 2


def test_transcript_line_without_audio(corpus, tmp_path):
    part, _ = corpus
    trans = part / "22" / "100" / "22-100.trans.txt"
    trans.write_text(trans.read_text() + "22-100-0009 NO AUDIO FOR THIS\n")
    _expect_corpus_error(part, tmp_path, str(part / "22" / "100" / "22-100-0009.flac"), "without audio")


def test_audio_without_transcript(corpus, tmp_path):
    part, _ = corpus
    trans = part / "11" / "200" / "11-200.trans.txt"
    trans.write_text("".join(trans.read_text().splitlines(keepends=True)[:-1]))  # drops 11-200-0002
    _expect_corpus_error(part, tmp_path, str(part / "11" / "200" / "11-200-0002.flac"), "without a transcript")


def test_corrupt_and_truncated_flacs(corpus, tmp_path):
    part, _ = corpus
    garbage = part / "11" / "100" / "11-100-0000.flac"
    garbage.write_bytes(b"this is not a flac file" * 10)
    truncated = part / "22" / "100" / "22-100-0001.flac"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    _expect_corpus_error(part, tmp_path, f"{garbage}: unreadable", str(truncated))


def test_reader_missing_from_speakers_txt(corpus, tmp_path):
    part, _ = corpus
    speakers = part.parent / "SPEAKERS.TXT"
    speakers.write_text("\n".join(speakers.read_text().splitlines()[:-1]) + "\n")
    _expect_corpus_error(part, tmp_path, "reader 22 is not listed in SPEAKERS.TXT")


# ----------------------------------------------------------------------------- data directories
def _tables(n: int = 6) -> Dict[str, Dict[str, str]]:
    utts = [f"s{i % 2}-u{i}" for i in range(n)]
    return {
        "wav.scp": {u: f"/x/{u}.flac" for u in utts},
        "text": {u: f"WORDS OF {u.upper()}" for u in utts},
        "utt2spk": {u: u.split("-")[0] for u in utts},
    }


def test_validate_reports_each_problem(tmp_path):
    d = tmp_path / "d"
    datadir.write_data_dir(d, _tables())
    assert datadir.validate(d) == 6
    (d / "text").write_text("".join(reversed((d / "text").read_text().splitlines(keepends=True))))
    with pytest.raises(DataDirError, match="text is not sorted"):
        datadir.validate(d)
    datadir.write_data_dir(d, _tables())
    t = _tables()
    del t["wav.scp"]["s1-u3"]
    datadir.write_table(d / "wav.scp", t["wav.scp"])
    with pytest.raises(DataDirError, match=r"wav.scp lacks 1 utterance.*s1-u3"):
        datadir.validate(d)
    datadir.write_data_dir(d, _tables())
    (d / "spk2utt").write_text("s0 s0-u0\ns1 s1-u1\n")
    with pytest.raises(DataDirError, match="spk2utt does not match utt2spk"):
        datadir.validate(d)
    t = _tables()
    t["utt2spk"]["s0-u0"] = "zz"
    datadir.write_data_dir(d, t)
    with pytest.raises(DataDirError, match="do not start with their speaker id"):
        datadir.validate(d)


def test_read_table_rejects_duplicates(tmp_path):
    p = tmp_path / "t"
    p.write_text("a 1\nb 2\na 3\n")
    with pytest.raises(DataDirError, match=r"t:3: duplicate key a"):
        datadir.read_table(p)


def test_combine_subset_split(tmp_path):
    t = _tables(8)
    halves = [{n: {k: v for k, v in tab.items() if int(k.split("u")[1]) % 2 == h} for n, tab in t.items()}
              for h in (0, 1)]
    for i, h in enumerate(halves):
        datadir.write_data_dir(tmp_path / f"h{i}", h)
    assert datadir.combine(tmp_path / "all", [tmp_path / "h0", tmp_path / "h1"]) == 8
    assert datadir.load_data_dir(tmp_path / "all") == t
    with pytest.raises(DataDirError, match="also occurs in an earlier source"):
        datadir.combine(tmp_path / "dup", [tmp_path / "h0", tmp_path / "h0"])
    assert datadir.subset(tmp_path / "all", tmp_path / "sub", ["s0-u0", "s1-u5"]) == 2
    assert datadir.read_table(tmp_path / "sub" / "spk2utt") == {"s0": "s0-u0", "s1": "s1-u5"}
    outs = [tmp_path / f"split.{j}.scp" for j in range(1, 4)]
    datadir.split_scp(tmp_path / "all" / "wav.scp", outs)
    parts = [p.read_text().splitlines() for p in outs]
    assert [len(p) for p in parts] == [3, 3, 2]
    assert sum(parts, []) == (tmp_path / "all" / "wav.scp").read_text().splitlines()
    with pytest.raises(DataDirError, match="cannot split 8 line"):
        datadir.split_scp(tmp_path / "all" / "wav.scp", [tmp_path / f"x{j}" for j in range(9)])


def test_check_keys_names_missing_and_extra(tmp_path):
    (tmp_path / "ref").write_text("a X\nb Y\n")
    (tmp_path / "hyp").write_text("a X\nc Z\n")
    with pytest.raises(DataDirError) as e:
        datadir.check_keys(tmp_path / "ref", tmp_path / "hyp")
    assert "lacks b" in str(e.value) and "has c" in str(e.value)


# ----------------------------------------------------------------------------- stages 2-5
def test_format_wav_resamples_reuses_and_reads_pipes(tmp_path, rng):
    n8 = write_flac(tmp_path / "a8k.flac", 0.5, rng, fs=8000)
    n16 = write_flac(tmp_path / "b16k.flac", 0.3, rng)
    scp = tmp_path / "wav.scp"
    scp.write_text(
        f"a {tmp_path / 'a8k.flac'}\n"
        f"b {tmp_path / 'b16k.flac'}\n"
        f"c sox {tmp_path / 'b16k.flac'} -t wav - |\n"
    )
    out = tmp_path / "out"
    assert format_wav.format_scp(scp, out, 16000, "flac") == 3
    wav = datadir.read_table(out / "wav.scp")
    num = {k: int(v) for k, v in datadir.read_table(out / "utt2num_samples").items()}
    assert num == {"a": 2 * n8, "b": n16, "c": n16}
    assert wav["b"] == str((tmp_path / "b16k.flac").resolve())  # already 16 kHz flac: referenced
    for utt in "ac":
        x, fs = sf.read(wav[utt])
        assert fs == 16000 and len(x) == num[utt] and Path(wav[utt]).parent == out.resolve()
    np.testing.assert_allclose(sf.read(wav["c"])[0], sf.read(wav["b"])[0], atol=1e-4)
    scp.write_text(f"bad {tmp_path / 'missing.flac'}\n")
    with pytest.raises(RuntimeError, match="utterance bad"):
        format_wav.format_scp(scp, tmp_path / "out2", 16000)


def test_speed_perturbation_changes_length_by_the_factor(tmp_path, rng):
    n = write_flac(tmp_path / "x" / "s1-u1.flac", 1.0, rng)
    src = tmp_path / "src"
    datadir.write_data_dir(src, {
        "wav.scp": {"s1-u1": str(tmp_path / "x" / "s1-u1.flac")},
        "text": {"s1-u1": "A B"}, "utt2spk": {"s1-u1": "s1"},
    })
    for factor in ("0.9", "1.1"):
        dst = tmp_path / f"sp{factor}"
        assert perturb.perturb(src, dst, factor) == 1
        t = datadir.load_data_dir(dst)
        utt = f"sp{factor}-s1-u1"
        assert t["utt2spk"] == {utt: f"sp{factor}-s1"} and t["text"] == {utt: "A B"}
        assert t["utt2uniq"] == {utt: "s1-u1"}
        format_wav.format_scp(dst / "wav.scp", tmp_path / f"dump{factor}", 16000)
        m = int(datadir.read_table(tmp_path / f"dump{factor}" / "utt2num_samples")[utt])
        assert abs(m - n / float(factor)) <= 0.01 * n


def test_filter_data_removes_and_lists(tmp_path):
    src = tmp_path / "org"
    t = _tables(4)
    t["utt2num_samples"] = {"s0-u0": "800", "s1-u1": "16000", "s0-u2": "400000", "s1-u3": "32000"}
    t["text"]["s1-u3"] = ""
    datadir.write_data_dir(src, t)
    reasons = filter_data.filter_dir(src, tmp_path / "out", 16000, 0.1, 20.0)
    assert set(reasons) == {"s0-u0", "s0-u2", "s1-u3"}
    assert "too short" in reasons["s0-u0"] and "too long" in reasons["s0-u2"] and "empty" in reasons["s1-u3"]
    assert datadir.read_table(tmp_path / "out" / "utt2spk") == {"s1-u1": "s1"}
    listed = (tmp_path / "out" / "logs" / "filtered_out.txt").read_text().splitlines()
    assert [line.split()[0] for line in listed] == sorted(reasons)


def test_bpe_token_list_layout(tmp_path, rng):
    words = ["".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUW'"), size=int(rng.integers(1, 9)))) for _ in range(200)]
    lines = [f"u{i:04d} " + " ".join(rng.choice(words, size=int(rng.integers(4, 16)))) for i in range(300)]
    (tmp_path / "text").write_text("\n".join(lines) + "\n")
    toks = tokens.train_bpe(tmp_path / "text", tmp_path / "bpe", nbpe=60)
    assert (tmp_path / "bpe" / "tokens.txt").read_text().splitlines() == toks
    assert toks[0] == "<blank>" and toks[1] == "<unk>" and toks[-1] == "<sos/eos>"
    assert len(toks) == 60 and len(set(toks)) == 60
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe" / "bpe.model"))
    for line in lines[:20]:
        pieces = sp.encode(line.split(" ", 1)[1], out_type=str)
        assert set(pieces) <= set(toks[2:-1])


def test_stage1_cli_stops_on_bad_corpus(corpus, tmp_path):
    """local/data.sh (stage 1) exits non-zero and lists the offending files."""
    part, _ = corpus
    (part / "11" / "100" / "11-100-0002.flac").unlink()
    recipe = Path(__file__).resolve().parents[1] / "egs2" / "librispeech" / "asr1"
    work = tmp_path / "egs2" / "librispeech" / "asr1"
    work.mkdir(parents=True)
    for name in ("local", "path.sh", "db.sh", "scripts", "pyscripts", "cmd.sh"):
        (work / name).symlink_to(recipe / name)
    proc = subprocess.run(
        ["local/data.sh", "--librispeech_dir", str(part.parent.parent), "--download", "false",
         "--parts", "dev-clean", "--train_parts", "dev-clean", "--train_set", "dev_clean",
         "--valid_parts", "dev-clean", "--valid_set", "dev_clean"],
        cwd=work, capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert str(part / "11" / "100" / "11-100-0002.flac") in proc.stderr
    assert not (work / "data" / "dev_clean" / "wav.scp").exists()
