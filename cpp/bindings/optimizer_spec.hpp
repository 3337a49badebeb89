// The generic registrar of optimizer steps: one declaration per kernel -> one Python function.
//
// An optimizer's binding is a small struct (see bind_optimizers.cpp) that names its kernel
// function, its state buffers (argument name, torch state key, the hyperparameter that
// switches an optional one on, the storage formats the kernel accepts) and its
// hyperparameters (argument name -> member of the config struct). Everything else comes
// from here: the METH_FASTCALL entry point (keyword matching against interned names, scalar
// conversion with the C API, errors naming the argument), the checks (config validate(),
// then every array through the Gate), the float32/float64 switch, the GIL release, the
// docstring with its signature line, and the entry in `_core.kernel_specs` that the Python
// spec (fastoptim/spec.py) reads. Defaults are the config struct's member initializers:
// they are written once, in config.hpp, and C++ and Python callers get the same ones.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/arrays.hpp"
#include "bindings/fastcall.hpp"
#include "dispatch/table.hpp"

namespace fastoptim::bind {

inline void raise_if_invalid(const std::string& message) {
    if (!message.empty()) throw py::value_error(message);
}

// Storage formats a state buffer accepts (a bit set). `param` is the parameter's own dtype
// (float32 or float64), taken by the kernel itself; `bf16` and `int8` (8-bit blockwise
// codes with a float32 absmax per 256 elements) are taken by the optimizer's format kernel
// (bind_formats.cpp), which also takes float32 state.
enum Format : unsigned { kFormatParam = 1u, kFormatBf16 = 2u, kFormatInt8 = 4u };
constexpr unsigned kFormatsReduced = kFormatParam | kFormatBf16 | kFormatInt8;

inline py::tuple format_names(unsigned formats) {
    py::list out;
    if (formats & kFormatParam) out.append("param");
    if (formats & kFormatBf16) out.append("bf16");
    if (formats & kFormatInt8) out.append("int8");
    return py::tuple(out);
}

// One hyperparameter: its argument name and the config member it fills.
template <class C>
struct Hyper {
    enum Kind { real, flag, integer };
    const char* name;
    Kind kind;
    double C::*real_ = nullptr;
    bool C::*flag_ = nullptr;
    std::int64_t C::*int_ = nullptr;
    bool required = false;  // no default: the caller must pass it

    constexpr Hyper(const char* n, double C::*m, bool req = false)
        : name(n), kind(real), real_(m), required(req) {}
    constexpr Hyper(const char* n, bool C::*m, bool req = false)
        : name(n), kind(flag), flag_(m), required(req) {}
    constexpr Hyper(const char* n, std::int64_t C::*m, bool req = false)
        : name(n), kind(integer), int_(m), required(req) {}

    // Parses o (nullptr: not given) into c; TypeError naming the argument on a bad type.
    void parse(C& c, PyObject* o, const char* func) const {
        if (!o) {
            if (required) bind::required(o, func, name);  // TypeError: missing argument
            return;
        }
        switch (kind) {
            case real: c.*real_ = to_double(o, 0.0, name); break;
            case flag: c.*flag_ = to_bool(o, false, name); break;
            case integer: c.*int_ = to_int64(o, name); break;
        }
    }
    bool on(const C& c) const {
        switch (kind) {
            case real: return c.*real_ != 0.0;
            case flag: return c.*flag_;
            case integer: return c.*int_ != 0;
        }
        return false;
    }
    py::object value(const C& c) const {
        switch (kind) {
            case real: return py::float_(c.*real_);
            case flag: return py::bool_(c.*flag_);
            case integer: return py::int_(c.*int_);
        }
        return py::none();
    }
    const char* kind_name() const {
        return kind == real ? "float" : kind == flag ? "bool" : "int";
    }
};

// One state buffer: its argument name (a list, e.g. "exp_avgs"), torch's state key
// ("exp_avg"), the hyperparameter that switches it on (nullptr: always used) and the
// storage formats accepted for it, and whether its values are never negative (its 8-bit
// codes then use the unsigned dynamic map, else the signed one).
struct State {
    const char* arg;
    const char* key;
    const char* when = nullptr;
    unsigned formats = kFormatParam;
    bool nonnegative = false;
};

namespace detail {

// Argument names of spec S: params, grads, the state lists, then the hyperparameters.
template <class S>
struct Names {
    static constexpr std::size_t K = std::size(S::states);
    static constexpr std::size_t H = std::size(S::hypers);
    static constexpr std::size_t N = 2 + K + H;
    std::array<const char*, N> names{};
    std::array<PyObject*, N> interned{};
    std::array<int, K> when{};  // index into S::hypers, -1 for an always-used buffer

    Names() {
        names[0] = "params";
        names[1] = "grads";
        for (std::size_t j = 0; j < K; ++j) names[2 + j] = S::states[j].arg;
        for (std::size_t h = 0; h < H; ++h) names[2 + K + h] = S::hypers[h].name;
        for (std::size_t i = 0; i < N; ++i) interned[i] = PyUnicode_InternFromString(names[i]);
        for (std::size_t j = 0; j < K; ++j) {
            when[j] = -1;
            if (!S::states[j].when) continue;
            for (std::size_t h = 0; h < H; ++h)
                if (std::string(S::hypers[h].name) == S::states[j].when) when[j] = int(h);
        }
    }
    static const Names& get() {
        static const Names n;
        return n;
    }
};

// Matches positional arguments (the arrays only) and keywords to out[0..N).
template <std::size_t N>
void match_args(const char* func, const std::array<const char*, N>& names,
                const std::array<PyObject*, N>& interned, std::size_t max_positional,
                PyObject* const* args, Py_ssize_t nargs_in, PyObject* kwnames,
                std::array<PyObject*, N>& out) {
    const std::size_t nargs = static_cast<std::size_t>(PyVectorcall_NARGS(nargs_in));
    if (nargs > max_positional)
        throw py::type_error(std::string(func) + "() takes at most " +
                             std::to_string(max_positional) + " positional arguments (" +
                             std::to_string(nargs) + " given)");
    for (std::size_t i = 0; i < N; ++i) out[i] = i < nargs ? args[i] : nullptr;
    if (!kwnames) return;
    const Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; ++k) {
        PyObject* key = PyTuple_GET_ITEM(kwnames, k);
        std::size_t j = N;
        for (std::size_t i = 0; i < N && j == N; ++i)  // interned keywords: pointer compare
            if (key == interned[i]) j = i;
        for (std::size_t i = 0; i < N && j == N; ++i)
            if (PyUnicode_Compare(key, interned[i]) == 0) j = i;
        if (j == N)
            throw py::type_error(std::string(func) + "() got an unexpected keyword argument '" +
                                 std::string(py::str(key)) + "'");
        if (out[j])
            throw py::type_error(std::string(func) + "() got multiple values for argument '" +
                                 names[j] + "'");
        out[j] = args[nargs + static_cast<std::size_t>(k)];
    }
}

template <class S, class T>
void run(const ArrayList& p, const ArrayList& g,
         const std::array<const ArrayList*, Names<S>::K>& st, const typename S::Config& c) {
    constexpr std::size_t K = Names<S>::K;
    using Tensor = decltype(S::template tensor<T>(nullptr, nullptr, nullptr, 0));
    std::vector<Tensor> ts(p.size());
    std::array<T*, K> bufs{};
    for (std::size_t i = 0; i < ts.size(); ++i) {
        for (std::size_t j = 0; j < K; ++j)
            bufs[j] = st[j] ? st[j]->template data<T>(i) : nullptr;
        ts[i] = S::template tensor<T>(p.data<T>(i), g.data<T>(i), bufs.data(), p.count(i));
    }
    const int nt = dispatch::num_threads();
    const auto kernel = S::template kernel<T>(dispatch::active().ops<T>());
    // Safe: the kernel sees raw pointers into buffers that the ArrayLists keep alive.
    py::gil_scoped_release nogil;
    kernel(ts.data(), ts.size(), c, nt);
}

template <class S>
PyObject* step(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        using N = Names<S>;
        using C = typename S::Config;
        const N& n = N::get();
        std::array<PyObject*, N::N> a;
        match_args(S::name, n.names, n.interned, 2 + N::K, args, nargs, kwnames, a);
        C c{};
        for (std::size_t h = 0; h < N::H; ++h) S::hypers[h].parse(c, a[2 + N::K + h], S::name);
        raise_if_invalid(validate(c));
        std::array<bool, N::K> used{};
        for (std::size_t j = 0; j < N::K; ++j) {
            PyObject* o = a[2 + j] == Py_None ? nullptr : a[2 + j];
            a[2 + j] = o;
            used[j] = n.when[j] < 0 || S::hypers[n.when[j]].on(c);
            if (used[j] && !o) {
                if (n.when[j] < 0) required(o, S::name, S::states[j].arg);
                const auto& h = S::hypers[n.when[j]];
                throw py::value_error(std::string(S::states[j].arg) + " are required when " +
                                      h.name + (h.kind == Hyper<C>::flag ? "=True" : " != 0"));
            }
        }
        Gate gate;
        ArrayList p = gate.first(required(a[0], S::name, "params"), "params", true);
        ArrayList g = gate.like(required(a[1], S::name, "grads"), "grads", false);
        std::array<ArrayList, N::K> lists;
        std::array<const ArrayList*, N::K> st{};
        for (std::size_t j = 0; j < N::K; ++j) {
            if (a[2 + j]) lists[j] = gate.like(a[2 + j], S::states[j].arg, true);
            st[j] = used[j] ? &lists[j] : nullptr;
        }
        gate.check_no_overlap();
        if (gate.dtype() == DType::f32) run<S, float>(p, g, st, c);
        else run<S, double>(p, g, st, c);
        Py_RETURN_NONE;
    });
}

// "0.001", "True", "None": a default as Python writes it.
inline std::string py_repr(const py::object& o) { return std::string(py::repr(o)); }

}  // namespace detail

// Adds S's step function to m and records its declaration in m.kernel_specs[S::name].
template <class S>
void register_optimizer(py::module_& m) {
    using N = detail::Names<S>;
    using C = typename S::Config;
    const C defaults{};
    std::string sig = std::string(S::name) + "(params, grads";
    py::list states, hypers, nonnegative;
    for (std::size_t j = 0; j < N::K; ++j) {
        const State& s = S::states[j];
        if (s.nonnegative) nonnegative.append(s.key);
        sig += std::string(", ") + s.arg + (s.when ? "=None" : "");
        states.append(py::make_tuple(s.arg, s.key, s.when ? py::object(py::str(s.when)) : py::none(),
                                     format_names(s.formats)));
    }
    sig += ", *";
    for (std::size_t h = 0; h < N::H; ++h) {
        const auto& hy = S::hypers[h];
        sig += std::string(", ") + hy.name;
        if (!hy.required) sig += "=" + detail::py_repr(hy.value(defaults));
        // (name, kind, the config struct's default, whether the binding requires it)
        hypers.append(py::make_tuple(hy.name, hy.kind_name(), hy.value(defaults), hy.required));
    }
    sig += ")";
    // PyMethodDef and its strings live as long as the module (static per spec).
    static const std::string doc = sig + "\n--\n\n" + S::summary +
        "\n\nparams, grads and the state lists: an array/tensor or equal-length lists of them,\n"
        "all float32 or all float64, C-contiguous, shapes matching params (numpy arrays or\n"
        "dense CPU torch tensors, never copied). params and the state lists are updated in\n"
        "place; grads are only read. Raises TypeError/ValueError, touching nothing, on any\n"
        "invalid array or hyperparameter.";
    static PyMethodDef defs[] = {
        {S::name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&detail::step<S>)),
         METH_FASTCALL | METH_KEYWORDS, doc.c_str()},
        {nullptr, nullptr, 0, nullptr}};
    if (PyModule_AddFunctions(m.ptr(), defs) != 0) throw py::error_already_set();
    if (!py::hasattr(m, "kernel_specs")) m.attr("kernel_specs") = py::dict();
    py::dict info;
    info["states"] = py::tuple(states);
    info["hypers"] = py::tuple(hypers);
    info["nonnegative"] = py::tuple(nonnegative);  // state keys whose values are >= 0
    info["summary"] = S::summary;
    m.attr("kernel_specs")[S::name] = info;
}

}  // namespace fastoptim::bind
