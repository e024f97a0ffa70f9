"""README figures: every table of measured figures sits in a block naming the script that prints
it, and ``benchmarks/update_readme.py`` replaces a block with its command's output."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("update_readme", REPO / "benchmarks" / "update_readme.py")
update_readme = importlib.util.module_from_spec(_spec)
sys.modules["update_readme"] = update_readme  # its dataclass looks its module up
_spec.loader.exec_module(update_readme)

SCRIPT = "tools/say.py"  # a trivial command, in a temporary root
DOC = """# Title

Intro text, 3 cores mentioned in prose.

<!-- figures: tools/say.py "| a | b |" "|---|---|" "| new | 1.5 ms |" -->

| a | b |
|---|---|
| old | 9.9 ms |

<!-- /figures -->

| registry name | family |
|---|---|
| `x` | y |

Closing text.
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with ``tools/say.py`` (prints its arguments, one a line) and a README."""
    (tmp_path / "tools").mkdir()
    (tmp_path / SCRIPT).write_text("import sys\nprint('\\n'.join(sys.argv[1:]))\n")
    (tmp_path / "README.md").write_text(DOC)
    return tmp_path


def test_the_readme_passes_the_check():
    assert update_readme.check(REPO / "README.md", REPO) == []


def test_the_readme_has_blocks_for_the_benchmarks():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    scripts = {b.script for b in update_readme.find_blocks(lines, REPO / "README.md")}
    assert {"benchmarks/bench_kernels.py", "benchmarks/bench_encoders.py",
            "benchmarks/bench_streaming.py", "benchmarks/recipe_figures.py"} <= scripts


def test_a_block_is_replaced_by_its_commands_output(root: Path):
    readme = root / "README.md"
    assert update_readme.main(["--readme", str(readme), "--root", str(root)]) == 0
    text = readme.read_text()
    assert "| new | 1.5 ms |" in text and "| old | 9.9 ms |" not in text
    # everything outside the block is kept as it was
    assert text.split("<!-- figures:")[0] == DOC.split("<!-- figures:")[0]
    assert text.split("<!-- /figures -->")[1] == DOC.split("<!-- /figures -->")[1]
    assert update_readme.check(readme, root) == []
    # a second run gives the same file
    update_readme.main(["--readme", str(readme), "--root", str(root)])
    assert readme.read_text() == text


def test_a_failing_command_leaves_its_block(root: Path):
    readme = root / "README.md"
    (root / SCRIPT).write_text("import sys\nsys.exit('broken')\n")
    assert update_readme.main(["--readme", str(readme), "--root", str(root)]) == 1
    assert readme.read_text() == DOC


def test_only_selects_blocks_by_command(root: Path):
    readme = root / "README.md"
    assert update_readme.main(["--readme", str(readme), "--root", str(root), "--only", "nothing"]) == 1
    assert readme.read_text() == DOC


@pytest.mark.parametrize("table, flagged", [
    ("| model | time |\n|---|---|\n| a | 1.25 |\n", True),          # a decimal number
    ("| model | WER |\n|---|---|\n| a | 12 % |\n", True),            # a number with a unit
    ("| step | corpus | total |\n|---|---|---|\n| seconds | 43 | 873 |\n", True),  # bare, in seconds
    ("| stage | what |\n|---|---|\n| 11 | training |\n", False),  # a number that is no figure
    ("| name | config |\n|---|---|\n| a | `conf/x_1.5.yaml` |\n", False),  # code is not a figure
])
def test_check_flags_unmarked_tables_of_figures(root: Path, table: str, flagged: bool):
    readme = root / "README.md"
    readme.write_text(DOC + "\n" + table)
    problems = update_readme.check(readme, root)
    assert bool(problems) == flagged, problems
    if flagged:
        line = len((DOC + "\n").splitlines()) + 1
        assert problems == [f"{readme}:{line}: a table with measured figures outside a figures block "
                            "(mark it with the command that prints it)"]


def test_check_names_a_missing_script_and_bad_markers(root: Path):
    readme = root / "README.md"
    readme.write_text(DOC.replace("tools/say.py", "tools/gone.py"))
    assert update_readme.check(readme, root) == [
        f"{readme}:5: the block's script tools/gone.py does not exist"]
    readme.write_text(DOC.replace("<!-- /figures -->\n", ""))
    assert update_readme.check(readme, root) == [
        f"{readme}:5: figures block never closed (<!-- /figures -->)"]
    with pytest.raises(update_readme.MarkerError, match=":6: a figures block opens inside the block of line 5"):
        update_readme.find_blocks(["x"] * 4 + ["<!-- figures: a.py -->"] * 2, readme)


def test_make_figures_runs_the_updater():
    makefile = (REPO / "Makefile").read_text()
    target = makefile.split("\nfigures: setup\n", 1)[1].split("\n\n", 1)[0]
    assert "benchmarks/update_readme.py" in target and "--only" in target
