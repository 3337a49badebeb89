"""fastoptim.torch with ``arena=True``: a group's parameters, state and gradients each live
in one buffer and a step is one flat kernel call; every result stays torch's, checked in
lockstep with torch.optim for each way a user can touch parameters and gradients."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastoptim.torch")

TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Net(torch.nn.Module):
    """Two branches: ``side`` only gets a gradient when forward is asked to use it."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 8)
        self.b = torch.nn.Linear(8, 3)
        self.side = torch.nn.Linear(8, 3)

    def forward(self, x, use_side=True):
        h = torch.tanh(self.a(x))
        return self.b(h) + (self.side(h) if use_side else 0.0)


def _pair(name="Adam", **kw):
    torch.manual_seed(0)
    m1 = Net()
    m2 = copy.deepcopy(m1)
    o_ref = getattr(torch.optim, name)(m1.parameters(), **kw)
    o = getattr(ft, name)(m2.parameters(), **kw, arena=True)
    return m1, m2, o_ref, o


def _same(o_ref, o, m1, m2):
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(b.detach(), a.detach(), **TOL)
        sa, sb = o_ref.state.get(a, {}), o.state.get(b, {})
        assert set(sa) == set(sb)
        for k, v in sa.items():
            if k == "step":
                assert float(sb[k]) == float(v)
            else:
                torch.testing.assert_close(sb[k], v, **TOL)


def _in_one_buffer(ts):
    ptr = ts[0].data_ptr()
    for t in ts:
        assert t.is_contiguous() and t.data_ptr() == ptr
        ptr += t.numel() * t.element_size()


def _backward(m, x, **kw):
    m(x, **kw).square().mean().backward()


@pytest.mark.parametrize(("name", "kw"), [("Adam", dict(lr=1e-2, weight_decay=1e-2)),
                                          ("AdamW", dict(lr=1e-2, amsgrad=True)),
                                          ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True))])
def test_training_loop_in_lockstep_and_one_flat_call(name, kw):
    m1, m2, o_ref, o = _pair(name, **kw)
    x = torch.randn(16, 5)
    for _ in range(6):
        for m, opt in ((m1, o_ref), (m2, o)):
            opt.zero_grad()
            _backward(m, x)
            opt.step()
        _same(o_ref, o, m1, m2)
    part = o._fo_plans[0].fast
    assert part.flat_g is not None  # the steady state is the flat call
    ps = list(m2.parameters())
    _in_one_buffer(ps)
    _in_one_buffer([p.grad for p in ps])
    for k in o._state_keys:
        if k in o.state[ps[0]]:
            _in_one_buffer([o.state[p][k] for p in ps])
    grads = [p.grad for p in ps]
    o.zero_grad()  # the arena is cleared in place: the same gradient tensors, all zero
    assert all(p.grad is g and not g.any() for p, g in zip(ps, grads, strict=True))


def test_a_parameter_without_gradient_this_step_is_skipped_as_torch_skips_none():
    m1, m2, o_ref, o = _pair("Adam", lr=1e-2)
    x = torch.randn(16, 5)
    for i in range(6):
        use = i % 3 != 1  # every third step the side branch gets no gradient
        for m, opt in ((m1, o_ref), (m2, o)):
            opt.zero_grad()  # torch: set_to_none=True; the arena: cleared, counted as None
            _backward(m, x, use_side=use)
            opt.step()
        if not use:
            assert m1.side.weight.grad is None
        _same(o_ref, o, m1, m2)
    assert float(o.state[m2.side.weight]["step"]) == 4.0


def test_zero_grad_set_to_none_false_keeps_zero_gradients_that_are_stepped():
    m1, m2, o_ref, o = _pair("Adam", lr=1e-2)
    x = torch.randn(16, 5)
    for i in range(5):
        use = i % 2 == 0
        for m, opt in ((m1, o_ref), (m2, o)):
            opt.zero_grad(set_to_none=False)
            _backward(m, x, use_side=use)
            opt.step()
        _same(o_ref, o, m1, m2)


def test_gradient_accumulation_over_two_backwards():
    m1, m2, o_ref, o = _pair("SGD", lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 5), torch.randn(16, 5)
    for _ in range(4):
        for m, opt in ((m1, o_ref), (m2, o)):
            opt.zero_grad()
            _backward(m, x)
            _backward(m, y, use_side=False)
            opt.step()
        _same(o_ref, o, m1, m2)


def test_user_replacing_grad_or_data_or_using_module_zero_grad_stays_correct():
    m1, m2, o_ref, o = _pair("Adam", lr=1e-2)
    x = torch.randn(16, 5)
    gen = torch.Generator().manual_seed(3)
    for i in range(8):
        for m, opt in ((m1, o_ref), (m2, o)):
            if i == 5:
                m.zero_grad()  # the module's: every gradient None, backward makes new ones
            else:
                opt.zero_grad()
            _backward(m, x)
        if i == 2:  # a new gradient tensor for one parameter
            g = torch.randn(m1.b.weight.shape, generator=gen)
            m1.b.weight.grad, m2.b.weight.grad = g.clone(), g.clone()
        if i == 3:  # new storage under one parameter
            w = torch.randn(m1.a.weight.shape, generator=gen)
            m1.a.weight.data, m2.a.weight.data = w.clone(), w.clone()
        if i == 4:  # an in-place edit of the arena's gradient
            m1.a.bias.grad.mul_(3.0)
            m2.a.bias.grad.mul_(3.0)
        if i == 6:  # new storage under the arena's gradient tensor itself
            g = torch.randn(m1.b.bias.shape, generator=gen)
            m1.b.bias.grad.data, m2.b.bias.grad.data = g.clone(), g.clone()
        o_ref.step()
        o.step()
        _same(o_ref, o, m1, m2)
    assert o._fo_plans[0].fast.flat_g is not None  # back in one arena


@pytest.mark.parametrize("what", ["p.data", "p.grad.data"])
def test_new_storage_under_a_steady_arena_is_noticed(what):
    """The steady arena's own checks (not a rebuild) must see a parameter or gradient
    moved to other storage; the step then updates the new storage, as torch does."""
    m1, m2, o_ref, o = _pair("Adam", lr=1e-2)
    x = torch.randn(16, 5)
    gen = torch.Generator().manual_seed(4)
    for i in range(6):
        for m, opt in ((m1, o_ref), (m2, o)):
            opt.zero_grad()
            _backward(m, x)
        if i == 3:
            part = o._fo_plans[0].fast
            assert part.flat_g is not None and part.check(o.param_groups[0]["params"], True)
            if what == "p.data":
                w = torch.randn(m1.a.weight.shape, generator=gen)
                m1.a.weight.data, m2.a.weight.data = w.clone(), w.clone()
            else:
                g = torch.randn(m1.b.bias.shape, generator=gen)
                m1.b.bias.grad.data, m2.b.bias.grad.data = g.clone(), g.clone()
            assert not part.check(o.param_groups[0]["params"], True)
        o_ref.step()
        o.step()
        _same(o_ref, o, m1, m2)


def test_arena_state_dict_round_trip_and_into_torch():
    m1, m2, o_ref, o = _pair("AdamW", lr=1e-2)
    x = torch.randn(16, 5)
    for _ in range(3):
        for m, opt in ((m1, o_ref), (m2, o)):
            opt.zero_grad()
            _backward(m, x)
            opt.step()
    sd = o.state_dict()
    assert sd["param_groups"][0]["arena"] is True
    t = torch.optim.AdamW(copy.deepcopy(m2).parameters(), lr=1e-2)
    t.load_state_dict(sd)
    o2 = ft.AdamW(m2.parameters(), lr=1e-2)
    o2.load_state_dict(copy.deepcopy(o_ref.state_dict()))
    assert o2.param_groups[0]["arena"] is False  # torch's dict: the constructor's value
    for _ in range(2):
        for m, opt in ((m1, o_ref), (m2, o2)):
            opt.zero_grad()
            _backward(m, x)
            opt.step()
        _same(o_ref, o2, m1, m2)


def test_groups_that_cannot_be_an_arena_take_the_ordinary_path():
    # a frozen parameter in the group (never a gradient), and a channels_last parameter
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    conv2 = copy.deepcopy(conv)
    frozen1, frozen2 = (torch.nn.Parameter(torch.randn(3), requires_grad=False)
                        for _ in range(2))
    o_ref = torch.optim.Adam([*conv.parameters(), frozen1], lr=1e-2)
    o = ft.Adam([*conv2.parameters(), frozen2], lr=1e-2, arena=True)
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    for _ in range(3):
        for m, opt in ((conv, o_ref), (conv2, o)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
        for a, b in zip(conv.parameters(), conv2.parameters(), strict=True):
            torch.testing.assert_close(b, a, **TOL)
    assert conv2.weight.is_contiguous(memory_format=torch.channels_last)


def test_arena_with_clipping_and_grad_scaler():
    m1, m2, o_ref, o = _pair("Adam", lr=1e-2)
    o = ft.Adam(m2.parameters(), lr=1e-2, arena=True, max_grad_norm=0.05)
    s_ref = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    s = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(16, 5)
    for i in range(5):
        for m, opt, sc in ((m1, o_ref, s_ref), (m2, o, s)):
            opt.zero_grad()
            sc.scale(m(x).square().mean()).backward()
            if i == 2:
                m.a.weight.grad[0, 0] = float("inf")
        s_ref.unscale_(o_ref)
        norm = torch.nn.utils.clip_grad_norm_(m1.parameters(), 0.05)
        s_ref.step(o_ref)
        s_ref.update()
        s.step(o)
        s.update()
        if i != 2:
            torch.testing.assert_close(o.last_grad_norm, norm, rtol=1e-5, atol=0.0)
        _same(o_ref, o, m1, m2)
    assert o._fo_plans[0].fast.flat_g is not None


def test_arena_must_be_a_bool():
    with pytest.raises(ValueError, match="arena"):
        ft.Adam([torch.nn.Parameter(torch.zeros(2))], arena=1)


def test_a_gradient_in_another_layout_is_moved_into_the_arena_in_the_parameters_layout():
    torch.manual_seed(0)
    ref = [torch.randn(3, 4), torch.randn(4, 2)]
    ours = [t.clone().requires_grad_() for t in ref]
    ref = [t.requires_grad_() for t in ref]
    o_ref, o = torch.optim.SGD(ref, lr=0.1, momentum=0.9), ft.SGD(ours, lr=0.1, momentum=0.9,
                                                                  arena=True)
    gen = torch.Generator().manual_seed(1)
    for i in range(4):
        for a, b in zip(ref, ours, strict=True):
            if i == 0 or b.grad is None:
                g = torch.randn(a.shape[::-1], generator=gen).t()  # transposed
                a.grad, b.grad = g.clone(), g.clone()
            else:  # later steps write into the gradients in place, as backward does
                g = torch.randn(a.shape, generator=gen)
                a.grad.copy_(g)
                b.grad.copy_(g)
        o_ref.step()
        o.step()
        for a, b in zip(ref, ours, strict=True):
            torch.testing.assert_close(b, a, **TOL)
    _in_one_buffer([p.grad for p in ours])
    assert o._fo_plans[0].fast.flat_g is not None
