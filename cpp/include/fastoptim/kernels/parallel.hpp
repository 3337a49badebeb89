// Work splitting shared by every multi-tensor kernel.
//
// A multi-tensor call treats its list of arrays as one long index space and gives each
// thread an equal share of it, so 200 small tensors cost one parallel region, not 200.
// Split points are rounded to kAlign elements relative to each array's start: threads never
// write the same cache line, and every element is computed by the same vector code
// whatever the thread count (results are bitwise identical for any number of threads).
#pragma once

#include <algorithm>
#include <cstddef>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

constexpr std::size_t kAlign = 64;  // elements; 64 x float = 4 cache lines

// How many threads to use for `total` elements: one per `min_per_thread` elements, capped.
inline int threads_for(std::size_t total, int nthreads, std::size_t min_per_thread) {
#ifdef _OPENMP
    if (nthreads <= 1 || total < 2 * min_per_thread) return 1;
    std::size_t by_size = total / min_per_thread;
    return static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(nthreads), by_size));
#else
    (void)total; (void)nthreads; (void)min_per_thread;
    return 1;
#endif
}

// Calls f(c) for every chunk c in [0, nchunks): serially when nt <= 1, else on nt threads
// with a static schedule. Chunk boundaries are the caller's, so per-chunk results are the
// same for any thread count.
template <class F>
void for_each_chunk(std::size_t nchunks, int nt, F&& f) {
    if (nt <= 1) {
        for (std::size_t c = 0; c < nchunks; ++c) f(c);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static)
    for (std::size_t c = 0; c < nchunks; ++c) f(c);
#endif
}

// Calls f(i, begin, end) for element ranges of the `count` arrays whose sizes size_of(i)
// returns, covering every element exactly once; in parallel when the total is large.
// Split points inside an array are multiples of `align` elements from its start.
template <class SizeOf, class F>
void for_each_range(std::size_t count, SizeOf&& size_of, int nthreads,
                    std::size_t min_per_thread, F&& f, std::size_t align = kAlign) {
    std::size_t total = 0;
    for (std::size_t i = 0; i < count; ++i) total += size_of(i);
    if (total == 0) return;
    const int nt = threads_for(total, nthreads, min_per_thread);
    if (nt <= 1) {
        for (std::size_t i = 0; i < count; ++i) {
            const std::size_t n = size_of(i);
            if (n) f(i, std::size_t{0}, n);
        }
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
        const std::size_t T = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t lo = total * t / T, hi = total * (t + 1) / T;
        // Local split point of global index x inside an array [s, s+n), rounded up to align.
        auto local = [align](std::size_t x, std::size_t s, std::size_t n) {
            std::size_t r = x <= s ? 0 : std::min(n, x - s);
            r = (r + align - 1) / align * align;
            return std::min(r, n);
        };
        std::size_t s = 0;
        for (std::size_t i = 0; i < count; ++i) {
            const std::size_t n = size_of(i);
            if (s >= hi) break;  // every later array starts past this thread's share
            const std::size_t b = local(lo, s, n), e = local(hi, s, n);
            if (b < e) f(i, b, e);
            s += n;
        }
    }
#endif
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
