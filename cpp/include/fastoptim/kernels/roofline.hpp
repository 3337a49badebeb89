// The roofline reference for benchmarks: the cheapest loop that moves the same bytes as an
// update kernel. out_j[i] += in[i] for NOUT read-modify-write arrays and one read-only
// array: Adam (p, m, v updated; g read) is NOUT = 3, SGD momentum 2, plain SGD 1.
#pragma once

#include <cstddef>

#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

template <class T, int NOUT>
void stream_range(T* const* outs, const T* __restrict in, std::size_t b, std::size_t e) {
    T* __restrict o0 = outs[0] + b;
    T* __restrict o1 = NOUT > 1 ? outs[1] + b : nullptr;
    T* __restrict o2 = NOUT > 2 ? outs[2] + b : nullptr;
    const T* __restrict x = in + b;
    const std::size_t n = e - b;
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) {
        const T xi = x[i];
        o0[i] = o0[i] + xi;
        if constexpr (NOUT > 1) o1[i] = o1[i] + xi;
        if constexpr (NOUT > 2) o2[i] = o2[i] + xi;
    }
}

// outs: nout (1..3) arrays of n elements, updated in place; in: n elements, read.
template <class T>
void stream_update(T* const* outs, int nout, const T* in, std::size_t n, int nthreads,
                   std::size_t min_per_thread) {
    for_each_range(
        1, [n](std::size_t) { return n; }, nthreads, min_per_thread,
        [&](std::size_t, std::size_t b, std::size_t e) {
            if (nout == 1) stream_range<T, 1>(outs, in, b, e);
            else if (nout == 2) stream_range<T, 2>(outs, in, b, e);
            else stream_range<T, 3>(outs, in, b, e);
        });
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
