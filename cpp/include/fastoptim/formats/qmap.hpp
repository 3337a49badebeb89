// 8-bit blockwise dynamic quantization (the q8 format of formats/types.hpp).
//
// The maps are bitsandbytes' dynamic data type (create_dynamic_map, after Dettmers, "8-Bit
// Approximations for Parallelism in Deep Learning", arXiv:1511.04561): 256 sorted values
// in [-1, 1]. Decade i = 0..6 holds K_i linearly spaced magnitudes 10^(i-6) * mean of
// consecutive points of linspace(0.1, 1, K_i + 1), with K_i = 2^i in the signed map (each
// with both signs, plus 0 and 1.0) and K_i = 2^(i+1) in the unsigned map (plus 0 and 1.0).
// The float32 values are computed as torch computes them (linspace with an fma, the mean
// and the scale in float32), so they equal bitsandbytes' map bit for bit (tested).
//
// Encoding a block: absmax = max |x|, y = x * (1 / absmax), code = the map entry nearest to
// y. The nearest entry is found without a table search: comparisons with six exact decade
// boundaries pick the decade (exact), an affine map of |y| and a floor pick the entry inside
// it. The floor agrees with the exact nearest entry except when |y| lies within a few ulps
// of the midpoint between two entries (a rounding tie: either neighbour is within the
// format's error bound); tests/test_formats.py measures the window.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "fastoptim/formats/types.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

// The 256 values of the signed or unsigned dynamic map, ascending.
inline void dynamic_map(bool is_signed, float out[256]) {
    int k = 0;
    for (int i = 0; i < 7; ++i) {
        const int items = is_signed ? (1 << i) : (2 << i);
        const int nb = items + 1;
        float b[130];
        const float step = (1.0f - 0.1f) / static_cast<float>(nb - 1);
        for (int j = 0; j < nb; ++j)  // torch.linspace: from the start, then from the end
            b[j] = j < nb / 2 ? std::fma(step, static_cast<float>(j), 0.1f)
                              : std::fma(-step, static_cast<float>(nb - 1 - j), 1.0f);
        const float scale = static_cast<float>(std::pow(10.0, i - 6));
        for (int j = 0; j < items; ++j) {
            const float mean = (b[j] + b[j + 1]) / 2.0f;
            out[k++] = scale * mean;
            if (is_signed) out[k++] = -(scale * mean);
        }
    }
    out[k++] = 0.0f;
    out[k++] = 1.0f;
    std::sort(out, out + 256);
}

// Everything the encoder and decoder of one map need, built once.
struct QCoder {
    float code[256];      // decode: value of each code
    float decade_lo[7];   // |y| >= decade_lo[i] (i >= 1): decade i or above
    float scale[7];       // entry inside decade i: floor(|y| * scale[i] - offset[i])
    float offset[7];
    std::int32_t first[7];  // rank of decade i's first entry on the non-negative side
    std::int32_t last[7];   // entries in decade i, minus one
    float zero_hi;        // |y| < zero_hi: rank 0 (the value 0)
    float one_lo;         // |y| >= one_lo: the top rank (the value 1)
    std::int32_t top;     // rank of 1.0 on the non-negative side
    std::int32_t zero_code;
};

// The smallest float32 >= m: comparing a float with it is comparing with m exactly.
inline float float_at_or_above(double m) {
    float f = static_cast<float>(m);
    if (static_cast<double>(f) < m) f = std::nextafter(f, 2.0f);
    return f;
}

inline QCoder make_qcoder(bool is_signed) {
    QCoder q{};
    dynamic_map(is_signed, q.code);
    // The non-negative side: ranks 0 (zero) .. top (1.0).
    const int zero = is_signed ? 127 : 0;
    const float* pos = q.code + zero;
    q.top = 255 - zero;
    q.zero_code = zero;
    auto mid = [&](int r) {  // exact midpoint of ranks r - 1 and r
        return 0.5 * (static_cast<double>(pos[r - 1]) + static_cast<double>(pos[r]));
    };
    for (int i = 0; i < 7; ++i) {
        const int items = is_signed ? (1 << i) : (2 << i);
        q.first[i] = is_signed ? (1 << i) : (2 << i) - 1;
        q.last[i] = items - 1;
        const double s = std::pow(10.0, i - 6);
        q.scale[i] = static_cast<float>(items / (0.9 * s));
        q.offset[i] = static_cast<float>(items / 9.0);
        q.decade_lo[i] = i == 0 ? 0.0f : float_at_or_above(mid(q.first[i]));
    }
    q.zero_hi = float_at_or_above(mid(1));
    q.one_lo = float_at_or_above(mid(q.top));
    return q;
}

inline const QCoder& signed_qcoder() {
    static const QCoder q = make_qcoder(true);
    return q;
}

inline const QCoder& unsigned_qcoder() {
    static const QCoder q = make_qcoder(false);
    return q;
}

// The code of y (y = x / absmax; values outside [-1, 1] clamp to the ends). Branch-free,
// so loops over it vectorize.
template <bool SIGNED>
inline std::uint8_t q8_encode(const QCoder& q, float y) {
    float a = std::fabs(y);
    a = a < 1.0f ? a : 1.0f;
    float sc = q.scale[0], off = q.offset[0];
    std::int32_t first = q.first[0], last = q.last[0];
    for (int i = 1; i < 7; ++i) {
        const bool up = a >= q.decade_lo[i];
        sc = up ? q.scale[i] : sc;
        off = up ? q.offset[i] : off;
        first = up ? q.first[i] : first;
        last = up ? q.last[i] : last;
    }
    float jf = a * sc - off;
    jf = jf > 0.0f ? jf : 0.0f;  // also maps NaN to 0
    std::int32_t j = static_cast<std::int32_t>(jf);
    j = j < last ? j : last;
    std::int32_t r = first + j;
    r = a < q.zero_hi ? 0 : r;
    r = a >= q.one_lo ? q.top : r;
    if constexpr (SIGNED) {
        const bool neg = y < 0.0f;
        const std::int32_t rn = r < 127 ? r : 127;  // -1.0 is not in the map
        return static_cast<std::uint8_t>(neg ? 127 - rn : 127 + r);
    } else {
        return static_cast<std::uint8_t>(y > 0.0f ? r : 0);
    }
}

// x [n] (n <= kQ8Block) -> codes [n] and *absmax. A block holding NaN gets a NaN absmax
// (it decodes to NaN, as an fp32 state would hold NaN); an all-zero block absmax 0.
template <bool SIGNED>
inline void q8_store_block(std::uint8_t* __restrict codes, float* absmax,
                           const float* __restrict x, std::size_t n, const QCoder& q) {
    float m = 0.0f;
    int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (std::size_t i = 0; i < n; ++i) {
        const float a = std::fabs(x[i]);
        m = std::max(m, a);
        nan |= a != a;
    }
    *absmax = nan ? std::nanf("") : m;
    const float inv = m > 0.0f ? 1.0f / m : 0.0f;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) codes[i] = q8_encode<SIGNED>(q, x[i] * inv);
}

// codes [n] with the absmax of their block -> x [n].
inline void q8_load_block(float* __restrict x, const std::uint8_t* __restrict codes,
                          float absmax, std::size_t n, const QCoder& q) {
    const float* table = q.code;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) x[i] = table[codes[i]] * absmax;
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
