"""Layers and models: fused activation kernels vs the float64 reference on every SIMD
target and thread count, vs torch, finite differences, the parameter arena, dropout,
penalties, state_dict, bad inputs."""

from __future__ import annotations

import fastoptim
import numpy as np
import pytest
import reference as ref
from fastoptim import _core, losses, nn

ACTS = [None, "relu", "leaky_relu", "sigmoid", "tanh", "gelu_tanh", "gelu", "softmax"]
# Python floats: pytest 9's approx rejects numpy float32 tolerances.
EPS = {t: float(np.finfo(t).eps) for t in (np.float32, np.float64)}


def _ref_forward(act, z):
    if act == "softmax":
        return ref.softmax_rows(z)
    return ref.activation(act, z, alpha=0.01)[0]


def _ref_backward(act, z, dy):
    if act == "softmax":
        y = ref.softmax_rows(z)
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))
    return dy * ref.activation(act, z, alpha=0.01)[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("act", ACTS, ids=str)
def test_bias_act_kernels_match_reference(simd_target, num_threads, rng, act, dtype):
    for rows, cols in [(1, 1), (3, 7), (5, 17), (64, 65), (700, 130)]:
        z0 = (rng.standard_normal((rows, cols)) * 3).astype(dtype)
        b = rng.standard_normal(cols).astype(dtype)
        z, y = z0.copy(), np.empty_like(z0)
        _core.bias_act_forward(z, None if act is None else y, b, activation=act)
        zr = z0.astype(np.float64) + b
        tol = 8 * EPS[dtype]
        np.testing.assert_allclose(z, zr, rtol=tol, atol=tol)
        out = z if act is None else y
        # 0.5 x (1 + tanh(u)) cancels for x << 0 (as in torch): absolute error ~eps |x|
        scale = max(1.0, float(np.abs(zr).max()))
        np.testing.assert_allclose(out, _ref_forward(act, zr), rtol=tol, atol=tol * 4 * scale)
        dy = rng.standard_normal((rows, cols)).astype(dtype)
        dz = np.empty_like(dy)
        db = np.full(cols, 2.0, dtype)
        _core.act_backward(dy, None if act is None else dz, z, out, db, activation=act,
                           accumulate_bias=True)
        want = _ref_backward(act, z.astype(np.float64), dy.astype(np.float64))
        got = dy if act is None else dz
        np.testing.assert_allclose(got, want, rtol=16 * EPS[dtype],
                                   atol=16 * EPS[dtype] * 4 * scale * float(np.abs(dy).max()))
        np.testing.assert_allclose(db, 2.0 + want.sum(axis=0), rtol=tol * rows,
                                   atol=tol * rows)


@pytest.mark.parametrize("act", ACTS, ids=str)
def test_act_kernels_bitwise_identical_across_threads(simd_target, rng, act):
    z0 = rng.standard_normal((1031, 129)).astype(np.float32)
    b = rng.standard_normal(129).astype(np.float32)
    dy = rng.standard_normal(z0.shape).astype(np.float32)
    before = fastoptim.get_num_threads()
    res = []
    try:
        for nt in (1, 2, 3):
            fastoptim.set_num_threads(nt)
            z, y, dz = z0.copy(), np.empty_like(z0), np.empty_like(z0)
            db = np.empty(129, np.float32)
            _core.bias_act_forward(z, y, b, activation=act)
            _core.act_backward(dy, None if act is None else dz, z, y, db, activation=act)
            res.append((z, y if act else z, dz if act else dy, db))
    finally:
        fastoptim.set_num_threads(before)
    for r in res[1:]:
        for a, b_ in zip(r, res[0], strict=True):
            assert np.array_equal(a, b_)


TORCH_ACTS = {None: "identity", "relu": "relu", "leaky_relu": "leaky_relu",
              "sigmoid": "sigmoid", "tanh": "tanh", "gelu_tanh": "gelu_tanh", "gelu": "gelu",
              "softmax": "softmax"}


def _torch_act(torch, name, x):
    F = torch.nn.functional
    return {None: lambda v: v, "relu": F.relu, "leaky_relu": lambda v: F.leaky_relu(v, 0.01),
            "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "gelu": F.gelu,
            "softmax": lambda v: F.softmax(v, dim=1)}[name](x)


@pytest.mark.parametrize("act", ACTS, ids=str)
def test_dense_forward_backward_match_torch(rng, act):
    torch = pytest.importorskip("torch")
    model = nn.Sequential(nn.Dense(20, 7, act), seed=3)
    x = rng.standard_normal((33, 20)).astype(np.float32)
    dy = rng.standard_normal((33, 7)).astype(np.float32)
    y = model.forward(x).copy()
    dx = model.backward(dy, input_grad=True)
    dense = model.layers[0]
    lin = torch.nn.Linear(20, 7)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(dense.weight.T))
        lin.bias.copy_(torch.tensor(dense.bias + 0.1))
    dense.bias += 0.1
    y = model.forward(x).copy()
    dx = model.backward(dy, input_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yt = _torch_act(torch, act, lin(xt))
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dense.weight_grad, lin.weight.grad.numpy().T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dense.bias_grad, lin.bias.grad.numpy(), rtol=1e-4, atol=1e-5)


def _fd_model(model, x, loss_fn, h=1e-6):
    """Checks every parameter gradient and the input gradient by central differences."""
    def total():
        return loss_fn(model.forward(x))[0]
    out = model.forward(x)
    _, g = loss_fn(out)
    dx = model.backward(g.copy(), input_grad=True).copy()
    analytic = model.flat_gradients().copy()
    p = model.flat_parameters()
    num = np.empty_like(p)
    for i in range(p.size):
        old = p[i]
        p[i] = old + h
        lp = total()
        p[i] = old - h
        lm = total()
        p[i] = old
        num[i] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(analytic, num, rtol=1e-5, atol=1e-7)
    numx = np.empty_like(x)
    for i in range(x.size):
        old = x.flat[i]
        x.flat[i] = old + h
        lp = total()
        x.flat[i] = old - h
        lm = total()
        x.flat[i] = old
        numx.flat[i] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(dx, numx, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("act", ACTS, ids=str)
def test_dense_finite_differences(rng, act):
    model = nn.Sequential(nn.Dense(5, 4, act, alpha=0.1), dtype=np.float64, seed=1)
    x = rng.standard_normal((6, 5))
    t = rng.standard_normal((6, 4))
    _fd_model(model, x, lambda out: losses.mean_squared_error(out, t))


@pytest.mark.parametrize("layer", [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax,
                                   lambda: nn.LeakyReLU(0.2), lambda: nn.GELU("tanh"),
                                   nn.GELU], ids=["relu", "sigmoid", "tanh", "softmax",
                                                  "leaky", "gelu_tanh", "gelu"])
def test_activation_layers_finite_differences(rng, layer):
    model = nn.Sequential(nn.Dense(5, 6), layer(), nn.Dense(6, 3), dtype=np.float64, seed=2)
    x = rng.standard_normal((4, 5))
    y = rng.integers(0, 3, 4)
    _fd_model(model, x, lambda out: losses.softmax_cross_entropy(out, y))


def test_sequential_finite_differences_with_penalty(rng):
    model = nn.Sequential(nn.Dense(6, 8, "tanh", l2=0.3), nn.Dense(8, 5, "gelu", l1=0.05),
                          nn.Dense(5, 3), dtype=np.float64, seed=4)
    x = rng.standard_normal((7, 6))
    y = rng.integers(0, 3, 7)

    def loss_and_penalty(out):
        loss, g = losses.softmax_cross_entropy(out, y, label_smoothing=0.1)
        return loss + _penalty_value(model), g

    def _penalty_value(m):
        return sum(ref.penalty(d.weight, l1=d.l1, l2=d.l2)[0] for d in m.layers)

    out = model.forward(x)
    _, g = losses.softmax_cross_entropy(out, y, label_smoothing=0.1)
    model.backward(g)
    pen = model.add_penalties()
    assert pen == pytest.approx(_penalty_value(model), rel=1e-12)
    analytic = model.flat_gradients().copy()
    p = model.flat_parameters()
    num = np.empty_like(p)
    h = 1e-6
    for i in range(p.size):
        old = p[i]
        if abs(old) < 1e-4:  # the L1 kink
            num[i] = analytic[i]
            continue
        p[i] = old + h
        lp = loss_and_penalty(model.forward(x))[0]
        p[i] = old - h
        lm = loss_and_penalty(model.forward(x))[0]
        p[i] = old
        num[i] = (lp - lm) / (2 * h)
    np.testing.assert_allclose(analytic, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_penalty_kernel_matches_reference(simd_target, num_threads, rng, dtype):
    for n in [1, 17, 1000, 2**17 + 3]:
        p = rng.standard_normal(n).astype(dtype)
        p[0] = 0.0
        g0 = rng.standard_normal(n).astype(dtype)
        g = g0.copy()
        val = nn.penalty(p, g, l1=0.01, l2=0.3)
        rv, rg = ref.penalty(p, l1=0.01, l2=0.3)
        assert val == pytest.approx(rv, rel=8 * EPS[dtype])
        np.testing.assert_allclose(g, g0 + rg, rtol=4 * EPS[dtype], atol=4 * EPS[dtype])
        assert g[0] == g0[0]  # subgradient 0 at 0


def test_arena_views_and_optimizer_step(rng):
    model = nn.Sequential(nn.Dense(12, 9, "relu"), nn.Dropout(0.2), nn.Dense(9, 4), seed=0)
    p, g = model.flat_parameters(), model.flat_gradients()
    assert p.size == 12 * 9 + 9 + 9 * 4 + 4 == model.num_parameters()
    for view in model.parameters():
        assert np.shares_memory(view, p)
    for view in model.gradients():
        assert np.shares_memory(view, g)
    names = [n for n, _ in model.named_parameters()]  # (name, parameter) pairs, as torch
    assert names == ["0.weight", "2.weight", "0.bias", "2.bias"]
    assert all(p is q for (_, p), q in zip(model.named_parameters(), model.parameters(),
                                           strict=True))
    triples = model.named_parameters_and_gradients()
    assert [n for n, _, _ in triples] == names
    assert all(np.shares_memory(gv, g) and gv.shape == pv.shape for _, pv, gv in triples)
    groups = model.param_groups()
    assert [grp["kind"] for grp in groups] == ["weight", "bias"]
    assert groups[0]["params"].size == 12 * 9 + 9 * 4 and groups[1]["params"].size == 13
    x = rng.standard_normal((5, 12)).astype(np.float32)
    y = rng.integers(0, 4, 5)
    _, d = losses.softmax_cross_entropy(model.forward(x, training=True), y)
    model.backward(d)
    before = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    fastoptim.adam_step(model.parameters(), model.gradients(),
                        [np.zeros_like(a) for a in model.parameters()],
                        [np.zeros_like(a) for a in model.parameters()], step=1, lr=0.1)
    after_list = p.copy()
    p[...] = before
    fastoptim.adam_step(p, g, m, v, step=1, lr=0.1)
    assert np.array_equal(p, after_list)  # list of views == flat arena
    assert not np.array_equal(p, before)
    assert np.array_equal(model.layers[0].weight.reshape(-1), p[:12 * 9])


def test_backward_overwrites_or_accumulates(rng):
    model = nn.Sequential(nn.Dense(4, 3, "sigmoid"), nn.Dense(3, 2), dtype=np.float64)
    x = rng.standard_normal((6, 4))
    d = rng.standard_normal((6, 2))
    model.forward(x)
    model.backward(d)
    once = model.flat_gradients().copy()
    model.backward(d)
    assert np.array_equal(model.flat_gradients(), once)
    model.backward(d, accumulate=True)
    np.testing.assert_allclose(model.flat_gradients(), 2 * once, rtol=1e-12)
    model.zero_grad()
    assert not model.flat_gradients().any()


def test_initializers_seeded_and_scaled():
    a = nn.Sequential(nn.Dense(400, 300, "relu"), nn.Dense(300, 100, init="glorot"), seed=7)
    b = nn.Sequential(nn.Dense(400, 300, "relu"), nn.Dense(300, 100, init="glorot"), seed=7,
                      dtype=np.float64)
    assert np.allclose(a.flat_parameters(), b.flat_parameters(), rtol=1e-6, atol=1e-7)
    w1, w2 = a.layers[0].weight, a.layers[1].weight
    assert np.std(w1) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert np.abs(w2).max() <= np.sqrt(6 / 400) and np.std(w2) == pytest.approx(
        np.sqrt(2 / 400), rel=0.03)
    assert not a.layers[0].bias.any()
    c = nn.Sequential(nn.Dense(400, 300, "relu"), nn.Dense(300, 100), seed=8)
    assert not np.array_equal(a.layers[0].weight, c.layers[0].weight)
    z = nn.Sequential(nn.Dense(3, 2, init="zeros"))
    assert not z.flat_parameters().any()


def test_state_dict_round_trip(rng):
    a = nn.Sequential(nn.Dense(6, 5, "tanh"), nn.Dense(5, 2), seed=1)
    b = nn.Sequential(nn.Dense(6, 5, "tanh"), nn.Dense(5, 2), seed=2)
    sd = a.state_dict()
    a.flat_parameters()[:] += 1  # a copy, not a view
    assert not np.array_equal(sd["0.weight"], a.layers[0].weight)
    b.load_state_dict(sd)
    a.load_state_dict(sd)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    assert np.array_equal(a.forward(x).copy(), b.forward(x))
    before = b.flat_parameters().copy()
    bad = dict(sd)
    bad["0.weight"] = np.zeros((5, 6))
    with pytest.raises(ValueError, match="0.weight"):
        b.load_state_dict(bad)
    with pytest.raises(KeyError):
        b.load_state_dict({"0.weight": sd["0.weight"]})
    assert np.array_equal(b.flat_parameters(), before)


def test_dropout_mask_rate_reuse_and_eval(simd_target, rng):
    layer = nn.Dropout(0.3, seed=11)
    model = nn.Sequential(layer, dtype=np.float64)
    x = rng.standard_normal((400, 300)) + 3.0
    y = model.forward(x, training=True).copy()
    mask = layer._mask.copy()
    kept = mask != 0
    assert kept.mean() == pytest.approx(0.7, abs=0.01)
    assert np.allclose(mask[kept], 1 / 0.7)
    assert np.array_equal(y, x * mask)
    dy = rng.standard_normal(x.shape)
    assert np.array_equal(model.backward(dy, input_grad=True), dy * mask)
    y2 = model.forward(x, training=True)
    assert not np.array_equal(y2, y)  # a new mask each call
    assert model.forward(x, training=False) is x


def test_dropout_rows_of_a_batch_draw_that_batch_s_masks(simd_target, rng):
    # a data-parallel rank forwards rows [r, r + k) of a batch with row_offset=r and must
    # draw the masks the whole batch draws for those rows
    x = rng.standard_normal((10, 7))
    whole = nn.Dropout(0.4, seed=3)
    nn.Sequential(whole, dtype=np.float64).forward(x, training=True)
    for lo, hi in ((0, 4), (4, 10), (9, 10)):
        part = nn.Dropout(0.4, seed=3)
        nn.Sequential(part, dtype=np.float64).forward(x[lo:hi], training=True, row_offset=lo)
        assert np.array_equal(part._mask, whole._mask[lo:hi])
    skipped = nn.Dropout(0.4, seed=3)
    m = nn.Sequential(skipped, dtype=np.float64)
    m.skip_training_forward()  # a rank without rows in the first batch
    m.forward(x, training=True)
    again = nn.Sequential(whole, dtype=np.float64)
    again.forward(x, training=True)  # whole's second call
    assert np.array_equal(skipped._mask, whole._mask)
    with pytest.raises(ValueError, match="row_offset"):
        m.forward(x, training=True, row_offset=-1)


def test_dropout_same_for_any_thread_count_and_target(rng):
    x = rng.standard_normal(2**18 + 7).astype(np.float32)
    before_t, before_s = fastoptim.get_num_threads(), fastoptim.simd_target()
    masks = []
    try:
        for target in fastoptim.simd_targets():
            fastoptim.set_simd_target(target)
            for nt in (1, 2, 3):
                fastoptim.set_num_threads(nt)
                y, m = np.empty_like(x), np.empty_like(x)
                _core.dropout_forward(x, y, m, p=0.5, seed=5, stream=2)
                masks.append(m)
    finally:
        fastoptim.set_num_threads(before_t)
        fastoptim.set_simd_target(before_s)
    for m in masks[1:]:
        assert np.array_equal(m, masks[0])


def test_seed_example_trains(rng):
    """The README's model: 784 -> 128 (ReLU) -> 10, softmax cross-entropy, Adam."""
    centers = rng.standard_normal((10, 784)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    X = (centers[y] + rng.standard_normal((512, 784)).astype(np.float32))
    model = nn.Sequential(nn.Dense(784, 128, "relu"), nn.Dense(128, 10), seed=0)
    p, g = model.flat_parameters(), model.flat_gradients()
    m, v = np.zeros_like(p), np.zeros_like(p)
    first = None
    for step in range(1, 31):
        i = (step * 128) % 512
        loss, d = losses.softmax_cross_entropy(model.forward(X[i:i + 128], training=True),
                                               y[i:i + 128])
        first = first if first is not None else loss
        model.backward(d)
        fastoptim.adam_step(p, g, m, v, step=step, lr=1e-3)
    pred = model.forward(X).argmax(axis=1)
    assert (pred == y).mean() > 0.95 and loss < first / 10


def test_bad_inputs_raise_and_touch_nothing(rng):
    model = nn.Sequential(nn.Dense(4, 3, "relu"), nn.Dense(3, 2))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    snap = model.flat_parameters().copy()
    with pytest.raises(ValueError, match="x must have shape"):
        model.forward(x[:, :3].copy())
    with pytest.raises(TypeError, match="dtype"):
        model.forward(x.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        model.forward(np.asfortranarray(x))
    model.forward(x)
    with pytest.raises(ValueError, match="grad_out"):
        model.backward(np.ones((5, 3), np.float32))
    assert np.array_equal(model.flat_parameters(), snap)
    with pytest.raises(ValueError, match="activation"):
        nn.Dense(3, 2, "swish")
    with pytest.raises(ValueError, match="init"):
        nn.Dense(3, 2, init="orthogonal")
    with pytest.raises(ValueError, match="p must"):
        nn.Dropout(1.5)
    z = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.zeros_like(z)
    zs = z.copy()
    for exc, match, call in [
        (ValueError, "bias", lambda: _core.bias_act_forward(z, y, np.ones(4, np.float32))),
        (TypeError, "bias", lambda: _core.bias_act_forward(z, y, np.ones(3))),
        (ValueError, "y has shape", lambda: _core.bias_act_forward(z, y[:2])),
        (ValueError, "activation", lambda: _core.bias_act_forward(z, y, activation="elu")),
        (ValueError, "share memory", lambda: _core.bias_act_forward(z, z, activation="relu")),
        (ValueError, "z \\(the pre-activation\\)", lambda: _core.act_backward(
            z, y, activation="relu")),
        (ValueError, "dbias", lambda: _core.act_backward(z, dbias=np.ones(2, np.float32))),
        (ValueError, "p must", lambda: _core.dropout_forward(z, y, y.copy(), p=2.0, seed=0)),
    ]:
        with pytest.raises(exc, match=match):
            call()
        assert np.array_equal(z, zs) and not y.any()
