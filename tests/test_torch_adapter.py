"""fastoptim.torch: drop-in torch.optim optimizers, in lockstep with the originals on a
real torch.nn model, state_dict interchange both ways, schedulers, clipping, errors."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastoptim.torch")



@pytest.fixture(autouse=True)
def _one_torch_thread():
    # tiny tensors: torch's thread pool only adds contention (CI and dev machines are small)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, maximize=False)),
    ("SGD", dict(lr=0.05)),
    ("Adam", dict(lr=3e-3)),
    ("Adam", dict(lr=3e-3, amsgrad=True, weight_decay=1e-2)),
    ("AdamW", dict(lr=3e-3, weight_decay=0.1)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-3)),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-3, initial_accumulator_value=0.1)),
]


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                               torch.nn.LayerNorm(32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 3)).to(dtype)


def _data(dtype):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(64, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (64,), generator=g)
    return X, y


def _train_step(model, opt, X, y):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        return loss
    return opt.step(closure)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_lockstep_real_training(name, kw, dtype):
    """100 steps of real training of a torch.nn model by torch's optimizer; a copy of its
    parameters is updated by ours from the same gradients every step, and parameters and
    all state are compared every step. (Feeding each model its own gradients lets
    last-ulp differences grow through the training dynamics, which tests the model rather
    than the optimizer; fastoptim's own step(closure) is exercised in the tests below.)"""
    ref_m = _model(dtype)
    ref = getattr(torch.optim, name)(ref_m.parameters(), **kw)
    ours_p = [p.detach().clone().requires_grad_() for p in ref_m.parameters()]
    ours = getattr(ft, name)(ours_p, **kw)
    X, y = _data(dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    losses = []
    for _ in range(100):
        losses.append(float(_train_step(ref_m, ref, X, y).detach()))
        for p, q in zip(ours_p, ref_m.parameters(), strict=False):
            p.grad = q.grad.clone()
        ours.step()
        got, want = [], []  # every parameter and state tensor, compared in one call
        for p, q in zip(ours_p, ref_m.parameters(), strict=False):
            got.append(p.detach().flatten())
            want.append(q.detach().flatten())
            for key, v in ref.state[q].items():
                if key == "step":
                    assert int(ours.state[p]["step"]) == int(v)
                else:
                    got.append(ours.state[p][key].flatten())
                    want.append(v.flatten())
        torch.testing.assert_close(torch.cat(got), torch.cat(want), **tol)
    assert losses[-1] < losses[0]  # it really trained


def test_own_training_loop_converges_like_torch():
    X, y = _data(torch.float32)
    m1 = _model(torch.float32)
    m2 = copy.deepcopy(m1)
    o1, o2 = ft.Adam(m1.parameters(), lr=3e-3), torch.optim.Adam(m2.parameters(), lr=3e-3)
    for _ in range(100):
        l1, l2 = _train_step(m1, o1, X, y), _train_step(m2, o2, X, y)
    assert float(l1.detach()) == pytest.approx(float(l2.detach()), rel=1e-3)


@pytest.mark.parametrize("name,kw", [CASES[0], CASES[4], CASES[6], CASES[8]],
                         ids=["SGD", "Adam", "RMSprop", "Adagrad"])
def test_state_dict_interchange_both_ways(name, kw):
    X, y = _data(torch.float32)
    a_m = _model(torch.float32)
    a = getattr(ft, name)(a_m.parameters(), **kw)
    for _ in range(5):
        _train_step(a_m, a, X, y)
    # ours -> torch, continue both in lockstep
    b_m = copy.deepcopy(a_m)
    b = getattr(torch.optim, name)(b_m.parameters(), **kw)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # torch shares loaded tensors
    for _ in range(5):
        _train_step(a_m, a, X, y)
        _train_step(b_m, b, X, y)
    for p, q in zip(a_m.parameters(), b_m.parameters(), strict=False):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # torch -> ours
    c_m = copy.deepcopy(b_m)
    c = getattr(ft, name)(c_m.parameters(), **kw)
    c.load_state_dict(copy.deepcopy(b.state_dict()))
    for _ in range(5):
        _train_step(b_m, b, X, y)
        _train_step(c_m, c, X, y)
    for p, q in zip(b_m.parameters(), c_m.parameters(), strict=False):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_torch_scheduler_and_clip_grad_norm():
    X, y = _data(torch.float32)
    m1 = _model(torch.float32)
    m2 = copy.deepcopy(m1)
    o1, o2 = ft.Adam(m1.parameters(), lr=1e-2), torch.optim.Adam(m2.parameters(), lr=1e-2)
    s1 = torch.optim.lr_scheduler.StepLR(o1, 3, 0.5)
    s2 = torch.optim.lr_scheduler.StepLR(o2, 3, 0.5)
    for _ in range(10):
        for m, o, s in ((m1, o1, s1), (m2, o2, s2)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(X), y).backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.1)
            o.step()
            s.step()
    assert o1.param_groups[0]["lr"] == o2.param_groups[0]["lr"] == 1e-2 * 0.5**3
    for p, q in zip(m1.parameters(), m2.parameters(), strict=False):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_params_without_grad_are_skipped():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = ft.Adam([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3)) and len(opt.state[b]) == 0
    assert not torch.equal(a.detach(), torch.ones(3))


def test_clear_errors():
    with pytest.raises(TypeError, match="dtype"):
        ft.Adam([torch.zeros(3, dtype=torch.int32)])
    c = torch.zeros(3, 2, dtype=torch.complex64, requires_grad=True)
    c.grad = torch.ones_like(c)
    with pytest.raises(RuntimeError, match="complex"):  # as torch: at the step
        ft.Adafactor([c]).step()
    with pytest.raises(ValueError, match="capturable"):
        ft.Adam([torch.zeros(3, requires_grad=True)], capturable=True)
    with pytest.raises(RuntimeError, match="cannot be `True` together"):  # torch's check
        ft.Adam([torch.zeros(3, requires_grad=True)], fused=True, foreach=True)
    with pytest.raises(ValueError, match="betas"):
        ft.Adam([torch.zeros(3, requires_grad=True)], betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="lr"):
        ft.SGD([torch.zeros(3, requires_grad=True)], lr=-1)
    p = torch.zeros(4, requires_grad=True)
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.zeros(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):  # torch.optim.Adam's own refusal
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(4))


def test_state_dict_step_is_a_tensor_and_live_state_keeps_counting():
    p = torch.zeros(3, requires_grad=True)
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    sd = opt.state_dict()
    assert torch.is_tensor(sd["state"][0]["step"]) and int(sd["state"][0]["step"]) == 1
    opt.step()
    assert int(sd["state"][0]["step"]) == 1 and int(opt.state[p]["step"]) == 2
    # a float tensor step, as torch stores it (float64 here: float32 cannot hold 2**24 + 1)
    sd["state"][0]["step"] = torch.tensor(float(2**24 + 1), dtype=torch.float64)
    opt.load_state_dict(sd)
    opt.step()
    opt.step()
    assert int(opt.state_dict()["state"][0]["step"]) == 2**24 + 3


@pytest.mark.parametrize("name, kw", [CASES[0], CASES[3], CASES[4], CASES[6], CASES[8]],
                         ids=["sgd-nesterov", "adam", "adam-amsgrad", "rmsprop", "adagrad"])
@pytest.mark.parametrize("arena", [False, True], ids=["lists", "arena"])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_steady_step_is_the_general_path(name, kw, arena, ngroups):
    # Each group steps through _steady_step once its plan is cached; that must be bitwise
    # the general path, under a scheduler that moves lr (and betas or momentum) every step,
    # a state reset, and a parameter whose storage is replaced mid-run (which also takes it
    # out of an arena), with one group or two (decay and no decay, as models are trained).
    X, y = _data(torch.float32)
    runs = []
    for steady in (True, False):
        model = _model(torch.float32)
        params = list(model.parameters())
        groups = ([{"params": params}] if ngroups == 1 else
                  [{"params": [p for p in params if p.dim() > 1]},
                   {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0,
                    "lr": kw["lr"] / 2}])
        opt = getattr(ft, name)(groups, **kw, arena=arena)
        opt._steady = steady
        cycle = "betas" in opt.defaults or "momentum" in kw
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=kw["lr"], total_steps=40,
                                                    cycle_momentum=cycle)
        taken = 0
        for i in range(30):
            if i == 10:
                opt.state.clear()
            if i == 20:
                w = model[0].weight
                w.data = w.data.clone()
            if steady:
                before = opt._steady_step
                hits = []
                opt._steady_step = lambda gi, g, f=before, h=hits: h.append(f(gi, g)) or h[-1]
            _train_step(model, opt, X, y)
            if steady:
                assert len(hits) == ngroups
                taken += all(hits)
                del opt._steady_step
                if i == 5:  # each group's one call is its arena's flat call
                    for gi in range(ngroups):
                        assert (opt._fo_plans[gi].fast.flat_g is not None) == arena
            sched.step()
        runs.append([p.detach().clone() for p in model.parameters()])
        if steady:
            assert taken >= 25  # the steady path did the steady steps
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


class _CountingParameter(torch.nn.Parameter):
    reads: list = []

    def data_ptr(self):
        self.reads.append(1)
        return super().data_ptr()


@pytest.mark.parametrize("arena", [False, True], ids=["lists", "arena"])
@pytest.mark.parametrize("how", ["subclass", "patched-type"])
def test_the_steady_checks_read_tensors_as_python_does(arena, how):
    # The native checks call torch's accessors directly on exact torch.Tensor and
    # torch.nn.Parameter objects. A subclass's override, or a patch of torch.nn.Parameter
    # made after import, is read as attribute lookup would read it; every step still
    # matches torch.optim.Adam.
    g = torch.Generator().manual_seed(2)
    shapes = [(6, 4), (4,), (3, 6)]
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(6)]
    reads: list = []
    if how == "subclass":
        params = [_CountingParameter(w.clone()) for w in init]
        _CountingParameter.reads = reads
    else:
        params = [torch.nn.Parameter(w.clone()) for w in init]
        base = torch.nn.Parameter.data_ptr
        torch.nn.Parameter.data_ptr = lambda self: reads.append(1) or base(self)
    try:
        refs = [torch.nn.Parameter(w.clone()) for w in init]
        opt, ref = ft.Adam(params, lr=0.1, arena=arena), torch.optim.Adam(refs, lr=0.1)
        for i, gs in enumerate(grads):
            for p, r, gr in zip(params, refs, gs, strict=True):
                if i == 0:
                    p.grad, r.grad = gr.clone(), gr.clone()
                else:  # in place: the arena's gradients stay its own
                    p.grad.copy_(gr)
                    r.grad.copy_(gr)
            before = len(reads)
            opt.step()
            ref.step()
            if i >= 2:  # the cached plan's checks read every data pointer through it
                assert len(reads) - before >= len(params)
            for p, r in zip(params, refs, strict=True):
                torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-6, atol=1e-7)
    finally:
        if how != "subclass":
            del torch.nn.Parameter.data_ptr


COMPLEX_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.1, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.1)),
    ("Adamax", dict(lr=0.1)),
    ("Adadelta", dict()),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5)),
    ("ASGD", dict(lr=0.1, t0=1)),
    ("NAdam", dict(lr=0.1, decoupled_weight_decay=True, weight_decay=0.1)),
    ("RAdam", dict(lr=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Rprop", dict(lr=0.1)),
]


@pytest.mark.parametrize(("name", "kw"), COMPLEX_CASES, ids=[c[0] for c in COMPLEX_CASES])
@pytest.mark.parametrize("arena", [False, True], ids=["lists", "arena"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["c64", "c128"])
def test_complex_parameters_step_as_their_real_views_as_torch_does(name, kw, arena, dtype):
    # torch.optim steps a complex parameter as torch.view_as_real of it (state included,
    # Adagrad's and Rprop's initial values in both halves); a mix of complex, real and
    # strided complex parameters, against torch.optim and against the same optimizer on
    # the real views
    g = torch.Generator().manual_seed(4)
    real = torch.float32 if dtype == torch.complex64 else torch.float64
    ws = [torch.randn(5, 3, dtype=dtype, generator=g), torch.randn(4, dtype=dtype, generator=g),
          torch.randn(3, 2, dtype=real, generator=g),
          torch.randn(6, 4, dtype=dtype, generator=g).t()]
    grads = [[torch.randn(w.shape, dtype=w.dtype, generator=g) for w in ws] for _ in range(6)]
    ours = [torch.nn.Parameter(w.clone()) for w in ws]
    refs = [torch.nn.Parameter(w.clone()) for w in ws]
    as_real = [torch.nn.Parameter(torch.view_as_real(w).clone() if w.is_complex() else w.clone())
               for w in ws]
    opt, ref = getattr(ft, name)(ours, **kw, arena=arena), getattr(torch.optim, name)(refs, **kw)
    opt_real = getattr(ft, name)(as_real, **kw)
    tol = dict(rtol=1e-5, atol=1e-6) if real == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for gs in grads:
        for p, r, q, gr in zip(ours, refs, as_real, gs, strict=True):
            p.grad, r.grad = gr.clone(), gr.clone()
            q.grad = torch.view_as_real(gr).clone() if gr.is_complex() else gr.clone()
        opt.step()
        ref.step()
        opt_real.step()
        for p, r, q in zip(ours, refs, as_real, strict=True):
            assert p.dtype == r.dtype
            torch.testing.assert_close(p.detach(), r.detach(), **tol)
            assert torch.equal(torch.view_as_real(p.detach()) if p.is_complex() else p.detach(),
                               q.detach())
    for p, r in zip(ours, refs, strict=True):
        sp, sr = opt.state[p], ref.state[r]
        assert set(sp) == set(sr)
        for k, v in sr.items():
            if k != "step":
                assert sp[k].dtype == v.dtype
                torch.testing.assert_close(sp[k], v, **tol)
    # torch continues from our state_dict as if it had taken the steps itself
    again = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    cont = getattr(torch.optim, name)(again, **kw)
    cont.load_state_dict(opt.state_dict())
    for p, r, gr in zip(again, refs, grads[0], strict=True):
        p.grad, r.grad = gr.clone(), gr.clone()
    cont.step()
    ref.step()
    if real == torch.float64:  # (NAdam's mu_product crosses as torch's float32 0-d tensor)
        tol = dict(rtol=1e-9, atol=1e-11)
    for p, r in zip(again, refs, strict=True):
        torch.testing.assert_close(p.detach(), r.detach(), **tol)


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_lbfgs_takes_complex_parameters_as_real_views_beside_real_ones(line_search):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, dtype=torch.complex128, generator=g)
    target = torch.randn(4, dtype=torch.complex128, generator=g)
    w2 = torch.randn(3, dtype=torch.float64, generator=g)
    runs = []
    for cls in (ft.LBFGS, torch.optim.LBFGS):
        p, q = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w2.clone())
        opt = cls([p, q], lr=0.5, max_iter=5, line_search_fn=line_search)

        def closure(p=p, q=q, opt=opt):
            opt.zero_grad()
            loss = (p - target).abs().pow(2).sum() + q.pow(4).sum()
            loss.backward()
            return loss
        for _ in range(3):
            opt.step(closure)
        runs.append((p.detach(), q.detach(), opt.state[p]["d"]))
    for a, b in zip(*runs, strict=True):  # (the direction's small entries: ~1e-11 apart)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    with pytest.raises(TypeError, match="one dtype"):
        ft.LBFGS([torch.nn.Parameter(w.clone()), torch.nn.Parameter(torch.zeros(2))])
