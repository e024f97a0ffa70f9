#!/usr/bin/env python3
"""Start-up cost of the package's automatic registration hook (``espnet_ssm_autoregister.pth``).

Builds a wheel from the repository, creates a fresh virtual environment that sees this
environment's packages (torch, ESPnet) through a symlink view without anything of espnet-ssm,
and times fresh interpreters:

* ``python -c pass`` (a process that never touches ESPnet): without the package, with the wheel
  installed, and with the wheel installed but ``ESPNET_SSM_AUTOREGISTER=0``;
* ``python -c "import espnet2.tasks.asr"`` (an ESPnet process): without the package and with it,
  where the hook imports ``espnet_ssm``, which registers in every task registry it fills;
* for reference, this project's ``.venv`` (editable install: setuptools' own editable finder
  is loaded at every start-up, whatever the package does).

Each figure is the median over its runs of wall-clock time and of the child's CPU time (user +
system, from ``getrusage``); runs of the configurations are interleaved so that a change of load
on a shared machine hits all of them alike. It also prints the import time of the hook module
itself (``python -X importtime``).

Usage::

    python benchmarks/bench_startup.py                  # 40 runs of `pass`, 3 of the ESPnet import
    python benchmarks/bench_startup.py --runs 100 --espnet-runs 5
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "ESPNET_SSM_AUTOREGISTER"
OURS = ("espnet_ssm", "_espnet_ssm_autoregister", "__editable__")


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "PYTHONPATH")}
    env.update(extra, OMP_NUM_THREADS="1")
    return env


def _timed(cmd: Sequence[str], env: Dict[str, str], cwd: Path) -> Tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(list(cmd), env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _purelib(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout
    return Path(out.strip())


def fresh_venv(root: Path) -> Path:
    """A venv without pip whose path reaches this environment's packages, minus ours."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    view = root / "view"
    view.mkdir(parents=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.endswith(".pth") or entry.name.startswith(OURS) or entry.name == "__pycache__":
            continue
        (view / entry.name).symlink_to(entry)
    python = root / "venv" / "bin" / "python"
    (_purelib(python) / "zz_shared_packages.pth").write_text(f"{view}\n")
    return python


def pip(python: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "--quiet", *args],
                   check=True)


def build_wheel(out: Path) -> Path:
    """A wheel of the repository, built from a copy of its package files (isolated build)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("setup.py", "README.md", "_espnet_ssm_autoregister.py"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "espnet_ssm", src / "espnet_ssm",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(out / "dist"), str(src))
    return next((out / "dist").glob("espnet_ssm-*.whl"))


def measure(configs: Dict[str, Tuple[Path, Dict[str, str]]], code: str, runs: int,
            cwd: Path) -> Dict[str, Tuple[float, float]]:
    """Median (wall, cpu) of ``python -c code`` per configuration, runs interleaved."""
    samples: Dict[str, List[Tuple[float, float]]] = {name: [] for name in configs}
    for name, (python, env) in configs.items():  # warm the file system cache once
        _timed([str(python), "-c", code], env, cwd)
    for _ in range(runs):
        for name, (python, env) in configs.items():
            samples[name].append(_timed([str(python), "-c", code], env, cwd))
    return {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
            for name, s in samples.items()}


def hook_import_us(python: Path) -> int:
    """Cumulative import time of the hook module at start-up (``-X importtime``), microseconds."""
    err = subprocess.run([str(python), "-X", "importtime", "-c", "pass"], env=_env(),
                         capture_output=True, text=True, check=True).stderr
    for line in err.splitlines():
        if line.split("|")[-1].strip() == "_espnet_ssm_autoregister":
            return int(line.split("|")[1])
    return -1


def print_table(title: str, rows: Dict[str, Tuple[float, float]], base: str, scale: float,
                unit: str) -> None:
    print(f"\n{title}\n")
    print(f"| configuration | wall ({unit}) | CPU ({unit}) | wall vs. without |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in rows.items():
        delta = (wall - rows[base][0]) * scale
        print(f"| {name} | {wall * scale:.1f} | {cpu * scale:.1f} | {delta:+.1f} {unit} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs of `python -c pass` each")
    parser.add_argument("--espnet-runs", type=int, default=3,
                        help="runs of `import espnet2.tasks.asr` each (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        root = Path(tmp)
        wheel = build_wheel(root / "build")
        bare = fresh_venv(root / "bare")
        installed = fresh_venv(root / "installed")
        pip(installed, "install", "--no-deps", str(wheel))
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; wheel {wheel.name}")
        print(f"import time of the hook module at start-up: {hook_import_us(installed)} us "
              "(python -X importtime)")

        project_python = REPO / ".venv" / "bin" / "python"
        configs = {
            "fresh venv, without the package": (bare, _env()),
            "fresh venv, wheel installed": (installed, _env()),
            f"fresh venv, wheel installed, {ENV_VAR}=0": (installed, _env(**{ENV_VAR: "0"})),
        }
        if project_python.exists():
            configs["project .venv (editable install)"] = (project_python, _env())
            configs[f"project .venv (editable install), {ENV_VAR}=0"] = (
                project_python, _env(**{ENV_VAR: "0"}))
        rows = measure(configs, "pass", args.runs, root)
        print_table(f"`python -c pass`, median of {args.runs} runs", rows,
                    "fresh venv, without the package", 1e3, "ms")

        if args.espnet_runs > 0:
            espnet = {k: configs[k] for k in list(configs)[:3]}
            rows = measure(espnet, "import espnet2.tasks.asr", args.espnet_runs, root)
            print_table(f"`python -c \"import espnet2.tasks.asr\"`, median of "
                        f"{args.espnet_runs} runs (with the hook: + import espnet_ssm, which "
                        "registers in the asr/st/s2t/slu/enh_s2t registries)", rows,
                        "fresh venv, without the package", 1.0, "s")


if __name__ == "__main__":
    main()
