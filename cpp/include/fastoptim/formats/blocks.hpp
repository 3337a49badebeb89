// Loading a run of elements of any format into float32 and storing float32 back through a
// format: the only place that knows how formats are laid out. Kernels work on float32
// chunks that fit in L1 (load -> update in float32 -> store), so every format reaches
// every optimizer, and each byte of DRAM is read and written once per step.
//
// Contracts: n elements starting at element `first` of the tensor (first is a multiple of
// kQ8Block for q8, whose absmax arrays are indexed by first / kQ8Block); stochastic
// rounding of element i draws rounding_bits(key, i), so results do not depend on how the
// tensor is split between threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastoptim/formats/bf16.hpp"
#include "fastoptim/formats/fp16.hpp"
#include "fastoptim/formats/qmap.hpp"
#include "fastoptim/formats/rng.hpp"
#include "fastoptim/formats/types.hpp"

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
#include <immintrin.h>
#define FASTOPTIM_BF16_INSTRUCTIONS 1
#endif

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

inline void bf16_load_run(float* __restrict d, const std::uint16_t* __restrict s, std::size_t n) {
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) d[i] = bf16_load(s[i]);
}

inline void f16_load_run(float* __restrict d, const std::uint16_t* __restrict s, std::size_t n) {
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) d[i] = f16_load(s[i]);
}

// Round to nearest even. With AVX-512-BF16 this is vcvtneps2bf16, which treats subnormal
// inputs as zero; elsewhere integer arithmetic, which keeps them (the only difference).
inline void bf16_store_nearest_run(std::uint16_t* __restrict d, const float* __restrict s,
                                   std::size_t n) {
#ifdef FASTOPTIM_BF16_INSTRUCTIONS
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(s + i));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), reinterpret_cast<const __m256i&>(h));
    }
    if (i < n) {  // the tail through the same instruction, masked
        const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1u);
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(k, s + i));
        _mm256_mask_storeu_epi16(d + i, k, reinterpret_cast<const __m256i&>(h));
    }
#else
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) d[i] = bf16_nearest(s[i]);
#endif
}

inline void bf16_store_stochastic_run(std::uint16_t* __restrict d, const float* __restrict s,
                                      std::size_t n, CounterKey key, std::size_t first) {
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) d[i] = bf16_stochastic(s[i], rounding_bits(key, first + i));
}

inline void f16_store_run(std::uint16_t* __restrict d, const float* __restrict s, std::size_t n) {
#pragma omp simd
    for (std::size_t i = 0; i < n; ++i) d[i] = f16_nearest(s[i]);
}

// A read-only input (gradient) as float32: the array itself when it is f32, else `tmp`.
inline const float* load_input(Format f, const void* base, std::size_t first, std::size_t n,
                               float* tmp) {
    switch (f) {
        case Format::bf16: bf16_load_run(tmp, static_cast<const std::uint16_t*>(base) + first, n); return tmp;
        case Format::f16: f16_load_run(tmp, static_cast<const std::uint16_t*>(base) + first, n); return tmp;
        default: return static_cast<const float*>(base) + first;
    }
}

// One updated buffer (parameter or state) of a chunk, in its format.
struct Buffer {
    void* base;
    float* absmax;       // q8 only
    const QCoder* coder; // q8 only
    Format format;
    Rounding rounding;
    bool is_signed;      // q8 only: signed or unsigned map
    CounterKey key;      // stochastic rounding only
};

// The chunk [first, first + n) of b as float32: the array itself when it is f32, else tmp.
inline float* load_buffer(const Buffer& b, std::size_t first, std::size_t n, float* tmp) {
    switch (b.format) {
        case Format::bf16: bf16_load_run(tmp, static_cast<const std::uint16_t*>(b.base) + first, n); return tmp;
        case Format::f16: f16_load_run(tmp, static_cast<const std::uint16_t*>(b.base) + first, n); return tmp;
        case Format::q8: {
            const std::uint8_t* c = static_cast<const std::uint8_t*>(b.base);
            for (std::size_t o = 0; o < n; o += kQ8Block) {
                const std::size_t len = n - o < kQ8Block ? n - o : kQ8Block;
                q8_load_block(tmp + o, c + first + o, b.absmax[(first + o) / kQ8Block], len, *b.coder);
            }
            return tmp;
        }
        default: return static_cast<float*>(b.base) + first;
    }
}

// Writes x [n] (the float32 result of load_buffer, updated) back into b's format; nothing
// to do for f32, where x is the array itself.
inline void store_buffer(const Buffer& b, std::size_t first, std::size_t n, const float* x) {
    switch (b.format) {
        case Format::bf16: {
            std::uint16_t* d = static_cast<std::uint16_t*>(b.base) + first;
            if (b.rounding == Rounding::stochastic) bf16_store_stochastic_run(d, x, n, b.key, first);
            else bf16_store_nearest_run(d, x, n);
            return;
        }
        case Format::f16: f16_store_run(static_cast<std::uint16_t*>(b.base) + first, x, n); return;
        case Format::q8: {
            std::uint8_t* c = static_cast<std::uint8_t*>(b.base);
            for (std::size_t o = 0; o < n; o += kQ8Block) {
                const std::size_t len = n - o < kQ8Block ? n - o : kQ8Block;
                float* am = b.absmax + (first + o) / kQ8Block;
                if (b.is_signed) q8_store_block<true>(c + first + o, am, x + o, len, *b.coder);
                else q8_store_block<false>(c + first + o, am, x + o, len, *b.coder);
            }
            return;
        }
        default: return;
    }
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
