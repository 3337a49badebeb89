// Python bindings of the Schedule-Free kernels: schedulefree_adamw_step and
// schedulefree_sgd_step (declarations for the generic registrar, optimizer_spec.hpp), and
// lerp_, the in-place multi-tensor lerp that train()/eval() use to move the parameters
// between the y and x points.
#include <cmath>
#include <string>
#include <vector>

#include "bindings/arrays.hpp"
#include "bindings/optimizer_spec.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

// schedulefree 1.4.1's AdamWScheduleFree.step (kernels/schedulefree.hpp).
struct ScheduleFreeAdamWStep {
    using Config = ScheduleFreeAdamWConfig;
    static constexpr const char* name = "schedulefree_adamw_step";
    static constexpr const char* summary =
        "One Schedule-Free AdamW step in place, with schedulefree's math (Defazio et al. 2024).\n\n"
        "params hold y; zs start as copies of the parameters, exp_avg_sqs at zero. lr is the\n"
        "scheduled (warmed-up) rate, ckp1 this step's averaging weight and bias_correction2\n"
        "1 - beta2^(k+1), computed by the caller from the group's k, lr_max and weight_sum.";
    static constexpr State states[] = {{"zs", "z"}, {"exp_avg_sqs", "exp_avg_sq"}};
    static constexpr Hyper<Config> hypers[] = {
        {"lr", &Config::lr},
        {"beta1", &Config::beta1},
        {"beta2", &Config::beta2},
        {"eps", &Config::eps},
        {"weight_decay", &Config::weight_decay},
        {"ckp1", &Config::ckp1, true},
        {"bias_correction2", &Config::bias_correction2, true},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.schedulefree_adamw; }
    template <class T>
    static ScheduleFreeAdamWTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], s[1], n};
    }
};

// schedulefree 1.4.1's SGDScheduleFree.step (kernels/schedulefree.hpp).
struct ScheduleFreeSGDStep {
    using Config = ScheduleFreeSGDConfig;
    static constexpr const char* name = "schedulefree_sgd_step";
    static constexpr const char* summary =
        "One Schedule-Free SGD step in place, with schedulefree's math (Defazio et al. 2024).\n\n"
        "params hold y; zs start as copies of the parameters. lr is the scheduled rate and\n"
        "ckp1 this step's averaging weight, computed by the caller from the group's state.";
    static constexpr State states[] = {{"zs", "z"}};
    static constexpr Hyper<Config> hypers[] = {
        {"lr", &Config::lr},
        {"momentum", &Config::momentum},
        {"weight_decay", &Config::weight_decay},
        {"ckp1", &Config::ckp1, true},
        {"grad_scale", &Config::grad_scale}};
    template <class T>
    static auto kernel(const dispatch::Ops<T>& o) { return o.schedulefree_sgd; }
    template <class T>
    static ScheduleFreeSGDTensor<T> tensor(T* p, const T* g, T* const* s, std::size_t n) {
        return {p, g, s[0], n};
    }
};

template <class T>
void run_lerp(const ArrayList& a, const ArrayList& b, double w) {
    std::vector<T*> as(a.size());
    std::vector<const T*> bs(a.size());
    std::vector<std::size_t> ns(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        as[i] = a.data<T>(i);
        bs[i] = b.data<T>(i);
        ns[i] = a.count(i);
    }
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().lerp;
    // Safe: raw pointers into arrays that the ArrayLists keep alive.
    py::gil_scoped_release nogil;
    kernel(as.data(), bs.data(), ns.data(), as.size(), w, nt);
}

void lerp_(py::handle arrays, py::handle ends, double weight) {
    if (!std::isfinite(weight))
        throw py::value_error("weight must be a finite number, got " +
                              std::string(py::str(py::float_(weight))));
    Gate gate;
    ArrayList a = gate.first(arrays, "arrays", true);
    ArrayList b = gate.like(ends, "ends", false);
    gate.check_no_overlap();
    if (a.size() == 0) return;
    if (gate.dtype() == DType::f32) run_lerp<float>(a, b, weight);
    else run_lerp<double>(a, b, weight);
}

}  // namespace

void bind_schedulefree(py::module_& m) {
    using namespace pybind11::literals;
    register_optimizer<ScheduleFreeAdamWStep>(m);
    register_optimizer<ScheduleFreeSGDStep>(m);
    m.def("lerp_", &lerp_, "arrays"_a, "ends"_a, py::kw_only(), "weight"_a,
          R"doc(arrays[i] = torch.lerp(arrays[i], ends[i], weight) in place, for an array or
equal-length lists (torch's formula: a + w (b - a) when |w| < 0.5, else b - (b - a)(1 - w)).
ends are only read. Raises TypeError/ValueError, touching nothing, on any invalid input.)doc");
}

}  // namespace fastoptim::bind
