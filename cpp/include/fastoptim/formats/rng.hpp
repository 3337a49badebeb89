// Counter-based random bits: the draw for element i of stream s is a pure function of
// (seed, s, i), so it depends on neither the thread count nor the SIMD target nor the order
// in which elements are visited. Used by dropout and by stochastic rounding.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastoptim {
namespace FASTOPTIM_KERNEL_NS {

// murmur3's 32-bit finalizer: a bijection with full avalanche.
inline std::uint32_t fmix32(std::uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

// splitmix64: turns (seed, stream) into well-mixed keys.
inline std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Two 32-bit keys of one stream of draws.
struct CounterKey {
    std::uint32_t k0, k1;
};

inline CounterKey counter_key(std::uint64_t seed, std::uint64_t stream) {
    const std::uint64_t key = splitmix64(splitmix64(seed) ^ stream);
    return CounterKey{static_cast<std::uint32_t>(key), static_cast<std::uint32_t>(key >> 32)};
}

// 32 random bits for element i: fmix32(fmix32(lo(i) ^ k0) ^ (hi(i) + k1)).
inline std::uint32_t counter_bits(CounterKey k, std::uint64_t i) {
    const std::uint32_t lo = static_cast<std::uint32_t>(i);
    const std::uint32_t hi = static_cast<std::uint32_t>(i >> 32);
    return fmix32(fmix32(lo ^ k.k0) ^ (hi + k.k1));
}

// 32 random bits for stochastic rounding of element i: one finalizer round,
// fmix32(lo(i) ^ k0 ^ hi(i) * 0x9E3779B9) ^ k1 (half the cost of counter_bits; rounding
// needs uniform, step-to-step independent bits, which the per-step key provides).
inline std::uint32_t rounding_bits(CounterKey k, std::uint64_t i) {
    const std::uint32_t lo = static_cast<std::uint32_t>(i);
    const std::uint32_t hi = static_cast<std::uint32_t>(i >> 32);
    return fmix32(lo ^ k.k0 ^ (hi * 0x9E3779B9u)) ^ k.k1;
}

// The key of a stochastic-rounding stream: (seed, step, buffer) -> key, where buffer names
// which array of a tensor is rounded (parameter, first moment, ...).
inline CounterKey rounding_key(std::uint64_t seed, std::int64_t step, std::uint32_t buffer) {
    return counter_key(splitmix64(seed) ^ static_cast<std::uint64_t>(step),
                       0xB16F0000ull | buffer);
}

}  // namespace FASTOPTIM_KERNEL_NS
}  // namespace fastoptim
