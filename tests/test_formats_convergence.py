"""Training with reduced-precision state and parameters reaches what float32 reaches."""

from __future__ import annotations

import os

import pytest
from fastoptim import data, formats, nn, train

HAVE_FASHION = os.path.isdir(data.FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(not HAVE_FASHION and os.environ.get("CI") != "true",
                                   reason="apt-get install dataset-fashion-mnist")


class FormatAdam:
    """The smallest optimizer ``fit`` drives: formats.adam_step over the model's arrays."""

    def __init__(self, params, fmt, lr=1e-3):
        self.params = params
        self.param_groups = [{"lr": lr}]
        self.states = [formats.new_state(p, fmt) for p in params]

    def step(self, grads):
        formats.adam_step(self.params, grads, self.states, lr=self.param_groups[0]["lr"])
        return True

    def state_dict(self):
        return {"state": dict(enumerate(self.states)), "param_groups": self.param_groups}


@pytest.fixture(scope="module")
def fashion():
    ds = data.load_fashion_mnist()
    return ds.X_train, ds.y_train, ds.X_test, ds.y_test


@pytest.mark.slow
@needs_fashion
def test_fashion_mnist_8bit_and_bf16_state_match_fp32(fashion):
    X, y, Xt, yt = fashion
    acc = {}
    for fmt in ("fp32", "bf16", "int8"):
        model = nn.Sequential(nn.Dense(784, 128, "relu"), nn.Dense(128, 10), seed=0)
        opt = FormatAdam(model.parameters(), fmt)
        if fmt == "int8":  # the 784x128 weight is 8-bit; the small tensors stay fp32
            assert [s["state_format"] for s in opt.states] == ["int8", "fp32", "fp32", "fp32"]
        train.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=10, batch_size=128,
                  seed=1, verbose=False)
        acc[fmt] = train.evaluate(model, Xt, yt)["accuracy"]
    print("Fashion-MNIST test accuracy after 10 epochs:", acc)
    assert acc["fp32"] >= 0.86
    assert abs(acc["int8"] - acc["fp32"]) <= 0.005
    assert abs(acc["bf16"] - acc["fp32"]) <= 0.003


def test_torch_bf16_params_stochastic_rounding_reaches_fp32_loss():
    """Least squares with bf16 weights: Adam's updates (~lr = 3e-4) are below half a bf16
    ulp of weights near 1 (2^-9 to 2^-8), so round-to-nearest freezes the weights while
    stochastic rounding moves them in expectation. Margin: 1 % of the starting loss (the
    best bf16-representable solution sits near 0.05 %: the weights' rounding floor)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    d, n = 64, 2048
    A = torch.randn(n, d, generator=gen)
    w_true = 1.0 + 0.1 * torch.randn(d, generator=gen)  # weights near 1
    b = A @ w_true

    def run(mode):
        w = torch.ones(d, dtype=torch.float32 if mode == "fp32" else torch.bfloat16)
        st = formats.new_state(w, "fp32")
        for _ in range(1500):
            wf = w.detach().float().clone().requires_grad_(True)
            loss = ((A @ wf - b) ** 2).mean()
            (g,) = torch.autograd.grad(loss, wf)
            g = g.to(w.dtype)
            formats.adam_step([w], [g], [st], lr=3e-4, seed=3,
                              param_rounding="nearest" if mode == "nearest" else "stochastic")
        return float(((A @ w.float() - b) ** 2).mean())

    start = float(((A @ torch.ones(d) - b) ** 2).mean())
    floor = float(((A @ w_true.to(torch.bfloat16).float() - b) ** 2).mean())
    fp32, sr, rne = run("fp32"), run("stochastic"), run("nearest")
    print(f"least squares: start {start:.3e}, fp32 {fp32:.3e}, bf16 stochastic {sr:.3e}, "
          f"bf16 nearest {rne:.3e}, w_true rounded to bf16 {floor:.3e}")
    assert fp32 <= 0.05 * start  # the problem is solved in float32
    assert sr <= fp32 + 0.01 * start  # stochastic rounding: within 1 % of the start loss
    assert rne >= 0.5 * start  # round-to-nearest stalls: the weights never leave 1.0
