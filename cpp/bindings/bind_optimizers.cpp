// Python bindings of the optimizer kernels: sgd_step, adam_step, global_norm,
// clip_by_global_norm. Each validates everything first, then releases the GIL for the
// kernel (safe: the kernel only sees raw pointers into arrays that this frame keeps alive).
#include <cmath>
#include <string>
#include <vector>

#include "bindings/arrays.hpp"
#include "bindings/fastcall.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

void raise_if_invalid(const std::string& message) {
    if (!message.empty()) throw py::value_error(message);
}

template <class T>
void run_sgd(const ArrayList& p, const ArrayList& g, const ArrayList* buf, const SGDConfig& c) {
    std::vector<SGDTensor<T>> ts(p.size());
    for (std::size_t i = 0; i < ts.size(); ++i)
        ts[i] = SGDTensor<T>{p.data<T>(i), g.data<T>(i), buf ? buf->data<T>(i) : nullptr,
                             p.count(i)};
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().sgd;
    py::gil_scoped_release nogil;
    kernel(ts.data(), ts.size(), c, nt);
}

void sgd_step(py::handle params, py::handle grads, py::handle momentum_buffers, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov,
              bool maximize, bool first_step) {
    SGDConfig c{lr, momentum, dampening, weight_decay, nesterov, maximize, first_step};
    raise_if_invalid(validate(c));
    Gate gate;
    ArrayList p = gate.first(params, "params", true);
    ArrayList g = gate.like(grads, "grads", false);
    const bool need_buf = momentum != 0.0;
    if (need_buf && momentum_buffers.is_none())
        throw py::value_error("momentum_buffers are required when momentum != 0");
    ArrayList buf;
    if (!momentum_buffers.is_none()) buf = gate.like(momentum_buffers, "momentum_buffers", true);
    gate.check_no_overlap();
    const ArrayList* b = need_buf ? &buf : nullptr;
    if (gate.dtype() == DType::f32) run_sgd<float>(p, g, b, c);
    else run_sgd<double>(p, g, b, c);
}

template <class T>
void run_adam(const ArrayList& p, const ArrayList& g, const ArrayList& m, const ArrayList& v,
              const ArrayList* vmax, const AdamConfig& c) {
    std::vector<AdamTensor<T>> ts(p.size());
    for (std::size_t i = 0; i < ts.size(); ++i)
        ts[i] = AdamTensor<T>{p.data<T>(i), g.data<T>(i), m.data<T>(i), v.data<T>(i),
                              vmax ? vmax->data<T>(i) : nullptr, p.count(i)};
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().adam;
    py::gil_scoped_release nogil;
    kernel(ts.data(), ts.size(), c, nt);
}

void adam_step(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
               py::handle max_exp_avg_sqs, std::int64_t step, double lr, double beta1,
               double beta2, double eps, double weight_decay, bool decoupled_weight_decay,
               bool amsgrad, bool maximize) {
    AdamConfig c{lr, beta1, beta2, eps, weight_decay, step, decoupled_weight_decay, amsgrad,
                 maximize};
    raise_if_invalid(validate(c));
    Gate gate;
    ArrayList p = gate.first(params, "params", true);
    ArrayList g = gate.like(grads, "grads", false);
    ArrayList m = gate.like(exp_avgs, "exp_avgs", true);
    ArrayList v = gate.like(exp_avg_sqs, "exp_avg_sqs", true);
    if (amsgrad && max_exp_avg_sqs.is_none())
        throw py::value_error("max_exp_avg_sqs are required when amsgrad=True");
    ArrayList vmax;
    if (!max_exp_avg_sqs.is_none()) vmax = gate.like(max_exp_avg_sqs, "max_exp_avg_sqs", true);
    gate.check_no_overlap();
    const ArrayList* vm = amsgrad ? &vmax : nullptr;
    if (gate.dtype() == DType::f32) run_adam<float>(p, g, m, v, vm, c);
    else run_adam<double>(p, g, m, v, vm, c);
}

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

PyObject* py_sgd_step(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        static const char* const names[] = {"params",   "grads",        "momentum_buffers",
                                            "lr",       "momentum",     "dampening",
                                            "weight_decay", "nesterov", "maximize",
                                            "first_step"};
        PyObject* a[10];
        parse_args("sgd_step", names, 3, args, nargs, kwnames, a);
        sgd_step(required(a[0], "sgd_step", "params"), required(a[1], "sgd_step", "grads"),
                 a[2] ? py::handle(a[2]) : py::handle(Py_None),
                 to_double(required(a[3], "sgd_step", "lr"), 0.0, "lr"),
                 to_double(a[4], 0.0, "momentum"), to_double(a[5], 0.0, "dampening"),
                 to_double(a[6], 0.0, "weight_decay"), to_bool(a[7], false, "nesterov"),
                 to_bool(a[8], false, "maximize"), to_bool(a[9], false, "first_step"));
        Py_RETURN_NONE;
    });
}

PyObject* py_adam_step(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        static const char* const names[] = {
            "params", "grads",  "exp_avgs", "exp_avg_sqs",  "max_exp_avg_sqs",
            "step",   "lr",     "beta1",    "beta2",        "eps",
            "weight_decay", "decoupled_weight_decay", "amsgrad", "maximize"};
        PyObject* a[14];
        parse_args("adam_step", names, 5, args, nargs, kwnames, a);
        const char* f = "adam_step";
        adam_step(required(a[0], f, "params"), required(a[1], f, "grads"),
                  required(a[2], f, "exp_avgs"), required(a[3], f, "exp_avg_sqs"),
                  a[4] ? py::handle(a[4]) : py::handle(Py_None),
                  to_int64(required(a[5], f, "step"), "step"), to_double(a[6], 1e-3, "lr"),
                  to_double(a[7], 0.9, "beta1"), to_double(a[8], 0.999, "beta2"),
                  to_double(a[9], 1e-8, "eps"), to_double(a[10], 0.0, "weight_decay"),
                  to_bool(a[11], false, "decoupled_weight_decay"),
                  to_bool(a[12], false, "amsgrad"), to_bool(a[13], false, "maximize"));
        Py_RETURN_NONE;
    });
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
    // The two steps are METH_FASTCALL functions (see fastcall.hpp); the first docstring
    // line is the signature that inspect.signature() reads.
    static PyMethodDef defs[] = {
        {"sgd_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&py_sgd_step)),
         METH_FASTCALL | METH_KEYWORDS,
         "sgd_step(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0, "
         "weight_decay=0.0, nesterov=False, maximize=False, first_step=False)\n--\n\n"
         "One SGD step in place, with torch.optim.SGD's math, on one array or a list.\n\n"
         "params, grads, momentum_buffers: an ndarray or equal-length lists of ndarrays, all\n"
         "float32 or all float64, C-contiguous, shapes matching params. params and\n"
         "momentum_buffers are updated in place; grads are only read. momentum_buffers is\n"
         "required when momentum != 0; pass first_step=True on the first step to initialise\n"
         "them with the gradient (as torch does). Raises TypeError/ValueError, touching\n"
         "nothing, on any invalid array or hyperparameter."},
        {"adam_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&py_adam_step)),
         METH_FASTCALL | METH_KEYWORDS,
         "adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, "
         "lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0, "
         "decoupled_weight_decay=False, amsgrad=False, maximize=False)\n--\n\n"
         "One Adam (or AdamW) step in place, with torch.optim.Adam's math.\n\n"
         "step is the number of the step being taken (1 on the first call), an integer that\n"
         "drives the bias corrections. decoupled_weight_decay=True gives AdamW\n"
         "(p *= 1 - lr * weight_decay); otherwise weight_decay is L2 added to the gradient.\n"
         "max_exp_avg_sqs is required when amsgrad=True. Arrays as in sgd_step; exp_avgs,\n"
         "exp_avg_sqs (and max_exp_avg_sqs) are updated in place."},
        {nullptr, nullptr, 0, nullptr}};
    if (PyModule_AddFunctions(m.ptr(), defs) != 0) throw py::error_already_set();
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
