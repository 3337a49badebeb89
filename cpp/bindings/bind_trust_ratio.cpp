// Python bindings of the trust-ratio optimizer kernels: lamb_step and lars_step, one
// declaration each for the generic registrar (optimizer_spec.hpp).
#include "bindings/optimizer_spec.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

// pytorch-optimizer 4.1.0's Lamb (kernels/trust_ratio.hpp).
struct LambStep {
    using Config = LambConfig;
    static constexpr const char* name = "lamb_step";
    static constexpr const char* summary =
        "One LAMB step in place, with pytorch-optimizer's math (You et al. 2020).\n\n"
        "Two native passes per tensor (moments and norms, then the trust-ratio update; one\n"
        "with adam=True). step is the number of the step being taken (1 on the first call).";
    static constexpr State states[] = {{"exp_avgs", "exp_avg"}, {"exp_avg_sqs", "exp_avg_sq"}};
    static constexpr Hyper<Config> hypers[] = {
        {"step", &Config::step, true},
        {"lr", &Config::lr},
        {"beta1", &Config::beta1},
        {"beta2", &Config::beta2},
        {"eps", &Config::eps},
        {"weight_decay", &Config::weight_decay},
        {"weight_decouple", &Config::weight_decouple},
        {"fixed_decay", &Config::fixed_decay},
        {"grad_averaging", &Config::grad_averaging},
        {"adam", &Config::adam},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.lamb; }
    template <class T>
    static MomentsTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], n};
    }
};

// pytorch-optimizer 4.1.0's LARS (kernels/trust_ratio.hpp).
struct LarsStep {
    using Config = LarsConfig;
    static constexpr const char* name = "lars_step";
    static constexpr const char* summary =
        "One LARS step in place, with pytorch-optimizer's math (You et al. 2017).\n\n"
        "trust=True scales each tensor's (decayed) gradient by its trust ratio (pass it for\n"
        "parameters of more than one dimension, as pytorch-optimizer does); trust=False is\n"
        "plain SGD momentum without decay. Two native passes with trust, else one.\n"
        "momentum_buffers (starting at zero) are required when momentum != 0.";
    static constexpr State states[] = {{"momentum_buffers", "momentum_buffer", "momentum"}};
    static constexpr Hyper<Config> hypers[] = {
        {"lr", &Config::lr},
        {"weight_decay", &Config::weight_decay},
        {"momentum", &Config::momentum},
        {"dampening", &Config::dampening},
        {"trust_coefficient", &Config::trust_coefficient},
        {"nesterov", &Config::nesterov},
        {"maximize", &Config::maximize},
        {"trust", &Config::trust},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.lars; }
    template <class T>
    static SGDTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], n};
    }
};

}  // namespace

void bind_trust_ratio(py::module_& m) {
    register_optimizer<LambStep>(m);
    register_optimizer<LarsStep>(m);
}

}  // namespace fastoptim::bind
