"""Open-vocabulary English text for the synthetic demo corpus, read from Debian packages.

Sources (``tools/system_deps.sh`` installs both packages):

* ``wordnet``: the example sentences of WordNet 3.0, Debian package ``wordnet-base``
  (``/usr/share/wordnet/data.{noun,verb,adj,adv}``), under the WordNet 3.0 licence (Princeton
  University; free use, copying, modification and distribution with its copyright notice). About
  48 000 short sentences written to show how some 147 000 English words and senses are used, on
  every topic: the demo's training, dev, test and LM text.
* ``fortunes``: the fortune-cookie files of BSD ``fortune``, Debian package ``fortunes``
  (``/usr/share/games/fortunes/``, BSD licence): quotations, aphorisms and jokes, a different
  genre and source, used only for the ``test-other-source`` part.

A *document* is one WordNet synset (its example sentences) or one fortune cookie. Parts are made
of whole documents, so the training, dev, test and LM texts never share a document (nor a
sentence: a sentence is kept only in the first document, in file order, that has it).

Transcripts follow LibriSpeech's normalisation: upper case, words of letters and apostrophes,
separated by single spaces. A sentence that cannot be normalised without guessing how it is read
(digits, symbols, abbreviations, acronyms, non-Latin letters) is left out rather than rewritten.
"""
from __future__ import annotations

import collections
import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Prose fortune files; left out: program code and jargon (computers, linux, perl, debian, ...),
# ASCII art, song lyrics, and files of jokes about groups of people.
FORTUNE_FILES = (
    "education", "food", "fortunes", "humorists", "kids", "law", "literature", "love", "medicine",
    "miscellaneous", "news", "people", "pets", "platitudes", "politics", "riddles", "science",
    "sports", "wisdom", "work",
)
MIN_WORDS, MAX_WORDS = 4, 25
# Which Debian package ships each source, for the error message when it is missing.
PACKAGES = {"wordnet": "wordnet-base", "fortunes": "fortunes"}

_ALLOWED = re.compile(r"[A-Za-z' ,.;:!?\"()\-]+")
_ABBREVIATION = re.compile(r"\b(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|no|esp|cf|ca|viz|prof|gen|col|capt|lt|sgt|rev)\.",
                           re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])")


@dataclass(frozen=True)
class Document:
    """One source document: its id (``<source>:<file>:<key>``) and normalised sentences."""

    doc_id: str
    sentences: Tuple[str, ...]


def normalise(raw: str) -> Optional[str]:
    """LibriSpeech-style transcript of one sentence, or None where it cannot be read unambiguously.

    Accents are stripped (``café`` -> ``CAFE``), hyphens and dashes separate words, other
    punctuation goes, apostrophes stay inside words (``DON'T``). Refused: digits and symbols
    (their reading is not written), abbreviations with a full stop (``Mr.``, ``e.g.``), words
    in capitals (acronyms, spelt letter by letter), and sentences outside 4-25 words.
    """
    text = unicodedata.normalize("NFKD", raw.replace("`", "'").replace("\u2019", "'").replace("\u2018", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2014", " - ").replace("\u2013", " - ")
    text = " ".join(text.split())
    if not text or not _ALLOWED.fullmatch(text) or _ABBREVIATION.search(text):
        return None
    if re.search(r"[A-Za-z]\.[A-Za-z]", text):  # e.g., U.S.A.
        return None
    words = []
    for token in re.sub(r"[-,.;:!?\"()]", " ", text).split():
        token = token.strip("'")
        if not token:
            continue
        letters = token.replace("'", "")
        if len(letters) > 1 and letters.isupper():  # an acronym or shouting
            return None
        words.append(token.upper())
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    return " ".join(words)


def split_into_sentences(text: str) -> List[str]:
    """Split running text at sentence ends (``.``, ``!``, ``?`` before a capital)."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def _require(path: Path, source: str) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the {source} text comes from the Debian package {PACKAGES[source]} "
            f"(sudo apt-get install -y {PACKAGES[source]}, or `make setup`)"
        )


def _document(doc_id: str, raw: Iterable[str], seen: set) -> Optional[Document]:
    """Normalised sentences of one document, without those an earlier document already has."""
    out = []
    for r in raw:
        s = normalise(r)
        if s is not None and s not in seen:
            seen.add(s)
            out.append(s)
    return Document(doc_id, tuple(out)) if out else None


@functools.lru_cache(maxsize=4)
def wordnet_documents(root: Path = WORDNET_DIR) -> Tuple[Document, ...]:
    """One document per WordNet synset that has a usable example sentence, in file order."""
    docs: List[Document] = []
    seen: set = set()
    for name in WORDNET_FILES:
        path = root / name
        _require(path, "wordnet")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                offset, _, rest = line.partition(" ")
                _, bar, gloss = rest.partition(" | ")
                if not bar:
                    raise ValueError(f"{path}: synset {offset} has no gloss (expected ' | ')")
                doc = _document(f"wordnet:{name[5:]}:{offset}", re.findall(r'"([^"]+)"', gloss), seen)
                if doc is not None:
                    docs.append(doc)
    return tuple(docs)


@functools.lru_cache(maxsize=4)
def fortune_documents(root: Path = FORTUNES_DIR, files: Tuple[str, ...] = FORTUNE_FILES) -> Tuple[Document, ...]:
    """One document per fortune cookie (attribution lines and Q:/A: labels dropped), in file order."""
    docs: List[Document] = []
    seen: set = set()
    for name in files:
        path = root / name
        _require(path, "fortunes")
        cookies = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
        for k, cookie in enumerate(cookies):
            body = []
            for line in cookie.splitlines():
                if re.match(r"^\s*(--|\u2014)", line):  # "-- Mark Twain": the attribution and what follows
                    break
                body.append(re.sub(r"^\s*[QA]:\s", "", line))  # "Q: ...", "A: ...": no speaker labels
            doc = _document(f"fortunes:{name}:{k}", split_into_sentences(" ".join(body)), seen)
            if doc is not None:
                docs.append(doc)
    return tuple(docs)


def _shuffled(docs: Sequence[Document], rng: np.random.Generator) -> "collections.deque[Document]":
    return collections.deque(docs[i] for i in rng.permutation(len(docs)))


def _take(docs: "collections.deque[Document]", n: int, name: str, source: str) -> List[str]:
    """Pop whole documents from the front of ``docs`` until they give ``n`` sentences; return those."""
    out: List[str] = []
    while len(out) < n:
        if not docs:
            raise ValueError(f"the {source} text has too few sentences for {name}: needed {n}, got {len(out)}")
        out.extend(docs.popleft().sentences[: n - len(out)])
    return out


def split_texts(
    sizes: Dict[str, int],
    lm_sentences: int,
    seed: int = 0,
    other_source_part: Optional[str] = None,
    wordnet_dir: Path = WORDNET_DIR,
    fortunes_dir: Path = FORTUNES_DIR,
) -> Tuple[Dict[str, List[str]], List[str]]:
    """Sentences for each part and the LM text, deterministic for a given ``seed``.

    ``sizes`` maps part names to sentence counts. Every part except ``other_source_part`` takes
    whole WordNet documents in a seeded order (the evaluation parts first, the training part,
    i.e. the first part, last), and the LM text takes ``lm_sentences`` sentences from the
    documents left over: no part shares a document or a sentence with another or with the LM text.
    ``other_source_part`` takes fortune cookies instead, none of whose sentences is in WordNet's.
    """
    unknown = set([other_source_part]) - set(sizes) - {None}
    if unknown:
        raise ValueError(f"other_source_part {other_source_part!r} is not one of the parts {list(sizes)}")
    all_docs = wordnet_documents(wordnet_dir)
    docs = _shuffled(all_docs, np.random.default_rng([seed, 10]))
    wordnet_parts = [p for p in sizes if p != other_source_part]
    texts: Dict[str, List[str]] = {}
    for part in wordnet_parts[1:] + wordnet_parts[:1]:
        texts[part] = _take(docs, sizes[part], f"part {part}", "wordnet")
    lm = _take(docs, lm_sentences, "the LM text", "wordnet")
    if other_source_part is not None:
        known = {s for d in all_docs for s in d.sentences}
        other = [
            Document(d.doc_id, tuple(s for s in d.sentences if s not in known))
            for d in fortune_documents(fortunes_dir)
        ]
        other = _shuffled([d for d in other if d.sentences], np.random.default_rng([seed, 11]))
        texts[other_source_part] = _take(other, sizes[other_source_part], f"part {other_source_part}", "fortunes")
    return {p: texts[p] for p in sizes}, lm


def stats_table(wordnet_dir: Path = WORDNET_DIR, fortunes_dir: Path = FORTUNES_DIR) -> str:
    """Markdown: documents, sentences, words and distinct words of each source after normalisation."""
    rows = [
        "| source | Debian package (licence) | documents | sentences | words | distinct words |",
        "|---|---|---|---|---|---|",
    ]
    for source, name, licence, docs in (
        ("wordnet", "WordNet 3.0 example sentences", "WordNet 3.0", wordnet_documents(wordnet_dir)),
        ("fortunes", "fortune cookies (prose files)", "BSD", fortune_documents(fortunes_dir)),
    ):
        words = [w for d in docs for s in d.sentences for w in s.split()]
        rows.append(f"| {name} | `{PACKAGES[source]}` ({licence}) | {len(docs)} | "
                    f"{sum(len(d.sentences) for d in docs)} | {len(words)} | {len(set(words))} |")
    return "\n".join(rows)


if __name__ == "__main__":
    # python espnet_ssm/recipe/text_corpus.py: the sources' sizes after normalisation
    try:
        print(stats_table())
    except FileNotFoundError as e:
        raise SystemExit(f"text_corpus: {e}")
