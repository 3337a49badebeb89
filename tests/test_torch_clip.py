"""fastoptim.torch's fused clip-by-global-norm (``max_grad_norm``) and GradScaler passes,
in lockstep with torch's unfused sequence ``scaler.unscale_(opt)``,
``torch.nn.utils.clip_grad_norm_(params, max_norm)``, ``scaler.step(opt)`` on the torch
original, float32 and float64, including inf and NaN gradients."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastoptim.torch")

CASES = [
    ("Adam", dict(lr=3e-2, weight_decay=1e-2)),
    ("Adam", dict(lr=3e-2, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=3e-2, weight_decay=0.1)),
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-2, momentum=0.5)),
    ("Adagrad", dict(lr=0.05)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CASES]
DTYPES = [torch.float32, torch.float64]


def _tol(dtype, loose=False):
    # loose: RMSprop's float32 kernel and torch's differ by a few ulps a step even
    # unclipped; on the tiny gradients of the unclipped steps here that reaches 1e-4
    if dtype == torch.float64:
        return dict(rtol=1e-11, atol=1e-13)
    return dict(rtol=3e-4 if loose else 1e-5, atol=1e-6)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(dtype, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return m.to(dtype)


def _same_state(o_ref, o, ref, ours, dtype):
    tol = _tol(dtype, loose=type(o).__name__ == "RMSprop")
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), equal_nan=True, **tol)
        sa, sb = o_ref.state.get(a, {}), o.state.get(b, {})
        assert set(sa) == set(sb)
        for k, v in sa.items():
            if k == "step":
                assert float(sb[k]) == float(v)
            else:
                torch.testing.assert_close(sb[k], v, equal_nan=True, **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_max_grad_norm_lockstep_with_clip_grad_norm(name, kw, dtype):
    m1 = _model(dtype)
    m2 = copy.deepcopy(m1)
    o_ref = getattr(torch.optim, name)(m1.parameters(), **kw)
    o = getattr(ft, name)(m2.parameters(), **kw, max_grad_norm=0.5)
    x = torch.randn(32, 5, dtype=dtype)
    clipped = unclipped = 0
    for i in range(8):
        scale = 10.0 if i % 2 else 0.01  # odd steps clip, even steps do not
        for m in (m1, m2):
            m.zero_grad()
            (m(x).square().mean() * scale).backward()
        grads_before = [p.grad.clone() for p in m2.parameters()]
        norm = torch.nn.utils.clip_grad_norm_(m1.parameters(), 0.5)
        o_ref.step()
        o.step()
        clipped += float(norm) > 0.5
        unclipped += float(norm) <= 0.5
        assert o.last_grad_norm.dtype == norm.dtype
        torch.testing.assert_close(o.last_grad_norm, norm, rtol=1e-6 if dtype == torch.float32
                                   else 1e-13, atol=0.0)
        for p, g in zip(m2.parameters(), grads_before, strict=True):
            assert torch.equal(p.grad, g)  # the gradients are only read
        _same_state(o_ref, o, list(m1.parameters()), list(m2.parameters()), dtype)
    assert clipped and unclipped


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(("name", "kw"), CASES[:5], ids=IDS[:5])
def test_grad_scaler_and_clipping_lockstep_with_the_unfused_sequence(name, kw, dtype):
    m1 = _model(dtype)
    m2 = copy.deepcopy(m1)
    o_ref = getattr(torch.optim, name)(m1.parameters(), **kw)
    o = getattr(ft, name)(m2.parameters(), **kw, max_grad_norm=0.05)
    s_ref = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=3)
    s = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=3)
    x = torch.randn(16, 5, dtype=dtype)
    for i in range(9):
        for m, sc in ((m1, s_ref), (m2, s)):
            m.zero_grad()
            sc.scale(m(x).square().mean()).backward()
            if i == 2:  # an overflow: both skip the step and halve the scale
                next(m.parameters()).grad[0, 0] = float("inf")
            if i == 5:
                list(m.parameters())[-1].grad[1] = float("nan")
        s_ref.unscale_(o_ref)
        norm = torch.nn.utils.clip_grad_norm_(m1.parameters(), 0.05)
        s_ref.step(o_ref)
        s_ref.update()
        s.step(o)  # one norm pass and one update pass, unscale and clip folded in
        s.update()
        assert s.get_scale() == s_ref.get_scale()
        if math.isfinite(float(norm)):
            torch.testing.assert_close(o.last_grad_norm, norm, rtol=1e-5, atol=0.0)
        else:  # inf for the inf step, nan for the nan one, as clip_grad_norm_ reports
            assert math.isnan(float(o.last_grad_norm)) == math.isnan(float(norm))
            assert math.isinf(float(o.last_grad_norm)) == math.isinf(float(norm))
        _same_state(o_ref, o, list(m1.parameters()), list(m2.parameters()), dtype)
    assert s.get_scale() == 2.0**12 / 4 * 2  # two skips, one growth


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_grad_scaler_without_clipping_does_not_write_the_gradients(dtype):
    m1 = _model(dtype)
    m2 = copy.deepcopy(m1)
    o_ref = torch.optim.AdamW(m1.parameters(), lr=1e-2)
    o = ft.AdamW(m2.parameters(), lr=1e-2)
    s_ref = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    s = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x = torch.randn(16, 5, dtype=dtype)
    for _ in range(4):
        for m, sc in ((m1, s_ref), (m2, s)):
            m.zero_grad()
            sc.scale(m(x).square().mean()).backward()
        before = [p.grad.clone() for p in m2.parameters()]
        s_ref.unscale_(o_ref)
        s_ref.step(o_ref)
        s_ref.update()
        s.step(o)
        s.update()
        for p, g in zip(m2.parameters(), before, strict=True):
            assert torch.equal(p.grad, g)
        assert o.last_grad_norm is None
        _same_state(o_ref, o, list(m1.parameters()), list(m2.parameters()), dtype)


@pytest.mark.parametrize("bad", ["inf", "nan"])
@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_non_finite_gradient_without_scaler_follows_clip_grad_norm(name, bad):
    # clip_grad_norm_ with an inf norm multiplies by 0 (inf * 0 = nan where the gradient
    # was inf), with a nan norm by nan; the fused step reads the gradients the same way
    m1 = _model(torch.float32)
    m2 = copy.deepcopy(m1)
    kw = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    o_ref = getattr(torch.optim, name)(m1.parameters(), **kw)
    o = getattr(ft, name)(m2.parameters(), **kw, max_grad_norm=1.0)
    x = torch.randn(8, 5)
    for i in range(3):
        for m in (m1, m2):
            m.zero_grad()
            m(x).square().mean().backward()
            if i == 2:
                next(m.parameters()).grad[0, 1] = float(bad)
        norm = torch.nn.utils.clip_grad_norm_(m1.parameters(), 1.0)
        o_ref.step()
        o.step()
        assert math.isnan(float(o.last_grad_norm)) == math.isnan(float(norm))
        _same_state(o_ref, o, list(m1.parameters()), list(m2.parameters()), torch.float32)
    assert not all(torch.isfinite(p).all() for p in m2.parameters())


def test_groups_clip_with_their_own_threshold_over_the_norm_of_the_clipping_groups():
    m1, m2 = _model(torch.float64), None
    m2 = copy.deepcopy(m1)
    p1, p2 = list(m1.parameters()), list(m2.parameters())
    o_ref = torch.optim.Adam([{"params": p1[:2]}, {"params": p1[2:]}], lr=1e-2)
    o = ft.Adam([{"params": p2[:2], "max_grad_norm": 0.01}, {"params": p2[2:]}], lr=1e-2)
    assert o.param_groups[1]["max_grad_norm"] is None
    x = torch.randn(8, 5, dtype=torch.float64)
    for _ in range(4):
        for m in (m1, m2):
            m.zero_grad()
            m(x).square().mean().backward()
        norm = torch.nn.utils.clip_grad_norm_(p1[:2], 0.01)
        assert float(norm) > 0.01
        o_ref.step()
        o.step()
        torch.testing.assert_close(o.last_grad_norm, norm, rtol=1e-13, atol=0.0)
        _same_state(o_ref, o, p1, p2, torch.float64)


def test_frozen_and_gradless_parameters_are_left_out_of_the_norm():
    m1 = _model(torch.float32)
    m2 = copy.deepcopy(m1)
    o_ref = torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9)
    o = ft.SGD(m2.parameters(), lr=0.1, momentum=0.9, max_grad_norm=0.1)
    x = torch.randn(8, 5)
    for i in range(4):
        for m in (m1, m2):
            m.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            if i % 2:
                m[0].weight.grad = None
        norm = torch.nn.utils.clip_grad_norm_([p for p in m1.parameters()
                                               if p.grad is not None], 0.1)
        o_ref.step()
        o.step()
        torch.testing.assert_close(o.last_grad_norm, norm, rtol=1e-6, atol=0.0)
        _same_state(o_ref, o, list(m1.parameters()), list(m2.parameters()), torch.float32)


def test_clipping_on_staged_channels_last_and_mixed_dtype_parameters():
    torch.manual_seed(0)
    ref = [torch.randn(3, 4, 2, 2).to(memory_format=torch.channels_last),
           torch.randn(6, 8)[:, ::2], torch.randn(5, dtype=torch.float64)]
    ours = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t) if t._base is None
            else torch.as_strided(t._base.clone(), t.shape, t.stride(), t.storage_offset())
            for t in ref]
    ref = [t.detach().requires_grad_() for t in ref]
    ours = [t.detach().requires_grad_() for t in ours]
    o_ref, o = torch.optim.Adam(ref, lr=0.1), ft.Adam(ours, lr=0.1, max_grad_norm=0.3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(ref, ours, strict=True):
            g = torch.randn(a.shape, generator=gen, dtype=a.dtype)
            a.grad, b.grad = g.clone(), g.clone()
        norm = torch.nn.utils.clip_grad_norm_(ref, 0.3)
        o_ref.step()
        o.step()
        assert o.last_grad_norm.dtype == torch.float64
        torch.testing.assert_close(o.last_grad_norm, norm.double(), rtol=1e-6, atol=0.0)
        _same_state(o_ref, o, ref, ours, torch.float32)


def test_a_kernel_without_grad_scale_reads_scaled_copies():
    m1 = _model(torch.float32)
    m2 = copy.deepcopy(m1)
    o_ref = ft.Adam(m1.parameters(), lr=1e-2, max_grad_norm=0.01)
    o = ft.Adam(m2.parameters(), lr=1e-2, max_grad_norm=0.01)
    o._kernel_scales = False  # as for a kernel declared without grad_scale
    x = torch.randn(8, 5)
    for _ in range(3):
        for m in (m1, m2):
            m.zero_grad()
            m(x).square().mean().backward()
        before = [p.grad.clone() for p in m2.parameters()]
        o_ref.step()
        o.step()
        for p, g in zip(m2.parameters(), before, strict=True):
            assert torch.equal(p.grad, g)
        _same_state(o_ref, o, list(m1.parameters()), list(m2.parameters()), torch.float32)


def test_max_grad_norm_is_a_group_option_saved_and_loaded():
    p = torch.nn.Parameter(torch.randn(4))
    o = ft.AdamW([p], lr=1e-2, max_grad_norm=1.5)
    q = torch.nn.Parameter(torch.randn(3))
    o.add_param_group({"params": [q], "max_grad_norm": 0.5})
    assert [g["max_grad_norm"] for g in o.param_groups] == [1.5, 0.5]
    p.grad, q.grad = torch.ones(4), torch.ones(3)
    o.step()
    sd = o.state_dict()
    o2 = ft.AdamW([{"params": [torch.nn.Parameter(p.detach().clone())]},
                   {"params": [torch.nn.Parameter(q.detach().clone())]}], lr=1e-2)
    o2.load_state_dict(sd)
    assert [g["max_grad_norm"] for g in o2.param_groups] == [1.5, 0.5]
    # torch's own state_dict has no max_grad_norm: the optimizer keeps its own value
    t = torch.optim.AdamW([torch.nn.Parameter(torch.randn(4))], lr=1e-2)
    o3 = ft.AdamW([torch.nn.Parameter(torch.randn(4))], lr=1e-2, max_grad_norm=2.0)
    o3.load_state_dict(t.state_dict())
    assert o3.param_groups[0]["max_grad_norm"] == 2.0
    # and ours loads into torch's (the extra group key is carried along, unused)
    t.load_state_dict(ft.AdamW([torch.nn.Parameter(torch.randn(4))],
                               max_grad_norm=1.0).state_dict())


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "1", True])
def test_invalid_max_grad_norm_is_refused_before_params_are_read(bad):
    def params():
        raise AssertionError("params read before the check")
        yield

    with pytest.raises(ValueError, match="max_grad_norm"):
        ft.Adam(params(), max_grad_norm=bad)
    o = ft.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="max_grad_norm"):
        o.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))],
                           "max_grad_norm": bad})


@pytest.mark.parametrize("dtype,state_dtype", [(torch.bfloat16, "fp32"), (torch.float32, "int8"),
                                               (torch.float32, "bf16")])
def test_amp_scale_on_reduced_precision_groups(dtype, state_dtype):
    # bf16 parameters and reduced-precision state take the format kernels, which read the
    # gradients as they are: the adapter unscales them in place first, as unscale_ does
    torch.manual_seed(0)
    w = torch.randn(64, 80).to(dtype)
    a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
    oa = ft.AdamW([a], lr=1e-2, state_dtype=state_dtype)
    ob = ft.AdamW([b], lr=1e-2, state_dtype=state_dtype)
    for _ in range(3):
        g = torch.randn(64, 80).to(dtype)
        a.grad, b.grad = g * 8, g.clone()
        oa.grad_scale, oa.found_inf = torch.tensor(8.0), torch.tensor(0.0)
        oa.step()
        ob.step()
        assert torch.equal(a.detach(), b.detach())
        assert torch.equal(a.grad, b.grad)  # unscaled in place
    with pytest.raises(ValueError, match="max_grad_norm is not supported"):
        ft.AdamW([w.clone().requires_grad_()], state_dtype=state_dtype, max_grad_norm=1.0) \
            if state_dtype != "fp32" else ft.AdamW([w.clone().requires_grad_()],
                                                   max_grad_norm=1.0)


@pytest.mark.parametrize(("name", "kw"), [
    ("LARS", dict(lr=0.1, weight_decay=1e-2, momentum=0.9)),
    ("LARS", dict(lr=0.1, momentum=0.0, maximize=True)),
    ("Lamb", dict(lr=1e-2, weight_decay=1e-2)),
    ("Lamb", dict(lr=1e-2, adam=True)),
    ("AdamWScheduleFree", dict(lr=1e-2, weight_decay=1e-2)),
    ("SGDScheduleFree", dict(lr=1e-2)),
])
def test_grad_scale_in_the_kernel_is_exact_unscaling(name, kw):
    """Kernels that read grad * grad_scale themselves (LAMB's and LARS's norm passes
    included): gradients scaled by 2^12 under GradScaler's grad_scale step bitwise as the
    unscaled gradients do (a power of two unscales exactly), and the gradients are not
    written."""
    m1 = _model(torch.float32)
    m2 = copy.deepcopy(m1)
    o_ref = getattr(ft, name)(m1.parameters(), **kw)
    o = getattr(ft, name)(m2.parameters(), **kw)
    assert o._kernel_scales
    for opt in (o_ref, o):
        if hasattr(opt, "train"):
            opt.train()
    x = torch.randn(8, 5)
    for _ in range(4):
        for m in (m1, m2):
            m.zero_grad()
            m(x).square().mean().backward()
        for p in m2.parameters():
            p.grad.mul_(4096.0)
        before = [p.grad.clone() for p in m2.parameters()]
        o.grad_scale, o.found_inf = torch.tensor(4096.0), torch.tensor(0.0)
        o_ref.step()
        o.step()
        for p, g in zip(m2.parameters(), before, strict=True):
            assert torch.equal(p.grad, g)
        for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
            assert torch.equal(a.detach(), b.detach())
