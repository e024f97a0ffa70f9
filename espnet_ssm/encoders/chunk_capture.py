r"""Captured chunk steps: a streaming encoder's blocks replayed from a trace of their own code.

At 160 ms a chunk is four encoder frames, and one pass of the blocks' ``forward_chunk`` is some
thousands of small PyTorch operations (a paper-size MH-SSM: about 2000), each of which costs
more in Python (module calls, argument checks, state bookkeeping) than in arithmetic.
A :class:`ChunkCapture` records the blocks' ``forward_chunk`` (and the final LayerNorm) with
``torch.jit.trace`` for one *signature*, the chunk's shape and the structure and shapes of every
block's state, and from then on replays the recorded operations in TorchScript's interpreter,
without the Python. Nothing is re-implemented: the trace is the modules' own chunk code, so it
stays equal to the eager path (``tests/test_chunk_capture.py`` checks every family).

Rules that keep a replay equal to running the modules:

* a signature is traced when two chunks in a row have it: the first and last chunks of a
  stream (no state yet, a shorter chunk) run eagerly; states keep their steady shapes from the
  first chunk on (a limited attention context is a fixed cache with a mask of the frames that
  exist), so a stream replays from its third chunk; an unlimited left context grows, never
  repeats and always runs eagerly;
* whatever in a state is not a tensor (None, ints) is part of the signature;
* a trace holds what the layers derive from their weights (S4D's discretisation, attention's
  distance table) as constants, so all traces are dropped when any parameter or buffer of the
  encoder changes in place (an optimiser step, ``load_state_dict``); a module or parameter
  *replaced* by another object needs ``use_captured_chunks`` again (the tensors are listed once);
  while autograd records, the eager path runs;
* a signature that cannot be traced (or a state of a type this module does not know) runs
  eagerly, with one warning.

Measured (``benchmarks/bench_streaming.py streaming``): see the README's streaming table.
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterator, List, Optional, Tuple

import torch

from espnet_ssm.layers.weight_cache import weights_key

# traces kept per encoder (one per chunk length and state shape in use)
MAX_TRACES = 8


class _Untraceable(TypeError):
    """A state holds a value that cannot be passed through a trace."""


def flatten_state(state: Any) -> Tuple[List[torch.Tensor], Hashable]:
    """The tensors of a (nested) state and a hashable spec of everything else, shapes included.

    Lists, tuples, named tuples and dataclasses are walked; None, bools, ints, floats and
    strings are kept in the spec.
    """
    leaves: List[torch.Tensor] = []

    def walk(o: Any) -> Hashable:
        if isinstance(o, torch.Tensor):
            leaves.append(o)
            return ("tensor", tuple(o.shape), o.dtype, o.device)
        if o is None or isinstance(o, (bool, int, float, str)):
            return ("value", o)
        if isinstance(o, list):
            return ("list", tuple(walk(x) for x in o))
        if isinstance(o, tuple):
            kind = type(o) if hasattr(o, "_fields") else tuple
            return ("tuple", kind, tuple(walk(x) for x in o))
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return ("dataclass", type(o),
                    tuple((f.name, walk(getattr(o, f.name))) for f in dataclasses.fields(o)))
        raise _Untraceable(f"a state holds a {type(o).__name__}")

    return leaves, walk(state)


def unflatten_state(spec: Hashable, leaves: Iterator[torch.Tensor]) -> Any:
    """The state of ``spec`` with its tensors taken in order from ``leaves``."""
    kind = spec[0]
    if kind == "tensor":
        return next(leaves)
    if kind == "value":
        return spec[1]
    if kind == "list":
        return [unflatten_state(s, leaves) for s in spec[1]]
    if kind == "tuple":
        items = [unflatten_state(s, leaves) for s in spec[2]]
        return spec[1](*items) if spec[1] is not tuple else tuple(items)
    return spec[1](**{name: unflatten_state(s, leaves) for name, s in spec[2]})


class _Step(torch.nn.Module):
    """What is traced: ``run(x, blocks)`` on flat tensors, ``(x, *state tensors)`` both ways."""

    def __init__(self, encoder: torch.nn.Module, ctc: Optional[torch.nn.Module],
                 run: Callable, in_spec: Hashable):
        super().__init__()
        self.encoder, self.ctc = encoder, ctc  # submodules: their weights are the trace's inputs
        self._run, self._in_spec = run, in_spec
        self.out_spec: Optional[Hashable] = None

    def forward(self, x: torch.Tensor, *leaves: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        y, state = self._run(x, unflatten_state(self._in_spec, iter(leaves)), self.ctc)
        out, self.out_spec = flatten_state(state)
        return (y, *out)


class ChunkCapture:
    """The traces of one encoder's chunk step, by signature (see the module docstring)."""

    def __init__(self) -> None:
        self._traces: "OrderedDict[Hashable, Tuple[Any, Hashable]]" = OrderedDict()
        self._last: Optional[Hashable] = None  # the previous chunk's signature
        self._failed: set = set()
        self._weights: Optional[tuple] = None
        self._owners: Optional[tuple] = None  # (id(encoder), id(ctc)) of _tensors
        self._tensors: list = []
        self.replays = 0  # chunks run from a trace (for tests and benchmarks)

    def run(
        self,
        encoder: torch.nn.Module,
        run: Callable[[torch.Tensor, Any, Optional[torch.nn.Module]], Tuple[torch.Tensor, Any]],
        x: torch.Tensor,
        state: Any,
        ctc: Optional[torch.nn.Module],
    ) -> Tuple[torch.Tensor, Any]:
        """``run(x, state, ctc)`` (the encoder's blocks on a chunk), from a trace when one
        exists for this signature."""
        weights = self._weights_of(encoder, ctc)
        if torch.is_grad_enabled() and any(w.requires_grad for w in weights):
            return run(x, state, ctc)
        key = weights_key(weights)
        if key != self._weights:  # new weights: every trace holds stale tables
            self.clear()
            self._weights = key
        try:
            leaves, spec = flatten_state(state)
        except _Untraceable:
            return run(x, state, ctc)
        signature = (tuple(x.shape), x.dtype, x.device, spec, id(ctc))
        repeated, self._last = signature == self._last, signature
        if signature not in self._traces:
            if signature in self._failed or not repeated:
                return run(x, state, ctc)
            if not self._trace(signature, encoder, ctc, run, x, leaves, spec):
                return run(x, state, ctc)
        self._traces.move_to_end(signature)
        traced, out_spec = self._traces[signature]
        y, *out = traced(x, *leaves)
        self.replays += 1
        return y, unflatten_state(out_spec, iter(out))

    def _weights_of(self, encoder: torch.nn.Module, ctc: Optional[torch.nn.Module]) -> list:
        """The parameters and buffers of ``encoder`` and ``ctc``, listed once per pair (walking a
        quantized paper-size model's modules costs about a millisecond, a tenth of a chunk)."""
        owners = (id(encoder), id(ctc))
        if owners != self._owners:
            self._tensors = [*encoder.parameters(), *encoder.buffers(),
                             *(ctc.parameters() if ctc is not None else ())]
            self._owners = owners
        return self._tensors

    def _trace(self, signature, encoder, ctc, run, x, leaves, spec) -> bool:
        step = _Step(encoder, ctc, run, spec)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings: shapes are in the signature
                traced = torch.jit.trace(step, (x, *leaves), check_trace=False)
        except Exception as e:  # noqa: BLE001 (any failure: the eager path stays correct)
            logging.warning("chunk capture: running %s eagerly for chunks of shape %s (%s: %s)",
                            type(encoder).__name__, tuple(x.shape), type(e).__name__,
                            str(e).splitlines()[0] if str(e) else "")
            self._failed.add(signature)
            return False
        self._traces[signature] = (traced, step.out_spec)
        while len(self._traces) > MAX_TRACES:
            self._traces.popitem(last=False)
        return True

    def clear(self) -> None:
        """Forget every trace."""
        self._traces.clear()
        self._last = None
        self._failed.clear()
        self._weights = None

    def __deepcopy__(self, memo: dict) -> "ChunkCapture":
        return ChunkCapture()  # a copy has other weights (and its own modules)

    def __getstate__(self) -> dict:
        return ChunkCapture().__dict__


def use_captured_chunks(model: torch.nn.Module, enabled: bool = True) -> int:
    """Replay the chunk steps of every encoder of this package in ``model`` from traces
    (``enabled``) or run them eagerly; returns the number of encoders switched. Switching
    (either way) forgets the traces made so far."""
    encoders = [m for m in model.modules() if hasattr(m, "chunk_capture")]
    for m in encoders:
        m.chunk_capture = ChunkCapture() if enabled else None
    return len(encoders)
