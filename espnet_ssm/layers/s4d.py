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
- streaming (causal only): ``step`` one frame at a time, or ``forward_chunk`` on chunks of any
  size; the carried state is the SSM state x (complex for complex A) or, for REP, the last
  k-1 inputs. Both equal ``forward`` on the concatenated input.

Parameters are stored as real tensors (complex ones through ``view_as_real``) so that ESPnet's
checkpoint averaging and any optimizer handle them: ``log_dt`` (H,), ``log_A_real`` (H, N) with
Re(A) = -exp(log_A_real) (always stable), ``A_imag`` (H, N) for complex inits, ``B`` (H, N[, 2]),
``C`` (1 or 2, H, N[, 2]), ``D`` (H,). A complex init keeps N modes with complex C and no
conjugate pairs (no factor 2), so ``d_state`` counts modes; S4D-Real has N real modes.
Δ, A and B carry optimizer hints (no weight decay, learning rate ``lr``), see
``espnet_ssm.ops.ssm_param_groups``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from espnet_ssm.ops import (
    S4D_INITS,
    causal_depthwise_conv,
    fft_bidirectional_conv,
    fft_causal_conv,
    init_log_dt,
    s4d_chunk,
    s4d_discretize,
    s4d_init,
    s4d_kernel,
    s4d_step,
    set_optim_hint,
    two_sided_depthwise_conv,
    zero_padded,
)
from espnet_ssm.ops._checks import check_choice, check_frames


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
        self._step_cache: Optional[tuple] = None
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

    def _discrete_ssm(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Ā, B̄, C) for :meth:`step`. Without autograd they are cached until a parameter
        changes (in-place updates bump ``Tensor._version``), so streaming pays once, not per frame."""
        params = (self.log_dt, self.log_A_real, self.A_imag, self.B, self.C)
        key = tuple((p.data_ptr(), p._version) for p in params if p is not None)
        if not torch.is_grad_enabled() and self._step_cache is not None and self._step_cache[0] == key:
            return self._step_cache[1]
        A, B, C = self._ssm()
        dA, dB = s4d_discretize(self.log_dt, A, B, self.discretization)
        out = (dA, dB, C[0])
        self._step_cache = None if torch.is_grad_enabled() else (key, out)
        return out

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
            K = self.kernel(self.kernel_size).to(u.dtype)
            y = two_sided_depthwise_conv(u, K[0], K[1]) if self.bidirectional else causal_depthwise_conv(u, K)
            if self.D is not None:
                y = y + self.D.to(u.dtype)[:, None] * u
        return zero_padded(y.transpose(1, 2), mask)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch: int, device=None) -> torch.Tensor:
        """Zero streaming state: (B, H, N) SSM state (complex for complex A), or for REP the
        (B, H, k-1) tail of previous inputs."""
        dtype = self.log_dt.dtype
        device = self.log_dt.device if device is None else device
        if self.kernel_size is not None:
            return torch.zeros(batch, self.d_model, self.kernel_size - 1, dtype=dtype, device=device)
        if self.is_complex:
            dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.d_state, dtype=dtype, device=device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One frame: x_t (B, H) and the carried state -> (y_t (B, H), new state)."""
        self._check_input("step", x_t, 2)
        self._check_causal("step")
        if self.kernel_size is not None:
            y, state = self.forward_chunk(x_t[:, None], state)
            return y[:, 0], state
        dA, dB, C = self._discrete_ssm()
        return s4d_step(state, x_t, dA, dB, C, self.D)

    def forward_chunk(self, x: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """A chunk x (B, l, H) continuing from ``state`` -> (y (B, l, H), new state)."""
        self._check_input("forward_chunk", x, 3)
        self._check_causal("forward_chunk")
        u = x.transpose(1, 2)
        if self.kernel_size is not None:
            K = self.kernel(self.kernel_size).to(u.dtype)
            y, state = causal_depthwise_conv(u, K, tail=state, return_tail=True)
            if self.D is not None:
                y = y + self.D.to(u.dtype)[:, None] * u
        else:
            A, B, C = self._ssm()
            y, state = s4d_chunk(u, state, self.log_dt, A, B, C[0], self.D, self.discretization)
        return y.transpose(1, 2), state

    # ------------------------------------------------------------------ checks
    def _check_input(self, fn: str, x: torch.Tensor, dim: int) -> None:
        check_frames(f"S4D.{fn}", x, dim, self.d_model, "H")

    def _check_causal(self, fn: str) -> None:
        if self.bidirectional:
            raise ValueError(f"S4D.{fn}: streaming needs a causal layer (bidirectional=False)")

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init}, "
            f"discretization={self.discretization}, bidirectional={self.bidirectional}, "
            f"kernel_size={self.kernel_size}"
        )
