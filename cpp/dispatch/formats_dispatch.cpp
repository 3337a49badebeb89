// Chooses the format kernels that match the active SIMD target.
#include <atomic>
#include <cstring>

#include "dispatch/formats_table.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::dispatch {

namespace {
std::atomic<bool> g_bf16_allowed{true};
}

bool cpu_has_avx512bf16() {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    // the variant also uses AVX-512-VBMI (8-bit decoding): every CPU with AVX-512-BF16
    // but Cooper Lake has it; there the plain avx512 variant runs
    return cpu_supports("avx512") && __builtin_cpu_supports("avx512bf16") &&
           __builtin_cpu_supports("avx512vbmi");
#else
    return false;
#endif
}

bool set_bf16_instructions(bool allowed) { return g_bf16_allowed.exchange(allowed); }

const FormatOps& format_active() {
    const char* name = active().name;
#if defined(__x86_64__) || defined(_M_X64)
    if (std::strcmp(name, "avx512") == 0) {
        static const bool has = cpu_has_avx512bf16();
        return has && g_bf16_allowed.load() ? *format_table_avx512bf16() : *format_table_avx512();
    }
    if (std::strcmp(name, "avx2") == 0) return *format_table_avx2();
#endif
    (void)name;
    return *format_table_scalar();
}

}  // namespace fastoptim::dispatch
