// CPU detection and the choice of the active kernel table.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch/table.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(_OPENMP) && defined(__unix__)
#include <pthread.h>
#endif

namespace fastoptim::dispatch {

namespace {

struct Entry {
    const char* name;
    const KernelTable* (*table)();
};

// Compiled targets, worst first (the order of FASTOPTIM_TARGET_LIST).
const std::vector<Entry>& entries() {
#define X(t) Entry{#t, &table_##t},
    static const std::vector<Entry> e{FASTOPTIM_TARGET_LIST};
#undef X
    return e;
}

const KernelTable* g_active = nullptr;

// Set in a child created by fork(). GNU libgomp keeps its thread pool across fork() but
// not the threads: the child's first parallel region waits forever for workers that do
// not exist (reproduced by tests/test_threads_fork.py). So a forked child runs the
// kernels serially, whatever its OpenMP thread setting says.
bool g_forked_child = false;

#if defined(_OPENMP) && defined(__unix__)
extern "C" void mark_forked_child() { g_forked_child = true; }
#endif

}  // namespace

bool cpu_supports(const std::string& name) {
    if (name == "scalar") return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (name == "avx2")
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("bmi2");
    if (name == "avx512")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return false;
}

std::vector<std::string> compiled_targets() {
    std::vector<std::string> out;
    for (const Entry& e : entries()) out.emplace_back(e.name);
    return out;
}

void set_target(const std::string& name) {
    for (const Entry& e : entries()) {
        if (name != e.name) continue;
        if (!cpu_supports(name))
            throw std::runtime_error("SIMD target '" + name +
                                     "' is compiled in but this CPU does not support it");
        g_active = e.table();
        return;
    }
    std::string known;
    for (const Entry& e : entries()) known += (known.empty() ? "" : ", ") + std::string(e.name);
    throw std::invalid_argument("unknown SIMD target '" + name + "'; compiled targets: " + known);
}

void init_from_environment() {
    const char* forced = std::getenv("FASTOPTIM_SIMD");
    if (forced && *forced) {
        set_target(forced);
        return;
    }
    const std::vector<Entry>& e = entries();
    for (auto it = e.rbegin(); it != e.rend(); ++it) {
        if (cpu_supports(it->name)) {
            g_active = it->table();
            return;
        }
    }
}

const KernelTable& active() { return *g_active; }

bool have_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

void install_fork_guard() {
#if defined(_OPENMP) && defined(__unix__)
    static const bool installed = pthread_atfork(nullptr, nullptr, &mark_forked_child) == 0;
    if (!installed) throw std::runtime_error("pthread_atfork failed");
#endif
}

// Threads follow OpenMP's own setting (OMP_NUM_THREADS, omp_set_num_threads), so
// threadpoolctl's limits apply to fastoptim as to any OpenMP library; 1 in a forked child.
int num_threads() {
#ifdef _OPENMP
    return g_forked_child ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

void set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("n must be >= 1, got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

}  // namespace fastoptim::dispatch
