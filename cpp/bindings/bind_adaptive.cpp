// Python bindings of the adaptive optimizer kernels: rmsprop_step, adagrad_step,
// adamax_step, nadam_step, radam_step,
// adadelta_step, rprop_step, asgd_step, lion_step, ademamix_step. Each is one declaration that the generic registrar (optimizer_spec.hpp)
// turns into a METH_FASTCALL function: parse, validate the config, pass every array
// through the Gate, release the GIL for the kernel.
#include "bindings/optimizer_spec.hpp"

namespace fastoptim::bind {

namespace {

// torch.optim.RMSprop (kernels/adaptive.hpp).
struct RMSpropStep {
    using Config = RMSpropConfig;
    static constexpr const char* name = "rmsprop_step";
    static constexpr const char* summary =
        "One RMSprop step in place, with torch.optim.RMSprop's math.\n\n"
        "square_avgs (and momentum_buffers when momentum > 0, grad_avgs when centered) start\n"
        "at zero.";
    // bf16 / int8 state: rmsprop_format_step (bind_formats.cpp)
    static constexpr State states[] = {
        {"square_avgs", "square_avg", nullptr, kFormatsReduced, true},
        {"momentum_buffers", "momentum_buffer", "momentum", kFormatsReduced},
        {"grad_avgs", "grad_avg", "centered", kFormatsReduced}};
    static constexpr Hyper<Config> hypers[] = {
        {"lr", &Config::lr},           {"alpha", &Config::alpha},
        {"eps", &Config::eps},         {"weight_decay", &Config::weight_decay},
        {"momentum", &Config::momentum}, {"centered", &Config::centered},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.rmsprop; }
    template <class T>
    static RMSpropTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], s[2], n};
    }
};

// torch.optim.Adagrad (kernels/adaptive.hpp).
struct AdagradStep {
    using Config = AdagradConfig;
    static constexpr const char* name = "adagrad_step";
    static constexpr const char* summary =
        "One Adagrad step in place, with torch.optim.Adagrad's math.\n\n"
        "step is the number of the step being taken (1 on the first call); the step size is\n"
        "lr / (1 + (step - 1) * lr_decay). sums (torch's state 'sum', initialised to\n"
        "initial_accumulator_value) are updated in place.";
    // bf16 / int8 state: adagrad_format_step (bind_formats.cpp)
    static constexpr State states[] = {{"sums", "sum", nullptr, kFormatsReduced, true}};
    static constexpr Hyper<Config> hypers[] = {
        {"step", &Config::step, true}, {"lr", &Config::lr},
        {"lr_decay", &Config::lr_decay}, {"weight_decay", &Config::weight_decay},
        {"eps", &Config::eps},         {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.adagrad; }
    template <class T>
    static AdagradTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], n};
    }
};

// torch.optim.Adamax (kernels/adaptive.hpp).
struct AdamaxStep {
    using Config = AdamaxConfig;
    static constexpr const char* name = "adamax_step";
    static constexpr const char* summary =
        "One Adamax step in place, with torch.optim.Adamax's math.\n\n"
        "step is the number of the step being taken (1 on the first call); it drives the\n"
        "bias correction of exp_avgs. exp_infs (the infinity norm) start at zero.";
    // bf16 / int8 state: adamax_format_step (bind_formats.cpp)
    static constexpr State states[] = {{"exp_avgs", "exp_avg", nullptr, kFormatsReduced},
                                       {"exp_infs", "exp_inf", nullptr, kFormatsReduced, true}};
    static constexpr Hyper<Config> hypers[] = {
        {"step", &Config::step, true}, {"lr", &Config::lr},
        {"beta1", &Config::beta1},     {"beta2", &Config::beta2},
        {"eps", &Config::eps},         {"weight_decay", &Config::weight_decay},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.adamax; }
    template <class T>
    static AdamaxTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], n};
    }
};

// torch.optim.NAdam (kernels/adam_variants.hpp).
struct NAdamStep {
    using Config = NAdamConfig;
    static constexpr const char* name = "nadam_step";
    static constexpr const char* summary =
        "One NAdam step in place, with torch.optim.NAdam's math.\n\n"
        "step is the number of the step being taken (1 on the first call); mu_product is the\n"
        "product of the momentum schedule mu_1 ... mu_step including this step's (the caller\n"
        "keeps it, as torch keeps state['mu_product']).";
    // bf16 / int8 state: nadam_format_step / radam_format_step (bind_formats.cpp)
    static constexpr State states[] = {
        {"exp_avgs", "exp_avg", nullptr, kFormatsReduced},
        {"exp_avg_sqs", "exp_avg_sq", nullptr, kFormatsReduced, true}};
    static constexpr Hyper<Config> hypers[] = {
        {"step", &Config::step, true},
        {"mu_product", &Config::mu_product, true},
        {"lr", &Config::lr},
        {"beta1", &Config::beta1},
        {"beta2", &Config::beta2},
        {"eps", &Config::eps},
        {"weight_decay", &Config::weight_decay},
        {"momentum_decay", &Config::momentum_decay},
        {"decoupled_weight_decay", &Config::decoupled_weight_decay},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.nadam; }
    template <class T>
    static MomentsTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], n};
    }
};

// torch.optim.RAdam (kernels/adam_variants.hpp).
struct RAdamStep {
    using Config = RAdamConfig;
    static constexpr const char* name = "radam_step";
    static constexpr const char* summary =
        "One RAdam step in place, with torch.optim.RAdam's math.\n\n"
        "step is the number of the step being taken (1 on the first call); it decides whether\n"
        "the rectified adaptive step applies (rho_t > 5).";
    // bf16 / int8 state: nadam_format_step / radam_format_step (bind_formats.cpp)
    static constexpr State states[] = {
        {"exp_avgs", "exp_avg", nullptr, kFormatsReduced},
        {"exp_avg_sqs", "exp_avg_sq", nullptr, kFormatsReduced, true}};
    static constexpr Hyper<Config> hypers[] = {
        {"step", &Config::step, true},
        {"lr", &Config::lr},
        {"beta1", &Config::beta1},
        {"beta2", &Config::beta2},
        {"eps", &Config::eps},
        {"weight_decay", &Config::weight_decay},
        {"decoupled_weight_decay", &Config::decoupled_weight_decay},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.radam; }
    template <class T>
    static MomentsTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], n};
    }
};

// torch.optim.Adadelta (kernels/adaptive.hpp).
struct AdadeltaStep {
    using Config = AdadeltaConfig;
    static constexpr const char* name = "adadelta_step";
    static constexpr const char* summary =
        "One Adadelta step in place, with torch.optim.Adadelta's math.\n\n"
        "square_avgs and acc_deltas start at zero.";
    // bf16 / int8 state: adadelta_format_step (bind_formats.cpp)
    static constexpr State states[] = {
        {"square_avgs", "square_avg", nullptr, kFormatsReduced, true},
        {"acc_deltas", "acc_delta", nullptr, kFormatsReduced, true}};
    static constexpr Hyper<Config> hypers[] = {
        {"lr", &Config::lr},   {"rho", &Config::rho},
        {"eps", &Config::eps}, {"weight_decay", &Config::weight_decay},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.adadelta; }
    template <class T>
    static AdadeltaTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], n};
    }
};

// torch.optim.Rprop (kernels/adaptive.hpp).
struct RpropStep {
    using Config = RpropConfig;
    static constexpr const char* name = "rprop_step";
    static constexpr const char* summary =
        "One Rprop step in place, with torch.optim.Rprop's math.\n\n"
        "prevs (the previous gradients) start at zero and step_sizes at lr, as in torch.";
    static constexpr State states[] = {{"prevs", "prev"}, {"step_sizes", "step_size"}};
    static constexpr Hyper<Config> hypers[] = {
        {"etaminus", &Config::etaminus},           {"etaplus", &Config::etaplus},
        {"step_size_min", &Config::step_size_min}, {"step_size_max", &Config::step_size_max},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.rprop; }
    template <class T>
    static RpropTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], n};
    }
};

// torch.optim.ASGD (kernels/adaptive.hpp).
struct ASGDStep {
    using Config = ASGDConfig;
    static constexpr const char* name = "asgd_step";
    static constexpr const char* summary =
        "One ASGD step in place, with torch.optim.ASGD's math.\n\n"
        "eta and mu are the per-parameter step size and averaging weight of the previous\n"
        "step (torch's state['eta'], state['mu']; lr and 1 at the start). axs (the averaged\n"
        "parameters) start at zero.";
    static constexpr State states[] = {{"axs", "ax"}};
    static constexpr Hyper<Config> hypers[] = {
        {"eta", &Config::eta, true},           {"mu", &Config::mu, true},
        {"lambd", &Config::lambd},             {"weight_decay", &Config::weight_decay},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.asgd; }
    template <class T>
    static ASGDTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], n};
    }
};

// Lion, as lion-pytorch 0.2.5 (kernels/adaptive.hpp).
struct LionStep {
    using Config = LionConfig;
    static constexpr const char* name = "lion_step";
    static constexpr const char* summary =
        "One Lion step in place, with lion-pytorch's math (Chen et al. 2023).\n\n"
        "weight_decay is decoupled: p *= 1 - lr * weight_decay. exp_avgs start at zero.";
    // bf16 / int8 state: lion_format_step (bind_formats.cpp)
    static constexpr State states[] = {{"exp_avgs", "exp_avg", nullptr, kFormatsReduced}};
    static constexpr Hyper<Config> hypers[] = {
        {"lr", &Config::lr},
        {"beta1", &Config::beta1},
        {"beta2", &Config::beta2},
        {"weight_decay", &Config::weight_decay},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.lion; }
    template <class T>
    static LionTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], n};
    }
};

// AdEMAMix, as pytorch-optimizer 4.1.0 (kernels/adam_variants.hpp).
struct AdEMAMixStep {
    using Config = AdEMAMixConfig;
    static constexpr const char* name = "ademamix_step";
    static constexpr const char* summary =
        "One AdEMAMix step in place, with pytorch-optimizer's math (Pagliardini et al. 2024).\n\n"
        "step is the number of the step being taken (1 on the first call); t_alpha_beta3 > 0\n"
        "warms alpha and beta3 up over that many steps (0: no warm-up).";
    // bf16 / int8 state: ademamix_format_step (bind_formats.cpp)
    static constexpr State states[] = {
        {"exp_avgs", "exp_avg", nullptr, kFormatsReduced},
        {"exp_avg_sqs", "exp_avg_sq", nullptr, kFormatsReduced, true},
        {"exp_avg_slows", "exp_avg_slow", nullptr, kFormatsReduced}};
    static constexpr Hyper<Config> hypers[] = {
        {"step", &Config::step, true},
        {"lr", &Config::lr},
        {"beta1", &Config::beta1},
        {"beta2", &Config::beta2},
        {"beta3", &Config::beta3},
        {"alpha", &Config::alpha},
        {"t_alpha_beta3", &Config::t_alpha_beta3},
        {"eps", &Config::eps},
        {"weight_decay", &Config::weight_decay},
        {"weight_decouple", &Config::weight_decouple},
        {"fixed_decay", &Config::fixed_decay},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.ademamix; }
    template <class T>
    static AdEMAMixTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], s[2], n};
    }
};

}  // namespace

void bind_adaptive(py::module_& m) {
    register_optimizer<RMSpropStep>(m);
    register_optimizer<AdagradStep>(m);
    register_optimizer<AdamaxStep>(m);
    register_optimizer<NAdamStep>(m);
    register_optimizer<RAdamStep>(m);
    register_optimizer<AdadeltaStep>(m);
    register_optimizer<RpropStep>(m);
    register_optimizer<ASGDStep>(m);
    register_optimizer<LionStep>(m);
    register_optimizer<AdEMAMixStep>(m);
}

}  // namespace fastoptim::bind
