#!/usr/bin/env python3
"""Regenerate the figures of README.md from the scripts that print them.

Every table or paragraph of measured figures in the README sits in a marked block that names
the command printing it, run from the repository root::

    <!-- figures: benchmarks/bench_kernels.py --threads 2 --tables s4d -->

    (whatever that command prints: a ready Markdown table or paragraph)

    <!-- /figures -->

The command's first word is a script in the repository (``.py`` scripts run with this
Python, ``.sh`` scripts with bash); its standard output replaces the block's content verbatim.

    python benchmarks/update_readme.py                  # run every block's command
    python benchmarks/update_readme.py --only kernels   # blocks whose command contains "kernels"
    python benchmarks/update_readme.py --list           # the blocks and their commands
    python benchmarks/update_readme.py --check          # no command run: see below

``--check`` verifies that the markers pair up, that every block names an existing script, and
that no table with measured figures (a cell holding a decimal number or a number with a unit such
as %, ms, s, MB, GB, M or x, or a bare number in a table naming a measured quantity such as seconds,
time, memory, WER or RTF) stands outside a block. A command that fails leaves its block
as it was; the others are still updated, and the exit status is 1.

The file is re-read before each block is written, so that edits made elsewhere in it while a
long benchmark runs are kept.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
OPEN = re.compile(r"^<!-- figures: (?P<command>.+?) -->\s*$")
CLOSE = "<!-- /figures -->"
# A table cell holding a measured figure: a decimal number, or a number followed by a unit.
FIGURE = re.compile(
    r"\d+\.\d+|\d(?:[\d ]*\d)?\s*(?:%|ms\b|µs\b|us\b|s\b|min\b|MB\b|GB\b|GiB\b|M\b|x\b|×)"
)

# A column or row naming a measured quantity, and a cell that is a bare number.
QUANTITY = re.compile(r"\b(?:seconds|time|memory|latency|WER|CER|RTF|params|parameters)\b", re.I)
NUMBER = re.compile(r"\*{0,2}\d[\d ]*\*{0,2}")


class MarkerError(ValueError):
    """Unpaired, nested or malformed figure markers."""


@dataclass
class Block:
    """One marked block: the command and the 0-based line numbers of its two markers."""

    command: str
    start: int  # the opening marker's line
    end: int  # the closing marker's line

    @property
    def script(self) -> str:
        """The command's first word: the script it runs (a path from the repository root)."""
        return shlex.split(self.command)[0]


def find_blocks(lines: Sequence[str], path: Path) -> List[Block]:
    """The marked blocks of a file's lines, in order."""
    blocks: List[Block] = []
    opened: Optional[Block] = None
    for i, line in enumerate(lines):
        m = OPEN.match(line)
        if m:
            if opened is not None:
                raise MarkerError(f"{path}:{i + 1}: a figures block opens inside the block of "
                                  f"line {opened.start + 1}")
            opened = Block(m.group("command").strip(), i, -1)
        elif line.strip() == CLOSE:
            if opened is None:
                raise MarkerError(f"{path}:{i + 1}: {CLOSE} without an opening marker")
            opened.end = i
            blocks.append(opened)
            opened = None
        elif line.lstrip().startswith("<!-- figures"):
            raise MarkerError(f"{path}:{i + 1}: malformed marker {line.strip()!r} "
                              "(expected '<!-- figures: <command> -->')")
    if opened is not None:
        raise MarkerError(f"{path}:{opened.start + 1}: figures block never closed ({CLOSE})")
    return blocks


def tables_outside(lines: Sequence[str], blocks: Sequence[Block]) -> List[Tuple[int, List[str]]]:
    """(0-based first line, rows) of each Markdown table outside the blocks and fenced code."""
    inside = set()
    for b in blocks:
        inside.update(range(b.start, b.end + 1))
    tables: List[Tuple[int, List[str]]] = []
    fenced, previous_row = False, False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        is_row = not fenced and i not in inside and line.lstrip().startswith("|")
        if is_row and not previous_row:
            tables.append((i, []))
        if is_row:
            tables[-1][1].append(line)
        previous_row = is_row
    return tables


def has_figures(rows: Sequence[str]) -> bool:
    """Whether a table holds measured figures: a cell with a decimal number or a number with a
    unit, or a bare number in a table that names a measured quantity (seconds, WER, memory, ...).
    Code spans are not figures."""
    cells = [re.sub(r"`[^`]*`", " ", c) for row in rows for c in row.strip().strip("|").split("|")]
    if any(FIGURE.search(c) for c in cells):
        return True
    return any(QUANTITY.search(c) for c in cells) and any(NUMBER.fullmatch(c.strip()) for c in cells)


def unmarked_figure_tables(lines: Sequence[str], blocks: Sequence[Block]) -> List[int]:
    """1-based numbers of the first line of each table with figures outside the blocks."""
    return [start + 1 for start, rows in tables_outside(lines, blocks) if has_figures(rows)]


def check(readme: Path, root: Path) -> List[str]:
    """Problems with the figure blocks of ``readme`` (an empty list when there are none)."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    try:
        blocks = find_blocks(lines, readme)
    except MarkerError as e:
        return [str(e)]
    problems = []
    commands = [b.command for b in blocks]
    for b in blocks:
        where = f"{readme}:{b.start + 1}"
        try:
            script = b.script
        except ValueError as e:
            problems.append(f"{where}: cannot parse the command {b.command!r}: {e}")
            continue
        if not (root / script).is_file():
            problems.append(f"{where}: the block's script {script} does not exist")
        elif Path(script).suffix not in (".py", ".sh"):
            problems.append(f"{where}: {script} is neither a .py nor a .sh script")
        if commands.count(b.command) > 1:
            problems.append(f"{where}: two blocks name the same command {b.command!r}")
    for n in unmarked_figure_tables(lines, blocks):
        problems.append(f"{readme}:{n}: a table with measured figures outside a figures block "
                        "(mark it with the command that prints it)")
    return problems


def argv_of(command: str) -> List[str]:
    """The process arguments of a block's command."""
    words = shlex.split(command)
    runner = [sys.executable] if words[0].endswith(".py") else ["bash"]
    return runner + words


def replace_block(readme: Path, command: str, output: str) -> None:
    """Put ``output`` into the block of ``command`` (found again in the file as it is now)."""
    text = readme.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks = [b for b in find_blocks(lines, readme) if b.command == command]
    if len(blocks) != 1:
        raise MarkerError(f"{readme}: {len(blocks)} blocks with the command {command!r}")
    b = blocks[0]
    body = output.strip("\n").splitlines()
    new = lines[: b.start + 1] + [""] + [l.rstrip() for l in body] + [""] + lines[b.end:]
    readme.write_text("\n".join(new) + ("\n" if text.endswith("\n") else ""), encoding="utf-8")


def update(readme: Path, root: Path, only: Optional[str] = None) -> int:
    """Run the commands of the blocks (those containing ``only``) and write their output."""
    blocks = find_blocks(readme.read_text(encoding="utf-8").splitlines(), readme)
    chosen = [b for b in blocks if only is None or only in b.command]
    if not chosen:
        print(f"update_readme: no block's command contains {only!r}", file=sys.stderr)
        return 1
    failed = []
    for b in chosen:
        print(f"update_readme: {b.command}", file=sys.stderr, flush=True)
        proc = subprocess.run(argv_of(b.command), cwd=root, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            why = f"exit status {proc.returncode}" if proc.returncode else "no output"
            print(f"update_readme: FAILED ({why}), block left as it was: {b.command}",
                  file=sys.stderr, flush=True)
            failed.append(b.command)
            continue
        replace_block(readme, b.command, proc.stdout)
    if failed:
        print("update_readme: failed blocks:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", type=Path, default=REPO / "README.md")
    p.add_argument("--root", type=Path, default=REPO,
                   help="where the commands run and their scripts are looked up")
    p.add_argument("--only", help="only the blocks whose command contains this string")
    p.add_argument("--check", action="store_true", help="check the markers; run nothing")
    p.add_argument("--list", action="store_true", help="print each block's line and command")
    args = p.parse_args(argv)
    if args.check:
        problems = check(args.readme, args.root)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if args.list:
        lines = args.readme.read_text(encoding="utf-8").splitlines()
        for b in find_blocks(lines, args.readme):
            print(f"{args.readme.name}:{b.start + 1}: {b.command}")
        return 0
    return update(args.readme, args.root, args.only)


if __name__ == "__main__":
    sys.exit(main())
