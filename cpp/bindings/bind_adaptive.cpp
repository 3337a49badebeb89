// Python bindings of the adaptive optimizer kernels: rmsprop_step, adagrad_step.
// Same shape as bind_optimizers.cpp: parse with fastcall, validate the config, pass every
// array through the Gate, then release the GIL for the kernel (safe: the kernel only sees
// raw pointers into buffers that the Gate's lists keep alive).
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

const ArrayList* optional(const ArrayList& l, bool used) { return used ? &l : nullptr; }

template <class T>
void run_rmsprop(const ArrayList& p, const ArrayList& g, const ArrayList& sq,
                 const ArrayList* buf, const ArrayList* gavg, const RMSpropConfig& c) {
    std::vector<RMSpropTensor<T>> ts(p.size());
    for (std::size_t i = 0; i < ts.size(); ++i)
        ts[i] = RMSpropTensor<T>{p.data<T>(i), g.data<T>(i), sq.data<T>(i),
                                 buf ? buf->data<T>(i) : nullptr,
                                 gavg ? gavg->data<T>(i) : nullptr, p.count(i)};
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().rmsprop;
    py::gil_scoped_release nogil;
    kernel(ts.data(), ts.size(), c, nt);
}

PyObject* py_rmsprop_step(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                          PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        static const char* const names[] = {
            "params", "grads",    "square_avgs", "momentum_buffers", "grad_avgs", "lr",
            "alpha",  "eps",      "weight_decay", "momentum",        "centered",  "maximize"};
        PyObject* a[12];
        const char* f = "rmsprop_step";
        parse_args(f, names, 5, args, nargs, kwnames, a);
        RMSpropConfig c{to_double(a[5], 1e-2, "lr"),         to_double(a[6], 0.99, "alpha"),
                        to_double(a[7], 1e-8, "eps"),        to_double(a[8], 0.0, "weight_decay"),
                        to_double(a[9], 0.0, "momentum"),    to_bool(a[10], false, "centered"),
                        to_bool(a[11], false, "maximize")};
        raise_if_invalid(validate(c));
        PyObject* bufs = none_to_null(a[3]);
        PyObject* gavgs = none_to_null(a[4]);
        const bool need_buf = c.momentum > 0.0;
        if (need_buf && !bufs)
            throw py::value_error("momentum_buffers are required when momentum > 0");
        if (c.centered && !gavgs)
            throw py::value_error("grad_avgs are required when centered=True");
        Gate gate;
        ArrayList p = gate.first(required(a[0], f, "params"), "params", true);
        ArrayList g = gate.like(required(a[1], f, "grads"), "grads", false);
        ArrayList sq = gate.like(required(a[2], f, "square_avgs"), "square_avgs", true);
        ArrayList buf, gavg;
        if (bufs) buf = gate.like(bufs, "momentum_buffers", true);
        if (gavgs) gavg = gate.like(gavgs, "grad_avgs", true);
        gate.check_no_overlap();
        const ArrayList* b = optional(buf, need_buf);
        const ArrayList* ga = optional(gavg, c.centered);
        if (gate.dtype() == DType::f32) run_rmsprop<float>(p, g, sq, b, ga, c);
        else run_rmsprop<double>(p, g, sq, b, ga, c);
        Py_RETURN_NONE;
    });
}

template <class T>
void run_adagrad(const ArrayList& p, const ArrayList& g, const ArrayList& sum,
                 const AdagradConfig& c) {
    std::vector<AdagradTensor<T>> ts(p.size());
    for (std::size_t i = 0; i < ts.size(); ++i)
        ts[i] = AdagradTensor<T>{p.data<T>(i), g.data<T>(i), sum.data<T>(i), p.count(i)};
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().adagrad;
    py::gil_scoped_release nogil;
    kernel(ts.data(), ts.size(), c, nt);
}

PyObject* py_adagrad_step(PyObject*, PyObject* const* args, Py_ssize_t nargs,
                          PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        static const char* const names[] = {"params", "grads",        "sums", "step",
                                            "lr",     "lr_decay",     "weight_decay",
                                            "eps",    "maximize"};
        PyObject* a[9];
        const char* f = "adagrad_step";
        parse_args(f, names, 3, args, nargs, kwnames, a);
        AdagradConfig c{to_double(a[4], 1e-2, "lr"),
                        to_double(a[5], 0.0, "lr_decay"),
                        to_double(a[6], 0.0, "weight_decay"),
                        to_double(a[7], 1e-10, "eps"),
                        to_int64(required(a[3], f, "step"), "step"),
                        to_bool(a[8], false, "maximize")};
        raise_if_invalid(validate(c));
        Gate gate;
        ArrayList p = gate.first(required(a[0], f, "params"), "params", true);
        ArrayList g = gate.like(required(a[1], f, "grads"), "grads", false);
        ArrayList s = gate.like(required(a[2], f, "sums"), "sums", true);
        gate.check_no_overlap();
        if (gate.dtype() == DType::f32) run_adagrad<float>(p, g, s, c);
        else run_adagrad<double>(p, g, s, c);
        Py_RETURN_NONE;
    });
}

}  // namespace

void bind_adaptive(py::module_& m) {
    static PyMethodDef defs[] = {
        {"rmsprop_step",
         reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&py_rmsprop_step)),
         METH_FASTCALL | METH_KEYWORDS,
         "rmsprop_step(params, grads, square_avgs, momentum_buffers=None, grad_avgs=None, *, "
         "lr=0.01, alpha=0.99, eps=1e-08, weight_decay=0.0, momentum=0.0, centered=False, "
         "maximize=False)\n--\n\n"
         "One RMSprop step in place, with torch.optim.RMSprop's math.\n\n"
         "params, grads and the state lists: an array/tensor or equal-length lists of them,\n"
         "all float32 or all float64, contiguous, shapes matching params (numpy arrays or\n"
         "dense CPU torch tensors, never copied). square_avgs (and momentum_buffers when\n"
         "momentum > 0, grad_avgs when centered) start at zero and are updated in place;\n"
         "grads are only read. Raises TypeError/ValueError, touching nothing, on any invalid\n"
         "array or hyperparameter."},
        {"adagrad_step",
         reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&py_adagrad_step)),
         METH_FASTCALL | METH_KEYWORDS,
         "adagrad_step(params, grads, sums, *, step, lr=0.01, lr_decay=0.0, weight_decay=0.0, "
         "eps=1e-10, maximize=False)\n--\n\n"
         "One Adagrad step in place, with torch.optim.Adagrad's math.\n\n"
         "step is the number of the step being taken (1 on the first call); the step size is\n"
         "lr / (1 + (step - 1) * lr_decay). sums (torch's state 'sum', initialised to\n"
         "initial_accumulator_value) are updated in place. Arrays as in rmsprop_step."},
        {nullptr, nullptr, 0, nullptr}};
    if (PyModule_AddFunctions(m.ptr(), defs) != 0) throw py::error_already_set();
}

}  // namespace fastoptim::bind
