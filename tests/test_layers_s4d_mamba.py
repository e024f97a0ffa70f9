"""S4D, MambaMixer and BidirectionalMamba layers: float64 references written from the maths,
full sequence == frame steps == random chunks, padding invariance, ESPnet re-initialisation."""
import math

import pytest
import torch
import torch.nn.functional as F
from espnet2.torch_utils.initialize import initialize

from espnet_ssm.layers import S4D, BidirectionalMamba, MambaMixer
from espnet_ssm.ops import lengths_to_mask, ssm_param_groups


def rel_err(got, want):
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).abs().max() / want.abs().max())


def random_cuts(L, n=4):
    cuts = sorted(torch.randperm(L - 1)[:n].add(1).tolist())
    return list(zip([0] + cuts, cuts + [L]))


def padded_batch(lengths, D, dtype=torch.float64):
    """Random batch whose padded frames hold garbage (layers must ignore it)."""
    x = torch.randn(len(lengths), max(lengths), D, dtype=dtype)
    return x, lengths_to_mask(torch.tensor(lengths))


def check_padding_invariance(layer, lengths, D):
    """Zero output at padded frames; each utterance's real frames as if it were alone."""
    x, mask = padded_batch(lengths, D)
    y = layer(x, mask)
    assert (y[~mask] == 0).all()
    for i, n in enumerate(lengths):
        assert rel_err(y[i : i + 1, :n], layer(x[i : i + 1, :n])) <= 1e-12
    return x, y


# ----------------------------------------------------------------------------- S4D reference
def s4d_ref_kernels(layer, L):
    """K_c[h, l] = Re(Σ_n C_c B̄ Ā^l) from the layer's stored parameters, by repeated products."""
    p = {k: v.detach().double() for k, v in layer.named_parameters()}
    H, N = p["log_A_real"].shape
    as_complex = (lambda t: torch.complex(t[..., 0], t[..., 1])) if layer.is_complex else (lambda t: t + 0j)
    A = -torch.exp(p["log_A_real"]) + (1j * p["A_imag"] if layer.is_complex else 0)
    B, C = as_complex(p["B"]), as_complex(p["C"])
    dt = torch.exp(p["log_dt"])[:, None]
    if layer.discretization == "zoh":
        dA = torch.exp(dt * A)
        dB = (dA - 1) / A * B
    else:
        dA = (1 + dt * A / 2) / (1 - dt * A / 2)
        dB = dt * B / (1 - dt * A / 2)
    kernels = torch.zeros(C.shape[0], H, L, dtype=torch.float64)
    power = torch.ones(H, N, dtype=torch.complex128)
    for l in range(L):
        kernels[:, :, l] = (C * dB * power).sum(-1).real
        power = power * dA
    return kernels


def s4d_ref_forward(layer, x):
    """y_t = Σ_{s<=t} K_f[t-s] x_s (+ Σ_{s>t} K_b[s-t-1] x_s if bidirectional) + D x_t."""
    batch, L, H = x.shape
    taps = L if layer.kernel_size is None else layer.kernel_size
    K = s4d_ref_kernels(layer, taps)
    x = x.double()
    y = torch.zeros(batch, L, H, dtype=torch.float64)
    for t in range(L):
        for s in range(max(0, t - taps + 1), t + 1):
            y[:, t] += K[0, :, t - s] * x[:, s]
        if layer.bidirectional:
            for s in range(t + 1, min(L, t + taps)):
                y[:, t] += K[1, :, s - t - 1] * x[:, s]
    if layer.D is not None:
        y += layer.D.detach().double() * x
    return y


S4D_CONFIGS = [
    dict(init=init, discretization=disc, kernel_size=ks)
    for init in ("s4d_real", "s4d_lin", "s4d_inv")
    for disc in ("zoh", "bilinear")
    for ks in (None, 4)
]


def make_s4d(**kwargs):
    # a wide Δ range so that kernels are far from trivial over ~20 frames
    return S4D(5, d_state=3, dt_min=1e-2, dt_max=0.5, **kwargs).double()


@pytest.mark.parametrize("cfg", S4D_CONFIGS, ids=lambda c: f"{c['init']}-{c['discretization']}-k{c['kernel_size']}")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4d_forward_matches_reference(cfg, bidirectional):
    layer = make_s4d(bidirectional=bidirectional, **cfg)
    x = torch.randn(2, 19, 5, dtype=torch.float64)
    assert rel_err(layer(x), s4d_ref_forward(layer, x)) <= 1e-10


@pytest.mark.parametrize("cfg", S4D_CONFIGS, ids=lambda c: f"{c['init']}-{c['discretization']}-k{c['kernel_size']}")
def test_s4d_forward_equals_steps_and_chunks(cfg):
    layer = make_s4d(**cfg)
    x = torch.randn(2, 40, 5, dtype=torch.float64)
    full = layer(x)
    state, steps = layer.init_state(2), []
    for t in range(40):
        y_t, state = layer.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), full) <= 1e-10
    state, chunks = layer.init_state(2), []
    for t0, t1 in random_cuts(40):
        y, state = layer.forward_chunk(x[:, t0:t1], state)
        chunks.append(y)
    assert rel_err(torch.cat(chunks, 1), full) <= 1e-10


@pytest.mark.parametrize("kernel_size", [None, 4])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4d_padded_batch_equals_each_utterance(kernel_size, bidirectional):
    layer = make_s4d(init="s4d_lin", bidirectional=bidirectional, kernel_size=kernel_size)
    check_padding_invariance(layer, [23, 9, 1], 5)


def test_s4d_float32_and_bf16_autocast():
    layer = S4D(8, d_state=4)
    x = torch.randn(2, 300, 8)
    want = s4d_ref_forward(layer, x[:, :60])
    assert rel_err(layer(x[:, :60]), want) <= 1e-4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_s4d_espnet_init_restores_ssm_parameters():
    N, H, lo, hi = 4, 6, 1e-3, 1e-1
    model = torch.nn.Sequential(S4D(H, d_state=N, init="s4d_inv", n_bands=3, dt_min=lo, dt_max=hi))
    initialize(model, "xavier_uniform")  # clobbers every matrix, then calls our hook
    layer = model[0]
    n = torch.arange(N, dtype=torch.float64)
    assert torch.allclose(layer.log_A_real.double(), torch.full((H, N), math.log(0.5), dtype=torch.float64))
    inv = (N / math.pi) * (N / (2 * n + 1) - 1)
    assert torch.allclose(layer.A_imag.double(), inv.expand(H, N), rtol=1e-6)
    assert torch.equal(layer.B, torch.stack([torch.ones(H, N), torch.zeros(H, N)], -1))
    assert ((layer.log_dt >= math.log(lo) - 1e-6) & (layer.log_dt <= math.log(hi) + 1e-6)).all()
    assert layer.log_dt[:2].min() > layer.log_dt[4:].max()  # band 0 is the most local
    # complex C ~ standard complex normal, not a xavier-scaled matrix
    assert 0.3 < float(layer.C.detach().std()) < 1.2
    real = S4D(H, d_state=N, init="s4d_real")
    initialize(torch.nn.Sequential(real), "xavier_normal")
    assert torch.allclose(real.log_A_real, torch.log(n.float() + 1).expand(H, N))


def test_s4d_param_groups():
    layer = S4D(4, d_state=2, lr=1e-3)
    groups = ssm_param_groups(torch.nn.Sequential(layer, torch.nn.Linear(4, 4)), base_lr=0.01, weight_decay=0.1)
    by_id = {id(p): g for g in groups for p in g["params"]}
    for p in (layer.log_dt, layer.log_A_real, layer.A_imag, layer.B):
        assert by_id[id(p)]["weight_decay"] == 0.0 and by_id[id(p)]["lr"] == 1e-3
    for p in (layer.C, layer.D):
        assert by_id[id(p)]["weight_decay"] == 0.1 and by_id[id(p)]["lr"] == 0.01


def test_s4d_bad_inputs():
    layer = S4D(4, d_state=2)
    with pytest.raises(ValueError, match=r"S4D.forward: x must have shape \(B, L, H\) with H = d_model = 4"):
        layer(torch.randn(2, 7, 5))
    with pytest.raises(ValueError, match="causal"):
        S4D(4, bidirectional=True).step(torch.randn(2, 4), torch.zeros(2, 4, 64))
    with pytest.raises(ValueError, match="init must be one of"):
        S4D(4, init="hippo")
    with pytest.raises(ValueError, match=r"state must have shape"):
        layer.step(torch.randn(2, 4), torch.zeros(3, 4, 2, dtype=torch.cfloat))


# ----------------------------------------------------------------------------- Mamba reference
def mamba_ref_forward(m, x):
    """The mixer frame by frame in float64, written from the formulas of architectures.md §0."""
    W = {k: v.detach().double() for k, v in m.named_parameters()}
    batch, L, _ = x.shape
    E, N, R, k = m.d_inner, m.d_state, m.dt_rank, m.d_conv
    xz = x.double() @ W["in_proj.weight"].T + W.get("in_proj.bias", 0)
    xs, zs = xz[..., :E], xz[..., E:]
    A = -torch.exp(W["A_log"])
    h = torch.zeros(batch, E, N, dtype=torch.float64)
    outs = []
    for t in range(L):
        # causal depthwise conv: weight[..., k-1] meets the current frame
        conv = W.get("conv1d.bias", torch.zeros(E, dtype=torch.float64)).expand(batch, E).clone()
        for j in range(k):
            s = t - (k - 1) + j
            if s >= 0:
                conv = conv + W["conv1d.weight"][:, 0, j] * xs[:, s]
        u = F.silu(conv)
        proj = u @ W["x_proj.weight"].T
        delta = F.softplus(proj[:, :R] @ W["dt_proj.weight"].T + W["dt_proj.bias"])
        Bt, Ct = proj[:, R : R + N], proj[:, R + N :]
        h = torch.exp(delta[..., None] * A) * h + (delta * u)[..., None] * Bt[:, None, :]
        y = (h * Ct[:, None, :]).sum(-1) + W["D"] * u
        y = y * F.silu(zs[:, t])
        outs.append(y @ W["out_proj.weight"].T + W.get("out_proj.bias", 0))
    return torch.stack(outs, 1)


def make_mixer(**kwargs):
    m = MambaMixer(6, d_state=4, d_conv=3, expand=2, **kwargs).double()
    with torch.no_grad():  # larger Δ than the default init, so that the scan matters over 20 frames
        m.dt_proj.bias.add_(2.0)
    return m


@pytest.mark.parametrize("bias", [False, True])
def test_mamba_forward_matches_reference(bias):
    m = make_mixer(bias=bias)
    x = torch.randn(2, 21, 6, dtype=torch.float64)
    assert rel_err(m(x), mamba_ref_forward(m, x)) <= 1e-10
    m32 = m.float()
    assert rel_err(m32(x.float()), mamba_ref_forward(m32, x.float())) <= 1e-4


def test_mamba_forward_equals_steps_and_chunks():
    m = make_mixer(conv_bias=True)
    x = torch.randn(2, 30, 6, dtype=torch.float64)
    full = m(x)
    state, steps = m.init_state(2, dtype=torch.float64), []
    for t in range(30):
        y_t, state = m.step(x[:, t], state)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), full) <= 1e-10
    state, chunks = m.init_state(2, dtype=torch.float64), []
    for t0, t1 in random_cuts(30):
        y, state = m.forward_chunk(x[:, t0:t1], state)
        chunks.append(y)
    assert rel_err(torch.cat(chunks, 1), full) <= 1e-10
    # chunks shorter than the conv kernel carry the conv state correctly too
    state, ones = m.init_state(2, dtype=torch.float64), []
    for t in range(30):
        y, state = m.forward_chunk(x[:, t : t + 1], state)
        ones.append(y)
    assert rel_err(torch.cat(ones, 1), full) <= 1e-10


def test_mamba_padded_batch_equals_each_utterance():
    check_padding_invariance(make_mixer(bias=True), [17, 6, 2], 6)


@pytest.mark.parametrize("combine", ["add", "concat"])
def test_bidirectional_mamba(combine):
    bm = BidirectionalMamba(6, combine=combine, d_state=4, d_conv=3, bias=True).double()
    lengths = [15, 8, 3]
    x, y = check_padding_invariance(bm, lengths, 6)
    for i, n in enumerate(lengths):
        alone = x[i : i + 1, :n]
        # definition: forward mixer + time-reversed backward mixer (flip-scan-flip)
        fwd = mamba_ref_forward(bm.forward_mixer, alone)
        bwd = mamba_ref_forward(bm.backward_mixer, alone.flip(1)).flip(1)
        if combine == "add":
            want = fwd + bwd
        else:
            want = torch.cat([fwd, bwd], -1) @ bm.proj.weight.detach().T + bm.proj.bias.detach()
        assert rel_err(y[i : i + 1, :n], want) <= 1e-10


def test_mamba_gradients_reach_every_parameter_and_bf16_is_finite():
    bm = BidirectionalMamba(8, combine="concat", d_state=4)
    x, mask = padded_batch([12, 7], 8, torch.float32)
    bm(x, mask).square().sum().backward()
    for name, p in bm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bm(x, mask)
    assert torch.isfinite(y).all()


def test_mamba_espnet_init_restores_ssm_parameters():
    N, D, lo, hi, floor = 5, 8, 1e-3, 1e-1, 1e-4
    model = torch.nn.Sequential(MambaMixer(D, d_state=N, dt_min=lo, dt_max=hi, dt_init_floor=floor))
    initialize(model, "xavier_uniform")  # zeroes dt_proj.bias and conv1d.bias, clobbers matrices
    m = model[0]
    assert torch.allclose(m.A_log, torch.log(torch.arange(1, N + 1.0)).expand(m.d_inner, N))
    assert torch.equal(m.D, torch.ones(m.d_inner))
    dt = F.softplus(m.dt_proj.bias)
    assert ((dt >= lo * (1 - 1e-5)) & (dt <= hi * (1 + 1e-5))).all() and dt.std() > 0
    assert m.dt_proj.weight.abs().max() <= m.dt_rank**-0.5
    bound = 1 / math.sqrt(m.d_conv)  # PyTorch's conv init for fan_in = d_conv
    assert m.conv1d.bias.abs().max() <= bound and m.conv1d.bias.abs().sum() > 0
    assert m.conv1d.weight.abs().max() <= bound
    # the hook leaves the projections to ESPnet's choice
    projections = [p.clone() for p in (m.in_proj.weight, m.x_proj.weight, m.out_proj.weight)]
    m.espnet_initialization_fn()
    assert all(torch.equal(a, b) for a, b in zip(projections, (m.in_proj.weight, m.x_proj.weight, m.out_proj.weight)))


def test_mamba_param_groups():
    m = MambaMixer(4, d_state=2)
    groups = ssm_param_groups(m, base_lr=0.01, weight_decay=0.1)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert no_decay == {id(m.A_log), id(m.D), id(m.dt_proj.bias)}


def test_mamba_bad_inputs():
    m = MambaMixer(4, d_state=2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, D\) with D = d_model = 4"):
        m(torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="state must be"):
        m.step(torch.randn(2, 4), m.init_state(3))
    with pytest.raises(ValueError, match="combine must be one of"):
        BidirectionalMamba(4, combine="mean")
