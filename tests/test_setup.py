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
    path = _sandbox_path(tmp_path, uid=1000, tools=("espeak-ng", "sox", "flac"))
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "tools" / "system_deps.sh")],
        env={"PATH": path}, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme
    commands = [l.strip() for l in ci.splitlines() if l.strip() and not l.startswith("#")]
    assert commands[-1] == "make test"
    assert os.access(REPO / ".ci" / "run", os.X_OK)
