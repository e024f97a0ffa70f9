"""S4D: a diagonal state space layer over channels, (batch, L, H) -> (batch, L, H).

Each of the H channels is an independent SSM with N diagonal modes (Gu et al. 2022, S4D):

    x_k = Ā x_{k-1} + B̄ u_k,    y_k = Re(C x_k) + D u_k,    Ā, B̄ from (Δ, A, B) by ZOH or bilinear

run as a convolution with the kernel K_l = Re(Σ_n C_n B̄_n Ā_n^l) (``espnet_ssm.ops.s4d_kernel``).

Modes of operation:

- ``kernel_size=None``: full-length kernel applied by FFT (unlimited context).
- ``kernel_size=k`` ("REP"): the kernel truncated to k taps, applied as a depthwise convolution.
- ``bidirectional=True``: S4's two-sided kernel, a second C gives the backward kernel, which
  starts at lag +1 (u_t is counted once). With the input zeroed at padded frames, padding after
  an utterance cannot reach its real frames in either direction.
- streaming (causal only): ``forward_chunk`` on chunks of any size (``step``: one frame); the
  carried state is the SSM state x (complex for complex A) or, for REP, the last k-1 inputs.
  The discretisation and the short-chunk tables are computed once per weight version. Both
  equal ``forward`` on the concatenated input. On the CPU (inference), chunks of up to
  ``TABLE_FRAMES`` frames run through the compiled operator
  ``torch.ops.espnet_ssm.s4d_planar_steps`` (``ops/csrc/s4d_steps_cpu.cpp``: the frame loop in
  real arithmetic, one fused loop per channel) instead of about ten small operations per frame,
  the state of a complex SSM then carried as its real and imaginary planes; without the compiled
  library the frame loop (``ops.s4d_step``) and the closed form (``ops.s4d_short_chunk``) run,
  and stay the reference.

Parameters are stored as real tensors (complex ones through ``view_as_real``) so that ESPnet's
checkpoint averaging and any optimizer handle them: ``log_dt`` (H,), ``log_A_real`` (H, N) with
Re(A) = -exp(log_A_real) (always stable), ``A_imag`` (H, N) for complex inits, ``B`` (H, N[, 2]),
``C`` (1 or 2, H, N[, 2]), ``D`` (H,). A complex init keeps N modes with complex C and no
conjugate pairs (no factor 2), so ``d_state`` counts modes; S4D-Real has N real modes.
Δ, A and B carry optimizer hints (no weight decay, learning rate ``lr``), see
``espnet_ssm.ops.ssm_param_groups``.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_ssm.layers.streaming import require_streamable
from espnet_ssm.layers.weight_cache import WeightCache
from espnet_ssm.ops import (
    S4D_INITS,
    depthwise_conv_valid,
    fft_bidirectional_conv,
    fft_causal_conv,
    init_log_dt,
    s4d_chunk,
    s4d_discretize,
    s4d_init,
    s4d_kernel,
    s4d_short_chunk,
    s4d_short_chunk_tables,
    s4d_step,
    set_optim_hint,
    two_sided_depthwise_conv,
    zero_padded,
)
from espnet_ssm.ops.cpu_kernels import s4d_steps_op
from espnet_ssm.ops.tensor_checks import check_choice, check_frames


class S4D(torch.nn.Module):
    """Diagonal state space layer over channels, (B, L, H) -> (B, L, H).

    Args:
        d_model: number of channels H.
        d_state: number of modes N per channel.
        init: ``"s4d_real"`` | ``"s4d_lin"`` | ``"s4d_inv"`` (A initialisation).
        discretization: ``"zoh"`` | ``"bilinear"``.
        dt_min, dt_max: range of the log-uniform Δ initialisation.
        n_bands: split the channels into this many contiguous bands with disjoint Δ ranges
            (band 0 the largest Δ: most local).
        bidirectional: two-sided (non-causal) kernel.
        use_D: add the skip term D u.
        lr: learning-rate hint for Δ, A and B (None: the optimizer's base lr).
        kernel_size: None for the full FFT kernel, or k for a k-tap depthwise convolution (REP).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "s4d_lin",
        discretization: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        n_bands: int = 1,
        bidirectional: bool = False,
        use_D: bool = True,
        lr: Optional[float] = None,
        kernel_size: Optional[int] = None,
    ):
        super().__init__()
        check_choice("S4D", "init", init, sorted(S4D_INITS))
        check_choice("S4D", "discretization", discretization, ("zoh", "bilinear"))
        if d_model < 1 or d_state < 1:
            raise ValueError(f"S4D: d_model and d_state must be >= 1, got {d_model}, {d_state}")
        if kernel_size is not None and kernel_size < 1:
            raise ValueError(f"S4D: kernel_size must be None or >= 1, got {kernel_size}")
        self.d_model, self.d_state = d_model, d_state
        self.init, self.discretization = init, discretization
        self.dt_min, self.dt_max, self.n_bands = dt_min, dt_max, n_bands
        self.bidirectional, self.kernel_size = bidirectional, kernel_size
        self.is_complex = init != "s4d_real"
        H, N = d_model, d_state
        cplx = (2,) if self.is_complex else ()
        self.log_dt = torch.nn.Parameter(torch.empty(H))
        self.log_A_real = torch.nn.Parameter(torch.empty(H, N))
        self.A_imag = torch.nn.Parameter(torch.empty(H, N)) if self.is_complex else None
        self.B = torch.nn.Parameter(torch.empty((H, N) + cplx))
        self.C = torch.nn.Parameter(torch.empty((2 if bidirectional else 1, H, N) + cplx))
        self.D = torch.nn.Parameter(torch.empty(H)) if use_D else None
        for p in (self.log_dt, self.log_A_real, self.A_imag, self.B):
            if p is not None:
                set_optim_hint(p, weight_decay=0.0, lr=lr)
        self._weight_cache: WeightCache = WeightCache()  # streaming's discretised form
        self._planar_cache: WeightCache = WeightCache()  # its real planes, for the compiled op
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """(Re)apply the S4D initialisation: A from ``init``, Δ log-uniform, B = 1, C, D ~ N(0, 1)."""
        H, N = self.d_model, self.d_state
        with torch.no_grad():
            A = s4d_init(self.init, N)
            self.log_A_real.copy_(torch.log(-(A.real if A.is_complex() else A)).expand(H, N))
            if self.A_imag is not None:
                self.A_imag.copy_(A.imag.expand(H, N))
            self.log_dt.copy_(init_log_dt(H, self.dt_min, self.dt_max, self.n_bands))
            self.B.zero_()
            (self.B[..., 0] if self.is_complex else self.B).fill_(1.0)
            # complex C: real and imaginary parts N(0, 1/2), i.e. a standard complex normal
            self.C.normal_(0.0, 0.5**0.5 if self.is_complex else 1.0)
            if self.D is not None:
                self.D.normal_()

    def espnet_initialization_fn(self) -> None:
        """ESPnet calls this after ``--init xavier_*`` has overwritten every matrix: restore S4D."""
        self.reset_parameters()

    def _ssm(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, B, C) as (complex or real) tensors; C is (1 or 2, H, N)."""
        re = -torch.exp(self.log_A_real)
        if not self.is_complex:
            return re, self.B, self.C
        return torch.complex(re, self.A_imag), torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel: (H, L), or (2, H, L) (forward, backward) if bidirectional."""
        A, B, C = self._ssm()
        K = s4d_kernel(self.log_dt, A, B, C, L, self.discretization)
        return K if self.bidirectional else K[0]

    # ------------------------------------------------------------------ full sequence
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, H), mask (B, L) True at valid frames -> (B, L, H), zero at padded frames."""
        self._check_input("forward", x, 3)
        x = zero_padded(x, mask)
        u = x.transpose(1, 2)
        if self.kernel_size is None:
            K = self.kernel(u.shape[-1])
            if self.bidirectional:
                y = fft_bidirectional_conv(u, K[0], K[1], self.D)
            else:
                y = fft_causal_conv(u, K, self.D)
        else:
            if not self.bidirectional:  # the chunk path's convolution, after k-1 zeros
                return zero_padded(self._rep_conv(F.pad(x, (0, 0, self.kernel_size - 1, 0))), mask)
            K = self.kernel(self.kernel_size).to(u.dtype)
            y = two_sided_depthwise_conv(u, K[0], K[1])
            if self.D is not None:
                y = y + self.D.to(u.dtype)[:, None] * u
        return zero_padded(y.transpose(1, 2), mask)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch: int, device=None) -> torch.Tensor:
        """Zero streaming state: (B, H, N) SSM state (complex for complex A), or for REP the
        (B, k-1, H) last inputs."""
        dtype = self.log_dt.dtype
        device = self.log_dt.device if device is None else device
        if self.kernel_size is not None:
            return torch.zeros(batch, self.kernel_size - 1, self.d_model, dtype=dtype, device=device)
        if self.is_complex:
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.d_state, dtype=dtype, device=device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One frame: x_t (B, H) and the carried state -> (y_t (B, H), new state)."""
        self._check_input("step", x_t, 2)
        y, state = self.forward_chunk(x_t[:, None], state)
        return y[:, 0], state

    def forward_chunk(
        self, x: torch.Tensor, state: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A chunk x (B, l, H) continuing from ``state`` (None: zeros) -> (y (B, l, H), new state).

        Chunks of up to ``TABLE_FRAMES`` frames on the CPU go through the compiled operator
        (when the library is built; see the module docstring); otherwise chunks of up to
        ``LOOP_FRAMES`` frames run the recurrence frame by frame, up to ``TABLE_FRAMES`` in
        closed form from per-layer tables (``ops.s4d_short_chunk``); longer ones (and any chunk
        while autograd records) are blocked (``ops.s4d_chunk``). All continue the same state,
        so chunk sizes may vary freely.
        """
        self._check_input("forward_chunk", x, 3)
        require_streamable(self)
        if state is None:
            state = self.init_state(x.size(0), x.device)
        if self.kernel_size is not None:  # REP: the same convolution as forward, with a tail
            h = torch.cat([state.to(x.dtype), x], dim=1)
            return self._rep_conv(h), h[:, h.size(1) - (self.kernel_size - 1):]
        l = x.size(1)
        if l == 0:
            return x, state
        recording = torch.is_grad_enabled() and self.log_dt.requires_grad
        if l <= self.TABLE_FRAMES and not recording and x.device.type == "cpu" \
                and x.dtype == self.log_dt.dtype and x.dtype in (torch.float32, torch.float64):
            op = s4d_steps_op()
            if op is not None:
                return self._planar_steps(op, x, state)
        if state.dim() == 4:  # the planar state of the compiled op, back to complex
            state = torch.complex(state[:, 0], state[:, 1])
        if l > self.TABLE_FRAMES or recording:
            A, B, C = self._ssm()
            y, state = s4d_chunk(x.transpose(1, 2), state, self.log_dt, A, B, C[0], self.D,
                                 self.discretization)
            return y.transpose(1, 2), state
        dA, dB, C, tables = self._streaming_tables()
        if l > self.LOOP_FRAMES:
            return s4d_short_chunk(x, state, tables, self.D)
        if state.is_complex() and not dA.is_complex():  # from the blocked path of a real SSM
            state = state.real
        ys = []
        for t in range(l):  # shapes checked on the first frame, the same after it
            y, state = s4d_step(state, x[:, t], dA, dB, C, self.D, check=t == 0)
            ys.append(y)
        return torch.stack(ys, dim=1), state

    # Without the compiled op. Measured on one CPU thread (H = 512, N = 32 complex;
    # bench_kernels.py --tables short): frame loop vs closed form 281 vs 309 us at 4 frames,
    # 542 vs 374 at 8, 1038 vs 593 at 16; inside a whole encoder the tables' memory traffic
    # made 4-frame chunks slower still.
    LOOP_FRAMES = 4
    TABLE_FRAMES = 16

    def _streaming_tables(self):
        """(Ā, B̄, C, short-chunk tables), computed once per weight version; real when A is."""

        def build():
            A, B, C = self._ssm()
            dA, dB = s4d_discretize(self.log_dt, A, B, self.discretization)
            tables = s4d_short_chunk_tables(dA, dB, C[0], self.TABLE_FRAMES)
            dA, dB, C = dA, dB, C[0]
            if not tables.a_powers.is_complex():  # a real SSM: both paths keep a real state
                dA, dB, C = (t.real if t.is_complex() else t for t in (dA, dB, C))
            return dA, dB, C, tables

        return self._weight_cache.get(list(self.parameters()), build)

    # ------------------------------------------------------------------ compiled op
    def _planar_steps(
        self, op: Callable, x: torch.Tensor, state: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A chunk through the compiled operator ``op`` (``s4d_planar_steps``); a complex SSM's
        state is carried as its (B, 2, H, N) planes, which the other paths convert back."""
        dA, dB, C = self._planar_cache.get(list(self.parameters()), self._planar_weights)
        if dA.dim() == 3 and state.dim() == 3:  # complex state from another path (or zeros)
            state = torch.stack([state.real, state.imag], dim=1) if state.is_complex() \
                else torch.stack([state, torch.zeros_like(state)], dim=1)
        elif dA.dim() == 2 and state.is_complex():  # a real SSM's state from the blocked path
            state = state.real
        return op(x, state, dA, dB, C, self.D)

    def _planar_weights(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ā, B̄, C) as contiguous (2, H, N) real/imaginary planes, or (H, N) when real."""
        dA, dB, C, _ = self._streaming_tables()
        if not dA.is_complex():
            return dA, dB, C
        return tuple(torch.stack([t.real, t.imag]).contiguous() for t in (dA, dB, C))

    def _rep_conv(self, h: torch.Tensor) -> torch.Tensor:
        """REP on frames h (B, t + k - 1, H) -> (B, t, H): the k-tap SSM kernel, no padding."""
        weight = self._weight_cache.get(
            list(self.parameters()), lambda: self.kernel(self.kernel_size).flip(-1)[:, None]
        )  # (H, 1, k): a Conv1d weight (cross-correlation order)
        y = depthwise_conv_valid(h, weight.to(h.dtype))
        if self.D is not None:
            y = y + self.D.to(h.dtype) * h[:, self.kernel_size - 1:]
        return y

    def streaming_obstacle(self) -> Optional[str]:
        """Why this layer cannot stream (bidirectional: it looks ahead), or None."""
        if self.bidirectional:
            return "looks ahead: bidirectional S4D (causal layers have bidirectional=False)"
        return None

    # ------------------------------------------------------------------ checks
    def _check_input(self, fn: str, x: torch.Tensor, dim: int) -> None:
        check_frames(f"S4D.{fn}", x, dim, self.d_model, "H")

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init}, "
            f"discretization={self.discretization}, bidirectional={self.bidirectional}, "
            f"kernel_size={self.kernel_size}"
        )
