"""Storage formats (bf16, fp16, 8-bit blockwise) and Adam over them, against float64
references of the same quantized algorithm (tests/reference.py)."""

from __future__ import annotations

import fastoptim
import numpy as np
import pytest
import reference as ref
from conftest import TARGETS, THREADS
from fastoptim import _core, formats

# Every format kernel variant this machine runs: each SIMD target, and on avx512 with and
# without the AVX-512-BF16 conversion instruction.
VARIANTS = [(t, False) for t in TARGETS]
if "avx512" in TARGETS and _core.cpu_has_avx512bf16():
    VARIANTS.append(("avx512", True))


@pytest.fixture(params=VARIANTS, ids=lambda v: v[0] + ("+bf16insn" if v[1] else ""))
def variant(request):
    target, bf16insn = request.param
    before = fastoptim.simd_target()
    prev = _core.set_bf16_instructions(bf16insn)
    fastoptim.set_simd_target(target)
    expected = "avx512bf16" if bf16insn else target
    assert _core.format_kernels() == expected
    yield request.param
    fastoptim.set_simd_target(before)
    _core.set_bf16_instructions(prev)


SMAP = ref.np.asarray(formats.dynamic_map(True), np.float64)
UMAP = ref.np.asarray(formats.dynamic_map(False), np.float64)


# ---------------------------------------------------------------- maps

def test_dynamic_maps_structure():
    for m, signed in ((SMAP, True), (UMAP, False)):
        assert m.shape == (256,) and np.all(np.diff(m) > 0)
        assert 0.0 in m and m[-1] == 1.0
        if signed:
            pos = m[m > 0][:-1]  # without 1.0
            assert np.array_equal(-pos[::-1], m[m < 0])
        else:
            assert m[0] == 0.0


def test_dynamic_maps_equal_bitsandbytes():
    F = pytest.importorskip("bitsandbytes.functional")
    for signed in (True, False):
        theirs = F.create_dynamic_map(signed=signed).numpy()
        assert np.array_equal(formats.dynamic_map(signed), theirs)


# ---------------------------------------------------------------- 8-bit codes

def _scaled_data(rng, n):
    # magnitudes over 8 decades, zeros, both signs: every decade of the map is hit
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 0, n)
    x[rng.random(n) < 0.02] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 1000, 4096 + 17, 100_003])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_q8_codes_are_nearest(variant, rng, n, signed):
    x = _scaled_data(rng, n)
    if not signed:
        x = np.abs(x)
    codes, absmax = formats.quantize(x, signed)
    table = SMAP if signed else UMAP
    want, am, margin = ref.q8_quantize(x, table)
    assert np.array_equal(absmax, am.astype(np.float32))
    diff = codes.astype(np.int64) != want
    # Documented ties: only where y lies within 4 float32 ulps of a midpoint, one code apart.
    inv = np.where(am > 0, 1 / np.where(am > 0, am, 1), 0)
    y = np.abs(x.astype(np.float64)) * np.repeat(inv, 256)[:n]
    ulp = np.spacing(y[diff].astype(np.float32)).astype(np.float64)
    assert np.all(margin[diff] <= 4 * ulp + 1e-300)
    assert np.all(np.abs(codes[diff].astype(np.int64) - want[diff]) == 1)
    assert diff.sum() <= max(1, n // 10_000)
    # error bound: half the gap between neighbouring entries, times the block's absmax
    back = formats.dequantize(codes, absmax, signed).astype(np.float64)
    gaps = np.diff(table)
    half_gap = np.concatenate([[gaps[0]], np.maximum(gaps[1:], gaps[:-1]), [gaps[-1]]]) / 2
    half_gap[0] = max(half_gap[0], 1.0 + table[0])  # -1 is not in the signed map
    half_gap = half_gap[codes]
    # (+ the float32 rounding of the decoded value)
    bound = half_gap * np.repeat(am, 256)[:n] * (1 + 1e-6) + 2.0**-23 * np.abs(x)
    assert np.all(np.abs(back - x) <= bound)


def test_q8_zero_block_and_nan_block():
    x = np.zeros(600, np.float32)
    x[300] = np.nan
    codes, absmax = formats.quantize(x, True)
    assert absmax[0] == 0.0 and np.all(codes[:256] == 127)
    assert np.isnan(absmax[1])
    back = formats.dequantize(codes, absmax, True)
    assert np.all(back[:256] == 0.0) and np.all(np.isnan(back[256:512]))


# ---------------------------------------------------------------- bf16 / fp16

def _finite_normal_f32(rng, n):
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-30, 30, n)).astype(np.float32)
    return x


def test_bf16_nearest_matches_torch(variant, rng):
    torch = pytest.importorskip("torch")
    x = _finite_normal_f32(rng, 10_007)
    x[:4] = [np.inf, -np.inf, 3.3895314e38, -0.0]  # the last finite value rounds to inf
    got = formats.bf16_from_float(x)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(got, want)
    nan = formats.bf16_from_float(np.array([np.nan], np.float32))
    assert np.isnan(formats.bf16_to_float(nan)[0])
    widened = (want.astype(np.uint32) << np.uint32(16)).view(np.float32)
    assert np.array_equal(formats.bf16_to_float(got), widened)


def test_bf16_subnormals_integer_path_keeps_them(rng):
    x = (rng.standard_normal(1000) * 1e-39).astype(np.float32)  # float32 subnormals
    prev = _core.set_bf16_instructions(False)
    try:
        got = formats.bf16_from_float(x)
    finally:
        _core.set_bf16_instructions(prev)
    u = x.view(np.uint32).astype(np.uint64)
    want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    assert np.array_equal(got, want)


def test_bf16_stochastic_matches_counter_reference(variant, rng):
    x = _finite_normal_f32(rng, 5000)
    got = formats.bf16_from_float(x, "stochastic", seed=77, step=5)
    bits = ref.rounding_bits(77, 5, 0, x.size)
    u = x.view(np.uint32).astype(np.uint64)
    want = ((u + (bits & np.uint32(0xFFFF))) >> 16).astype(np.uint16)
    assert np.array_equal(got, want)
    down, up = ref.bf16_neighbours(x)
    val = formats.bf16_to_float(got).astype(np.float64)
    assert np.all((val == down) | (val == up))


@pytest.mark.parametrize("frac", [0.01, 0.3, 0.5, 0.77])
def test_bf16_stochastic_is_unbiased(frac):
    n = 400_000
    lo = np.float32(1.0)
    gap = 2.0 ** -7
    x = np.full(n, np.float32(1.0 + frac * gap), np.float32)
    frac_exact = (float(x[0]) - float(lo)) / gap
    r = formats.bf16_to_float(formats.bf16_from_float(x, "stochastic", seed=3)).astype(np.float64)
    assert set(np.unique(r)) <= {1.0, 1.0 + gap}
    sd = gap * np.sqrt(frac_exact * (1 - frac_exact) / n)
    assert abs(r.mean() - float(x[0])) <= 5 * sd


def test_bf16_stochastic_seeds_and_steps_differ():
    x = np.full(10_000, np.float32(1.0 + 2.0 ** -9), np.float32)
    a = formats.bf16_from_float(x, "stochastic", seed=1, step=1)
    b = formats.bf16_from_float(x, "stochastic", seed=1, step=2)
    c = formats.bf16_from_float(x, "stochastic", seed=2, step=1)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, formats.bf16_from_float(x, "stochastic", seed=1, step=1))


def test_fp16_matches_numpy(variant, rng):
    x = (rng.standard_normal(3001) * 10.0 ** rng.uniform(-9, 4, 3001)).astype(np.float32)
    out = np.empty(x.shape, np.float16)
    _core.format_encode(x, out)
    assert np.array_equal(out, x.astype(np.float16))
    back = np.empty(x.shape, np.float32)
    _core.format_decode(out, back)
    assert np.array_equal(back, out.astype(np.float32))


# ---------------------------------------------------------------- Adam over formats

def _bf16_value(h):
    return formats.bf16_to_float(h).astype(np.float64)


def _decode_state(st, key, signed):
    f = st["state_format"]
    if f == "fp32":
        return st[key].astype(np.float64)
    if f == "bf16":
        return _bf16_value(st[key])
    return ref.q8_dequantize(st[key], st[key + "_absmax"], SMAP if signed else UMAP)


def _grad_in(fmt, g32):
    if fmt == "fp32":
        return g32, g32.astype(np.float64)
    if fmt == "bf16":
        h = formats.bf16_from_float(g32)
        return h, _bf16_value(h)
    h = g32.astype(np.float16)
    return h, h.astype(np.float64)


PARAM_MODES = ["fp32", "bf16-nearest", "bf16-stochastic", "fp32+bf16copy", "fp32+fp16copy"]
STATE_MODES = ["fp32", "bf16-nearest", "bf16-stochastic", "int8"]
FLAGS = [dict(), dict(amsgrad=True), dict(weight_decay=0.1), dict(weight_decay=0.1,
         decoupled_weight_decay=True), dict(maximize=True, amsgrad=True, weight_decay=0.01)]


def _check_state_step(before, after, key, signed, want64, ulp_rel, scale):
    """after[key] is the stored form of want64 (the float64 update of before's values);
    scale: the magnitude of the terms summed into it (float32 error ~ eps * scale)."""
    f = after["state_format"]
    got = _decode_state(after, key, signed)
    f32_err = 8 * 2.0 ** -24 * scale + 2.0 ** -120  # (+ float32 subnormal range)
    if f == "fp32":
        assert np.all(np.abs(got - want64) <= f32_err)
    elif f == "bf16":
        # nearest: within half a bf16 ulp of the float64 value (plus the float32 math);
        # stochastic: one of the two neighbours
        tol = ulp_rel * (np.abs(want64) + f32_err) + f32_err
        assert np.all(np.abs(got - want64) <= tol)
    else:
        table = SMAP if signed else UMAP
        codes, am, margin = ref.q8_quantize(want64, table)
        assert np.allclose(after[key + "_absmax"], am, rtol=1e-5, atol=0)
        diff = after[key].ravel().astype(np.int64) != codes
        # ties: the float32 result and the float64 one fall on either side of a midpoint
        assert np.all(margin[diff] <= 1e-5)
        assert diff.mean() <= 5e-3


@pytest.mark.parametrize("pmode", PARAM_MODES)
@pytest.mark.parametrize("smode", STATE_MODES)
def test_adam_formats_step_by_step(variant, rng, pmode, smode):
    n = 5 * 1024 + 77  # >= 4096 (int8 kept), a partial q8 block, a partial chunk
    gfmt = ["fp32", "bf16", "fp16"][(PARAM_MODES.index(pmode) + STATE_MODES.index(smode)) % 3]
    flags = FLAGS[(PARAM_MODES.index(pmode) * 2 + STATE_MODES.index(smode)) % len(FLAGS)]
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8) | flags
    amsgrad = hp.get("amsgrad", False)
    sfmt = smode.split("-")[0]
    srnd = "stochastic" if smode.endswith("stochastic") else "nearest"
    prnd = "stochastic" if pmode.endswith("stochastic") else "nearest"
    p32 = rng.standard_normal(n).astype(np.float32)
    param = formats.bf16_from_float(p32) if pmode.startswith("bf16") else p32.copy()
    copy = None
    if pmode == "fp32+bf16copy":
        copy = np.zeros(n, np.uint16)
    elif pmode == "fp32+fp16copy":
        copy = np.zeros(n, np.float16)
    st = formats.new_state(param, sfmt, amsgrad=amsgrad)
    assert st["state_format"] == sfmt
    for t in range(1, 6):
        g32 = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 0, n)).astype(np.float32)
        g, g64 = _grad_in(gfmt, g32)
        p64 = _bf16_value(param) if pmode.startswith("bf16") else param.astype(np.float64)
        m0, v0 = _decode_state(st, "exp_avg", True), _decode_state(st, "exp_avg_sq", False)
        vm0 = _decode_state(st, "max_exp_avg_sq", False) if amsgrad else None
        before = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in st.items()}
        formats.adam_step([param], [g], [st], seed=11, param_rounding=prnd, state_rounding=srnd,
                          param_copies=None if copy is None else [copy], **hp)
        assert st["step"] == t
        wp, wm, wv, wvm = ref.adam(p64, g64, m0, v0, vm0, step=t, lr=hp["lr"], beta1=0.9,
                                   beta2=0.99, eps=1e-8,
                                   weight_decay=hp.get("weight_decay", 0.0),
                                   decoupled_weight_decay=hp.get("decoupled_weight_decay", False),
                                   amsgrad=amsgrad, maximize=hp.get("maximize", False))
        ulp = 2.0 ** -8 * (1 + 1e-3) if srnd == "nearest" else 2.0 ** -7 * (1 + 1e-3)
        d64 = np.abs(g64) + hp.get("weight_decay", 0.0) * np.abs(p64)
        _check_state_step(before, st, "exp_avg", True, wm, ulp, 0.9 * np.abs(m0) + 0.1 * d64)
        sv = wv + 0.99 * v0 + 0.04 * d64 ** 2
        _check_state_step(before, st, "exp_avg_sq", False, wv, ulp, sv)
        if amsgrad:
            # the max of the stored old value and the new value, then stored
            _check_state_step(before, st, "max_exp_avg_sq", False, wvm, ulp, wvm + sv)
        # parameter: float32 math (and a stored state that differs from float64 within the
        # state's bound) -> relative to the update size lr
        if pmode.startswith("bf16"):
            got = _bf16_value(param)
            down, up = ref.bf16_neighbours(wp.astype(np.float32))
            gap = np.abs(up - down)
            tol = (0.5 if prnd == "nearest" else 1.0) * gap + 1e-5 * hp["lr"] + 1e-6 * np.abs(wp)
            assert np.all(np.abs(got - wp) <= tol)
        else:
            err = np.abs(param.astype(np.float64) - wp)
            assert np.all(err <= 1e-5 * hp["lr"] + 1e-6 * np.abs(wp))
            if copy is not None:
                want_copy = (formats.bf16_from_float(param) if copy.dtype == np.uint16
                             else param.astype(np.float16))
                assert np.array_equal(copy, want_copy)
        # the update moved the parameters (not a no-op test)
        assert not np.array_equal(p64, _bf16_value(param) if pmode.startswith("bf16") else param)


def test_adam_fp32_formats_equal_the_fp32_kernel(variant, rng):
    n = 70_001
    for flags in FLAGS:
        p = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        amsgrad = flags.get("amsgrad", False)
        st = formats.new_state(p, "fp32", amsgrad=amsgrad)
        p2 = p.copy()
        m2, v2, vm2 = (np.zeros(n, np.float32) for _ in range(3))
        for t in (1, 2, 3):
            formats.adam_step([p], [g], [st], lr=1e-2, **flags)
            fastoptim.adam_step(p2, g, m2, v2, vm2 if amsgrad else None, step=t, lr=1e-2, **flags)
        assert np.array_equal(p, p2) and np.array_equal(st["exp_avg"], m2)
        assert np.array_equal(st["exp_avg_sq"], v2)


@pytest.mark.parametrize("sfmt,srnd,prnd", [("int8", "nearest", "stochastic"),
                                            ("bf16", "stochastic", "stochastic"),
                                            ("bf16", "nearest", "nearest")])
def test_adam_formats_identical_for_any_thread_count(variant, sfmt, srnd, prnd):
    rng = np.random.default_rng(5)
    sizes = [300_001, 5000, 70_000]
    results = []
    for nt in THREADS + [THREADS[0]]:  # the rerun at the end: reproducible from the seed
        before = fastoptim.get_num_threads()
        fastoptim.set_num_threads(nt)
        try:
            r = np.random.default_rng(1)
            params = [formats.bf16_from_float(r.standard_normal(n, dtype=np.float32))
                      for n in sizes]
            states = [formats.new_state(p, sfmt, amsgrad=True) for p in params]
            for _ in range(3):
                grads = [formats.bf16_from_float(r.standard_normal(n, dtype=np.float32))
                         for n in sizes]
                formats.adam_step(params, grads, states, lr=1e-2, amsgrad=True, seed=9,
                                  param_rounding=prnd, state_rounding=srnd)
        finally:
            fastoptim.set_num_threads(before)
        results.append((params, states))
    del rng
    p0, s0 = results[0]
    for params, states in results[1:]:
        for a, b in zip(p0, params, strict=True):
            assert np.array_equal(a, b)
        for a, b in zip(s0, states, strict=True):
            for k in a:
                assert np.array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_small_tensors_keep_fp32_state():
    st = formats.new_state(np.zeros(4095, np.float32), "int8")
    assert st["state_format"] == "fp32" and st["exp_avg"].dtype == np.float32
    st = formats.new_state(np.zeros(4096, np.float32), "int8")
    assert st["state_format"] == "int8" and st["exp_avg_absmax"].shape == (16,)
    assert np.all(st["exp_avg"] == 127) and np.all(st["exp_avg_sq"] == 0)


def test_state_bytes_per_parameter():
    n = 1 << 20
    p = np.zeros(n, np.float32)
    assert formats.state_bytes(formats.new_state(p, "fp32")) / n == 8.0
    assert formats.state_bytes(formats.new_state(p, "bf16")) / n == 4.0
    assert formats.state_bytes(formats.new_state(p, "int8")) / n <= 2.05


@pytest.mark.parametrize("signed", [True, False])
def test_every_encoder_gives_the_scalar_targets_codes_on_a_dense_sweep(signed):
    """The vector encoders (region tables, in-register lookups, packed stores) pick the same
    code as the scalar target's encoder for every value of a dense sweep of [-1, 1]: every
    2^-7 ulp step of every binade down to 2^-40 (all decade and end-region boundaries),
    zeros, the ends, NaN, in blocks whose absmax is 1 and run lengths that leave tails."""
    bits = np.arange(0x2B800000, 0x3F800001, 127, dtype=np.uint32)  # 2^-40 .. 1.0
    mags = bits.view(np.float32)
    x = np.concatenate([mags, -mags, [0.0, -0.0, 1.0, -1.0, np.nan]]).astype(np.float32)
    x = np.concatenate([x, np.zeros((-x.size) % 256 + 256, np.float32)])
    x = x.reshape(-1, 256)
    x[:, 0] = 1.0  # absmax 1 in every block: each code is the code of the value itself
    x = x.ravel()[:-37]
    before = fastoptim.simd_target()
    try:
        fastoptim.set_simd_target("scalar")
        want, _ = formats.quantize(x, signed)
        for t in TARGETS:
            fastoptim.set_simd_target(t)
            got, _ = formats.quantize(x, signed)
            np.testing.assert_array_equal(got, want, err_msg=t)
    finally:
        fastoptim.set_simd_target(before)
