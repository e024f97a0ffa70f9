"""S4D ops against plain float64 loops written from the formulas (fresh random inputs each run).

Tolerances (relative error = max|got - want| / max|want|): 1e-10 in float64, 1e-4 in float32.
"""
import math

import pytest
import torch

from espnet_ssm.ops import (
    causal_depthwise_conv,
    fft_bidirectional_conv,
    fft_causal_conv,
    init_log_dt,
    s4d_chunk,
    s4d_discretize,
    s4d_inv_init,
    s4d_kernel,
    s4d_lin_init,
    s4d_real_init,
    s4d_short_chunk,
    s4d_short_chunk_tables,
    s4d_step,
    two_sided_depthwise_conv,
)

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def rel_err(got, want):
    cast = torch.complex128 if got.is_complex() or want.is_complex() else torch.float64
    got, want = got.detach().to(cast), want.detach().to(cast)
    return float((got - want).abs().max() / want.abs().max())


def random_ssm(H, N, complex_A, dtype=torch.float64, dt_range=(1e-3, 1e-1)):
    """log_dt, A (Re < 0), B, C with fresh random values."""
    lo, hi = map(math.log, dt_range)
    log_dt = (torch.rand(H, dtype=torch.float64) * (hi - lo) + lo).to(dtype)
    re = -torch.rand(H, N, dtype=torch.float64) * 2 - 0.05
    if complex_A:
        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        A = torch.complex(re, torch.randn(H, N, dtype=torch.float64) * 10).to(cdt)
        B = torch.randn(H, N, dtype=torch.complex128).to(cdt)
        C = torch.randn(H, N, dtype=torch.complex128).to(cdt)
    else:
        A = (re * 5).to(dtype)
        B = torch.randn(H, N, dtype=dtype)
        C = torch.randn(H, N, dtype=dtype)
    return log_dt, A, B, C


# ----------------------------------------------------------------------------- references
def ref_discretize(log_dt, A, B, disc):
    """Per-element float64 (complex128) Ā, B̄ from the formulas, with Python complex numbers."""
    H, N = A.shape
    dA = torch.zeros(H, N, dtype=torch.complex128)
    dB = torch.zeros(H, N, dtype=torch.complex128)
    for h in range(H):
        dt = math.exp(float(log_dt[h]))
        for n in range(N):
            a, b = complex(A[h, n]), complex(B[h, n])
            if disc == "zoh":
                dA[h, n] = complex(torch.exp(torch.tensor(dt * a, dtype=torch.complex128)))
                dB[h, n] = (dA[h, n].item() - 1) / a * b if a != 0 else dt * b  # limit a -> 0
            else:
                dA[h, n] = (1 + dt * a / 2) / (1 - dt * a / 2)
                dB[h, n] = dt * b / (1 - dt * a / 2)
    return dA, dB


def ref_kernel(log_dt, A, B, C, L, disc):
    """K[h, l] = Re(Σ_n C B̄ Ā^l) by repeated multiplication."""
    dA, dB = ref_discretize(log_dt, A, B, disc)
    C = C.to(torch.complex128)
    K = torch.zeros(A.shape[0], L, dtype=torch.float64)
    power = torch.ones_like(dA)
    for l in range(L):
        K[:, l] = (C * dB * power).sum(-1).real
        power = power * dA
    return K


def ref_recurrence(u, log_dt, A, B, C, D, disc, state=None):
    """x_k = Ā x_{k-1} + B̄ u_k, y_k = Re(C x_k) + D u_k, frame by frame."""
    dA, dB = ref_discretize(log_dt, A, B, disc)
    C = C.to(torch.complex128)
    batch, H, L = u.shape
    x = torch.zeros(batch, H, A.shape[1], dtype=torch.complex128) if state is None else state.to(torch.complex128)
    y = torch.zeros(batch, H, L, dtype=torch.float64)
    for k in range(L):
        x = dA * x + dB * u[:, :, k, None].double()
        y[:, :, k] = (C * x).sum(-1).real + D.double() * u[:, :, k].double()
    return y, x


def ref_conv(u, K_fwd, K_bwd=None, D=None):
    """y_t = Σ_{s<=t} K_fwd[t-s] u_s (+ Σ_{s>t} K_bwd[s-t-1] u_s) (+ D u_t) by double loop."""
    u, K_fwd = u.double(), K_fwd.double()
    batch, H, L = u.shape
    y = torch.zeros(batch, H, L, dtype=torch.float64)
    for t in range(L):
        for s in range(L):
            if s <= t and t - s < K_fwd.shape[1]:
                y[:, :, t] += K_fwd[:, t - s] * u[:, :, s]
            elif s > t and K_bwd is not None and s - t - 1 < K_bwd.shape[1]:
                y[:, :, t] += K_bwd.double()[:, s - t - 1] * u[:, :, s]
    if D is not None:
        y += D.double()[:, None] * u
    return y


# ----------------------------------------------------------------------------- kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("complex_A", [False, True])
def test_kernel_matches_loop(dtype, disc, complex_A):
    H, N, L = 3, 5, 50
    log_dt, A, B, C = random_ssm(H, N, complex_A, dtype, dt_range=(1e-2, 1.0))
    K = s4d_kernel(log_dt, A, B, C, L, disc)
    assert K.shape == (H, L) and not K.is_complex() and K.dtype == dtype
    assert rel_err(K, ref_kernel(log_dt, A, B, C, L, disc)) <= TOL[dtype]


def test_kernel_stacked_C_equals_separate_kernels():
    log_dt, A, B, C1 = random_ssm(2, 4, True)
    C2 = torch.randn_like(C1)
    both = s4d_kernel(log_dt, A, B, torch.stack([C1, C2]), 17)
    assert both.shape == (2, 2, 17)
    assert rel_err(both[1], ref_kernel(log_dt, A, B, C2, 17, "zoh")) <= 1e-10
    assert rel_err(both[0], ref_kernel(log_dt, A, B, C1, 17, "zoh")) <= 1e-10


def closed_form_kernel(log_dt, A, B, C, L, disc):
    """K[h, l] = Re(Σ_n C B̄ Ā^l) with Ā^l = exp(l log Ā), all L taps at once in complex128
    (for long kernels, where the repeated multiplication of :func:`ref_kernel` is too slow)."""
    dA, dB = ref_discretize(log_dt, A, B, disc)
    l = torch.arange(L, dtype=torch.float64)
    power = torch.exp(l * torch.log(dA)[..., None])  # (H, N, L); Ā = 0 gives log = -inf
    power[..., 0] = 1.0
    return (C.to(torch.complex128)[..., None] * dB[..., None] * power).sum(1).real


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_kernel_extreme_steps_match_the_closed_form(disc):
    # |ΔA| up to ~1e4 (Ā underflows to 0; bilinear Ā -> -1 or exactly 0) and L = 200000
    H, N, L = 2, 3, 200_000
    log_dt = torch.tensor([math.log(4.0), math.log(2.0)])
    A = torch.tensor([[-0.5, -1.0, -2500.0], [-1.0, -1e-6, 0.0]])  # 2·(-1) = -2: bilinear Ā = 0
    B, C = torch.ones(H, N), torch.randn(H, N)
    K = s4d_kernel(log_dt, A, B, C, L, disc)
    assert K.shape == (H, L) and torch.isfinite(K).all()
    assert rel_err(K, closed_form_kernel(log_dt, A, B, C, L, disc)) <= TOL[torch.float32]
    # the slow modes (ΔA = -2e-6 and 0) keep the kernel alive at the far end
    assert float(K[1, -1].abs()) > 1e-3 * float(K[1].abs().max())
    Ac = torch.complex(-torch.rand(H, N) * 1e-4, torch.randn(H, N) * 1e3)
    ones, Cc = torch.ones(H, N, dtype=torch.cfloat), torch.randn(H, N, dtype=torch.cfloat)
    Kc = s4d_kernel(log_dt - 10, Ac, ones, Cc, L, disc)
    assert torch.isfinite(Kc).all()
    # ΔA rounded to float32 (relative 2^-24 per operation) turns the phase of tap l by about
    # l·|ΔA|·2^-24: up to ~5e-3 at l = L here; allow four times that at the last tap
    phase_tol = 4 * L * float((torch.exp(log_dt - 10)[:, None] * Ac).abs().max()) * 2.0**-24
    assert rel_err(Kc, closed_form_kernel(log_dt - 10, Ac, ones, Cc, L, disc)) <= phase_tol


def test_kernel_under_bf16_autocast_is_float32():
    log_dt, A, B, C = random_ssm(4, 3, True, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        K = s4d_kernel(log_dt, A, B, C, 300)
        y = fft_causal_conv(torch.randn(2, 4, 300, dtype=torch.bfloat16), K)
    assert K.dtype == torch.float32 and torch.isfinite(K).all()
    assert rel_err(K, ref_kernel(log_dt, A, B, C, 300, "zoh")) <= 1e-4
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


@pytest.mark.parametrize("complex_A", [False, True])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_kernel_gradcheck(complex_A, disc):
    log_dt, A, B, C = random_ssm(2, 3, complex_A)
    params = [log_dt, A, B, C]
    if complex_A:  # gradcheck on the real parametrisation, as layers store it
        params = [log_dt, A.real.clone(), A.imag.clone(), torch.view_as_real(B).clone(), torch.view_as_real(C).clone()]
    params = [p.requires_grad_() for p in params]

    def kernel(*p):
        if complex_A:
            A_c = torch.complex(p[1], p[2])
            return s4d_kernel(p[0], A_c, torch.view_as_complex(p[3]), torch.view_as_complex(p[4]), 9, disc)
        return s4d_kernel(*p, 9, disc)

    assert torch.autograd.gradcheck(kernel, params)


def test_unstable_A_rejected():
    log_dt, A, B, C = random_ssm(2, 3, True)
    A_bad = A.clone()
    A_bad[1, 2] = complex(0.3, 1.0)
    with pytest.raises(ValueError, match="A must have non-positive real parts"):
        s4d_kernel(log_dt, A_bad, B, C, 8)
    with pytest.raises(ValueError, match="non-positive"):
        s4d_discretize(log_dt, torch.full((2, 3), 0.1, dtype=torch.float64), B.real.contiguous(), "zoh")


def test_bad_shapes_name_argument():
    log_dt, A, B, C = random_ssm(3, 4, False)
    with pytest.raises(ValueError, match=r"s4d_kernel: B must have shape \(H, N\) = \(3, 4\)"):
        s4d_kernel(log_dt, A, B[:, :2], C, 8)
    with pytest.raises(ValueError, match=r"C must have shape"):
        s4d_kernel(log_dt, A, B, C.T, 8)
    with pytest.raises(ValueError, match="discretization must be one of"):
        s4d_kernel(log_dt, A, B, C, 8, "euler")
    with pytest.raises(ValueError, match="L must be a positive int"):
        s4d_kernel(log_dt, A, B, C, 0)
    with pytest.raises(ValueError, match=r"fft_causal_conv: u must have shape \(batch, H, L\)"):
        fft_causal_conv(torch.randn(2, 5, 7), torch.randn(3, 7))
    with pytest.raises(ValueError, match="floating dtype"):
        fft_causal_conv(torch.ones(2, 3, 7, dtype=torch.long), torch.randn(3, 7))
    with pytest.raises(ValueError, match=r"s4d_step: state must have shape \(batch, H, N\)"):
        dA, dB = s4d_discretize(log_dt, A, B)
        s4d_step(torch.zeros(2, 3, 5), torch.randn(2, 3), dA, dB, C)


# ----------------------------------------------------------------------------- modes
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("complex_A", [False, True])
def test_conv_mode_equals_step_mode(dtype, disc, complex_A):
    H, N, L = 3, 4, 40
    log_dt, A, B, C = random_ssm(H, N, complex_A, dtype)
    D = torch.randn(H, dtype=dtype)
    u = torch.randn(2, H, L, dtype=dtype)
    want, _ = ref_recurrence(u, log_dt, A, B, C, D, disc)
    conv = fft_causal_conv(u, s4d_kernel(log_dt, A, B, C, L, disc), D)
    assert conv.dtype == dtype and rel_err(conv, want) <= TOL[dtype]
    dA, dB = s4d_discretize(log_dt, A, B, disc)
    x = torch.zeros(2, H, N, dtype=dA.dtype)
    ys = []
    for k in range(L):
        y_k, x = s4d_step(x, u[:, :, k], dA, dB, C, D)
        ys.append(y_k)
    assert rel_err(torch.stack(ys, -1), want) <= TOL[dtype]


@pytest.mark.parametrize("complex_A", [False, True])
def test_chunks_with_carried_state_equal_full_sequence(complex_A):
    H, N, L = 3, 4, 90
    log_dt, A, B, C = random_ssm(H, N, complex_A)
    D = torch.randn(H, dtype=torch.float64)
    u = torch.randn(2, H, L, dtype=torch.float64)
    want, want_state = ref_recurrence(u, log_dt, A, B, C, D, "zoh")
    state = torch.zeros(2, H, N, dtype=A.dtype)
    cuts = sorted(torch.randperm(L - 1)[:6].add(1).tolist())
    ys = []
    for t0, t1 in zip([0] + cuts, cuts + [L]):
        y, state = s4d_chunk(u[:, :, t0:t1], state, log_dt, A, B, C, D, block=16)
        ys.append(y)
    assert rel_err(torch.cat(ys, -1), want) <= 1e-10
    assert rel_err(state, want_state) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("complex_A", [False, True])
def test_short_chunks_in_closed_form_equal_the_recurrence(dtype, disc, complex_A):
    H, N, L, max_len = 3, 5, 70, 9
    log_dt, A, B, C = random_ssm(H, N, complex_A, dtype, dt_range=(1e-2, 5e-1))
    D = torch.randn(H, dtype=dtype)
    u = torch.randn(2, H, L, dtype=dtype)
    start = torch.randn(2, H, N, dtype=A.dtype)  # a carried state, not zeros
    want, want_state = ref_recurrence(u, log_dt, A, B, C, D, disc, state=start)
    tables = s4d_short_chunk_tables(*s4d_discretize(log_dt, A, B, disc), C, max_len)
    cuts = [0]
    while cuts[-1] < L:  # every length 1 .. max_len is likely to occur
        cuts.append(min(L, cuts[-1] + int(torch.randint(1, max_len + 1, ()))))
    state, ys = start, []
    for t0, t1 in zip(cuts, cuts[1:]):
        y, state = s4d_short_chunk(u[:, :, t0:t1].transpose(1, 2), state, tables, D)
        assert y.dtype == dtype and state.is_complex() == complex_A
        ys.append(y.transpose(1, 2))
    assert rel_err(torch.cat(ys, -1), want) <= TOL[dtype]
    assert rel_err(state, want_state) <= TOL[dtype]


def test_short_chunk_rejects_chunks_its_tables_do_not_cover():
    log_dt, A, B, C = random_ssm(2, 3, True)
    tables = s4d_short_chunk_tables(*s4d_discretize(log_dt, A, B), C, 4)
    state = torch.zeros(1, 2, 3, dtype=A.dtype)
    for bad in (0, 5):
        with pytest.raises(ValueError, match="tables cover 1 .. 4"):
            s4d_short_chunk(torch.zeros(1, bad, 2, dtype=torch.float64), state, tables)
    with pytest.raises(ValueError, match="state"):
        s4d_short_chunk(torch.zeros(1, 3, 2, dtype=torch.float64), state[:, :1], tables)
    with pytest.raises(ValueError, match="max_len"):
        s4d_short_chunk_tables(*s4d_discretize(log_dt, A, B), C, 0)


# ----------------------------------------------------------------------------- convolutions
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fft_causal_and_bidirectional_conv_match_loops(dtype):
    H, L = 3, 33
    u = torch.randn(2, H, L, dtype=dtype)
    K_fwd, K_bwd, D = torch.randn(H, L, dtype=dtype), torch.randn(H, L, dtype=dtype), torch.randn(H, dtype=dtype)
    assert rel_err(fft_causal_conv(u, K_fwd, D), ref_conv(u, K_fwd, D=D)) <= TOL[dtype]
    assert rel_err(fft_causal_conv(u, K_fwd[:, :5]), ref_conv(u, K_fwd[:, :5])) <= TOL[dtype]
    got = fft_bidirectional_conv(u, K_fwd, K_bwd, D)
    assert rel_err(got, ref_conv(u, K_fwd, K_bwd, D)) <= TOL[dtype]


def test_bidirectional_conv_padded_batch_equals_each_utterance():
    H, L = 4, 30
    K_fwd, K_bwd = torch.randn(H, L, dtype=torch.float64), torch.randn(H, L, dtype=torch.float64)
    lengths = [30, 17, 1]
    u = torch.randn(len(lengths), H, L, dtype=torch.float64)
    for i, n in enumerate(lengths):
        u[i, :, n:] = 0  # the padding rule: padded frames are zeroed before the conv
    batch = fft_bidirectional_conv(u, K_fwd, K_bwd)
    for i, n in enumerate(lengths):
        alone = fft_bidirectional_conv(u[i : i + 1, :, :n], K_fwd[:, :n], K_bwd[:, :n])
        assert rel_err(batch[i : i + 1, :, :n], alone) <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_direct_depthwise_convs_match_loops(dtype):
    H, L, k = 3, 20, 5
    u = torch.randn(2, H, L, dtype=dtype)
    K, K_bwd = torch.randn(H, k, dtype=dtype), torch.randn(H, k, dtype=dtype)
    bias = torch.randn(H, dtype=dtype)
    want = ref_conv(u, K) + bias.double()[:, None]
    assert rel_err(causal_depthwise_conv(u, K, bias), want) <= TOL[dtype]
    assert rel_err(two_sided_depthwise_conv(u, K, K_bwd), ref_conv(u, K, K_bwd[:, : k - 1])) <= TOL[dtype]
    # streaming: the tail carries the last k-1 inputs across chunks of random sizes
    tail, ys = torch.zeros(2, H, k - 1, dtype=dtype), []
    cuts = sorted(torch.randperm(L - 1)[:5].add(1).tolist())
    for t0, t1 in zip([0] + cuts, cuts + [L]):
        y, tail = causal_depthwise_conv(u[..., t0:t1], K, bias, tail=tail, return_tail=True)
        ys.append(y)
    assert rel_err(torch.cat(ys, -1), want) <= TOL[dtype]
    assert torch.equal(tail, u[..., L - (k - 1) :])


# ----------------------------------------------------------------------------- init
def test_initialisers_follow_formulas():
    N = 7
    for n in range(N):
        assert s4d_real_init(N)[n].item() == -(n + 1)
        assert complex(s4d_lin_init(N)[n]) == pytest.approx(complex(-0.5, math.pi * n), rel=1e-6)
        inv = complex(-0.5, (N / math.pi) * (N / (2 * n + 1) - 1))
        assert complex(s4d_inv_init(N)[n]) == pytest.approx(inv, rel=1e-6)
    with pytest.raises(ValueError, match="N"):
        s4d_lin_init(0)


def test_init_log_dt_bands():
    H, bands, lo, hi = 23, 4, 1e-3, 1e-1
    log_dt = init_log_dt(H, lo, hi, n_bands=bands, dtype=torch.float64)
    width = (math.log(hi) - math.log(lo)) / bands
    groups = torch.arange(H).tensor_split(bands)
    for g, idx in enumerate(groups):
        top = math.log(hi) - g * width
        assert ((log_dt[idx] <= top + 1e-12) & (log_dt[idx] >= top - width - 1e-12)).all()
    # band 0 is the most local (largest Δ), the last band the most global
    assert log_dt[groups[0]].min() >= log_dt[groups[-1]].max()
    single = init_log_dt(1000, lo, hi)
    assert single.min() >= math.log(lo) - 1e-6 and single.max() <= math.log(hi) + 1e-6
    assert single.std() > 0.5 * width  # spread over the whole range, not a constant
    with pytest.raises(ValueError, match="n_bands"):
        init_log_dt(3, n_bands=4)
    with pytest.raises(ValueError, match="dt_min"):
        init_log_dt(3, dt_min=0.2, dt_max=0.1)
