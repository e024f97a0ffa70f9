"""Set-up scripts: system tools are reported with the command that installs them."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO


def _sandbox_path(tmp_path: Path, uid: int, tools=()) -> str:
    """A PATH with bash, a fake ``id`` reporting ``uid`` and only the given ``tools``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bash").symlink_to(shutil.which("bash"))
    fake_id = bindir / "id"
    fake_id.write_text(f"#!{shutil.which('bash')}\necho {uid}\n")
    fake_id.chmod(0o755)
    for t in tools:
        (bindir / t).symlink_to(shutil.which("true"))
    return str(bindir)


def test_missing_system_tools_are_reported_with_install_command(tmp_path: Path):
    path = _sandbox_path(tmp_path, uid=1000, tools=("sox",))
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "tools" / "system_deps.sh")],
        env={"PATH": path}, capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "Missing system tools: espeak-ng flac" in proc.stderr
    assert "apt-get install -y espeak-ng flac" in proc.stderr


def test_present_system_tools_pass(tmp_path: Path):
    path = _sandbox_path(tmp_path, uid=1000, tools=("espeak-ng", "sox", "flac", "sctk"))
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "tools" / "system_deps.sh")],
        env={"PATH": path}, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_missing_demo_text_packages_are_reported(tmp_path: Path):
    """The demo corpus' text comes from Debian data packages, checked by file, not by command."""
    path = _sandbox_path(tmp_path, uid=1000, tools=("espeak-ng", "sox", "flac", "sctk"))
    root = tmp_path / "root"
    (root / "usr/share/games/fortunes").mkdir(parents=True)
    (root / "usr/share/games/fortunes/wisdom").write_text("%\n")
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "tools" / "system_deps.sh")],
        env={"PATH": path, "SYSTEM_DEPS_ROOT": str(root)}, capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "Missing system tools: wordnet-base." in proc.stderr
    assert "apt-get install -y wordnet-base'" in proc.stderr


def _quick_start_commands() -> list:
    """The commands of the README's Quick start block (comments stripped)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    commands = _quick_start_commands()
    assert commands[0] == "make test"
    ci = (REPO / ".ci" / "run").read_text()
    ci_commands = [l.strip() for l in ci.splitlines() if l.strip() and not l.startswith("#")]
    assert ci_commands[-1] == commands[0]
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_readme_make_targets_run_what_they_promise():
    """Each Quick start command is a make target; ``make test`` runs the suite without the
    tests marked slow (what pytest.ini promises), ``make demo`` the recipe's demo.sh."""
    commands = _quick_start_commands()
    assert [c.split()[0] for c in commands] == ["make"] * len(commands)
    runs = {}
    for command in commands:
        proc = subprocess.run(command.split() + ["-n"], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        runs[command] = proc.stdout.splitlines()
    pytest_lines = [l for l in runs["make test"] if " -m pytest " in l]
    assert len(pytest_lines) == 1 and pytest_lines[0].endswith('-m "not slow"  tests')
    assert "cd egs2/librispeech/asr1 && ./demo.sh" in runs["make demo"]
