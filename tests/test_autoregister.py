"""Registration at ESPnet's own entry points: the start-up hook installed with the package.

Every ESPnet process here is a fresh interpreter that never runs ``import espnet_ssm`` itself;
whatever knows our encoders there was registered by the hook. The slow parts (ESPnet's import
takes ~10 s on 2 cores) run as few processes as possible, concurrently where they are independent.
"""
from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
import yaml

import _espnet_ssm_autoregister as hook
from conftest import REPO, TinyASRData, ddp_training, run_ddp
from test_entry_points import TINY_MODEL_ARGS  # a small model of ours, ESPnet syntax

NAMES = ("mh_ssm", "stateformer", "speech_mamba", "ssm_conformer")
# ESPnet's training entry point of each task we register in, and its encoder option there.
TASK_OPTIONS = {"asr": "encoder", "st": "encoder", "s2t": "encoder", "slu": "encoder",
                "enh_s2t": "asr_encoder"}
PTH_NAME = "espnet_ssm_autoregister.pth"
HEAVY = ("torch", "espnet2", "espnet_ssm")



def _env(**extra: str) -> Dict[str, str]:
    """The test's environment with the hook on (unless ``extra`` says otherwise), 1 thread each."""
    env = {k: v for k, v in os.environ.items() if k not in (hook.ENV_VAR, "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _start(args: Sequence[str], cwd: Path, env: Dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(list(args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _py(code: str, python: str = sys.executable) -> List[str]:
    return [python, "-c", textwrap.dedent(code)]


# ---------------------------------------------------------------------------------------------
# The hook itself, on fake "espnet2" task modules (no torch, no ESPnet: milliseconds)
# ---------------------------------------------------------------------------------------------

FAKE_TREE = {
    "espnet2/__init__.py": "",
    "espnet2/tasks/__init__.py": "",
    # like ESPnet: a module-level registry ...
    "espnet2/tasks/asr.py": "import sys\nencoder_choices = {'conformer': object}\n",
    # ... that enh_s2t copies while it is imported, after importing asr
    "espnet2/tasks/enh_s2t.py": (
        "import copy\nfrom espnet2.tasks.asr import encoder_choices\n"
        "asr_encoder_choices = copy.deepcopy(encoder_choices)\n"
    ),
    "espnet2/tasks/lm.py": "",
    # the registering package: registers in both, and imports a trigger module itself
    "fakeplugin/__init__.py": (
        "import sys, espnet2.tasks.asr as asr, espnet2.tasks.enh_s2t as enh\n"
        "sys._fake_imports = getattr(sys, '_fake_imports', 0) + 1\n"
        "enh.asr_encoder_choices['mh_ssm'] = 'ours'\n"  # AttributeError while enh is half-imported
        "asr.encoder_choices['mh_ssm'] = 'ours'\n"
    ),
    "brokenplugin/__init__.py": "raise RuntimeError('broken on purpose')\n",
}


def _fake_run(tmp_path: Path, body: str, package: str = "fakeplugin",
              env: Optional[Dict[str, str]] = None) -> str:
    """Run ``body`` with the hook armed by hand over the fake tree (site disabled: no .pth)."""
    for rel, text in FAKE_TREE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    code = (
        f"import sys\nsys.path[:0] = [{str(tmp_path)!r}, {str(REPO)!r}]\n"
        "import _espnet_ssm_autoregister as hook\n"
        f"hook.REGISTERING_PACKAGE = {package!r}\n"
        "armed = hook.install()\n"
        + textwrap.dedent(body)
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env=env if env is not None else _env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_hook_registers_after_the_outermost_trigger_module_finished(tmp_path: Path):
    out = _fake_run(tmp_path, """
        import inspect
        assert armed and isinstance(sys.meta_path[0], hook.AutoRegisterFinder)
        import espnet2.tasks.lm                      # not a trigger: nothing happens
        assert "fakeplugin" not in sys.modules
        import espnet2.tasks.enh_s2t as enh          # imports asr inside, copies its registry after
        import espnet2.tasks.asr as asr
        # registered once, after enh_s2t had made its copy (so the copy has it too)
        assert sys._fake_imports == 1, sys._fake_imports
        assert asr.encoder_choices["mh_ssm"] == enh.asr_encoder_choices["mh_ssm"] == "ours"
        # the modules keep their real loaders; sources stay readable
        assert type(asr.__loader__).__name__ == "SourceFileLoader", asr.__loader__
        assert asr.__spec__.loader is asr.__loader__
        assert "encoder_choices" in inspect.getsource(asr)
        # its work done, the finder is gone
        assert hook.installed() is None
        print("OK")
    """)
    assert "OK" in out and "could not register" not in out


def test_hook_does_not_recurse_when_the_package_is_imported_first(tmp_path: Path):
    out = _fake_run(tmp_path, """
        import fakeplugin                  # imports the trigger modules while it is half-imported
        import espnet2.tasks.asr as asr
        assert sys._fake_imports == 1 and asr.encoder_choices["mh_ssm"] == "ours"
        print("OK")
    """)
    assert "OK" in out


def test_failing_registration_warns_and_espnet_still_imports(tmp_path: Path):
    out = _fake_run(tmp_path, """
        import espnet2.tasks.asr as asr
        assert "mh_ssm" not in asr.encoder_choices
        print("OK")
    """, package="brokenplugin")
    assert "OK" in out
    assert "RuntimeWarning: espnet-ssm could not register" in out and "broken on purpose" in out


@pytest.mark.parametrize("value", ["0", "false", "Off", " no "])
def test_opt_out_value_leaves_imports_alone(tmp_path: Path, value: str):
    out = _fake_run(tmp_path, """
        import espnet2.tasks.asr as asr
        assert not armed and hook.installed() is None
        assert "fakeplugin" not in sys.modules and "mh_ssm" not in asr.encoder_choices
        print("OK")
    """, env=_env(**{hook.ENV_VAR: value}))
    assert "OK" in out


def test_trigger_modules_cover_every_registry():
    # read from the source: importing espnet_ssm.registry would import ESPnet (10 s)
    tree = ast.parse((REPO / "espnet_ssm" / "registry.py").read_text())
    pairs = [pair for node in tree.body if isinstance(node, ast.AnnAssign)
             and node.target.id.endswith("_REGISTRIES") for pair in ast.literal_eval(node.value)]
    assert ("espnet2.tasks.asr", "encoder_choices") in pairs
    assert {module for module, _ in pairs} <= hook.TRIGGER_MODULES


# ---------------------------------------------------------------------------------------------
# The installed package (this environment: the editable install of `make setup`)
# ---------------------------------------------------------------------------------------------

def test_install_ships_the_pth_and_records_it_for_uninstall():
    purelib = sysconfig.get_paths()["purelib"]
    # the installed distribution (not a build's egg-info in the working directory)
    (dist,) = [d for d in importlib.metadata.distributions(path=[purelib])
               if d.metadata["Name"] == "espnet-ssm"]
    files = {str(f) for f in dist.files}
    assert PTH_NAME in files, "pip uninstall would leave the start-up file behind"
    pth = Path(purelib) / PTH_NAME
    line = pth.read_text()
    assert line.startswith("import ") and line.count("\n") == 1  # site.py executes such lines
    assert "_espnet_ssm_autoregister" in line and hook.ENV_VAR in line


def test_startup_only_arms_the_hook():
    """At start-up the package adds one stdlib-only module and one finder, nothing else."""
    check = _py("""
        import sys
        print(type(sys.meta_path[0]).__name__)
        print(" ".join(sorted(sys.modules)))
    """)
    on = _ok(subprocess.run(check, capture_output=True, text=True, env=_env(), cwd="/"))
    off = _ok(subprocess.run(check, capture_output=True, text=True, cwd="/",
                             env=_env(**{hook.ENV_VAR: "0"})))
    assert on.splitlines()[0] == "AutoRegisterFinder" != off.splitlines()[0]
    modules_on, modules_off = (set(out.splitlines()[1].split()) for out in (on, off))
    assert modules_on - modules_off == {"_espnet_ssm_autoregister"}
    assert not {m for m in modules_on if m.split(".")[0] in HEAVY}


# Each name in ASR; one name in each other task (one registry each, filled with all names at once).
TASK_NAMES = [("asr", n) for n in NAMES] + list(zip([t for t in TASK_OPTIONS if t != "asr"], NAMES))

# What a recipe runs: each task's training entry point as ``python -m espnet2.bin.<task>_train``
# (runpy, as -m does; ESPnet's --print_config reads sys.argv), with no import of ours.
PRINT_CONFIGS = """
    import runpy, sys
    assert "espnet_ssm" not in sys.modules
    for task, name in {task_names!r}:
        option = {tasks!r}[task]
        sys.argv = [f"{{task}}_train.py", "--print_config", f"--{{option}}", name]
        print("BEGIN", task, name, flush=True)
        try:
            runpy.run_module(f"espnet2.bin.{{task}}_train", run_name="__main__")
        except SystemExit as e:
            print("EXIT", e.code)
        print("END", flush=True)
    # ESPnet starts its multi-GPU workers with "spawn": a fresh child that unpickles ESPnet's
    # ASRTask.main_worker, i.e. imports espnet2.tasks.asr; here the child only imports it.
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        names = pool.apply(eval, ("sorted(__import__('espnet2.tasks.asr', fromlist=['_'])"
                                  ".encoder_choices.classes)",))
    print("SPAWNED", *names)
"""

OPTED_OUT = """
    import importlib, runpy, sys
    for task in {tasks!r}:
        importlib.import_module(f"espnet2.tasks.{{task}}")
    import espnet2.tasks.asr as asr
    print("REGISTERED", sorted(set(asr.encoder_choices.classes) & set({names!r})))
    print("LOADED", sorted(m for m in sys.modules
                           if m.split(".")[0] in ("espnet_ssm", "_espnet_ssm_autoregister")))
    sys.argv = ["asr_train.py", "--print_config", "--encoder", "mh_ssm"]
    try:
        runpy.run_module("espnet2.bin.asr_train", run_name="__main__")
    except SystemExit as e:
        print("EXIT", e.code)
"""


def _sections(stdout: str) -> Dict[str, str]:
    """``{"task name": text}`` between the BEGIN/END markers of PRINT_CONFIGS."""
    found, key, lines = {}, None, []
    for line in stdout.splitlines():
        if line.startswith("BEGIN "):
            key, lines = line[len("BEGIN "):], []
        elif line == "END" and key is not None:
            found[key], key = "\n".join(lines), None
        elif key is not None:
            lines.append(line)
    return found


def test_espnet_entry_points_accept_our_encoders_and_opt_out_rejects_them(tmp_path: Path):
    procs = {
        "on": _start(_py(PRINT_CONFIGS.format(tasks=TASK_OPTIONS, task_names=TASK_NAMES)),
                     tmp_path, _env()),
        "off": _start(_py(OPTED_OUT.format(tasks=list(TASK_OPTIONS), names=NAMES)), tmp_path,
                      _env(**{hook.ENV_VAR: "0"})),
    }
    done = {k: _finish(p) for k, p in procs.items()}

    sections = _sections(_ok(done["on"]))
    assert {task for task, _ in TASK_NAMES} == set(TASK_OPTIONS)
    for task, name in TASK_NAMES:
        text = sections[f"{task} {name}"]
        assert text.rstrip().endswith("EXIT 0"), (task, name, text[-1000:])
        assert f"\n{TASK_OPTIONS[task]}: {name}\n" in f"\n{text}", (task, name)
    cli = yaml.safe_load(sections["asr ssm_conformer"].rsplit("EXIT", 1)[0])
    assert "ssm_mode" in cli["encoder_conf"]  # our constructor's defaults: our class was found
    spawned = next(l for l in done["on"].stdout.splitlines() if l.startswith("SPAWNED"))
    assert set(NAMES) <= set(spawned.split()[1:])

    # opted out: exactly ESPnet without us (nothing of ours imported, nothing registered)
    out = _ok(done["off"])
    assert "REGISTERED []" in out and "LOADED []" in out and "EXIT 2" in out
    assert "argument --encoder: invalid choice: 'mh_ssm'" in done["off"].stderr


# ---------------------------------------------------------------------------------------------
# Training with ESPnet's own entry point (2-process DDP on CPU), then ESPnet's loaders
# ---------------------------------------------------------------------------------------------

LOAD_AND_DECODE = """
    import sys
    assert "espnet_ssm" not in sys.modules
    import soundfile, torch
    from espnet2.bin.asr_inference import Speech2Text, main as inference_main
    from espnet2.bin.pack import main as pack_main
    from espnet2.main_funcs.pack_funcs import unpack

    config, model_file, wav_scp = {config!r}, {model_file!r}, {wav_scp!r}
    s2t = Speech2Text(asr_train_config=config, asr_model_file=model_file, beam_size=2,
                      ctc_weight=0.5, maxlenratio=0.3)
    print("ENCODER", type(s2t.asr_model.encoder).__module__)
    saved = torch.load(model_file, map_location="cpu", weights_only=False)
    state = s2t.asr_model.state_dict()
    assert set(state) == set(saved), set(state) ^ set(saved)     # ESPnet loads with strict=False
    assert all(torch.equal(state[k], saved[k]) for k in state)
    wav, _ = soundfile.read(open(wav_scp).read().split()[1])
    hyp = s2t(torch.tensor(wav, dtype=torch.float32))[0][0]

    # packed as a recipe's stage 14 does, then ESPnet's from_pretrained on the unpacked files
    pack_main(["asr", "--asr_train_config", config, "--asr_model_file", model_file,
               "--outpath", "packed/model.zip"])
    files = unpack("packed/model.zip", "unpacked")
    again = Speech2Text.from_pretrained(**files, beam_size=2, ctc_weight=0.5, maxlenratio=0.3)
    assert again(torch.tensor(wav, dtype=torch.float32))[0][0] == hyp

    # ESPnet's decoding entry point
    inference_main(["--asr_train_config", config, "--asr_model_file", model_file,
                    "--output_dir", "decode", "--ngpu", "0", "--beam_size", "2",
                    "--ctc_weight", "0.5", "--maxlenratio", "0.3",
                    "--data_path_and_name_and_type", f"{{wav_scp}},speech,sound"])
    print("DECODED", len(open("decode/1best_recog/text").read().splitlines()))
"""


def test_espnet_ddp_training_then_speech2text(tiny_asr_data: TinyASRData, tmp_path: Path):
    """torchrun starts two gloo workers of ``python -m espnet2.bin.asr_train`` (CPU DDP)."""
    out, logs = tmp_path / "exp", tmp_path / "logs"
    train = run_ddp(
        ddp_training("espnet2.bin.asr_train", [*tiny_asr_data.train_args(), *TINY_MODEL_ARGS],
                     out, logs),
        [out, logs], timeout=600, env=_env(), cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-4000:]
    rank_logs = sorted(logs.rglob("stderr.log"))
    assert len(rank_logs) == 2, rank_logs
    for log in rank_logs:
        assert "Traceback" not in log.read_text(), log.read_text()[-2000:]
    assert "1epoch results: [train]" in train.stderr
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["encoder"] == "mh_ssm" and config["ngpu"] == 0

    decode = subprocess.run(
        _py(LOAD_AND_DECODE.format(config=str(out / "config.yaml"),
                                   model_file=str(out / "latest.pth"),
                                   wav_scp=str(tiny_asr_data.wav_scp))),
        capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path,
    )
    stdout = _ok(decode)
    assert "ENCODER espnet_ssm.encoders" in stdout
    assert f"DECODED {len(tiny_asr_data.utt_ids)}" in stdout


# ---------------------------------------------------------------------------------------------
# A wheel in a fresh virtual environment; pip uninstall
# ---------------------------------------------------------------------------------------------

def _fresh_venv(root: Path) -> Path:
    """A venv that sees this environment's packages (torch, ESPnet) but nothing of ours.

    A symlink view of our site-packages without espnet-ssm's files and without any .pth file is
    put on its path: nothing is downloaded or copied, and no trace of the editable install leaks.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")],
                   check=True, timeout=120)
    purelib = Path(sysconfig.get_paths()["purelib"])
    view = root / "view"
    view.mkdir()
    for entry in purelib.iterdir():
        name = entry.name
        if (name.endswith(".pth") or name.startswith(("espnet_ssm", "_espnet_ssm", "__editable__"))
                or name == "__pycache__"):
            continue
        (view / name).symlink_to(entry)
    python = root / "venv" / "bin" / "python"
    venv_purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    (Path(venv_purelib) / "zz_shared_packages.pth").write_text(f"{view}\n")
    return python


def _pip(python: Path, *args: str, cwd: Path) -> str:
    return _ok(subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *args],
                              capture_output=True, text=True, cwd=cwd, timeout=600))


def test_wheel_in_fresh_venv_then_uninstall(tmp_path: Path):
    """``pip install`` of a wheel built from the repository (isolated build, as a user's)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md", "_espnet_ssm_autoregister.py"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "espnet_ssm", src / "espnet_ssm",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    python = _fresh_venv(tmp_path)
    modules = [sys.executable, "-c", "import sys; print(' '.join(sorted(sys.modules)))"]
    modules[0] = str(python)
    without = set(_ok(subprocess.run(modules, capture_output=True, text=True, cwd=tmp_path)).split())
    _pip(python, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "dist"),
         str(src), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("espnet_ssm-*.whl"))
    _pip(python, "install", "--quiet", "--no-deps", str(wheel), cwd=tmp_path)
    venv_purelib = Path(_ok(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True)).strip())
    assert (venv_purelib / PTH_NAME).is_file() and (venv_purelib / "espnet_ssm").is_dir()
    # start-up with the package installed: one stdlib-only module more, nothing else
    with_it = set(_ok(subprocess.run(modules, capture_output=True, text=True, cwd=tmp_path,
                                     env=_env())).split())
    assert with_it - without == {"_espnet_ssm_autoregister"}, with_it - without

    where = _ok(subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('espnet_ssm').origin)"],
        capture_output=True, text=True, cwd=tmp_path))
    assert where.startswith(str(venv_purelib)), where  # the wheel's copy, not the repository
    config = yaml.safe_load(_ok(subprocess.run(
        [str(python), "-m", "espnet2.bin.asr_train", "--print_config", "--encoder", "mh_ssm"],
        capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600)))
    assert config["encoder"] == "mh_ssm" and "num_heads" in config["encoder_conf"]

    _pip(python, "uninstall", "--yes", "espnet-ssm", cwd=tmp_path)
    left = sorted(str(p.relative_to(venv_purelib)) for p in venv_purelib.rglob("*espnet_ssm*"))
    assert left == [], left
    # nothing armed at start-up and nothing left to import: ESPnet cannot meet anything of ours
    after = _ok(subprocess.run([str(python), "-c", textwrap.dedent("""
        import importlib.util, sys
        print([type(f).__name__ for f in sys.meta_path])
        print([importlib.util.find_spec(m) for m in ("espnet_ssm", "_espnet_ssm_autoregister")])
    """)], capture_output=True, text=True, cwd=tmp_path, env=_env()))
    assert "AutoRegisterFinder" not in after and after.splitlines()[1] == "[None, None]", after
