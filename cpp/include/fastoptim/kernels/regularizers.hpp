// Regularizer kernels: the L1/L2 penalty with its (sub)gradient, and inverted dropout.
//
// Dropout draws from a counter-based generator: element i's keep/drop decision is a hash
// of (seed, stream, i), so it depends on neither the thread count nor the SIMD target, and
// backward reuses the stored mask (dx = dy * mask).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "fastoptim/formats/rng.hpp"
#include "fastoptim/kernels/rows.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kPenaltyChunk = 4096;
constexpr std::size_t kMinPerThreadPenalty = 65536;
constexpr std::size_t kMinPerThreadDropout = 65536;

template <class T, bool G>
double penalty_range(T* __restrict g, const T* __restrict p, std::size_t n, T l1, T l2) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (std::size_t i = 0; i < n; ++i) {
        const T x = p[i];
        const T a = x < T(0) ? -x : x;
        const T s = x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));  // subgradient 0 at 0
        acc += static_cast<double>(l1 * a + T(0.5) * l2 * x * x);
        if constexpr (G) g[i] = g[i] + (l1 * s + l2 * x);
    }
    return acc;
}

// Returns l1 * sum|p| + l2/2 * sum p^2 over p [n]; grad [n] (or null) += l1 sign(p) + l2 p.
template <class T>
double penalty(T* grad, const T* p, std::size_t n, double l1, double l2, int nthreads) {
    const T a = T(l1), b = T(l2);
    return chunked_sum(n, kPenaltyChunk, 1, nthreads, kMinPerThreadPenalty,
                       [&](std::size_t lo, std::size_t hi) {
                           return grad ? penalty_range<T, true>(grad + lo, p + lo, hi - lo, a, b)
                                       : penalty_range<T, false>(nullptr, p + lo, hi - lo, a, b);
                       });
}

// Inverted dropout over [n]: mask[i] = 1/(1-p) with probability 1-p, else 0; y = x * mask.
// The draw for element i: the top 24 bits of counter_bits(counter_key(seed, stream), i)
// compared with p 2^24 (formats/rng.hpp).
template <class T>
void dropout_forward(T* y, T* mask, const T* x, std::size_t n, double p, std::uint64_t seed,
                     std::uint64_t stream, std::uint64_t offset, int nthreads) {
    const CounterKey key = counter_key(seed, stream);
    const std::uint32_t thr = static_cast<std::uint32_t>(std::ceil(p * 16777216.0));
    const T keep_scale = p < 1.0 ? T(1.0 / (1.0 - p)) : T(0);
    for_each_range(
        1, [n](std::size_t) { return n; }, nthreads, kMinPerThreadDropout,
        [&](std::size_t, std::size_t b, std::size_t e) {
            T* __restrict yy = y;
            T* __restrict mm = mask;
            const T* __restrict xx = x;
#pragma omp simd
            for (std::size_t i = b; i < e; ++i) {
                const std::uint32_t h = counter_bits(key, offset + i);
                const T m = (h >> 8) >= thr ? keep_scale : T(0);
                mm[i] = m;
                yy[i] = xx[i] * m;
            }
        });
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
