// Regularizer kernels: the L1/L2 penalty with its (sub)gradient, and inverted dropout.
//
// Dropout draws from a counter-based generator: element i's keep/drop decision is a hash
// of (seed, stream, i), so it depends on neither the thread count nor the SIMD target, and
// backward reuses the stored mask (dx = dy * mask).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

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

// murmur3's 32-bit finalizer: a bijection with full avalanche.
inline std::uint32_t fmix32(std::uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

// splitmix64: turns (seed, stream) into two well-mixed 32-bit keys.
inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Inverted dropout over [n]: mask[i] = 1/(1-p) with probability 1-p, else 0; y = x * mask.
// The draw for element i: 24 bits of fmix32(fmix32(lo(i) ^ k0) ^ (hi(i) + k1)) >= p 2^24.
template <class T>
void dropout_forward(T* y, T* mask, const T* x, std::size_t n, double p, std::uint64_t seed,
                     std::uint64_t stream, int nthreads) {
    const std::uint64_t key = splitmix64(splitmix64(seed) ^ stream);
    const std::uint32_t k0 = static_cast<std::uint32_t>(key);
    const std::uint32_t k1 = static_cast<std::uint32_t>(key >> 32);
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
                const std::uint32_t lo = static_cast<std::uint32_t>(i);
                const std::uint32_t hi = static_cast<std::uint32_t>(static_cast<std::uint64_t>(i) >> 32);
                const std::uint32_t h = fmix32(fmix32(lo ^ k0) ^ (hi + k1));
                const T m = (h >> 8) >= thr ? keep_scale : T(0);
                mm[i] = m;
                yy[i] = xx[i] * m;
            }
        });
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
