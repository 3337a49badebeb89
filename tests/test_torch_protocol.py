"""fastoptim.torch keeps torch.optim's protocol: memory formats, state resets and
assignments, older state_dicts, hooks, closures, param groups, copies, tensor lr and
schedulers; each checked in lockstep with the torch original fed the same gradients."""

from __future__ import annotations

import collections
import copy
import inspect
import io
import pickle
import re

import pytest

torch = pytest.importorskip("torch")
optimizer_mod = pytest.importorskip("torch.optim.optimizer")
ft = pytest.importorskip("fastoptim.torch")

TOL = dict(rtol=1e-5, atol=1e-6)

CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("Adam", dict(lr=3e-2, weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=3e-2, weight_decay=0.1)),
    ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True)),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-3)),
]
IDS = [c[0] for c in CASES]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pairs(make):
    """The same parameters twice: one set for torch, a clone (same layout) for ours."""
    torch.manual_seed(0)
    ref = make()
    ours = []
    for t in ref:
        if t._base is None:
            c = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t)
        else:  # a view: clone its base and take the same view of the clone
            c = torch.as_strided(t._base.clone(), t.shape, t.stride(), t.storage_offset())
        ours.append(c.detach().requires_grad_())
    return ref, ours


def _feed(ref, ours, gen, grad_like=None):
    for a, b in zip(ref, ours, strict=True):
        g = torch.randn(a.shape, generator=gen)
        if grad_like is not None:
            g = grad_like(g)
        a.grad = g.clone()
        b.grad = g.clone()


def _same(opt_ref, opt, ref, ours):
    for a, b in zip(ref, ours, strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), **TOL)
        sa, sb = opt_ref.state.get(a, {}), opt.state.get(b, {})
        assert set(sa) == set(sb)
        for k, v in sa.items():
            if k == "step":
                assert float(sb[k]) == float(v)
            else:
                torch.testing.assert_close(sb[k], v, **TOL)


def _lockstep(name, kw, make, steps=4, between=None, grad_like=None):
    ref, ours = _pairs(make)
    opt_ref = getattr(torch.optim, name)(ref, **kw)
    opt = getattr(ft, name)(ours, **kw)
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        _feed(ref, ours, gen, grad_like)
        opt_ref.step()
        opt.step()
        _same(opt_ref, opt, ref, ours)
        if between is not None:
            between(i, opt_ref, ref)
            between(i, opt, ours)
    return opt_ref, opt, ref, ours


# -- memory formats --------------------------------------------------------------------

def _formats():
    conv = torch.randn(6, 4, 3, 3).to(memory_format=torch.channels_last)
    base = torch.randn(8, 10)
    return [conv, torch.randn(5, 7).t(), base[:, ::2], torch.randn(9), torch.randn(3, 4)]


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_non_contiguous_parameters_update_in_place_like_torch(name, kw):
    ref, ours = _pairs(_formats)
    strides = [p.stride() for p in ours]
    ptrs = [p.data_ptr() for p in ours]
    opt_ref = getattr(torch.optim, name)(ref, **kw)
    opt = getattr(ft, name)(ours, **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _feed(ref, ours, gen)
        opt_ref.step()
        opt.step()
        _same(opt_ref, opt, ref, ours)
    assert [p.stride() for p in ours] == strides and [p.data_ptr() for p in ours] == ptrs


def test_strided_view_parameter_writes_through_to_its_base():
    base = torch.zeros(4, 6)
    p = base[:, ::2].detach().requires_grad_()  # a leaf sharing base's memory, with gaps
    opt = ft.SGD([p], lr=1.0)
    p.grad = torch.ones(4, 3)
    opt.step()
    assert torch.equal(base[:, ::2], -torch.ones(4, 3))
    assert torch.equal(base[:, 1::2], torch.zeros(4, 3))


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_gradients_in_another_layout(name, kw):
    # a contiguous parameter with a transposed gradient, a channels_last one with a
    # contiguous gradient: gradients are read in whatever layout they come
    def make():
        return [torch.randn(4, 5), torch.randn(3, 2, 2, 2).to(memory_format=torch.channels_last)]

    def grad_like(g):
        return g.t().contiguous().t() if g.dim() == 2 else g.contiguous()
    _lockstep(name, kw, make, grad_like=grad_like)


def test_channels_last_model_trains_like_torch():
    torch.manual_seed(0)
    m1 = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    m1 = m1.to(memory_format=torch.channels_last)
    m2 = copy.deepcopy(m1)
    o1, o2 = ft.Adam(m1.parameters(), lr=1e-2), torch.optim.Adam(m2.parameters(), lr=1e-2)
    x = torch.randn(2, 3, 9, 9).to(memory_format=torch.channels_last)
    for _ in range(5):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert a.stride() == b.stride()
        torch.testing.assert_close(a, b, **TOL)


def test_errors_name_the_parameter():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    opt = ft.Lion(m.named_parameters(), lr=0.1)  # (torch.optim's own steps sparse SGD)
    m.weight.grad = torch.zeros(2, 3).to_sparse()
    m.bias.grad = torch.zeros(2)
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\] \('weight'\).*sparse"):
        opt.step()
    for p, q in zip(m.parameters(), before, strict=True):
        assert torch.equal(p.detach(), q)
    with pytest.raises(TypeError, match=r"\[1\] of shape \(3,\) has dtype torch.int64"):
        ft.Adam([torch.zeros(2, requires_grad=True), torch.zeros(3, dtype=torch.int64)])


# -- state resets and assignments ----------------------------------------------------

RESETS = {
    "clear": lambda opt, ps: opt.state.clear(),
    "new-defaultdict": lambda opt, ps: setattr(opt, "state", collections.defaultdict(dict)),
    "del-one": lambda opt, ps: opt.state.__delitem__(ps[0]),
    "new-dict-one": lambda opt, ps: opt.state.__setitem__(ps[1], {}),
}


@pytest.mark.parametrize("reset", list(RESETS), ids=list(RESETS))
@pytest.mark.parametrize("name,kw", CASES[:4], ids=IDS[:4])
def test_state_reset_really_resets(name, kw, reset):
    def between(i, opt, ps):
        if i in (1, 3):
            RESETS[reset](opt, ps)

    opt_ref, opt, ref, ours = _lockstep(name, kw, lambda: [torch.randn(5, 3), torch.randn(7)],
                                        steps=6, between=between)
    sd = opt.state_dict()["state"]
    assert set(sd) == set(opt_ref.state_dict()["state"])


@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq", "step", "step-in-place"])
def test_assigning_state_takes_effect(key):
    def between(i, opt, ps):
        if i != 2:
            return
        st = opt.state[ps[0]]
        if key == "step":
            st["step"] = torch.tensor(50.0)
        elif key == "step-in-place":
            st["step"].fill_(20.0)
        else:
            st[key] = torch.full_like(ps[0], 0.5)
    _lockstep("Adam", dict(lr=0.05), lambda: [torch.randn(4, 3), torch.randn(6)], steps=5,
              between=between)


def test_in_place_state_edit_takes_effect():
    def between(i, opt, ps):
        if i == 1:
            opt.state[ps[0]]["momentum_buffer"].mul_(3.0)
            ps[1].data = ps[1].data * 2.0  # a parameter's storage replaced
    _lockstep("SGD", dict(lr=0.1, momentum=0.9), lambda: [torch.randn(4), torch.randn(3)],
              steps=4, between=between)


# -- state_dicts: older dicts, non-dict values, the step --------------------------------

@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_older_state_dict_gets_torch_defaults(name, kw):
    ref, ours = _pairs(lambda: [torch.randn(4, 3), torch.randn(5)])
    opt_ref = getattr(torch.optim, name)(ref, **kw)
    opt = getattr(ft, name)(ours, **kw)
    gen = torch.Generator().manual_seed(1)
    _feed(ref, ours, gen)
    opt_ref.step()
    opt.step()
    old = opt_ref.state_dict()
    for g in old["param_groups"]:
        for flag in ("maximize", "foreach", "fused", "differentiable", "capturable",
                     "decoupled_weight_decay"):
            g.pop(flag, None)
    opt_ref.load_state_dict(copy.deepcopy(old))
    opt.load_state_dict(copy.deepcopy(old))
    assert opt.param_groups[0]["maximize"] is False
    for _ in range(3):
        _feed(ref, ours, gen)
        opt_ref.step()
        opt.step()
        _same(opt_ref, opt, ref, ours)


def test_adam_state_dict_into_adamw_forces_decoupled_decay():
    ref, ours = _pairs(lambda: [torch.randn(6)])
    a = torch.optim.Adam(ref, lr=0.1, weight_decay=0.5)
    sd = a.state_dict()
    opt_ref = torch.optim.AdamW(ref, lr=0.1)
    opt = ft.AdamW(ours, lr=0.1)
    opt_ref.load_state_dict(copy.deepcopy(sd))
    opt.load_state_dict(copy.deepcopy(sd))
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _feed(ref, ours, gen)
        opt_ref.step()
        opt.step()
        _same(opt_ref, opt, ref, ours)


def test_non_dict_values_in_state_are_tolerated():
    ref, ours = _pairs(lambda: [torch.randn(3)])
    for ps, cls in ((ref, torch.optim.Adam), (ours, ft.Adam)):
        opt = cls(ps, lr=0.1)
        ps[0].grad = torch.ones(3)
        opt.step()
        opt.state["extra"] = 5
        sd = opt.state_dict()
        assert sd["state"]["extra"] == 5
        opt.load_state_dict(sd)
        opt.step()
        assert opt.state["extra"] == 5


def test_step_is_a_float32_tensor_and_counts_exactly_past_2_24():
    p = torch.zeros(3, requires_grad=True)
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    opt.step()
    st = opt.state[p]["step"]
    assert torch.is_tensor(st) and st.dtype == torch.float32 and st.dim() == 0
    assert st.item() == 2.0
    sd = opt.state_dict()
    sd["state"][0]["step"] = torch.tensor(2**24 + 1, dtype=torch.int64)
    opt.load_state_dict(sd)
    for _ in range(3):
        opt.step()
    assert int(opt.state_dict()["state"][0]["step"]) == 2**24 + 4
    assert opt.state_dict()["state"][0]["step"].dtype == torch.int64
    opt2 = copy.deepcopy(opt)  # the exact count survives copies
    opt2.step()
    assert int(opt2.state_dict()["state"][0]["step"]) == 2**24 + 5


# -- hyperparameters ------------------------------------------------------------------

def test_hyperparameters_checked_before_params_are_read():
    def params():
        raise AssertionError("params were read")
        yield
    with pytest.raises(ValueError, match="lr"):
        ft.Adam(params(), lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        ft.SGD(params(), lr=0.1, momentum=-1.0)


def test_tensor_hyperparameters_refused_like_torch():
    p = [torch.zeros(2, requires_grad=True)]
    for cls in (torch.optim.Adam, ft.Adam):
        with pytest.raises(ValueError, match="foreach=True"):
            cls(p, lr=torch.tensor(0.1), foreach=True)
        with pytest.raises(ValueError, match="both floats or both Tensors"):
            cls(p, betas=(torch.tensor(0.9), 0.99))
        with pytest.raises(ValueError, match="1-element"):
            cls(p, lr=torch.tensor([0.1, 0.2]))


def test_sgd_without_momentum_keeps_no_state():
    p = torch.zeros(3, requires_grad=True)
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    assert len(opt.state) == 0 and opt.state_dict()["state"] == {}
    torch.testing.assert_close(p.detach(), torch.full((3,), -0.1))


def test_tensor_lr_lockstep():
    _lockstep("Adam", dict(lr=torch.tensor(0.05)), lambda: [torch.randn(5)], steps=4)


def test_momentum_switched_on_later():
    def between(i, opt, ps):
        if i == 1:
            opt.param_groups[0]["momentum"] = 0.9
    _lockstep("SGD", dict(lr=0.1), lambda: [torch.randn(4)], steps=4, between=between)


# -- hooks ----------------------------------------------------------------------------

def test_step_hooks_local_and_global():
    p = torch.zeros(2, requires_grad=True)
    opt = ft.SGD([p], lr=1.0)
    calls = []
    h = [opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", float(p.detach()[0])))),
         opt.register_step_post_hook(lambda o, a, k: calls.append(("post", float(p.detach()[0])))),
         optimizer_mod.register_optimizer_step_pre_hook(
             lambda o, a, k: calls.append(("gpre", o is opt))),
         optimizer_mod.register_optimizer_step_post_hook(
             lambda o, a, k: calls.append(("gpost", o is opt)))]
    try:
        p.grad = torch.ones(2)
        opt.step()
    finally:
        for x in h:
            x.remove()
    assert calls == [("gpre", True), ("pre", 0.0), ("post", -1.0), ("gpost", True)]
    opt.step()
    assert len(calls) == 4


def test_state_dict_and_load_hooks():
    p = torch.zeros(2, requires_grad=True)
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(2)
    opt.step()
    seen = []
    opt.register_state_dict_pre_hook(lambda o: seen.append("sd-pre"))

    def post(o, sd):
        seen.append("sd-post")
        assert sd["state"][0]["step"].dtype == torch.int64  # hooks see the saved form
        sd["extra"] = 1
        return sd
    opt.register_state_dict_post_hook(post)

    def load_pre(o, sd):
        seen.append("load-pre")
        sd = dict(sd)
        sd["param_groups"] = copy.deepcopy(sd["param_groups"])
        sd["param_groups"][0]["lr"] = 0.5
        return sd
    opt.register_load_state_dict_pre_hook(load_pre)
    opt.register_load_state_dict_post_hook(lambda o: seen.append("load-post"))
    sd = opt.state_dict()
    assert sd["extra"] == 1
    opt.load_state_dict(sd)
    assert seen == ["sd-pre", "sd-post", "load-pre", "load-post"]
    assert opt.param_groups[0]["lr"] == 0.5


def test_load_refuses_bad_hyperparameters_and_changes_nothing():
    p = torch.zeros(2, requires_grad=True)
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(2)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["betas"] = (1.5, 0.9)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="beta"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert torch.equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


# -- zero_grad, closure, param groups, copies -------------------------------------------

@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    ref, ours = _pairs(lambda: [torch.randn(3), torch.randn(2)])
    o_ref, o = torch.optim.Adam(ref, lr=0.1), ft.Adam(ours, lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for i in range(4):
        if i:
            o_ref.zero_grad(set_to_none=set_to_none)
            o.zero_grad(set_to_none=set_to_none)
            assert (ours[0].grad is None) == set_to_none
        if i == 2:  # a step where only the first parameter gets a gradient
            g = torch.randn(3, generator=gen)
            for a, b in ((ref[0], ours[0]), ):
                if a.grad is None:
                    a.grad, b.grad = g.clone(), g.clone()
                else:
                    a.grad.add_(g)
                    b.grad.add_(g)
        else:
            for a, b in zip(ref, ours, strict=True):
                g = torch.randn(a.shape, generator=gen)
                if a.grad is None:
                    a.grad, b.grad = g.clone(), g.clone()
                else:
                    a.grad.add_(g)
                    b.grad.add_(g)
        o_ref.step()
        o.step()
        _same(o_ref, o, ref, ours)


def test_step_closure_returns_loss_and_runs_with_grad():
    p = torch.ones(3, requires_grad=True)
    opt = ft.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss
    with torch.no_grad():
        loss = opt.step(closure)
    assert float(loss.detach()) == 3.0
    torch.testing.assert_close(p.detach(), torch.full((3,), 0.8))


def test_add_param_group_lockstep_and_bad_group_changes_nothing():
    ref, ours = _pairs(lambda: [torch.randn(3), torch.randn(4)])
    o_ref = torch.optim.Adam([ref[0]], lr=0.1)
    o = ft.Adam([ours[0]], lr=0.1)
    with pytest.raises(ValueError, match="beta"):
        o.add_param_group({"params": [ours[1]], "betas": (2.0, 0.9)})
    assert len(o.param_groups) == 1
    gen = torch.Generator().manual_seed(1)
    for i in range(4):
        if i == 1:
            o_ref.add_param_group({"params": [ref[1]], "lr": 0.01})
            o.add_param_group({"params": [ours[1]], "lr": 0.01})
        _feed(ref, ours, gen)
        o_ref.step()
        o.step()
        _same(o_ref, o, ref, ours)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_continue_in_lockstep(how):
    torch.manual_seed(0)
    m1 = torch.nn.Linear(4, 3)
    m2 = copy.deepcopy(m1)
    o1, o2 = ft.Adam(m1.parameters(), lr=0.05), torch.optim.Adam(m2.parameters(), lr=0.05)
    x = torch.randn(8, 4)

    def train(m, o):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for _ in range(3):
        train(m1, o1)
        train(m2, o2)
    if how == "deepcopy":
        m1, o1 = copy.deepcopy((m1, o1))
    elif how == "pickle":
        m1, o1 = pickle.loads(pickle.dumps((m1, o1)))
    else:
        buf = io.BytesIO()
        torch.save((m1, o1), buf)
        buf.seek(0)
        m1, o1 = torch.load(buf, weights_only=False)
    assert set(o1.state) == set(m1.parameters())
    for _ in range(3):
        train(m1, o1)
        train(m2, o2)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(a, b, **TOL)


# -- schedulers that cycle momentum or betas ------------------------------------------

@pytest.mark.parametrize("sched", ["OneCycleLR-Adam", "OneCycleLR-SGD", "CyclicLR-SGD"])
def test_momentum_cycling_schedulers(sched):
    kind, name = sched.split("-")
    kw = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=0.05)
    ref, ours = _pairs(lambda: [torch.randn(5), torch.randn(2, 3)])
    o_ref, o = getattr(torch.optim, name)(ref, **kw), getattr(ft, name)(ours, **kw)

    def make(opt):
        if kind == "OneCycleLR":
            return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
        return torch.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3)
    s_ref, s = make(o_ref), make(o)
    gen = torch.Generator().manual_seed(1)
    for _ in range(8):
        _feed(ref, ours, gen)
        o_ref.step()
        o.step()
        s_ref.step()
        s.step()
        _same(o_ref, o, ref, ours)
    key = "betas" if name == "Adam" else "momentum"
    assert o.param_groups[0][key] == o_ref.param_groups[0][key]


# -- AMP ------------------------------------------------------------------------------

@pytest.mark.parametrize("clip", [False, True], ids=["plain", "unscale-clip"])
def test_grad_scaler_lockstep(clip):
    torch.manual_seed(0)
    m1 = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    m2 = copy.deepcopy(m1)
    o1, o2 = ft.Adam(m1.parameters(), lr=1e-2), torch.optim.Adam(m2.parameters(), lr=1e-2)
    assert o1._step_supports_amp_scaling
    s1 = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    s2 = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(16, 5)
    for i in range(6):
        for m, o, s in ((m1, o1, s1), (m2, o2, s2)):
            o.zero_grad()
            s.scale(m(x).square().mean()).backward()
            if i == 2:  # an overflow: both skip the step and halve the scale
                next(m.parameters()).grad[0, 0] = float("inf")
            if clip:
                s.unscale_(o)
                torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05)
            s.step(o)
            s.update()
        assert s1.get_scale() == s2.get_scale()
        for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
            torch.testing.assert_close(a, b, **TOL)
        assert int(o1.state_dict()["state"][0]["step"]) == int(o2.state[
            next(m2.parameters())]["step"])
    assert s1.get_scale() == 2.0**9


def test_mixed_dtypes_and_a_gradient_that_changes_layout_mid_training():
    # two native calls per step (float32 and float64); when the float64 gradient turns
    # non-contiguous after the plan is cached, neither part is stepped twice
    def make():
        return [torch.randn(4, 3), torch.randn(5, 2, dtype=torch.float64)]
    ref, ours = _pairs(make)
    o_ref, o = torch.optim.Adam(ref, lr=0.05), ft.Adam(ours, lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for i in range(5):
        for a, b in zip(ref, ours, strict=True):
            g = torch.randn(a.shape, generator=gen, dtype=a.dtype)
            if i >= 2 and a.dtype == torch.float64:
                g = g.t().contiguous().t()
            a.grad, b.grad = g.clone(), g.clone()
        o_ref.step()
        o.step()
        _same(o_ref, o, ref, ours)


def test_gradient_resized_behind_the_setter_is_refused():
    p = torch.zeros(4, requires_grad=True)
    opt = ft.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(4)
    opt.step()
    before = p.detach().clone()
    p.grad.data = torch.ones(2)  # bypasses the grad setter's shape check
    with pytest.raises(TypeError, match=r"gradient of param_groups\[0\]\['params'\]\[0\]"):
        opt.step()
    assert torch.equal(p.detach(), before)


# -- torch's flags, sparse gradients, tensor lr, torch's messages ---------------------

@pytest.mark.parametrize("name, kw, steps", [("SGD", dict(lr=0.1, momentum=0.9), 3),
                                             ("Adam", dict(lr=0.1, amsgrad=True), 1),
                                             ("RMSprop", dict(lr=0.01, centered=True), 1)])
def test_differentiable_step_gives_torchs_hypergradients(name, kw, steps):
    # differentiable=True: the step is torch.optim's own, recorded by autograd, so a
    # gradient flows back through it to what produced the parameter and its gradient
    g = torch.Generator().manual_seed(6)
    w0 = torch.randn(5, generator=g, dtype=torch.float64)
    target = torch.randn(5, generator=g, dtype=torch.float64)
    outs = []
    for cls in (getattr(ft, name), getattr(torch.optim, name)):
        w = w0.clone().requires_grad_()
        q = w * 1.0  # a non-leaf parameter (allowed with differentiable=True, as in torch)
        opt = cls([q], **kw, differentiable=True)
        for _ in range(steps):  # (torch's Adam and RMSprop: one differentiable step)
            loss = (q - target).pow(2).sum()
            q.grad = torch.autograd.grad(loss, q, create_graph=True)[0]
            opt.step()
        (q * target).sum().backward()
        outs.append((q.detach().clone(), w.grad.clone()))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not torch.equal(outs[0][1], torch.zeros(5))


def test_fused_is_accepted_with_torchs_own_checks():
    ps = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    a, b = ft.AdamW(ps, lr=0.1, fused=True), ft.AdamW(qs, lr=0.1)
    assert a.param_groups[0]["fused"] is True and b.param_groups[0]["fused"] is None
    for _ in range(3):
        for p, q in zip(ps, qs, strict=True):
            p.grad = torch.ones_like(p)
            q.grad = torch.ones_like(q)
        a.step()
        b.step()
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        ft.Adam(ps, fused=True, differentiable=True)
    with torch.device("meta"):  # as torch: built on the meta device, refused at the step
        m = torch.nn.Linear(2, 3)
    opt = ft.SGD(m.parameters(), lr=0.1, fused=True)
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params"):
        opt.step()


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # (torch's, in both)
@pytest.mark.parametrize("name, kw", [("SGD", dict(lr=0.1)), ("Adagrad", dict(lr=0.1))])
def test_sparse_gradients_are_stepped_as_torch_steps_them(name, kw):
    # torch steps sparse gradients in SGD and Adagrad: so do these, by torch's own code
    emb = [torch.nn.Embedding(10, 3, sparse=True) for _ in range(2)]
    emb[1].load_state_dict(emb[0].state_dict())
    opts = [getattr(ft, name)(emb[0].parameters(), **kw),
            getattr(torch.optim, name)(emb[1].parameters(), **kw)]
    idx = torch.tensor([1, 4, 4, 7])
    for _ in range(3):
        for e, o in zip(emb, opts, strict=True):
            o.zero_grad()
            e(idx).pow(2).sum().backward()
            o.step()
    torch.testing.assert_close(emb[0].weight, emb[1].weight, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ASGD", "Rprop", "LBFGS", "SparseAdam", "Adafactor", "Muon",
                                  "Adamax"])
@pytest.mark.parametrize("num_dim", [0, 1, 2])
def test_a_tensor_lr_steps_as_its_float(name, num_dim):
    cls = getattr(ft, name)
    lr = 0.5 if name == "LBFGS" else 1e-2
    g = torch.Generator().manual_seed(7)
    w0 = torch.randn(6, 4, generator=g)
    runs = []
    for value in (lr, torch.tensor(lr).reshape([1] * num_dim)):
        w = torch.nn.Parameter(w0.clone())
        extra = {"foreach": True} if "foreach" in inspect.signature(cls).parameters else {}
        opt = cls([w], lr=value, **extra)

        def closure(w=w, opt=opt):
            opt.zero_grad()
            loss = (w - 1.0).pow(2).sum()
            loss.backward()
            if name == "SparseAdam":
                w.grad = w.grad.to_sparse()
            return loss
        for _ in range(3):
            if name == "LBFGS":
                opt.step(closure)
            else:
                closure()
                opt.step()
        runs.append(w.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-6, atol=1e-7)
    assert not torch.equal(runs[0], w0)
    if name not in ("LBFGS",):
        with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
            cls([torch.nn.Parameter(w0.clone())], lr=torch.tensor([lr, lr]))


@pytest.mark.parametrize("name, kw, message", [
    ("Adam", dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
    ("AdamW", dict(weight_decay=-1), "Invalid weight_decay value: -1"),
    ("SGD", dict(momentum=-0.5), "Invalid momentum value: -0.5"),
    ("Adadelta", dict(rho=1.1), "Invalid rho value: 1.1"),
    ("Rprop", dict(etas=(1.0, 0.5)), "Invalid eta values: 1.0, 0.5"),
    ("RMSprop", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("SparseAdam", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    ("Adafactor", dict(d=0.0), "Clipping threshold d should be >= 1"),
    ("Muon", dict(adjust_lr_fn="arbitrary"), "Adjust learning rate function arbitrary"),
])
def test_refused_hyperparameters_read_as_torch_words_them_then_what_is_expected(
        name, kw, message):
    p = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        getattr(ft, name)([p], **kw)
    assert "must" in str(e.value)  # and fastoptim's statement of what is expected


def test_asgd_steps_a_strided_view_parameter_as_torch():
    base = torch.randn(10, 5, 2)
    ws = [torch.nn.Parameter(base.clone()[..., 0]) for _ in range(2)]
    opts = [ft.ASGD([ws[0]], lr=0.1, t0=1), torch.optim.ASGD([ws[1]], lr=0.1, t0=1)]
    for _ in range(4):
        for w, o in zip(ws, opts, strict=True):
            w.grad = torch.ones_like(w)
            o.step()
    torch.testing.assert_close(ws[0], ws[1], **TOL)
    assert float(opts[0].state[ws[0]]["step"]) == 4


def test_a_group_switched_to_differentiable_leaves_its_cached_plan_for_torchs_step():
    ps = [torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3)) for _ in range(2)]
    opt, ref = ft.Adam([ps[0]], lr=0.1), torch.optim.Adam([ps[1]], lr=0.1)
    taken = []
    own = opt._torch_step
    opt._torch_step = lambda *a: taken.append(1) or own(*a)
    for i in range(4):
        if i == 2:
            opt.param_groups[0]["differentiable"] = True
        for p, o in zip(ps, (opt, ref), strict=True):
            p.grad = torch.full_like(p, 0.5 + i)
            o.step()
    assert taken == [1, 1]
    torch.testing.assert_close(ps[0], ps[1], **TOL)
    assert float(opt.state[ps[0]]["step"]) == 4
