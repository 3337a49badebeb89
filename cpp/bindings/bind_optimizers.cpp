// Python bindings of the optimizer kernels: sgd_step and adam_step (declared here, bound by
// the generic registrar in optimizer_spec.hpp), global_norm, clip_by_global_norm. Each
// validates everything first, then releases the GIL for the kernel (safe: the kernel only
// sees raw pointers into arrays that this frame keeps alive).
#include <cmath>
#include <string>
#include <vector>

#include "bindings/arrays.hpp"
#include "bindings/fastcall.hpp"
#include "bindings/optimizer_spec.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

// torch.optim.SGD (kernels/optimizers.hpp).
struct SGDStep {
    using Config = SGDConfig;
    static constexpr const char* name = "sgd_step";
    static constexpr const char* summary =
        "One SGD step in place, with torch.optim.SGD's math, on one array or a list.\n\n"
        "momentum_buffers is required when momentum != 0; pass first_step=True on the first\n"
        "step to initialise them with the gradient (as torch does).";
    // bf16 / int8 state: sgd_format_step (bind_formats.cpp)
    static constexpr State states[] = {
        {"momentum_buffers", "momentum_buffer", "momentum", kFormatsReduced}};
    static constexpr Hyper<Config> hypers[] = {
        {"lr", &Config::lr, true},          {"momentum", &Config::momentum},
        {"dampening", &Config::dampening},  {"weight_decay", &Config::weight_decay},
        {"nesterov", &Config::nesterov},    {"maximize", &Config::maximize},
        {"first_step", &Config::first_step}, {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.sgd; }
    template <class T>
    static SGDTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], n};
    }
};

// torch.optim.Adam / AdamW (kernels/optimizers.hpp).
struct AdamStep {
    using Config = AdamConfig;
    static constexpr const char* name = "adam_step";
    static constexpr const char* summary =
        "One Adam (or AdamW) step in place, with torch.optim.Adam's math.\n\n"
        "step is the number of the step being taken (1 on the first call), an integer that\n"
        "drives the bias corrections. decoupled_weight_decay=True gives AdamW\n"
        "(p *= 1 - lr * weight_decay); otherwise weight_decay is L2 added to the gradient.\n"
        "max_exp_avg_sqs is required when amsgrad=True.";
    // bf16 / int8 state: adam_format_step (bind_formats.cpp)
    static constexpr State states[] = {
        {"exp_avgs", "exp_avg", nullptr, kFormatsReduced},
        {"exp_avg_sqs", "exp_avg_sq", nullptr, kFormatsReduced, true},
        {"max_exp_avg_sqs", "max_exp_avg_sq", "amsgrad", kFormatsReduced, true}};
    static constexpr Hyper<Config> hypers[] = {
        {"step", &Config::step, true},
        {"lr", &Config::lr},
        {"beta1", &Config::beta1},
        {"beta2", &Config::beta2},
        {"eps", &Config::eps},
        {"weight_decay", &Config::weight_decay},
        {"decoupled_weight_decay", &Config::decoupled_weight_decay},
        {"amsgrad", &Config::amsgrad},
        {"maximize", &Config::maximize},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.adam; }
    template <class T>
    static AdamTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], s[2], n};
    }
};

template <class T>
double run_sumsq(const ArrayList& a) {
    std::vector<const T*> ptrs(a.size());
    std::vector<std::size_t> sizes(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        ptrs[i] = a.data<T>(i);
        sizes[i] = a.count(i);
    }
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().sumsq;
    py::gil_scoped_release nogil;
    return kernel(ptrs.data(), sizes.data(), ptrs.size(), nt);
}

double sumsq_of(const ArrayList& a, const Gate& gate) {
    if (a.size() == 0) return 0.0;
    return gate.dtype() == DType::f32 ? run_sumsq<float>(a) : run_sumsq<double>(a);
}

double global_norm(py::handle arrays) {
    Gate gate;
    ArrayList a = gate.first(arrays, "arrays", false);
    return std::sqrt(sumsq_of(a, gate));
}

template <class T>
void run_scale(const ArrayList& a, T scale) {
    std::vector<T*> ptrs(a.size());
    std::vector<std::size_t> sizes(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        ptrs[i] = a.data<T>(i);
        sizes[i] = a.count(i);
    }
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().scale;
    py::gil_scoped_release nogil;
    kernel(ptrs.data(), sizes.data(), ptrs.size(), scale, nt);
}

double clip_by_global_norm(py::handle grads, double max_norm, bool error_if_nonfinite) {
    check_hyper(max_norm, "max_norm");
    Gate gate;
    ArrayList g = gate.first(grads, "grads", true);
    gate.check_no_overlap();
    const double norm = std::sqrt(sumsq_of(g, gate));
    if (!std::isfinite(norm)) {
        if (error_if_nonfinite)
            throw py::value_error("the global norm of grads is " + std::string(py::str(py::float_(norm))) +
                                  "; gradients were left unchanged");
        return norm;  // policy: leave the gradients untouched, report the norm
    }
    const double coef = max_norm / (norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
    if (coef < 1.0 && g.size() > 0) {
        if (gate.dtype() == DType::f32) run_scale<float>(g, static_cast<float>(coef));
        else run_scale<double>(g, coef);
    }
    return norm;
}

template <class T>
void run_stream(const std::vector<ArrayList>& outs, const ArrayList& in,
                std::size_t min_per_thread) {
    T* ptrs[3];
    for (std::size_t i = 0; i < outs.size(); ++i) ptrs[i] = outs[i].data<T>(0);
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().stream;
    py::gil_scoped_release nogil;
    kernel(ptrs, static_cast<int>(outs.size()), in.data<T>(0), in.count(0), nt, min_per_thread);
}

// Roofline reference for bench/: outs[j] += x, moving the bytes of an update kernel.
void roofline_update(py::list outs, py::handle x, std::size_t min_per_thread) {
    static const char* const names[] = {"outs[0]", "outs[1]", "outs[2]"};
    if (outs.size() < 1 || outs.size() > 3)
        throw py::value_error("outs must be a list of 1 to 3 arrays");
    Gate gate;
    ArrayList in = gate.first(x, "x", false);
    if (!in.single) throw py::type_error("x must be a numpy.ndarray");
    std::vector<ArrayList> o;
    for (std::size_t j = 0; j < outs.size(); ++j) o.push_back(gate.like(outs[j], names[j], true));
    gate.check_no_overlap();
    if (gate.dtype() == DType::f32) run_stream<float>(o, in, min_per_thread);
    else run_stream<double>(o, in, min_per_thread);
}

}  // namespace

void bind_optimizers(py::module_& m) {
    using namespace pybind11::literals;
    register_optimizer<SGDStep>(m);
    register_optimizer<AdamStep>(m);
    m.def("roofline_update", &roofline_update, "outs"_a, "x"_a, "min_per_thread"_a = 32768,
          "Benchmark reference: outs[j] += x in one pass (moves the bytes of an update).");
    m.def("global_norm", &global_norm, "arrays"_a,
          R"doc(The L2 norm of all elements of an array or a list of arrays, accumulated in
float64 with a fixed chunking: the same bits for any thread count.)doc");
    m.def("clip_by_global_norm", &clip_by_global_norm, "grads"_a, "max_norm"_a, py::kw_only(),
          "error_if_nonfinite"_a = false,
          R"doc(Scales grads in place so that their global L2 norm is at most max_norm
(factor max_norm / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_) and returns the norm
before clipping. Non-finite norm (a NaN or inf gradient): the gradients are left unchanged
and the norm is returned, so the caller can skip the step; with error_if_nonfinite=True a
ValueError is raised instead.)doc");
}

}  // namespace fastoptim::bind
