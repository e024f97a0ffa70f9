"""Kaldi-style data directories: reading, writing, validating, combining, subsetting, splitting.

A data directory ``data/<set>/`` holds text tables keyed by utterance id, one ``<key> <value>``
per line, sorted in C (byte) order:

    wav.scp   <utt> <audio path>   or   <utt> <command producing audio> |
    text      <utt> <transcript>
    utt2spk   <utt> <speaker>       (utterance ids start with their speaker id)
    spk2utt   <speaker> <utt> <utt> ...
optional: ``spk2gender``, ``utt2num_samples``, ``utt2dur``, ``utt2uniq``.

Python compares ``str`` by code point, which for UTF-8 text is the same order as bytes
(``LC_ALL=C sort``), so ``sorted()`` gives Kaldi's order.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

PathLike = Union[str, Path]

PER_UTT_FILES = ("wav.scp", "text", "utt2spk", "utt2num_samples", "utt2dur", "utt2uniq")
PER_SPK_FILES = ("spk2gender",)
REQUIRED_FILES = ("wav.scp", "text", "utt2spk")


class DataDirError(ValueError):
    """A data directory or table is malformed; the message lists every problem found."""


def read_table(path: PathLike, allow_empty_value: bool = False) -> Dict[str, str]:
    """Read ``<key> <value>`` lines into an ordered dict.

    Raises DataDirError naming the file and line for duplicate keys or (unless
    ``allow_empty_value``) lines without a value.
    """
    table: Dict[str, str] = {}
    problems: List[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                problems.append(f"{path}:{n}: empty line")
                continue
            key, _, value = line.partition(" ")
            value = value.strip()
            if key in table:
                problems.append(f"{path}:{n}: duplicate key {key}")
            elif not value and not allow_empty_value:
                problems.append(f"{path}:{n}: key {key} has no value")
            table[key] = value
    if problems:
        raise DataDirError(format_problems(f"malformed table {path}", problems))
    return table


def write_table(path: PathLike, table: Dict[str, str]) -> None:
    """Write ``<key> <value>`` lines sorted by key (C order)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for key in sorted(table):
            value = table[key]
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")
    tmp.replace(path)


def utt2spk_to_spk2utt(utt2spk: Dict[str, str]) -> Dict[str, str]:
    """Invert utt2spk; utterances of a speaker are listed in sorted order."""
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in spk2utt.items()}


def format_problems(title: str, problems: Sequence[str], limit: int = 50) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{title}: {len(problems)} problem(s)\n  {shown}{more}"


def validate(data_dir: PathLike, required: Sequence[str] = REQUIRED_FILES) -> int:
    """Check a data directory the way Kaldi's ``validate_data_dir.sh --no-feats`` does.

    Checks: required files exist; every table is sorted with unique keys; wav.scp, text, utt2spk
    and the optional per-utterance tables cover the same utterances; spk2utt matches utt2spk;
    utterance ids start with their speaker id. Returns the number of utterances.
    """
    d = Path(data_dir)
    missing = [f for f in required if not (d / f).is_file()]
    if missing:
        raise DataDirError(f"data directory {d} lacks {', '.join(missing)}")
    problems: List[str] = []
    tables: Dict[str, Dict[str, str]] = {}
    for name in PER_UTT_FILES + ("spk2utt",) + PER_SPK_FILES:
        if (d / name).is_file():
            keys = [line.split(" ", 1)[0] for line in (d / name).read_text(encoding="utf-8").splitlines()]
            if keys != sorted(keys):
                problems.append(f"{d / name} is not sorted (LC_ALL=C order)")
            try:
                tables[name] = read_table(d / name, allow_empty_value=(name == "text"))
            except DataDirError as e:
                problems.append(str(e))
    if problems:
        raise DataDirError(format_problems(f"invalid data directory {d}", problems))
    utts = set(tables["utt2spk"])
    for name in PER_UTT_FILES:
        if name in tables and set(tables[name]) != utts:
            only_here = sorted(set(tables[name]) - utts)
            only_spk = sorted(utts - set(tables[name]))
            if only_here:
                problems.append(f"{name} has {len(only_here)} utterance(s) not in utt2spk, e.g. {only_here[:5]}")
            if only_spk:
                problems.append(f"{name} lacks {len(only_spk)} utterance(s) of utt2spk, e.g. {only_spk[:5]}")
    if "spk2utt" in tables and tables["spk2utt"] != utt2spk_to_spk2utt(tables["utt2spk"]):
        problems.append("spk2utt does not match utt2spk (regenerate it from utt2spk)")
    bad_prefix = [u for u, s in tables["utt2spk"].items() if not u.startswith(s)]
    if bad_prefix:
        problems.append(
            f"{len(bad_prefix)} utterance id(s) do not start with their speaker id, e.g. {bad_prefix[:5]}"
        )
    if "spk2gender" in tables:
        speakers = set(tables["utt2spk"].values())
        lacking = sorted(speakers - set(tables["spk2gender"]))
        if lacking:
            problems.append(f"spk2gender lacks speaker(s) {lacking[:5]}")
    if problems:
        raise DataDirError(format_problems(f"invalid data directory {d}", problems))
    return len(utts)


def write_data_dir(data_dir: PathLike, tables: Dict[str, Dict[str, str]]) -> None:
    """Write the given tables plus spk2utt (derived from utt2spk)."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_table(d / name, table)
    if "utt2spk" in tables:
        write_table(d / "spk2utt", utt2spk_to_spk2utt(tables["utt2spk"]))


def load_data_dir(data_dir: PathLike) -> Dict[str, Dict[str, str]]:
    """Every per-utterance and per-speaker table present in a data directory."""
    d = Path(data_dir)
    return {
        name: read_table(d / name, allow_empty_value=(name == "text"))
        for name in PER_UTT_FILES + PER_SPK_FILES
        if (d / name).is_file()
    }


def subset(src: PathLike, dst: PathLike, keep: Iterable[str]) -> int:
    """Copy the utterances ``keep`` of ``src`` (all its tables) to ``dst``; return their number."""
    keep = set(keep)
    tables = load_data_dir(src)
    unknown = keep - set(tables["utt2spk"])
    if unknown:
        raise DataDirError(f"subset of {src}: {len(unknown)} unknown utterance(s), e.g. {sorted(unknown)[:5]}")
    out = {n: {k: v for k, v in t.items() if k in keep} for n, t in tables.items() if n in PER_UTT_FILES}
    speakers = set(out["utt2spk"].values())
    out.update({n: {k: v for k, v in t.items() if k in speakers} for n, t in tables.items() if n in PER_SPK_FILES})
    _replace_dir(dst, out)
    return len(out["utt2spk"])


def combine(dst: PathLike, srcs: Sequence[PathLike]) -> int:
    """Concatenate data directories into ``dst`` (Kaldi's ``combine_data.sh``).

    A table is kept only when every source has it, except ``utt2uniq``: when some sources
    have it, the others' utterances map to themselves (as in Kaldi, so that the speed-perturbed
    copies of stage 2 keep their source next to the unperturbed set). Duplicate utterance ids
    are an error.
    """
    if not srcs:
        raise DataDirError("combine: no source directories given")
    loaded = [load_data_dir(s) for s in srcs]
    if any("utt2uniq" in t for t in loaded):
        for t in loaded:
            t.setdefault("utt2uniq", {u: u for u in t["utt2spk"]})
    names = set.intersection(*(set(t) for t in loaded))
    out: Dict[str, Dict[str, str]] = {n: {} for n in names}
    problems = []
    for src, tables in zip(srcs, loaded):
        for name in names:
            for key, value in tables[name].items():
                if name in PER_UTT_FILES and key in out[name]:
                    problems.append(f"{src}: utterance {key} also occurs in an earlier source")
                elif name in PER_SPK_FILES and out[name].get(key, value) != value:
                    problems.append(f"{src}: speaker {key} has conflicting {name} entries")
                out[name][key] = value
    if problems:
        raise DataDirError(format_problems(f"cannot combine into {dst}", sorted(set(problems))))
    _replace_dir(dst, out)
    return len(out["utt2spk"])


def _replace_dir(dst: PathLike, tables: Dict[str, Dict[str, str]]) -> None:
    """Write ``tables`` into ``dst`` after removing the tables a previous run left there."""
    d = Path(dst)
    for name in PER_UTT_FILES + PER_SPK_FILES + ("spk2utt",):
        if (d / name).is_file() and name not in tables:
            (d / name).unlink()
    write_data_dir(d, tables)


def split_scp(scp: PathLike, outputs: Sequence[PathLike]) -> None:
    """Split the lines of ``scp`` into ``len(outputs)`` contiguous, nearly equal parts.

    Like Kaldi's ``split_scp.pl``: refuses to make more parts than there are lines. The file is
    read twice, line by line (count, then copy), so that an LM text of tens of millions of lines
    is never held in memory.
    """
    n = len(outputs)
    if n < 1:
        raise DataDirError("split_scp: need at least one output")
    with open(scp, "rb") as f:
        total = sum(1 for _ in f)
    if n > total:
        raise DataDirError(f"split_scp: cannot split {total} line(s) of {scp} into {n} parts")
    base, extra = divmod(total, n)
    with open(scp, "rb") as f:
        for i, out in enumerate(outputs):
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            with open(out, "wb") as o:
                for _ in range(base + (1 if i < extra else 0)):
                    o.write(next(f))


def check_keys(reference: PathLike, table: PathLike) -> None:
    """Raise DataDirError unless ``table`` has exactly the keys of ``reference``."""
    want = set(read_table(reference, allow_empty_value=True))
    have = set(read_table(table, allow_empty_value=True))
    problems = [f"{table} lacks {k}" for k in sorted(want - have)]
    problems += [f"{table} has {k}, which is not in {reference}" for k in sorted(have - want)]
    if problems:
        raise DataDirError(format_problems(f"{table} does not match {reference}", problems))


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Kaldi-style data directory tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a data directory")
    v.add_argument("data_dir")
    c = sub.add_parser("combine", help="combine data directories")
    c.add_argument("dst")
    c.add_argument("srcs", nargs="+")
    s = sub.add_parser("split", help="split an scp file into N parts: OUT_PATTERN contains JOB")
    s.add_argument("scp")
    s.add_argument("nj", type=int)
    s.add_argument("out_pattern")
    f = sub.add_parser("spk2utt", help="write spk2utt from utt2spk")
    f.add_argument("data_dir")
    k = sub.add_parser("check_keys", help="check that a table has exactly the keys of another")
    k.add_argument("reference")
    k.add_argument("table")
    args = p.parse_args(argv)
    try:
        if args.cmd == "validate":
            print(f"{args.data_dir}: {validate(args.data_dir)} utterances, OK")
        elif args.cmd == "combine":
            print(f"{args.dst}: {combine(args.dst, args.srcs)} utterances from {' '.join(args.srcs)}")
        elif args.cmd == "split":
            if "JOB" not in args.out_pattern:
                raise DataDirError(f"split: output pattern {args.out_pattern} lacks JOB")
            split_scp(args.scp, [args.out_pattern.replace("JOB", str(j)) for j in range(1, args.nj + 1)])
        elif args.cmd == "spk2utt":
            d = Path(args.data_dir)
            write_table(d / "spk2utt", utt2spk_to_spk2utt(read_table(d / "utt2spk")))
        elif args.cmd == "check_keys":
            check_keys(args.reference, args.table)
    except (DataDirError, OSError) as e:
        sys.exit(f"datadir {args.cmd}: {e}")


if __name__ == "__main__":
    main()
