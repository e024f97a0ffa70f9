"""``asr.sh --download_model``: a packed model to decode with, linked into the experiment directory.

Usage: ``helper.py pretrained <model> <asr_exp>``. ``<model>`` is one of

* a packed ``.zip`` (what stage 14 writes), unpacked with ESPnet's ``unpack`` into
  ``<asr_exp>/unpacked/``;
* an unpacked directory holding ``meta.yaml`` (a Hugging Face model repository's layout);
* a Hugging Face repository name (``<user>/<name>``), fetched with ``huggingface_hub`` and then
  used as a directory; without the package or the network this fails with a message saying so.

As ESPnet's asr.sh does with ``espnet_model_zoo_download``, the model's ``config.yaml`` and model
file are linked into ``<asr_exp>/`` and its LM (if any) into ``<asr_exp>/lm/``; the paths inside
the configs (token list, BPE model, normalisation statistics) are rewritten to the unpacked
files. Prints ``asr_model_file <name>`` and, with an LM, ``lm_file <name>`` for asr.sh.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import yaml


class PretrainedError(ValueError):
    pass


def fetch(model: str) -> Path:
    """A local copy of ``model``: the path itself when it exists, else a Hugging Face download."""
    if Path(model).exists():
        return Path(model)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PretrainedError(
            f"--download_model {model}: no such file or directory, and huggingface_hub (the Hugging Face "
            "client) is not installed to fetch it (pip install huggingface_hub, or give a packed .zip or an "
            "unpacked model directory)") from None
    try:
        return Path(snapshot_download(repo_id=model))
    except Exception as e:  # the hub raises many kinds (offline, unknown repository, HTTP errors)
        raise PretrainedError(
            f"--download_model {model}: cannot download it from Hugging Face ({type(e).__name__}: {e}); "
            "without network access give a packed .zip or an unpacked model directory") from None


def unpack_dir(src: Path, out: Path) -> Dict[str, str]:
    """``unpack`` for an unpacked model directory: configs rewritten into ``out``, other files kept."""
    from espnet2.main_funcs.pack_funcs import find_path_and_change_it_recursive

    meta_file = src / "meta.yaml"
    if not meta_file.is_file():
        raise PretrainedError(f"--download_model {src}: no meta.yaml in it (not a packed ESPnet model)")
    meta = yaml.safe_load(meta_file.read_text(encoding="utf-8")) or {}
    names = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    files = {}
    for key, rel in (meta.get("yaml_files") or {}).items():
        conf = yaml.safe_load((src / rel).read_text(encoding="utf-8"))
        for name in names:
            conf = find_path_and_change_it_recursive(conf, name, str((src / name).resolve()))
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(yaml.safe_dump(conf), encoding="utf-8")
        files[key] = str(out / rel)
    for key, rel in (meta.get("files") or {}).items():
        files[key] = str((src / rel).resolve())
    return files


def link(target: str, link_dir: Path, name: str) -> None:
    """``link_dir/name`` -> ``target`` (replacing an earlier link)."""
    link_dir.mkdir(parents=True, exist_ok=True)
    dst = link_dir / name
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(os.path.abspath(target))


def install(model: str, asr_exp: Path) -> Dict[str, str]:
    """Fetch/unpack ``model`` and link its files into ``asr_exp``; return the linked file names."""
    src = fetch(model)
    out = asr_exp / "unpacked"
    if src.is_file():
        from espnet2.main_funcs.pack_funcs import unpack

        try:
            files = unpack(src, out)
        except Exception as e:  # a zip without meta.yaml, a corrupt archive
            raise PretrainedError(f"--download_model {model}: cannot unpack it ({e})") from None
    else:
        files = unpack_dir(src, out)
    for key in ("asr_train_config", "asr_model_file"):
        if key not in files:
            raise PretrainedError(f"--download_model {model}: its meta.yaml names no {key}")
    link(files["asr_train_config"], asr_exp, "config.yaml")
    names = {"asr_model_file": Path(files["asr_model_file"]).name}
    link(files["asr_model_file"], asr_exp, names["asr_model_file"])
    if "lm_file" in files and "lm_train_config" in files:
        link(files["lm_train_config"], asr_exp / "lm", "config.yaml")
        names["lm_file"] = Path(files["lm_file"]).name
        link(files["lm_file"], asr_exp / "lm", names["lm_file"])
    return names


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="Hugging Face repository, packed .zip or unpacked model directory")
    p.add_argument("asr_exp", type=Path, help="experiment directory to link the model into")
    args = p.parse_args(argv)
    try:
        names = install(args.model, args.asr_exp)
    except (PretrainedError, OSError) as e:
        sys.exit(f"pretrained: {e}")
    for key, name in names.items():
        print(key, name)


if __name__ == "__main__":
    main()
