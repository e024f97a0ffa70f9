"""The demo corpus: its open-vocabulary text (normalisation, documents, disjoint parts, another
source for one test part) and its espeak-ng synthesis in LibriSpeech's layout."""
from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf

from espnet_ssm.recipe import datadir, librispeech, synth_corpus, text_corpus
from espnet_ssm.recipe.text_corpus import normalise

TRANSCRIPT = re.compile(r"[A-Z']+( [A-Z']+)*")
real_text = pytest.mark.skipif(
    not (text_corpus.WORDNET_DIR / "data.noun").is_file() or not (text_corpus.FORTUNES_DIR / "wisdom").is_file(),
    reason="the Debian packages wordnet-base and fortunes are not installed (make setup installs them)",
)
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
PARTS4 = ("train-synth", "dev-synth", "test-synth", "test-other-source")


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("raw, expected", [
    ("the dog barked all night", "THE DOG BARKED ALL NIGHT"),
    ("He said, \"Don't go!\" -- and left.", "HE SAID DON'T GO AND LEFT"),
    ("a well-known caf\u00e9 in the old town", "A WELL KNOWN CAFE IN THE OLD TOWN"),
    ("the word `means' is a noun here", "THE WORD MEANS IS A NOUN HERE"),
    ("it\u2019s the boys' turn\u2014again", "IT'S THE BOYS TURN AGAIN"),
    ("   spaced\tout   words here  ", "SPACED OUT WORDS HERE"),
    ("I think I can do it", "I THINK I CAN DO IT"),
])
def test_normalise_librispeech_style(raw, expected):
    assert normalise(raw) == expected


@pytest.mark.parametrize("raw", [
    "he paid 20 dollars for it",        # digits: how they are read is not written
    "we met Mr. Smith in town",         # abbreviation
    "she lives in the U.S. now",        # dotted acronym
    "he works for NASA in the summer",  # acronym, spelt letter by letter
    "the price rose by 5% in a year",   # symbol
    "the sky blue",                     # fewer than 4 words
    " ".join(["word"] * 26),            # more than 25 words
    "\u03b1\u03b2\u03b3 is greek to me",  # not Latin letters
])
def test_normalise_refuses_what_cannot_be_read_unambiguously(raw):
    assert normalise(raw) is None


def test_sentence_split():
    # at . ! ? before a capital (quotes around it allowed), not before a small letter
    assert text_corpus.split_into_sentences("One two. \"Three four!\" Five?  six. Seven") == [
        "One two.", "\"Three four!", "Five? six.", "Seven"]


# ----------------------------------------------------------------------------- documents
WORDNET_HEADER = "  1 This software and database is being provided to you, the LICENSEE\n"


def write_wordnet(root: Path, synsets: Dict[str, List[str]]) -> None:
    """A WordNet data directory with the given synsets (offset -> example sentences), in data.noun."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [WORDNET_HEADER]
    for offset, examples in synsets.items():
        quoted = "; ".join(f'"{e}"' for e in examples)
        lines.append(f"{offset} 05 n 01 thing 0 000 | a gloss with (parentheses); {quoted}  \n")
    (root / "data.noun").write_text("".join(lines))
    for name in ("data.verb", "data.adj", "data.adv"):
        (root / name).write_text(WORDNET_HEADER)


def write_fortunes(root: Path, cookies: Dict[str, List[str]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in text_corpus.FORTUNE_FILES:
        (root / name).write_text("\n%\n".join(cookies.get(name, ["The cat number one sat here."])) + "\n%\n")


def test_wordnet_documents_parse_examples_and_drop_repeats(tmp_path):
    write_wordnet(tmp_path, {
        "00000001": ["the cat sat on the mat", "he paid 20 dollars"],
        "00000002": ["the cat sat on the mat", "a dog barked at the moon"],
        "00000003": ["too short"],
    })
    docs = text_corpus.wordnet_documents(tmp_path)
    assert docs == (
        text_corpus.Document("wordnet:noun:00000001", ("THE CAT SAT ON THE MAT",)),
        text_corpus.Document("wordnet:noun:00000002", ("A DOG BARKED AT THE MOON",)),
    )
    (tmp_path / "data.noun").write_text(WORDNET_HEADER + "00000004 05 n 01 thing 0 000 no gloss\n")
    text_corpus.wordnet_documents.cache_clear()
    with pytest.raises(ValueError, match="data.noun: synset 00000004 has no gloss"):
        text_corpus.wordnet_documents(tmp_path)


def test_fortune_documents_split_sentences_and_drop_attribution(tmp_path):
    write_fortunes(tmp_path, {"wisdom": [
        "A penny saved is a penny earned.  Or so\nthey tell me every day.\n\t\t-- Benjamin Franklin, maybe.",
        "Q: What is the answer?\nA: It is not a thing at all.",
    ]})
    docs = [d for d in text_corpus.fortune_documents(tmp_path) if d.doc_id.startswith("fortunes:wisdom")]
    assert docs == [
        text_corpus.Document("fortunes:wisdom:0", ("A PENNY SAVED IS A PENNY EARNED", "OR SO THEY TELL ME EVERY DAY")),
        text_corpus.Document("fortunes:wisdom:1", ("WHAT IS THE ANSWER", "IT IS NOT A THING AT ALL")),
    ]


def test_stats_table_counts(tmp_path):
    write_wordnet(tmp_path / "wn", {"00000001": ["the cat sat on the mat", "a cat sat on a dog"],
                                    "00000002": ["the dog barked at the moon"]})
    # one cookie per file, the same in each: a repeated sentence counts once
    write_fortunes(tmp_path / "fo", {})
    lines = text_corpus.stats_table(tmp_path / "wn", tmp_path / "fo").splitlines()
    assert lines[2].split(" | ")[2:] == ["2", "3", "18", "10 |"]
    assert lines[3].split(" | ")[2:] == ["1", "1", "6", "6 |"]


def test_missing_source_names_its_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="Debian package wordnet-base"):
        text_corpus.wordnet_documents(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="Debian package fortunes"):
        text_corpus.fortune_documents(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- splitting
def random_sources(tmp_path: Path, rng: np.random.Generator, n_docs: int = 400):
    """WordNet and fortune directories of random documents (1-4 distinct sentences each), plus
    sentence -> document maps."""
    words = [f"w{chr(97 + i)}{chr(97 + j)}" for i in range(26) for j in range(26)]
    def sentence() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(4, 10))))
    synsets = {f"{k:08d}": [sentence() for _ in range(int(rng.integers(1, 5)))] for k in range(n_docs)}
    write_wordnet(tmp_path / "wn", synsets)
    cookies = [". ".join(sentence().capitalize() for _ in range(int(rng.integers(1, 4)))) + "." for _ in range(100)]
    write_fortunes(tmp_path / "fo", {"wisdom": cookies})
    doc_of = {normalise(s): f"wordnet:noun:{k}" for k, ss in reversed(synsets.items()) for s in ss}
    return tmp_path / "wn", tmp_path / "fo", doc_of


def test_split_texts_parts_are_disjoint_by_document_and_deterministic(tmp_path, rng, seed):
    wn, fo, doc_of = random_sources(tmp_path, rng)
    sizes = {"train": 300, "dev": 40, "test": 50, "other": 30}
    texts, lm = text_corpus.split_texts(sizes, 200, seed, "other", wn, fo)
    assert {p: len(v) for p, v in texts.items()} == sizes and len(lm) == 200
    groups = {**texts, "lm": lm}
    # no sentence and no WordNet document in two of train / dev / test / LM text
    docs = {name: {doc_of[s] for s in group} for name, group in groups.items() if name != "other"}
    names = sorted(docs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(groups[a]) & set(groups[b]), (a, b)
            assert not docs[a] & docs[b], (a, b)
    # the other-source part: fortune sentences, none of them WordNet's
    assert not set(texts["other"]) & set(doc_of)
    fortune_text = {s for d in text_corpus.fortune_documents(fo) for s in d.sentences}
    assert set(texts["other"]) <= fortune_text
    assert all(TRANSCRIPT.fullmatch(s) for g in groups.values() for s in g)
    # deterministic for a seed, another seed draws other documents
    assert text_corpus.split_texts(sizes, 200, seed, "other", wn, fo) == (texts, lm)
    other_texts, _ = text_corpus.split_texts(sizes, 200, seed + 1, "other", wn, fo)
    assert other_texts["test"] != texts["test"] and other_texts["other"] != texts["other"]
    # without an other-source part nothing is read from the fortunes
    plain, _ = text_corpus.split_texts({"train": 300, "dev": 40, "test": 50}, 200, seed, None, wn, tmp_path / "none")
    assert plain == {p: texts[p] for p in ("train", "dev", "test")}


def test_split_texts_too_small_source_is_an_error(tmp_path, rng, seed):
    wn, fo, doc_of = random_sources(tmp_path, rng, n_docs=20)
    with pytest.raises(ValueError, match="too few sentences for the LM text"):
        text_corpus.split_texts({"train": 10, "dev": 5, "test": 5}, 1000, seed, None, wn, fo)
    with pytest.raises(ValueError, match="'oops' is not one of the parts"):
        text_corpus.split_texts({"train": 10, "dev": 5, "test": 5}, 1, seed, "oops", wn, fo)


def test_other_source_part_leaves_out_sentences_that_wordnet_has(tmp_path, seed):
    write_wordnet(tmp_path / "wn", {f"{k:08d}": [f"the cat number {'one two three four'.split()[k]} sat here"]
                                    for k in range(4)})
    write_fortunes(tmp_path / "fo", {"wisdom": ["The cat number two sat here. A dog barked at the moon."]})
    texts, _ = text_corpus.split_texts({"train": 1, "dev": 1, "test": 1, "other": 1}, 1, seed, "other",
                                       tmp_path / "wn", tmp_path / "fo")
    assert texts["other"] == ["A DOG BARKED AT THE MOON"]


@real_text
def test_installed_sources_give_the_demo_broad_english(seed):
    """The real packages: enough sentences for the demo's parts and LM text, a vocabulary far
    beyond a small word list's, and a different-source part of different text."""
    sizes = {"train-synth": 2100, "dev-synth": 100, "test-synth": 200, "test-other-source": 200}
    texts, lm = text_corpus.split_texts(sizes, 20000, seed, "test-other-source")
    assert {p: len(v) for p, v in texts.items()} == sizes and len(lm) == 20000
    train_words = {w for s in texts["train-synth"] + lm for w in s.split()}
    assert len(train_words) > 15000
    for part in ("test-synth", "test-other-source"):
        assert not set(texts[part]) & set(texts["train-synth"] + lm)
        assert all(TRANSCRIPT.fullmatch(s) and 4 <= len(s.split()) <= 25 for s in texts[part])
    # another source: many of its words never occur in the training or LM text
    other_words = {w for s in texts["test-other-source"] for w in s.split()}
    assert len(other_words - train_words) > 20


# ----------------------------------------------------------------------------- synthesis plan
@real_text
def test_corpus_plan_holds_test_voices_out_of_training(tmp_path, seed):
    sizes = dict(zip(PARTS4, (300, 40, 60, 30)))
    readers, utts, lm_text = synth_corpus.plan_corpus(tmp_path, sizes, seed=seed % 1000, lm_text_sentences=500)
    by_part: Dict[str, List] = {p: [u for u in utts if u.reader.part == p] for p in sizes}
    assert {p: len(v) for p, v in by_part.items()} == sizes
    train_voices = {u.reader.voice for u in by_part["train-synth"]}
    train_variants = {u.reader.variant for u in by_part["train-synth"]}
    train_text = {u.text for u in by_part["train-synth"]}
    for part in PARTS4[1:]:
        assert not {u.reader.variant for u in by_part[part]} & train_variants
        assert not {u.reader.voice for u in by_part[part]} & train_voices
        assert not {u.text for u in by_part[part]} & train_text
        assert not {u.text for u in by_part[part]} & set(lm_text)
    assert len(train_voices) >= 8 and len({u.reader.voice for u in by_part["test-synth"]}) >= 3
    assert {r.variant for r in readers if r.part == "test-other-source"} == set(synth_corpus.TEST_VARIANTS)
    assert len({u.utt_id for u in utts}) == len(utts)
    for u in utts:
        assert re.fullmatch(rf"{u.reader.reader_id}-\d+-\d{{4}}", u.utt_id)
        assert u.path.parent.parent.name == str(u.reader.reader_id)
    with pytest.raises(ValueError, match="expected 3 or 4 parts"):
        synth_corpus.plan_corpus(tmp_path, {"a": 1, "b": 1}, seed=0)


def test_lm_text_file_is_gzipped_and_byte_identical_on_rewrite(tmp_path):
    sents = ["THE FIRST LINE", "AND THE SECOND ONE"]
    path = tmp_path / synth_corpus.LM_TEXT
    synth_corpus.write_lm_text(path, sents)
    first = path.read_bytes()
    with gzip.open(path, "rt") as f:
        assert f.read().splitlines() == sents
    synth_corpus.write_lm_text(path, sents)
    assert path.read_bytes() == first  # no time stamp in the gzip header


def test_parse_sizes():
    assert synth_corpus.parse_sizes(["a", "b", "c"], [3, 2, 1]) == {"a": 3, "b": 2, "c": 1}
    assert list(synth_corpus.parse_sizes(PARTS4, [4, 3, 2, 1])) == list(PARTS4)
    with pytest.raises(ValueError, match="3 or 4 part names"):
        synth_corpus.parse_sizes(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="as many sizes"):
        synth_corpus.parse_sizes(["a", "b", "c"], [1, 1])
    with pytest.raises(ValueError, match="distinct"):
        synth_corpus.parse_sizes(["a", "b", "a"], [1, 1, 1])


@real_text
@needs_espeak
def test_generated_corpus_is_prepared_by_stage1(tmp_path):
    sizes = dict(zip(PARTS4, (6, 2, 3, 2)))
    root = synth_corpus.generate(tmp_path / "c", sizes, seed=3, nj=2, lm_text_sentences=500)
    with gzip.open(tmp_path / "c" / synth_corpus.LM_TEXT, "rt") as f:
        lm_text = f.read().splitlines()
    eval_text = {line.split(" ", 1)[1] for part in PARTS4[1:]
                 for tr in (root / part).glob("*/*/*.trans.txt") for line in tr.read_text().splitlines()}
    assert len(lm_text) == 500 and len(eval_text) == 7 and not set(lm_text) & eval_text
    for part, n in sizes.items():
        out = tmp_path / "data" / part
        assert librispeech.prepare_part(root / part, out) == n
        for path in datadir.read_table(out / "wav.scp").values():
            x, fs = sf.read(path)
            assert fs == 16000 and x.ndim == 1 and 0.5 < len(x) / fs < 15 and np.abs(x).max() <= 1.0
    speakers = librispeech.read_speakers(root / "SPEAKERS.TXT")
    assert set(speakers.values()) <= {"m", "f"}
    marker = (root / ".complete").stat().st_mtime
    synth_corpus.generate(tmp_path / "c", sizes, seed=3, nj=2)  # complete: nothing redone
    assert (root / ".complete").stat().st_mtime == marker
    smaller = {"train-synth": 3, "dev-synth": 1, "test-synth": 1}
    synth_corpus.generate(tmp_path / "c", smaller, seed=4, nj=1)  # other settings: made afresh
    assert len(list(root.glob("*/*/*/*.flac"))) == 5
