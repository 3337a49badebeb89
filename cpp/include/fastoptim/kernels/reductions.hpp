// Reductions over lists of arrays: sum of squares (for global norms) and in-place scaling.
//
// Determinism: every array is cut into fixed chunks of kNormChunk elements, independent of
// the thread count; each chunk's sum is computed by the same vector code into its own slot
// and the slots are added in order afterwards. The result is bitwise identical for any
// number of threads (it may differ in the last bits between SIMD targets).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kNormChunk = 16384;
constexpr std::size_t kMinPerThreadReduce = 65536;
constexpr std::size_t kMinPerThreadScale = 65536;

// Sum of x[i]^2 accumulated in double. x: [n].
template <class T>
double sumsq_range(const T* __restrict x, std::size_t n) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (std::size_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        acc += v * v;
    }
    return acc;
}

// Sum of squares of every element of `count` arrays (xs[i] has sizes[i] elements).
template <class T>
double sumsq_multi(const T* const* xs, const std::size_t* sizes, std::size_t count,
                   int nthreads) {
    std::vector<std::size_t> first(count + 1, 0);  // first chunk id of each array
    std::size_t total = 0;
    for (std::size_t i = 0; i < count; ++i) {
        first[i + 1] = first[i] + (sizes[i] + kNormChunk - 1) / kNormChunk;
        total += sizes[i];
    }
    const std::size_t nchunks = first[count];
    std::vector<double> part(nchunks, 0.0);
    auto chunk = [&](std::size_t c) {
        const std::size_t i =
            static_cast<std::size_t>(std::upper_bound(first.begin(), first.end(), c) -
                                     first.begin()) - 1;
        const std::size_t off = (c - first[i]) * kNormChunk;
        part[c] = sumsq_range(xs[i] + off, std::min(kNormChunk, sizes[i] - off));
    };
    for_each_chunk(nchunks, threads_for(total, nthreads, kMinPerThreadReduce), chunk);
    double s = 0.0;
    for (double v : part) s += v;  // fixed order: deterministic
    return s;
}

// x[i] *= scale for every element of `count` arrays.
template <class T>
void scale_multi(T* const* xs, const std::size_t* sizes, std::size_t count, T scale,
                 int nthreads) {
    for_each_range(
        count, [sizes](std::size_t i) { return sizes[i]; }, nthreads, kMinPerThreadScale,
        [xs, scale](std::size_t i, std::size_t b, std::size_t e) {
            T* __restrict x = xs[i] + b;
            const std::size_t n = e - b;
#pragma omp simd
            for (std::size_t k = 0; k < n; ++k) x[k] = x[k] * scale;
        });
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
