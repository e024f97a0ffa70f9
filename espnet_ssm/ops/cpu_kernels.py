"""The compiled CPU kernels: build, load, or fall back.

* ``csrc/selective_scan_cpu.cpp``: the selective scan (``forward``, ``backward``, ``step``; a
  Python module, :func:`kernel`);
* ``csrc/s4d_steps_cpu.cpp``: S4D on short streaming chunks, registered as the torch operator
  ``torch.ops.espnet_ssm.s4d_planar_steps`` when the library is loaded (:func:`s4d_steps_op`).

Both are compiled into one library on the machine that runs it
(``torch.utils.cpp_extension.load``, cached by torch under ``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``, rebuilt when a source changes). ``make setup`` builds it ahead of time (``python -m
espnet_ssm.ops.cpu_kernels``); otherwise the first use builds it, which takes about a
minute. Without a C++ compiler (or with ``ESPNET_SSM_CPU_KERNEL=0``) :func:`kernel` and
:func:`s4d_steps_op` return None, the pure-PyTorch paths (the scan of
:mod:`espnet_ssm.ops.selective_scan`, S4D's frame loop) are used, and one warning says why.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

NAME = "espnet_ssm_cpu_kernels"
SOURCES = [Path(__file__).with_name("csrc") / f
           for f in ("selective_scan_cpu.cpp", "s4d_steps_cpu.cpp")]
ENV_SWITCH = "ESPNET_SSM_CPU_KERNEL"  # "0" turns the kernels off
# -ffast-math lets the compiler vectorise the loops over the state (reassociated sums, no errno);
# the unroller's variable expansion gives their reductions several accumulators (shorter chains)
CFLAGS = ["-O3", "-ffast-math", "-march=native", "-fopenmp", "-funroll-loops", "-fvariable-expansion-in-unroller"]
LDFLAGS = ["-fopenmp"]

logger = logging.getLogger(__name__)


class KernelUnavailable(RuntimeError):
    """The compiled CPU kernels were asked for explicitly but cannot be built or loaded."""


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip package's binary may sit outside it."""
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return
    if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


_loaded: Optional[ModuleType] = None  # the library, once loaded in this process


def _build() -> ModuleType:
    global _loaded
    if _loaded is not None:  # its torch operators register once per process: never load twice
        return _loaded
    # its import warns that no CUDA runtime is found, which says nothing about a CPU build
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)

    _put_ninja_on_path()
    built = Path(cpp_extension._get_build_directory(NAME, verbose=False)) / f"{NAME}.so"
    if not built.exists():
        logger.warning("espnet_ssm: compiling the CPU kernels (once; about a minute)")
    _loaded = cpp_extension.load(
        name=NAME, sources=[str(s) for s in SOURCES], extra_cflags=CFLAGS, extra_ldflags=LDFLAGS,
        verbose=False,
    )
    return _loaded


@functools.lru_cache(maxsize=1)
def _load() -> tuple:
    """(module or None, reason it is None)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None, f"{ENV_SWITCH}=0"
    try:
        return _build(), ""
    except Exception as e:  # no compiler, no ninja, a failed build: all mean "fall back"
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        warnings.warn(
            f"espnet_ssm: the compiled CPU kernels are unavailable ({type(e).__name__}: {reason}); "
            "Mamba layers use the slower pure-PyTorch scan and S4D streams frame by frame. They "
            "need a C++ compiler (g++) and ninja (`pip install ninja`); `make setup` builds them. "
            f"Set {ENV_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None, f"{type(e).__name__}: {reason}"


def kernel() -> Optional[ModuleType]:
    """The compiled scan (``forward``, ``backward``, ``step``), or None when unavailable."""
    return _load()[0]


def s4d_steps_op() -> Optional[Callable]:
    """``torch.ops.espnet_ssm.s4d_planar_steps`` (the maths of
    :func:`espnet_ssm.ops.s4d_kernel.s4d_planar_steps`), or None when the library is
    unavailable."""
    if _load()[0] is None:
        return None
    import torch

    return torch.ops.espnet_ssm.s4d_planar_steps


def require() -> ModuleType:
    """The compiled module, or :class:`KernelUnavailable` naming why it is missing."""
    module, reason = _load()
    if module is None:
        raise KernelUnavailable(f"the compiled CPU kernels are unavailable: {reason}")
    return module


def main() -> int:
    """Build (or find) the kernels; print where they stand. Exit 0 either way: optional."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, reason = _load()
    if module is None:
        print(f"espnet_ssm: CPU kernels not built ({reason}); the pure-PyTorch paths will be used")
    else:
        print(f"espnet_ssm: CPU kernels ready ({module.__file__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
