// The dispatch table: one set of kernel pointers per compiled SIMD target.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "fastoptim/config.hpp"
#include "fastoptim/nn_config.hpp"

namespace fastoptim::dispatch {

// Kernels for one element type T. kernels/target.cpp fills each member by name.
template <class T>
struct Ops {
    void (*sgd)(const SGDTensor<T>*, std::size_t, const SGDConfig&, int);
    void (*adam)(const AdamTensor<T>*, std::size_t, const AdamConfig&, int);
    double (*sumsq)(const T* const*, const std::size_t*, std::size_t, int);
    void (*scale)(T* const*, const std::size_t*, std::size_t, T, int);
    void (*stream)(T* const*, int, const T*, std::size_t, int, std::size_t);  // roofline
    void (*rmsprop)(const RMSpropTensor<T>*, std::size_t, const RMSpropConfig&, int);
    void (*adagrad)(const AdagradTensor<T>*, std::size_t, const AdagradConfig&, int);
    void (*adamax)(const AdamaxTensor<T>*, std::size_t, const AdamaxConfig&, int);
    void (*nadam)(const MomentsTensor<T>*, std::size_t, const NAdamConfig&, int);
    void (*radam)(const MomentsTensor<T>*, std::size_t, const RAdamConfig&, int);
    void (*adadelta)(const AdadeltaTensor<T>*, std::size_t, const AdadeltaConfig&, int);
    void (*rprop)(const RpropTensor<T>*, std::size_t, const RpropConfig&, int);
    void (*asgd)(const ASGDTensor<T>*, std::size_t, const ASGDConfig&, int);
    void (*lion)(const LionTensor<T>*, std::size_t, const LionConfig&, int);
    void (*ademamix)(const AdEMAMixTensor<T>*, std::size_t, const AdEMAMixConfig&, int);
    // non-elementwise optimizers (kernels/factored.hpp)
    void (*adafactor)(const AdafactorTensor<T>*, std::size_t, const AdafactorConfig&, int);
    void (*muon_momentum)(const MuonTensor<T>*, std::size_t, const MuonConfig&, int);
    void (*muon_update)(const MuonUpdateTensor<T>*, std::size_t, const MuonConfig&, int);
    void (*sparse_adam)(T*, T*, T*, const std::int64_t*, const T*, std::size_t, std::size_t,
                        const SparseAdamConfig&, int);
    // Schedule-Free (kernels/schedulefree.hpp): the steps and the y <-> x lerp
    void (*schedulefree_adamw)(const ScheduleFreeAdamWTensor<T>*, std::size_t,
                               const ScheduleFreeAdamWConfig&, int);
    void (*schedulefree_sgd)(const ScheduleFreeSGDTensor<T>*, std::size_t,
                             const ScheduleFreeSGDConfig&, int);
    void (*lerp)(T* const*, const T* const*, const std::size_t*, std::size_t, double, int);
    // trust-ratio optimizers (kernels/trust_ratio.hpp)
    void (*lamb)(const MomentsTensor<T>*, std::size_t, const LambConfig&, int);
    void (*lars)(const SGDTensor<T>*, std::size_t, const LarsConfig&, int);
    // model toolkit (kernels/losses.hpp, activations.hpp, regularizers.hpp)
    double (*point_loss)(T*, const T*, const T*, std::size_t, const PointLossConfig&, int);
    double (*softmax_xent)(T*, const T*, const std::int64_t*, const T*, const T*, std::size_t,
                           std::size_t, const XentConfig&, int);
    void (*bias_act_forward)(T*, T*, const T*, std::size_t, std::size_t, const ActConfig&, int);
    void (*act_backward)(T*, const T*, const T*, const T*, T*, std::size_t, std::size_t,
                         const ActConfig&, bool, int);
    double (*penalty)(T*, const T*, std::size_t, double, double, int);
    void (*dropout)(T*, T*, const T*, std::size_t, double, std::uint64_t, std::uint64_t,
                    std::uint64_t, int);
};

struct KernelTable {
    const char* name;
    Ops<float> f32;
    Ops<double> f64;

    template <class T>
    const Ops<T>& ops() const {
        if constexpr (std::is_same_v<T, float>) return f32;
        else return f64;
    }
};

// Defined once per target in kernels/target.cpp (FASTOPTIM_TARGET_LIST comes from CMake).
#ifdef FASTOPTIM_TARGET_LIST
#define X(t) const KernelTable* table_##t();
FASTOPTIM_TARGET_LIST
#undef X
#endif

// The active table (chosen at import, overridable by FASTOPTIM_SIMD or set_target).
const KernelTable& active();
// Names of the compiled targets, best last, and whether this CPU can run each.
std::vector<std::string> compiled_targets();
bool cpu_supports(const std::string& name);
// Switches the active target; throws std::invalid_argument / std::runtime_error.
void set_target(const std::string& name);
// Picks the target at import: FASTOPTIM_SIMD if set (error if unsupported), else the best.
void init_from_environment();
// Makes a child created by fork() run the kernels serially (see dispatch.cpp).
void install_fork_guard();

int num_threads();
void set_num_threads(int n);
bool have_openmp();

}  // namespace fastoptim::dispatch
