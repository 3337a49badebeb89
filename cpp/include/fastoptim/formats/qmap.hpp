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

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fastoptim/formats/types.hpp"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define FASTOPTIM_Q8_AVX512 1
#if defined(__AVX512VBMI__)
#define FASTOPTIM_Q8_VBMI 1
#endif
#endif

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
    // Insertion sort, written out: a std::sort instantiation would be shared between the
    // per-target objects, and the linker could keep an AVX-512 copy for the scalar target.
    for (int i = 1; i < 256; ++i) {
        const float x = out[i];
        int j = i;
        for (; j > 0 && out[j - 1] > x; --j) out[j] = out[j - 1];
        out[j] = x;
    }
}

// The encoder's constants (copied into locals by the encoding loop, so they stay in
// registers).
struct QEncoder {
    float decade_lo[7];   // |y| >= decade_lo[i] (i >= 1): decade i or above
    float scale[7];       // entry inside decade i: floor(|y| * scale[i] - offset[i])
    float offset[7];
    std::int32_t first[7];  // rank of decade i's first entry on the non-negative side
    std::int32_t last[7];   // entries in decade i, minus one
    float zero_hi;        // |y| < zero_hi: rank 0 (the value 0)
    float one_lo;         // |y| >= one_lo: the top rank (the value 1)
    std::int32_t top;     // rank of 1.0 on the non-negative side
};

// The vector encoder's tables (q8_encode_avx512), 16 lanes each, built once. They index
// nine regions of |y|: 0 below zero_hi (code rank 0), 1..7 the decades 0..6, 8 from one_lo
// up (the top rank); the end regions have scale = offset = last = 0, so the decade formula
// gives their rank with no separate fix-up. Region boundaries are at least a factor 3
// apart, so the binary octave [2^e, 2^(e+1)) holds at most one (make_qcoder checks it):
// octave_region[e + 31] is the region of 2^e (e clamped to [-31, 0]), and one comparison
// with next_lo[region] (the next region's lower bound) finishes the search.
struct QVectorTables {
    alignas(64) float scale[16];
    alignas(64) float offset[16];
    alignas(64) std::int32_t first[16];
    alignas(64) std::int32_t last[16];
    alignas(64) std::int32_t octave_region[32];
    alignas(64) float next_lo[16];
    bool usable;  // the one-boundary-per-octave property holds (else: the scalar encoder)
};

// Everything the encoder and decoder of one map need, built once.
struct QCoder {
    float code[256];  // decode: value of each code
    alignas(64) std::uint8_t planes[4][256];  // byte b of code[c] at planes[b][c] (q8_decode_vbmi)
    QEncoder enc;
    QVectorTables vec;
    std::int32_t zero_code;
};

// The smallest float32 >= m: comparing a float with it is comparing with m exactly.
inline float float_at_or_above(double m) {
    float f = static_cast<float>(m);
    if (static_cast<double>(f) < m) f = std::nextafter(f, 2.0f);
    return f;
}

// Built once per map. Kept out of line and unspecialised (no constant-propagated local
// clone): its code stays under its own exported per-target symbol.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noinline, noclone))
#endif
inline QCoder make_qcoder(bool is_signed) {
    QCoder qc{};
    dynamic_map(is_signed, qc.code);
    for (int c = 0; c < 256; ++c) {
        std::uint32_t u;
        std::memcpy(&u, &qc.code[c], 4);
        for (int b = 0; b < 4; ++b) qc.planes[b][c] = static_cast<std::uint8_t>(u >> (8 * b));
    }
    QEncoder& q = qc.enc;
    // The non-negative side: ranks 0 (zero) .. top (1.0).
    const int zero = is_signed ? 127 : 0;
    const float* pos = qc.code + zero;
    q.top = 255 - zero;
    qc.zero_code = zero;
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
    QVectorTables& v = qc.vec;
    float lo[9];  // lower bound of each region
    lo[0] = 0.0f;
    for (int i = 0; i < 7; ++i) {
        const int r = i + 1;
        v.scale[r] = q.scale[i];
        v.offset[r] = q.offset[i];
        v.first[r] = q.first[i];
        v.last[r] = q.last[i];
        lo[r] = i == 0 ? q.zero_hi : q.decade_lo[i];
    }
    v.first[8] = q.top;  // regions 0 and 8: scale, offset, last 0 (value-initialized)
    lo[8] = q.one_lo;
    for (int r = 0; r < 9; ++r) v.next_lo[r] = r + 1 < 9 ? lo[r + 1] : 2.0f;  // 2: above every |y|
    v.usable = true;
    for (int e = 0; e < 32; ++e) {
        const float x = std::ldexp(1.0f, e - 31), x2 = std::ldexp(1.0f, e - 30);
        int inside = 0;
        for (int r = 1; r < 9; ++r) {
            v.octave_region[e] += x >= lo[r] ? 1 : 0;
            inside += lo[r] > x && lo[r] < x2 ? 1 : 0;
        }
        if (inside > 1) v.usable = false;
    }
    return qc;
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
inline std::uint8_t q8_encode(const QEncoder& q, float y) {
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

#ifdef FASTOPTIM_Q8_AVX512
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_*().
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// q8_encode on 16 lanes at a time with the region's constants fetched by in-register
// permutes (the auto-vectorized select chain costs twice as much); same results. Four
// vectors of codes are packed to bytes together (two packs and one permute instead of four
// narrowing stores).
template <bool SIGNED>
inline __m512i q8_codes16(__m512 x, __m512 vinv, __m512 vsc, __m512 voff, __m512i vfirst,
                          __m512i vlast, __m512i oct_lo, __m512i oct_hi, __m512 vnext) {
    const __m512i c96 = _mm512_set1_epi32(127 - 31);
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    const __m512i c127 = _mm512_set1_epi32(127), izero = _mm512_setzero_si512();
    const __m512 y = _mm512_mul_ps(x, vinv);
    const __m512 a = _mm512_min_ps(_mm512_abs_ps(y), one);  // NaN -> 1, as q8_encode
    // exponent + 31 from the bits (a in [0, 1]: biased exponent <= 127), clamped to
    // [0, 31]: 0, subnormals and anything below 2^-31 give 0
    const __m512i e = _mm512_max_epi32(
        _mm512_sub_epi32(_mm512_srli_epi32(_mm512_castps_si512(a), 23), c96), izero);
    __m512i d = _mm512_permutex2var_epi32(oct_lo, e, oct_hi);
    d = _mm512_mask_add_epi32(d, _mm512_cmp_ps_mask(a, _mm512_permutexvar_ps(d, vnext), _CMP_GE_OQ),
                              d, _mm512_set1_epi32(1));
    const __m512 jf = _mm512_max_ps(
        _mm512_fmsub_ps(a, _mm512_permutexvar_ps(d, vsc), _mm512_permutexvar_ps(d, voff)), zero);
    const __m512i j = _mm512_min_epi32(_mm512_cvttps_epi32(jf), _mm512_permutexvar_epi32(d, vlast));
    const __m512i r = _mm512_add_epi32(_mm512_permutexvar_epi32(d, vfirst), j);
    if constexpr (SIGNED) {
        const __mmask16 neg = _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ);
        const __m512i rn = _mm512_min_epi32(r, c127);
        return _mm512_mask_sub_epi32(_mm512_add_epi32(c127, r), neg, c127, rn);
    } else {
        return _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ), r);
    }
}

template <bool SIGNED>
inline void q8_encode_avx512(std::uint8_t* codes, const float* x, float inv, std::size_t n,
                             const QVectorTables& v) {
    const __m512 vsc = _mm512_load_ps(v.scale), voff = _mm512_load_ps(v.offset);
    const __m512i vfirst = _mm512_load_si512(v.first), vlast = _mm512_load_si512(v.last);
    const __m512i oct_lo = _mm512_load_si512(v.octave_region);
    const __m512i oct_hi = _mm512_load_si512(v.octave_region + 16);
    const __m512 vnext = _mm512_load_ps(v.next_lo);
    const __m512 vinv = _mm512_set1_ps(inv);
    // packs interleave 128-bit lanes: dword 4L + k of the packed bytes holds elements
    // 4L..4L+3 of vector k; put them at dword 4k + L
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (std::size_t i = 0; i < n; i += 64) {
        const std::size_t left = n - i;
        __m512i c[4];
        for (std::size_t k = 0; k < 4; ++k) {
            const std::size_t o = 16 * k;
            const __mmask16 m = left >= o + 16 ? static_cast<__mmask16>(0xFFFF)
                                : left > o    ? static_cast<__mmask16>((1u << (left - o)) - 1u)
                                              : static_cast<__mmask16>(0);
            c[k] = q8_codes16<SIGNED>(_mm512_maskz_loadu_ps(m, x + i + o), vinv, vsc, voff,
                                      vfirst, vlast, oct_lo, oct_hi, vnext);
        }
        const __m512i w = _mm512_packus_epi16(_mm512_packus_epi32(c[0], c[1]),
                                              _mm512_packus_epi32(c[2], c[3]));
        const __m512i b = _mm512_permutexvar_epi32(order, w);
        const __mmask64 k = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
        _mm512_mask_storeu_epi8(codes + i, k, b);
    }
}

// map[codes] * absmax, 16 lanes at a time: the 256-entry table sits in 16 registers,
// eight two-register permutes look up all 32-entry groups and three blends pick one.
inline void q8_decode_avx512(float* x, const std::uint8_t* codes, float absmax, std::size_t n,
                             const float* table) {
    __m512 t[16];
    for (int j = 0; j < 16; ++j) t[j] = _mm512_loadu_ps(table + 16 * j);
    const __m512 s = _mm512_set1_ps(absmax);
    const __m512i b5 = _mm512_set1_epi32(32), b6 = _mm512_set1_epi32(64), b7 = _mm512_set1_epi32(128);
    for (std::size_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF)
                                        : static_cast<__mmask16>((1u << (n - i)) - 1u);
        const __m512i c = _mm512_maskz_cvtepu8_epi32(k, _mm_maskz_loadu_epi8(k, codes + i));
        const __mmask16 m5 = _mm512_test_epi32_mask(c, b5), m6 = _mm512_test_epi32_mask(c, b6),
                        m7 = _mm512_test_epi32_mask(c, b7);
        __m512 v[8];
        for (int g = 0; g < 8; ++g) v[g] = _mm512_permutex2var_ps(t[2 * g], c, t[2 * g + 1]);
        const __m512 w0 = _mm512_mask_blend_ps(m5, v[0], v[1]), w1 = _mm512_mask_blend_ps(m5, v[2], v[3]);
        const __m512 w2 = _mm512_mask_blend_ps(m5, v[4], v[5]), w3 = _mm512_mask_blend_ps(m5, v[6], v[7]);
        const __m512 u0 = _mm512_mask_blend_ps(m6, w0, w1), u1 = _mm512_mask_blend_ps(m6, w2, w3);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_mask_blend_ps(m7, u0, u1), s));
    }
}
#ifdef FASTOPTIM_Q8_VBMI
// map[codes] * absmax for n <= kQ8Block codes, 64 at a time: the map is four byte planes
// of 256 bytes in 16 registers; each plane is looked up for 64 codes by two byte permutes
// (vpermi2b, 128 entries each) and a blend on the code's top bit, and four planes are
// interleaved into 64 float32 values by byte and word unpacks. The codes are permuted
// first so that the lane-wise unpacks come out in element order.
inline void q8_decode_vbmi(float* x, const std::uint8_t* codes, float absmax, std::size_t n,
                           const QCoder& q) {
    __m512i t[4][4];
    for (int b = 0; b < 4; ++b)
        for (int j = 0; j < 4; ++j) t[b][j] = _mm512_load_si512(q.planes[b] + 64 * j);
    // element 16k + 4L + j to byte 16L + 4k + j (L: 128-bit lane, k: output vector)
    alignas(64) std::uint8_t order[64];
    for (int L = 0; L < 4; ++L)
        for (int k = 0; k < 4; ++k)
            for (int j = 0; j < 4; ++j)
                order[16 * L + 4 * k + j] = static_cast<std::uint8_t>(16 * k + 4 * L + j);
    const __m512i perm = _mm512_load_si512(order);
    const __m512 s = _mm512_set1_ps(absmax);
    for (std::size_t i = 0; i < n; i += 64) {
        const std::size_t left = n - i;
        const __mmask64 k = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
        const __m512i c = _mm512_permutexvar_epi8(perm, _mm512_maskz_loadu_epi8(k, codes + i));
        const __mmask64 top = _mm512_movepi8_mask(c);
        __m512i B[4];
        for (int b = 0; b < 4; ++b)
            B[b] = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t[b][0], c, t[b][1]),
                                          _mm512_permutex2var_epi8(t[b][2], c, t[b][3]));
        const __m512i w0 = _mm512_unpacklo_epi8(B[0], B[1]), w1 = _mm512_unpackhi_epi8(B[0], B[1]);
        const __m512i w2 = _mm512_unpacklo_epi8(B[2], B[3]), w3 = _mm512_unpackhi_epi8(B[2], B[3]);
        const __m512i d[4] = {_mm512_unpacklo_epi16(w0, w2), _mm512_unpackhi_epi16(w0, w2),
                              _mm512_unpacklo_epi16(w1, w3), _mm512_unpackhi_epi16(w1, w3)};
        for (std::size_t v = 0; v < 4 && 16 * v < left; ++v) {
            const std::size_t l = left - 16 * v;
            const __mmask16 m = l >= 16 ? static_cast<__mmask16>(0xFFFF)
                                        : static_cast<__mmask16>((1u << l) - 1u);
            _mm512_mask_storeu_ps(x + i + 16 * v, m, _mm512_mul_ps(_mm512_castsi512_ps(d[v]), s));
        }
    }
}
#endif

#pragma GCC diagnostic pop
#endif

// codes[i] = the code of x[i] * inv, i < n.
template <bool SIGNED>
inline void q8_encode_run(std::uint8_t* __restrict codes, const float* __restrict x, float inv,
                          std::size_t n, const QCoder& q) {
#ifdef FASTOPTIM_Q8_AVX512
    if (q.vec.usable) {
        q8_encode_avx512<SIGNED>(codes, x, inv, n, q.vec);
        return;
    }
#endif
    const QEncoder e = q.enc;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) codes[i] = q8_encode<SIGNED>(e, x[i] * inv);
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
        m = a > m ? a : m;
        nan |= a != a;
    }
    *absmax = nan ? std::nanf("") : m;
    const float inv = m > 0.0f ? 1.0f / m : 0.0f;
    q8_encode_run<SIGNED>(codes, x, inv, n, q);
}

// codes [n] with the absmax of their block -> x [n].
inline void q8_load_block(float* __restrict x, const std::uint8_t* __restrict codes,
                          float absmax, std::size_t n, const QCoder& q) {
#if defined(FASTOPTIM_Q8_VBMI)
    q8_decode_vbmi(x, codes, absmax, n, q);
#elif defined(FASTOPTIM_Q8_AVX512)
    q8_decode_avx512(x, codes, absmax, n, q.code);
#else
    const float* table = q.code;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) x[i] = table[codes[i]] * absmax;
#endif
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
