// Adam/AdamW with bf16 or 8-bit state on AVX-512, every buffer converted in registers.
//
// adam_formats.hpp's general path stages each buffer of a chunk through L1 scratch (load
// as float32, update, store back through the format). That costs a few extra passes over
// L1 per element, which at 1e8 elements keeps a single core from overlapping the update
// with DRAM traffic. The kernels here take the common combinations in one loop over
// 16-lane vectors: the gradient, the parameter and bf16 state are converted in registers;
// 8-bit state is decoded in registers (table lookups by permutes), updated, kept in L1
// for its block of kQ8Block elements while the block's absmax is accumulated, and encoded
// once the block is done. The arithmetic is the float32 update of optimizers.hpp written
// with the same operation order and contractions as the compiler's vectorisation of it,
// so results are bitwise those of the general path (tests/test_state_formats.py checks
// this on every target that has these kernels).
//
// Taken: amsgrad off, no parameter copy, parameter float32 or bf16 (nearest or stochastic
// rounding), gradient float32, bf16 or float16, state bf16 rounded to nearest or q8.
// Everything else goes the general way.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastoptim/config.hpp"
#include "fastoptim/formats/blocks.hpp"
#include "fastoptim/kernels/optimizers.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

#ifdef FASTOPTIM_Q8_AVX512
#define FASTOPTIM_ADAM_FUSED 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace fused {

inline __mmask16 lanes(std::size_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// 16 elements from i of an input in format F, as float32.
template <Format F>
inline __m512 load(const void* base, std::size_t i, __mmask16 k) {
    if constexpr (F == Format::f32) {
        return _mm512_maskz_loadu_ps(k, static_cast<const float*>(base) + i);
    } else if constexpr (F == Format::bf16) {
        const __m256i h = _mm256_maskz_loadu_epi16(k, static_cast<const std::uint16_t*>(base) + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
        static_assert(F == Format::f16, "load: f32, bf16 or f16");
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, static_cast<const std::uint16_t*>(base) + i));
    }
}

// bf16_nearest of 16 lanes (the instruction where the target has it: see blocks.hpp).
inline __m256i bf16_nearest16(__m512 x) {
#ifdef FASTOPTIM_BF16_INSTRUCTIONS
    const __m256bh h = _mm512_cvtneps_pbh(x);
    return reinterpret_cast<const __m256i&>(h);
#else
    const __m512i u = _mm512_castps_si512(x);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                  _mm512_set1_epi32(0x7F800000));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)),
                                 _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
#endif
}

inline __m512i fmix32_16(__m512i h) {
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32(static_cast<int>(0x85EBCA6Bu)));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32(static_cast<int>(0xC2B2AE35u)));
    return _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
}

// rounding_bits(k, i0 + lane) for lanes 0..15.
inline __m512i rounding_bits16(CounterKey k, std::uint64_t i0) {
    const __m512i lo0 = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(i0)));
    const __m512i hi0 = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(i0 >> 32)));
    const __m512i lo = _mm512_add_epi32(lo0, _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                               11, 12, 13, 14, 15));
    const __m512i hi = _mm512_mask_add_epi32(hi0, _mm512_cmplt_epu32_mask(lo, lo0), hi0,
                                             _mm512_set1_epi32(1));  // carry into hi(i)
    const __m512i h = _mm512_xor_si512(
        _mm512_xor_si512(lo, _mm512_set1_epi32(static_cast<int>(k.k0))),
        _mm512_mullo_epi32(hi, _mm512_set1_epi32(static_cast<int>(0x9E3779B9u))));
    return _mm512_xor_si512(fmix32_16(h), _mm512_set1_epi32(static_cast<int>(k.k1)));
}

// bf16_stochastic of 16 lanes.
inline __m256i bf16_stochastic16(__m512 x, __m512i bits) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000));
    const __mmask16 inf = _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32(0x7F800000));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_and_si512(bits, _mm512_set1_epi32(0xFFFF))), 16);
    r = _mm512_mask_mov_epi32(r, inf, hi);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

// The signed map's non-negative half pos[r] = code[127 + r], r = 0..127, in 8 registers
// (the map is symmetric: code[127 - r] = -code[127 + r], and code[255] = 1).
struct SignedTable {
    __m512 t[8];
    explicit SignedTable(const QCoder& q) {
        for (int j = 0; j < 8; ++j) t[j] = _mm512_loadu_ps(q.code + 127 + 16 * j);
    }
};

// The unsigned map, all 256 values, in 16 registers.
struct UnsignedTable {
    __m512 t[16];
    explicit UnsignedTable(const QCoder& q) {
        for (int j = 0; j < 16; ++j) t[j] = _mm512_loadu_ps(q.code + 16 * j);
    }
};

// code[c] for 16 signed codes: the magnitude rank r = |c - 127| by four 32-entry permutes
// and two levels of blends; r = 128 is 1.0; codes below 127 negate.
inline __m512 decode_signed(const SignedTable& T, __m512i c) {
    const __m512i d = _mm512_sub_epi32(c, _mm512_set1_epi32(127));
    const __m512i r = _mm512_abs_epi32(d);
    const __mmask16 b5 = _mm512_test_epi32_mask(r, _mm512_set1_epi32(32));
    const __mmask16 b6 = _mm512_test_epi32_mask(r, _mm512_set1_epi32(64));
    const __mmask16 b7 = _mm512_test_epi32_mask(r, _mm512_set1_epi32(128));
    const __m512 g0 = _mm512_permutex2var_ps(T.t[0], r, T.t[1]);
    const __m512 g1 = _mm512_permutex2var_ps(T.t[2], r, T.t[3]);
    const __m512 g2 = _mm512_permutex2var_ps(T.t[4], r, T.t[5]);
    const __m512 g3 = _mm512_permutex2var_ps(T.t[6], r, T.t[7]);
    const __m512 w = _mm512_mask_blend_ps(b6, _mm512_mask_blend_ps(b5, g0, g1),
                                          _mm512_mask_blend_ps(b5, g2, g3));
    const __m512 mag = _mm512_mask_mov_ps(w, b7, _mm512_set1_ps(1.0f));
    const __mmask16 neg = _mm512_cmplt_epi32_mask(d, _mm512_setzero_si512());
    return _mm512_mask_xor_ps(mag, neg, mag, _mm512_set1_ps(-0.0f));
}

// code[c] for 16 unsigned codes (as q8_decode_avx512).
inline __m512 decode_unsigned(const UnsignedTable& T, __m512i c) {
    const __mmask16 m5 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(32));
    const __mmask16 m6 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(64));
    const __mmask16 m7 = _mm512_test_epi32_mask(c, _mm512_set1_epi32(128));
    __m512 v[8];
    for (int g = 0; g < 8; ++g) v[g] = _mm512_permutex2var_ps(T.t[2 * g], c, T.t[2 * g + 1]);
    const __m512 w0 = _mm512_mask_blend_ps(m5, v[0], v[1]), w1 = _mm512_mask_blend_ps(m5, v[2], v[3]);
    const __m512 w2 = _mm512_mask_blend_ps(m5, v[4], v[5]), w3 = _mm512_mask_blend_ps(m5, v[6], v[7]);
    const __m512 u0 = _mm512_mask_blend_ps(m6, w0, w1), u1 = _mm512_mask_blend_ps(m6, w2, w3);
    return _mm512_mask_blend_ps(m7, u0, u1);
}

inline __m512i load_codes(const std::uint8_t* c, __mmask16 k) {
    return _mm512_maskz_cvtepu8_epi32(k, _mm_maskz_loadu_epi8(k, c));
}

// The Adam scalars, broadcast.
struct AdamVec {
    __m512 sign, wd, keep, w1, b2, w2, ibc2, eps, nss;
    explicit AdamVec(const AdamScalars<float>& s)
        : sign(_mm512_set1_ps(s.sign)), wd(_mm512_set1_ps(s.weight_decay)),
          keep(_mm512_set1_ps(s.keep)), w1(_mm512_set1_ps(s.one_minus_beta1)),
          b2(_mm512_set1_ps(s.beta2)), w2(_mm512_set1_ps(s.one_minus_beta2)),
          ibc2(_mm512_set1_ps(s.inv_bc2_sqrt)), eps(_mm512_set1_ps(s.eps)),
          nss(_mm512_set1_ps(s.neg_step_size)) {}
};

// adam_range's body on 16 lanes: g, p, m, v in; p, m, v out. The contractions are those
// GCC makes of adam_range (a * b + c -> fma where the product is the first operand).
template <Decay D>
inline void adam16(const AdamVec& a, __m512 g, __m512& p, __m512& m, __m512& v) {
    __m512 gi;
    if constexpr (D == Decay::l2) gi = _mm512_fmadd_ps(a.sign, g, _mm512_mul_ps(a.wd, p));
    else gi = _mm512_mul_ps(a.sign, g);
    const __m512 mi = _mm512_fmadd_ps(a.w1, _mm512_sub_ps(gi, m), m);
    const __m512 vi = _mm512_fmadd_ps(v, a.b2, _mm512_mul_ps(_mm512_mul_ps(a.w2, gi), gi));
    const __m512 den = _mm512_fmadd_ps(_mm512_sqrt_ps(vi), a.ibc2, a.eps);
    const __m512 q = _mm512_div_ps(mi, den);
    if constexpr (D == Decay::decoupled) p = _mm512_fmadd_ps(p, a.keep, _mm512_mul_ps(a.nss, q));
    else p = _mm512_fmadd_ps(a.nss, q, p);
    m = mi;
    v = vi;
}

template <Format PF, bool PSTOCH>
inline void store_param(void* base, std::size_t i, __mmask16 k, __m512 p, CounterKey key) {
    if constexpr (PF == Format::f32) {
        _mm512_mask_storeu_ps(static_cast<float*>(base) + i, k, p);
    } else {
        static_assert(PF == Format::bf16, "store_param: f32 or bf16");
        const __m256i h = PSTOCH ? bf16_stochastic16(p, rounding_bits16(key, i)) : bf16_nearest16(p);
        _mm256_mask_storeu_epi16(static_cast<std::uint16_t*>(base) + i, k, h);
    }
}

template <Decay D, Format PF, Format GF, bool PSTOCH>
void adam_bf16_state(const FormatAdamTensor& t, std::size_t b, std::size_t e,
                     const AdamScalars<float>& s, CounterKey pkey) {
    const AdamVec a(s);
    std::uint16_t* M = static_cast<std::uint16_t*>(t.exp_avg);
    std::uint16_t* V = static_cast<std::uint16_t*>(t.exp_avg_sq);
    for (std::size_t i = b; i < e; i += 16) {
        const __mmask16 k = lanes(e - i);
        const __m512 g = load<GF>(t.grad, i, k);
        __m512 p = load<PF>(t.param, i, k);
        __m512 m = load<Format::bf16>(M, i, k), v = load<Format::bf16>(V, i, k);
        adam16<D>(a, g, p, m, v);
        store_param<PF, PSTOCH>(t.param, i, k, p, pkey);
        _mm256_mask_storeu_epi16(M + i, k, bf16_nearest16(m));
        _mm256_mask_storeu_epi16(V + i, k, bf16_nearest16(v));
    }
}

// absmax of a finished block (NaN if it held one) and the encoder's 1 / absmax, as
// q8_store_block finds them.
inline float block_absmax(__m512 mx, __mmask16 nan, float& inv) {
    const float m = _mm512_reduce_max_ps(mx);
    inv = m > 0.0f ? 1.0f / m : 0.0f;
    return nan ? std::nanf("") : m;
}

template <Decay D, Format PF, Format GF, bool PSTOCH>
void adam_q8_state(const FormatAdamTensor& t, std::size_t b, std::size_t e,
                   const AdamScalars<float>& s, CounterKey pkey) {
    alignas(64) float sm[kQ8Block], sv[kQ8Block];
    const AdamVec a(s);
    const QCoder& qs = signed_qcoder();
    const QCoder& qu = unsigned_qcoder();
#ifndef FASTOPTIM_Q8_VBMI
    const SignedTable ts(qs);
    const UnsignedTable tu(qu);
#endif
    std::uint8_t* M = static_cast<std::uint8_t*>(t.exp_avg);
    std::uint8_t* V = static_cast<std::uint8_t*>(t.exp_avg_sq);
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (std::size_t first = b; first < e; first += kQ8Block) {
        const std::size_t len = e - first < kQ8Block ? e - first : kQ8Block;
        const std::size_t blk = first / kQ8Block;
        const __m512 am = _mm512_set1_ps(t.absmax_exp_avg[blk]);
        const __m512 av = _mm512_set1_ps(t.absmax_exp_avg_sq[blk]);
        __m512 mxm = _mm512_setzero_ps(), mxv = _mm512_setzero_ps();
        __mmask16 nanm = 0, nanv = 0;
#ifdef FASTOPTIM_Q8_VBMI
        // byte-plane decoding works on 64 codes at once: the block's state is decoded
        // into L1 first, in two passes with one map's planes in registers each
        q8_decode_vbmi(sm, M + first, t.absmax_exp_avg[blk], len, qs);
        q8_decode_vbmi(sv, V + first, t.absmax_exp_avg_sq[blk], len, qu);
        (void)am;
        (void)av;
#endif
        for (std::size_t o = 0; o < len; o += 16) {
            const std::size_t i = first + o;
            const __mmask16 k = lanes(len - o);
            const __m512 g = load<GF>(t.grad, i, k);
            __m512 p = load<PF>(t.param, i, k);
#ifdef FASTOPTIM_Q8_VBMI
            __m512 m = _mm512_maskz_load_ps(k, sm + o), v = _mm512_maskz_load_ps(k, sv + o);
#else
            __m512 m = _mm512_mul_ps(decode_signed(ts, load_codes(M + i, k)), am);
            __m512 v = _mm512_mul_ps(decode_unsigned(tu, load_codes(V + i, k)), av);
#endif
            adam16<D>(a, g, p, m, v);
            store_param<PF, PSTOCH>(t.param, i, k, p, pkey);
            _mm512_store_ps(sm + o, m);
            _mm512_store_ps(sv + o, v);
            // max(|x|, running): a NaN lane leaves the running max as it is (the NaN is
            // recorded apart), as q8_store_block's reduction does
            mxm = _mm512_mask_max_ps(mxm, k, _mm512_and_ps(m, abs_mask), mxm);
            mxv = _mm512_mask_max_ps(mxv, k, _mm512_and_ps(v, abs_mask), mxv);
            nanm = static_cast<__mmask16>(nanm | _mm512_mask_cmp_ps_mask(k, m, m, _CMP_UNORD_Q));
            nanv = static_cast<__mmask16>(nanv | _mm512_mask_cmp_ps_mask(k, v, v, _CMP_UNORD_Q));
        }
        float invm, invv;
        t.absmax_exp_avg[blk] = block_absmax(mxm, nanm, invm);
        t.absmax_exp_avg_sq[blk] = block_absmax(mxv, nanv, invv);
        q8_encode_run<true>(M + first, sm, invm, len, qs);
        q8_encode_run<false>(V + first, sv, invv, len, qu);
    }
}

template <Decay D, Format PF, bool PSTOCH>
bool run_grad(const FormatAdamTensor& t, std::size_t b, std::size_t e, const AdamScalars<float>& s,
              CounterKey pkey) {
    auto go = [&](auto gf_c) {
        constexpr Format GF = decltype(gf_c)::value;
        if (t.state_format == Format::q8) adam_q8_state<D, PF, GF, PSTOCH>(t, b, e, s, pkey);
        else adam_bf16_state<D, PF, GF, PSTOCH>(t, b, e, s, pkey);
    };
    switch (t.grad_format) {
        case Format::f32: go(std::integral_constant<Format, Format::f32>{}); return true;
        case Format::bf16: go(std::integral_constant<Format, Format::bf16>{}); return true;
        case Format::f16: go(std::integral_constant<Format, Format::f16>{}); return true;
        default: return false;
    }
}

}  // namespace fused

// Runs [b, e) of t here and returns true when its combination has a fused kernel (see the
// top of this file); false leaves it to the general path.
template <Decay D, bool AMSGRAD>
bool adam_fused_range(const FormatAdamTensor& t, std::size_t b, std::size_t e,
                      const AdamScalars<float>& s, CounterKey pkey) {
    if constexpr (AMSGRAD) {
        return false;
    } else {
        if (t.param_copy != nullptr) return false;
        const bool state_ok = t.state_format == Format::q8 ||
                              (t.state_format == Format::bf16 && t.state_rounding == Rounding::nearest);
        if (!state_ok) return false;
        if (t.param_format == Format::f32) return fused::run_grad<D, Format::f32, false>(t, b, e, s, pkey);
        if (t.param_format != Format::bf16) return false;
        if (t.param_rounding == Rounding::stochastic)
            return fused::run_grad<D, Format::bf16, true>(t, b, e, s, pkey);
        return fused::run_grad<D, Format::bf16, false>(t, b, e, s, pkey);
    }
}

#pragma GCC diagnostic pop
#endif  // FASTOPTIM_Q8_AVX512

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
