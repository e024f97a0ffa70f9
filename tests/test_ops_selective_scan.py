"""Selective scan against a plain float64 per-timestep loop written from the formulas.

Relative error = max|got - want| / max|want|: <= 1e-10 in float64, <= 1e-4 in float32.
"""
import importlib
import importlib.util
import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from espnet_ssm.ops import selective_scan, selective_scan_step

# the module (the package attribute of the same name is the function)
scan_module = importlib.import_module("espnet_ssm.ops.selective_scan")

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def rel_err(got, want):
    return float((got.detach().double() - want.detach().double()).abs().max() / want.detach().double().abs().max())


def make_inputs(batch=2, d=6, N=3, L=45, groups=None, dtype=torch.float64, delta_scale=1.0):
    """Fresh random inputs; groups=None gives ungrouped B/C of shape (batch, N, L)."""
    bc = (batch, N, L) if groups is None else (batch, groups, N, L)
    return dict(
        u=torch.randn(batch, d, L, dtype=dtype),
        delta=torch.randn(batch, d, L, dtype=dtype) * delta_scale,
        A=-torch.rand(d, N, dtype=dtype) * 4 - 0.1,
        B=torch.randn(bc, dtype=dtype),
        C=torch.randn(bc, dtype=dtype),
        D=torch.randn(d, dtype=dtype),
        z=torch.randn(batch, d, L, dtype=dtype),
        delta_bias=torch.randn(d, dtype=dtype),
        initial_state=torch.randn(batch, d, N, dtype=dtype),
    )


def ref_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None):
    """h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t; y_t = Σ_n C_t h_t + D u_t; y · SiLU(z); frame by
    frame in float64, without in-place writes so that autograd can differentiate it."""
    u, delta, A, B, C = (x.double() for x in (u, delta, A, B, C))
    batch, d, L = u.shape
    # channel c reads group c // (d / G): repeat each group's B/C over its channels
    B = (B[:, None] if B.dim() == 3 else B).repeat_interleave(d // (1 if B.dim() == 3 else B.shape[1]), dim=1)
    C = (C[:, None] if C.dim() == 3 else C).repeat_interleave(d // (1 if C.dim() == 3 else C.shape[1]), dim=1)
    h = torch.zeros(batch, d, A.shape[1], dtype=torch.float64) if initial_state is None else initial_state.double()
    ys = []
    for t in range(L):
        dt = delta[:, :, t] + (0.0 if delta_bias is None else delta_bias.double())
        if delta_softplus:
            dt = torch.log1p(torch.exp(dt))
        h = torch.exp(dt[..., None] * A) * h + (dt * u[:, :, t])[..., None] * B[..., t]
        y = (C[..., t] * h).sum(-1)
        if D is not None:
            y = y + D.double() * u[:, :, t]
        if z is not None:
            zt = z[:, :, t].double()
            y = y * zt * torch.sigmoid(zt)
        ys.append(y)
    return torch.stack(ys, dim=-1), h


OPTIONS = ("D", "z", "delta_bias", "initial_state")
SEQUENCES = ("u", "delta", "B", "C", "z")  # inputs with a time axis


def pick(inputs, used):
    return {k: v for k, v in inputs.items() if k not in OPTIONS or k in used}


# all 16 on/off combinations of the optional inputs, alternating grouping and softplus
CASES = [
    (used, groups, softplus)
    for i, used in enumerate(
        itertools.chain.from_iterable(itertools.combinations(OPTIONS, r) for r in range(len(OPTIONS) + 1))
    )
    for groups, softplus in [((None, 2, 3, 1)[i % 4], bool(i % 3))]
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("used,groups,softplus", CASES)
def test_scan_matches_loop(dtype, used, groups, softplus):
    inputs = pick(make_inputs(groups=groups, dtype=dtype), used)
    if not softplus:  # keep Δ positive (a decaying system) without the softplus
        inputs["delta"] = inputs["delta"].abs()
        if "delta_bias" in inputs:
            inputs["delta_bias"] = inputs["delta_bias"].abs()
    want, want_last = ref_scan(**inputs, delta_softplus=softplus)
    y, last = selective_scan(**inputs, delta_softplus=softplus, return_last_state=True, chunk_size=8, backend="torch")
    assert y.dtype == dtype and y.shape == want.shape
    assert rel_err(y, want) <= TOL[dtype]
    assert rel_err(last, want_last) <= TOL[dtype]


def test_result_does_not_depend_on_chunk_size():
    inputs = make_inputs(L=70, groups=2)
    want = selective_scan(**inputs, delta_softplus=True, chunk_size=1, backend="torch")
    for chunk in (3, 16, 64, 200):
        assert rel_err(selective_scan(**inputs, delta_softplus=True, chunk_size=chunk, backend="torch"), want) <= 1e-12


def test_huge_decays_split_chunks_and_stay_exact():
    # Δ·A down to about -5000 in single frames, which no closed form over a whole chunk survives
    inputs = pick(make_inputs(L=64, dtype=torch.float32), ("D", "z", "initial_state"))
    inputs["delta"] = inputs["delta"].abs() * 0.05
    inputs["delta"][:, :, 17] = 500.0
    inputs["delta"][0, 2, 40:44] = 30.0
    want, want_last = ref_scan(**inputs)
    y, last = selective_scan(**inputs, return_last_state=True, chunk_size=32, backend="torch")
    assert torch.isfinite(y).all() and rel_err(y, want) <= 1e-4 and rel_err(last, want_last) <= 1e-4


def test_chunks_with_carried_state_equal_full_sequence():
    inputs = make_inputs(L=60, groups=3)
    full, full_last = selective_scan(**inputs, delta_softplus=True, return_last_state=True)
    cuts = sorted(torch.randperm(59)[:5].add(1).tolist())
    state, ys = inputs["initial_state"], []
    for t0, t1 in zip([0] + cuts, cuts + [60]):
        part = {k: (v[..., t0:t1] if k in SEQUENCES else v) for k, v in inputs.items()}
        part["initial_state"] = state
        y, state = selective_scan(**part, delta_softplus=True, return_last_state=True)
        ys.append(y)
    assert rel_err(torch.cat(ys, -1), full) <= 1e-12 and rel_err(state, full_last) <= 1e-12


@pytest.mark.parametrize("groups", [None, 2])
def test_step_equals_scan(groups):
    inputs = make_inputs(L=30, groups=groups)
    full = selective_scan(**inputs, delta_softplus=True)
    state, ys = inputs["initial_state"], []
    for t in range(30):
        y_t, state = selective_scan_step(
            state,
            inputs["u"][..., t],
            inputs["delta"][..., t],
            inputs["A"],
            inputs["B"][..., t],
            inputs["C"][..., t],
            inputs["D"],
            inputs["z"][..., t],
            inputs["delta_bias"],
            delta_softplus=True,
            backend="torch",
        )
        ys.append(y_t)
    assert rel_err(torch.stack(ys, -1), full) <= 1e-12


def test_gradcheck():
    inputs = make_inputs(batch=1, d=4, N=2, L=11, groups=2)
    inputs["delta"] = inputs["delta"] * 0.5
    names = list(inputs)
    tensors = [inputs[k].requires_grad_() for k in names]

    def scan(*xs):
        return selective_scan(**dict(zip(names, xs)), delta_softplus=True, return_last_state=True, chunk_size=4, backend="torch")

    assert torch.autograd.gradcheck(scan, tensors)


def segment_like(monkeypatch, inputs, chunks_per_segment, chunk_size):
    """Set ``SEGMENT_ELEMENTS`` so that the recomputing backward works on segments of
    ``chunks_per_segment`` chunks (None: all chunks in one segment), found by watching which
    segmentation the forward keeps (not by repeating its arithmetic); returns the segmentation
    found and the list of those every later forward keeps."""
    kept, real = [], scan_module._scan_forward

    def spy(*args, keep_every=0):
        kept.append(keep_every)
        return real(*args, keep_every=keep_every)

    monkeypatch.setattr(scan_module, "_scan_forward", spy)
    n_chunks = -(-inputs["u"].shape[-1] // chunk_size)
    want = n_chunks if chunks_per_segment is None else chunks_per_segment
    for elements in sorted({m << i for i in range(26) for m in (1, 3)}):
        monkeypatch.setattr(scan_module, "SEGMENT_ELEMENTS", elements)
        kept.clear()
        with torch.enable_grad():
            selective_scan(**{k: v.clone().requires_grad_() for k, v in inputs.items()},
                           delta_softplus=True, return_last_state=True, chunk_size=chunk_size, backend="torch")
        if kept and min(kept[-1], n_chunks) == want:
            found = kept.pop()
            return found, kept
    pytest.fail(f"no SEGMENT_ELEMENTS gives segments of {chunks_per_segment} chunks")


def assert_gradients_match_reference(inputs, dtype=torch.float64, tol=1e-10, **scan_kwargs):
    """Outputs and the gradients of every input of a random weighted sum of y and the last
    state, computed in ``dtype``, equal autograd through the float64 loop to ``tol``."""
    a = {k: v.to(dtype).requires_grad_() for k, v in inputs.items()}
    b = {k: v.double().requires_grad_() for k, v in inputs.items()}
    (batch, d, L), N = inputs["u"].shape, inputs["A"].shape[1]
    w, w_last = torch.randn(batch, d, L, dtype=torch.float64), torch.randn(batch, d, N, dtype=torch.float64)
    y, last = selective_scan(**a, delta_softplus=True, return_last_state=True, **scan_kwargs)
    ((y * w.to(dtype)).sum() + (last * w_last.to(dtype)).sum()).backward()
    y_ref, last_ref = ref_scan(**b, delta_softplus=True)
    ((y_ref * w).sum() + (last_ref * w_last).sum()).backward()
    assert rel_err(y, y_ref) <= tol and rel_err(last, last_ref) <= tol
    for k in inputs:
        assert rel_err(a[k].grad, b[k].grad) <= tol, k


@pytest.mark.parametrize("delta_shift", [0.0, 300.0])
@pytest.mark.parametrize("chunks_per_segment", [1, 2, None])
def test_gradients_match_autograd_through_reference(delta_shift, chunks_per_segment, monkeypatch):
    # delta_shift = 300: Δ ≈ 300 in some frames, so some chunks exceed the closed form's range (500 in
    # float64; 60 left it to chance whether max|A| was large enough) and
    # take the Hillis-Steele path; both paths must give the reference gradients. The backward
    # pass recomputes segments of chunks: one chunk, two chunks, or (None) all of them at once.
    inputs = make_inputs(batch=2, d=4, N=3, L=25)
    found, kept = segment_like(monkeypatch, inputs, chunks_per_segment, chunk_size=8)
    inputs["delta"][:, :, 5:9] += delta_shift
    dt = F.softplus(inputs["delta"] + inputs["delta_bias"][:, None]).permute(2, 0, 1)
    plan = scan_module._plan_chunks(dt, inputs["A"], 8)
    assert {closed for _, _, closed in plan} == ({True} if delta_shift == 0 else {True, False})
    assert_gradients_match_reference(inputs, chunk_size=8, backend="torch")
    assert kept == [found]  # the forward above kept the segmentation sought


def numpy_scan(u, delta, A, B, C, D, z, delta_bias, initial_state):
    """:func:`ref_scan` with softplus for one ungrouped sequence (batch 1), in float64 numpy:
    the per-frame factors exp(Δ_t A) and Δ_t B_t u_t are formed at once, the recurrence
    h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t runs frame by frame (fast enough for 200 000 frames)."""
    u, delta, A, B, C, D, z, bias, h = (
        x.detach().double().numpy() for x in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    u, delta, B, C, z, h = u[0], delta[0], B[0], C[0], z[0], h[0]  # (d, L), (N, L), (d, N)
    dt = np.logaddexp(0.0, delta + bias[:, None])  # softplus, (d, L)
    decay = np.exp(dt.T[:, :, None] * A[None])  # (L, d, N)
    drive = (dt * u).T[:, :, None] * B.T[:, None, :]  # (L, d, N)
    hs = np.empty_like(decay)
    for t in range(u.shape[1]):
        h = decay[t] * h + drive[t]
        hs[t] = h
    y = (hs * C.T[:, None, :]).sum(-1).T + D[:, None] * u  # (d, L)
    return y * z / (1 + np.exp(-z)), h


def test_long_sequence_float32_equals_the_float64_loop():
    inputs = make_inputs(batch=1, d=2, N=2, L=200_000, dtype=torch.float32)
    with torch.no_grad():
        y, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, chunk_size=256, backend="torch")
    want, want_last = numpy_scan(**inputs)
    assert rel_err(y[0], torch.from_numpy(want)) <= TOL[torch.float32]
    assert rel_err(last[0], torch.from_numpy(want_last)) <= TOL[torch.float32]


def test_bf16_autocast_scans_in_float32():
    inputs = make_inputs(L=40, groups=2, dtype=torch.float32)
    want, _ = ref_scan(**inputs, delta_softplus=True)
    u16 = inputs["u"].bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, last = selective_scan(**dict(inputs, u=u16), delta_softplus=True, return_last_state=True)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert torch.isfinite(y).all()
    # only u and y are rounded to bf16 (8 bits): the scan itself must not add bf16 error on top
    want16, _ = ref_scan(**dict(inputs, u=u16.double()), delta_softplus=True)
    assert rel_err(y, want16) <= 1e-2 and rel_err(y.float(), want) <= 2e-2


def test_bad_inputs_raise_value_errors():
    inputs = make_inputs(groups=2)
    cases = [
        (dict(B=inputs["B"][..., :5]), r"B must have shape \(batch, G, N, L\)"),
        (dict(C=torch.randn(2, 4, 3, 45, dtype=torch.float64)), "C has G=4 groups, which must divide d=6"),
        (dict(A=inputs["A"][:, :2].T.contiguous()), r"A must have shape \(d, N\) = \(6, \?\)"),
        (dict(A=inputs["A"].to(torch.complex128)), "A must be real"),
        (dict(delta=inputs["delta"][:, :, :3]), r"delta must have shape \(batch, d, L\) = \(2, 6, 45\)"),
        (dict(D=torch.randn(5, dtype=torch.float64)), r"D must have shape \(d,\)"),
        (dict(initial_state=torch.randn(2, 6, 4, dtype=torch.float64)), r"initial_state must have shape"),
        (dict(u=inputs["u"].long()), "u must have a floating dtype"),
    ]
    for override, message in cases:
        with pytest.raises(ValueError, match=message):
            selective_scan(**dict(inputs, **override))
    with pytest.raises(ValueError, match=r"selective_scan_step: B_t must have shape"):
        frame = {k: inputs[k][..., 0] for k in ("u", "delta", "C")}
        selective_scan_step(inputs["initial_state"], frame["u"], frame["delta"], inputs["A"], inputs["B"], frame["C"])


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("mamba_ssm") is None,
    reason="needs CUDA and the optional mamba_ssm package",
)
@pytest.mark.parametrize("groups", [None, 2])
def test_fused_cuda_kernel_matches_torch_path(groups):
    inputs = {k: v.float().cuda() for k, v in make_inputs(L=300, groups=groups).items() if k != "initial_state"}
    fused, fused_last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="mamba_ssm")
    ours, ours_last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="torch")
    assert rel_err(fused, ours) <= 1e-4 and rel_err(fused_last, ours_last) <= 1e-4


# --------------------------------------------------------------------------- compiled CPU kernel
kernel_module = importlib.import_module("espnet_ssm.ops.cpu_kernels")


@pytest.fixture(scope="module")
def cpu_kernel():
    """The compiled kernel; `make setup` builds it, so only a machine without a C++ compiler may
    skip (a build failure with a compiler present is a test failure)."""
    import shutil

    if kernel_module.kernel() is None:
        if shutil.which("c++") is None and shutil.which("g++") is None:
            pytest.skip("no C++ compiler: the compiled CPU scan cannot be built here")
        kernel_module.require()  # raises with the build error
    return kernel_module.kernel()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("used,groups,softplus", CASES)
def test_cpu_kernel_matches_loop(cpu_kernel, dtype, used, groups, softplus):
    # L = 150 spans three of the backward's 64-frame segments
    inputs = pick(make_inputs(groups=groups, dtype=dtype, L=150), used)
    if not softplus:
        inputs["delta"] = inputs["delta"].abs()
        if "delta_bias" in inputs:
            inputs["delta_bias"] = inputs["delta_bias"].abs()
    want, want_last = ref_scan(**inputs, delta_softplus=softplus)
    y, last = selective_scan(**inputs, delta_softplus=softplus, return_last_state=True, backend="cpu")
    assert y.dtype == dtype and y.shape == want.shape and last.dtype == dtype
    assert rel_err(y, want) <= TOL[dtype] and rel_err(last, want_last) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "groups,N,L",
    [(None, 3, 150), (2, 5, 64), (3, 70, 200), (None, 2, 1), (None, 16, 150), (2, 16, 7), (2, 256, 9)],
)
def test_cpu_kernel_gradients_match_autograd_through_reference(cpu_kernel, dtype, groups, N, L):
    # N = 70 gives segments of 70 frames; L = 64 exactly one segment; L = 1 a single frame;
    # N = 16 and 256 take the loops compiled for those sizes; float32 its own exp2 (TOL: 1e-4)
    inputs = make_inputs(batch=2, d=6, N=N, L=L, groups=groups)
    inputs["delta"][:, :, : min(L, 4)] += 30.0  # a few frames that decay the state to ~0
    inputs["A"][0, 0] = -2000.0  # Δ A far below float32's exp range: the decay is 0 to within 1e-37
    assert_gradients_match_reference(inputs, dtype=dtype, tol=TOL[dtype], backend="cpu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_kernel_gradients_at_n256_over_two_segments(cpu_kernel, dtype):
    # N = 256 keeps a state every 256 frames: L = 260 runs the compiled N = 256 backward over a
    # full segment and a short one (one channel per group keeps the reference loop affordable)
    inputs = make_inputs(batch=1, d=2, N=256, L=260, groups=2)
    assert_gradients_match_reference(inputs, dtype=dtype, tol=TOL[dtype], backend="cpu")


def test_cpu_kernel_gradcheck(cpu_kernel):
    inputs = make_inputs(batch=1, d=4, N=2, L=70, groups=2)
    inputs["delta"] = inputs["delta"] * 0.5
    names = list(inputs)
    tensors = [inputs[k].requires_grad_() for k in names]

    def scan(*xs):
        return selective_scan(**dict(zip(names, xs)), delta_softplus=True, return_last_state=True, backend="cpu")

    assert torch.autograd.gradcheck(scan, tensors)


def test_cpu_kernel_equals_pytorch_scan_at_speech_mamba_size(cpu_kernel):
    # Speech-Mamba's N = 256 with float32 and the threads torch has: the two implementations agree
    inputs = make_inputs(batch=2, d=32, N=256, L=300, dtype=torch.float32)
    inputs["A"] = -torch.arange(1, 257, dtype=torch.float32).expand(32, 256).contiguous()
    inputs["delta_bias"] = torch.full((32,), -3.0)
    ours = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="cpu")
    ref = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="torch")
    assert rel_err(ours[0], ref[0]) <= 1e-5 and rel_err(ours[1], ref[1]) <= 1e-5


@pytest.mark.parametrize("groups", [None, 2])
def test_cpu_kernel_step_equals_scan(cpu_kernel, groups):
    inputs = make_inputs(L=30, groups=groups)
    full, full_last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="torch")
    state, ys = inputs["initial_state"], []
    for t in range(30):
        frame = {k: inputs[k][..., t] for k in ("u", "delta", "B", "C", "z")}
        y_t, state = selective_scan_step(
            state, frame["u"], frame["delta"], inputs["A"], frame["B"], frame["C"], inputs["D"], frame["z"],
            inputs["delta_bias"], delta_softplus=True, backend="cpu",
        )
        ys.append(y_t)
    assert rel_err(torch.stack(ys, -1), full) <= 1e-12 and rel_err(state, full_last) <= 1e-12


def test_auto_uses_the_cpu_kernel(cpu_kernel, monkeypatch):
    calls = []
    real = scan_module._CompiledScanFn.apply
    monkeypatch.setattr(scan_module._CompiledScanFn, "apply", lambda *a: calls.append(1) or real(*a))
    selective_scan(**make_inputs(L=20), delta_softplus=True)
    assert calls == [1]


def test_without_the_kernel_auto_falls_back_and_cpu_backend_names_why(monkeypatch):
    monkeypatch.setattr(kernel_module, "_load", lambda: (None, "RuntimeError: no compiler found"))
    inputs = make_inputs(L=40, groups=2)
    want, _ = ref_scan(**inputs, delta_softplus=True)
    assert rel_err(selective_scan(**inputs, delta_softplus=True), want) <= 1e-10
    with pytest.raises(ValueError, match="backend='cpu'.*no compiler found"):
        selective_scan(**inputs, delta_softplus=True, backend="cpu")


def test_failed_build_warns_once_and_returns_none(monkeypatch):
    def broken():
        raise OSError("g++: command not found")

    monkeypatch.setattr(kernel_module, "_build", broken)
    kernel_module._load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"unavailable \(OSError: g\+\+: command not found\).*pure-PyTorch scan"):
            assert kernel_module.kernel() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert kernel_module.kernel() is None  # cached: no second warning
    finally:
        kernel_module._load.cache_clear()
