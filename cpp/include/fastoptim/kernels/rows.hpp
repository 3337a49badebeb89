// Work splitting for row-wise kernels (losses, activations) and deterministic sums.
//
// Rows are split evenly across threads, and only when the matrix holds at least
// `min_per_thread` elements per thread: every row is computed by the same code whatever
// the thread count, so elementwise results are bitwise identical for any number of
// threads. Sums over rows or elements use fixed chunks (independent of the thread count),
// each summed in double into its own slot; the slots are added in order afterwards.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "fastoptim/kernels/parallel.hpp"

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

// Calls f(row_begin, row_end) over [0, rows), in parallel when rows * cols is large.
template <class F>
void for_rows(std::size_t rows, std::size_t cols, int nthreads, std::size_t min_per_thread,
              F&& f) {
    if (rows == 0) return;
    const int nt = std::min<int>(threads_for(rows * cols, nthreads, min_per_thread),
                                 static_cast<int>(std::min<std::size_t>(rows, 1 << 30)));
    if (nt <= 1) {
        f(std::size_t{0}, rows);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
        const std::size_t T = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t b = rows * t / T, e = rows * (t + 1) / T;
        if (b < e) f(b, e);
    }
#endif
}

// Sum of f(b, e) (a double) over fixed chunks [b, e) of `chunk` items covering [0, n):
// the same bits for any thread count. Parallel when n * item_cost is large.
template <class F>
double chunked_sum(std::size_t n, std::size_t chunk, std::size_t item_cost, int nthreads,
                   std::size_t min_per_thread, F&& f) {
    if (n == 0) return 0.0;
    const std::size_t nchunks = (n + chunk - 1) / chunk;
    if (nchunks == 1) return f(std::size_t{0}, n);
    std::vector<double> part(nchunks, 0.0);
    const int nt = std::min<int>(threads_for(n * item_cost, nthreads, min_per_thread),
                                 static_cast<int>(std::min<std::size_t>(nchunks, 1 << 30)));
    auto one = [&](std::size_t c) { part[c] = f(c * chunk, std::min(n, (c + 1) * chunk)); };
    for_each_chunk(nchunks, nt, one);
    double s = 0.0;
    for (double v : part) s += v;  // fixed order: deterministic
    return s;
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
