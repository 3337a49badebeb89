// Adam/AdamW on parameters, gradients and state in any supported format, in one pass.
//
// Each thread walks its share of the tensors in chunks of kFormatChunk elements: every
// buffer of the chunk is loaded as float32 (into L1 scratch, or used in place when it is
// float32), the float32 update of optimizers.hpp runs on the chunk (the same operation
// sequence as the float32 kernel, so fp32-everything gives bitwise the float32 result), and
// the results are stored back through their formats: a q8 block's new absmax is found in
// L1 before its codes are written. Nothing else is allocated, nothing swept twice.
// Splits between threads fall on kQ8Block boundaries, so results are bitwise identical
// for any thread count.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastoptim/config.hpp"
#include "fastoptim/formats/blocks.hpp"
#include "fastoptim/kernels/adam_fused.hpp"
#include "fastoptim/kernels/optimizers.hpp"
#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kFormatChunk = 4 * kQ8Block;  // 1,024 elements: 5 x 4 KiB of scratch

// Stochastic-rounding stream of each buffer of a tensor (see rounding_key).
enum RoundingStream : std::uint32_t { kStreamParam = 0, kStreamExpAvg = 1, kStreamExpAvgSq = 2,
                                      kStreamMaxExpAvgSq = 3 };

inline Buffer state_buffer(const FormatAdamTensor& t, void* base, float* absmax, bool is_signed,
                           std::int64_t step, std::uint32_t stream) {
    return Buffer{base, absmax,
                  t.state_format == Format::q8 ? (is_signed ? &signed_qcoder() : &unsigned_qcoder())
                                               : nullptr,
                  t.state_format, t.state_rounding, is_signed, rounding_key(t.seed, step, stream)};
}

template <Decay D, bool AMSGRAD>
void adam_format_range(const FormatAdamTensor& t, std::size_t b, std::size_t e,
                       const AdamScalars<float>& s, std::int64_t step) {
#ifdef FASTOPTIM_ADAM_FUSED
    if (fused_formats_enabled.load(std::memory_order_relaxed) &&
        adam_fused_range<D, AMSGRAD>(t, b, e, s, rounding_key(t.seed, step, kStreamParam)))
        return;
#endif
    alignas(64) float sp[kFormatChunk], sg[kFormatChunk], sm[kFormatChunk], sv[kFormatChunk],
        svm[kFormatChunk];
    const Buffer P{t.param, nullptr, nullptr, t.param_format, t.param_rounding, false,
                   rounding_key(t.seed, step, kStreamParam)};
    const Buffer M = state_buffer(t, t.exp_avg, t.absmax_exp_avg, true, step, kStreamExpAvg);
    const Buffer V = state_buffer(t, t.exp_avg_sq, t.absmax_exp_avg_sq, false, step, kStreamExpAvgSq);
    const Buffer VM = state_buffer(t, t.max_exp_avg_sq, t.absmax_max_exp_avg_sq, false, step,
                                   kStreamMaxExpAvgSq);
    const Buffer C{t.param_copy, nullptr, nullptr, t.copy_format, Rounding::nearest, false, {}};
    for (std::size_t first = b; first < e; first += kFormatChunk) {
        const std::size_t n = e - first < kFormatChunk ? e - first : kFormatChunk;
        float* p = load_buffer(P, first, n, sp);
        const float* g = load_input(t.grad_format, t.grad, first, n, sg);
        float* m = load_buffer(M, first, n, sm);
        float* v = load_buffer(V, first, n, sv);
        float* vm = AMSGRAD ? load_buffer(VM, first, n, svm) : nullptr;
        adam_range<float, D, AMSGRAD>(p, g, m, v, vm, n, s);
        store_buffer(P, first, n, p);
        if (t.param_copy) store_buffer(C, first, n, p);
        store_buffer(M, first, n, m);
        store_buffer(V, first, n, v);
        if constexpr (AMSGRAD) store_buffer(VM, first, n, vm);
    }
}

template <Decay D, bool AMSGRAD>
void adam_format_impl(const FormatAdamTensor* ts, std::size_t count, const AdamScalars<float>& s,
                      std::int64_t step, int nthreads) {
    for_each_range(
        count, [ts](std::size_t i) { return ts[i].n; }, nthreads, kMinPerThreadAdam,
        [ts, &s, step](std::size_t i, std::size_t b, std::size_t e) {
            adam_format_range<D, AMSGRAD>(ts[i], b, e, s, step);
        },
        kQ8Block);
}

// One Adam/AdamW step over `count` tensors of any formats (FormatAdamTensor). The config
// must satisfy validate(c); the descriptors must be consistent (formats/types.hpp).
inline void adam_format_multi(const FormatAdamTensor* ts, std::size_t count, const AdamConfig& c,
                              int nthreads) {
    const AdamScalars<float> s = adam_scalars<float>(c);
    const Decay d = adam_decay(c);
    auto run = [&](auto ams_c) {
        constexpr bool A = decltype(ams_c)::value;
        switch (d) {
            case Decay::none: adam_format_impl<Decay::none, A>(ts, count, s, c.step, nthreads); break;
            case Decay::l2: adam_format_impl<Decay::l2, A>(ts, count, s, c.step, nthreads); break;
            case Decay::decoupled:
                adam_format_impl<Decay::decoupled, A>(ts, count, s, c.step, nthreads);
                break;
        }
    };
    c.amsgrad ? run(std::true_type{}) : run(std::false_type{});
}

// Whole-array format conversions (Python helpers and tests): x float32 [n] -> dst in
// `format` (q8: codes and absmax [q8_blocks(n)], signed or unsigned map; bf16 stochastic:
// bits from (seed, step, stream 0)), and back.
inline void format_encode(void* dst, float* absmax, const float* x, std::size_t n, Format format,
                          Rounding rounding, bool is_signed, std::uint64_t seed, std::int64_t step) {
    const Buffer b{dst, absmax, format == Format::q8 ? (is_signed ? &signed_qcoder() : &unsigned_qcoder()) : nullptr,
                   format, rounding, is_signed, rounding_key(seed, step, kStreamParam)};
    store_buffer(b, 0, n, x);
}

inline void format_decode(float* x, const void* src, const float* absmax, std::size_t n,
                          Format format, bool is_signed) {
    const Buffer b{const_cast<void*>(src), const_cast<float*>(absmax),
                   format == Format::q8 ? (is_signed ? &signed_qcoder() : &unsigned_qcoder()) : nullptr,
                   format, Rounding::nearest, is_signed, {}};
    for (std::size_t o = 0; o < n; o += kFormatChunk) {
        const std::size_t len = n - o < kFormatChunk ? n - o : kFormatChunk;
        const float* y = load_buffer(b, o, len, x + o);
        if (y != x + o)
            for (std::size_t i = 0; i < len; ++i) x[o + i] = y[i];
    }
}

inline void dynamic_map_values(float* out, bool is_signed) {
    const QCoder& q = is_signed ? signed_qcoder() : unsigned_qcoder();
    for (int i = 0; i < 256; ++i) out[i] = q.code[i];
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
