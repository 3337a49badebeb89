// _core._pointer_list / _core._grad_pointers: see pointers.hpp.
#include "bindings/pointers.hpp"

#include <string>

#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

PyObject* s_is_contiguous = nullptr;
PyObject* s_data_ptr = nullptr;
PyObject* s_nbytes = nullptr;
PyObject* s_grad = nullptr;
PyObject* s_version = nullptr;

py::object call0(py::handle h, PyObject* name) {
    PyObject* o = PyObject_CallMethodNoArgs(h.ptr(), name);
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
}

// A PointerList over arrays (or contiguous tensors) that pass the Gate's full checks.
PointerList pointer_list(py::handle arrays, bool writable) {
    Gate gate;
    ArrayList l = gate.first(arrays, "arrays", writable);
    gate.check_no_overlap();
    PointerList out;
    out.dtype = gate.dtype();
    out.writable = writable;
    out.keep = py::reinterpret_borrow<py::object>(arrays);
    for (std::size_t i = 0; i < l.size(); ++i) {
        out.ptrs.push_back(l.items[i].data);
        out.sizes.push_back(l.count(i));
    }
    return out;
}

// The gradients of one step: each a contiguous tensor of like's byte size (torch's grad
// setter already enforces the parameter's shape and dtype; the size check also catches a
// gradient changed behind it with .data = or resize_). ValueError naming grads[i]
// otherwise. Three method calls per tensor.
PointerList grad_pointers(py::list grads, const PointerList& like) {
    const std::size_t n = static_cast<std::size_t>(grads.size());
    if (n != like.ptrs.size())
        throw py::value_error("grads has " + std::to_string(n) + " tensors but the list has " +
                              std::to_string(like.ptrs.size()));
    const std::size_t item = like.dtype == DType::f32 ? 4 : 8;
    PointerList out;
    out.dtype = like.dtype;
    out.sizes = like.sizes;
    out.ptrs.resize(n);
    out.keep = grads;
    for (std::size_t i = 0; i < n; ++i) {
        py::handle g = PyList_GET_ITEM(grads.ptr(), static_cast<Py_ssize_t>(i));
        PyObject* c = PyObject_CallMethodNoArgs(g.ptr(), s_is_contiguous);
        if (!c) {  // a sparse tensor has no is_contiguous
            PyErr_Clear();
            throw py::value_error("grads[" + std::to_string(i) + "] is not a dense tensor");
        }
        Py_DECREF(c);
        if (c != Py_True)
            throw py::value_error("grads[" + std::to_string(i) + "] is not contiguous");
        PyObject* nb = PyObject_GetAttr(g.ptr(), s_nbytes);
        if (!nb) throw py::error_already_set();
        const Py_ssize_t nbytes = PyLong_AsSsize_t(nb);
        Py_DECREF(nb);
        if (nbytes < 0 || static_cast<std::size_t>(nbytes) != like.sizes[i] * item)
            throw py::value_error("grads[" + std::to_string(i) + "] has " +
                                  std::to_string(nbytes) + " bytes, expected " +
                                  std::to_string(like.sizes[i] * item));
        out.ptrs[i] = PyLong_AsVoidPtr(call0(g, s_data_ptr).ptr());
        if (!out.ptrs[i] && PyErr_Occurred()) throw py::error_already_set();
    }
    return out;
}

// The steady-state check of a cached plan with one part, in one call (torch.py's
// _prepare): params is group["params"] now, plan_params the list the plan was built from,
// like the part's parameter PointerList (each parameter's data pointer when it was built).
// Returns the gradients' PointerList, or None when anything differs -- another parameter
// object, a parameter without a gradient, a parameter whose storage was replaced, a
// gradient that is not a contiguous tensor of the expected byte size -- and the caller then
// takes the full path. Five C-API calls per tensor, no Python frames.
py::object fast_grads(py::list params, py::list plan_params, const PointerList& like) {
    const Py_ssize_t n = PyList_GET_SIZE(params.ptr());
    if (n != PyList_GET_SIZE(plan_params.ptr()) ||
        static_cast<std::size_t>(n) != like.ptrs.size())
        return py::none();
    const std::size_t item = like.dtype == DType::f32 ? 4 : 8;
    PointerList out;
    out.dtype = like.dtype;
    out.sizes = like.sizes;
    out.ptrs.resize(static_cast<std::size_t>(n));
    py::list keep(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
        const std::size_t k = static_cast<std::size_t>(i);
        PyObject* p = PyList_GET_ITEM(params.ptr(), i);
        if (p != PyList_GET_ITEM(plan_params.ptr(), i)) return py::none();
        if (PyLong_AsVoidPtr(call0(p, s_data_ptr).ptr()) != like.ptrs[k]) return py::none();
        PyObject* graw = PyObject_GetAttr(p, s_grad);
        if (!graw) throw py::error_already_set();
        py::object g = py::reinterpret_steal<py::object>(graw);
        if (graw == Py_None) return py::none();
        PyObject* c = PyObject_CallMethodNoArgs(graw, s_is_contiguous);
        if (!c) {  // a sparse gradient: the full path reports it
            PyErr_Clear();
            return py::none();
        }
        Py_DECREF(c);
        if (c != Py_True) return py::none();
        PyObject* nb = PyObject_GetAttr(graw, s_nbytes);
        if (!nb) throw py::error_already_set();
        const Py_ssize_t nbytes = PyLong_AsSsize_t(nb);
        Py_DECREF(nb);
        if (nbytes < 0 || static_cast<std::size_t>(nbytes) != like.sizes[k] * item)
            return py::none();
        out.ptrs[k] = PyLong_AsVoidPtr(call0(graw, s_data_ptr).ptr());
        if (!out.ptrs[k] && PyErr_Occurred()) throw py::error_already_set();
        PyList_SET_ITEM(keep.ptr(), i, g.release().ptr());
    }
    out.keep = keep;
    return py::cast(std::move(out));
}

// The steady-state check of an arena (torch.py's _prepare, arena=True), in one call:
// params is group["params"] now, plan_params the list the arena was built from, agrads its
// gradient views, ptrs / gptrs (lists of ints) the parameters' and gradients' data
// pointers then, versions None or the gradients' _version when zero_grad cleared the arena.
// True when every parameter is the same object on the same storage and its .grad is still
// the arena's view, on the same storage, written since that zero_grad; False on anything
// else (the caller then takes the full path). Three or four C-API calls per tensor.
bool arena_fast(py::list params, py::list plan_params, py::list agrads, py::list ptrs,
                py::list gptrs, py::object versions) {
    const Py_ssize_t n = PyList_GET_SIZE(params.ptr());
    if (n != PyList_GET_SIZE(plan_params.ptr()) || n != PyList_GET_SIZE(agrads.ptr()) ||
        n != PyList_GET_SIZE(ptrs.ptr()) || n != PyList_GET_SIZE(gptrs.ptr()))
        return false;
    const bool check_versions = !versions.is_none();
    if (check_versions && (!PyList_Check(versions.ptr()) || PyList_GET_SIZE(versions.ptr()) != n))
        return false;
    auto same_ptr = [](py::handle t, PyObject* want) {
        py::object got = call0(t, s_data_ptr);
        const int eq = PyObject_RichCompareBool(got.ptr(), want, Py_EQ);
        if (eq < 0) throw py::error_already_set();
        return eq == 1;
    };
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* p = PyList_GET_ITEM(params.ptr(), i);
        if (p != PyList_GET_ITEM(plan_params.ptr(), i)) return false;
        PyObject* graw = PyObject_GetAttr(p, s_grad);
        if (!graw) throw py::error_already_set();
        py::object g = py::reinterpret_steal<py::object>(graw);
        if (graw != PyList_GET_ITEM(agrads.ptr(), i)) return false;
        if (!same_ptr(p, PyList_GET_ITEM(ptrs.ptr(), i))) return false;
        if (!same_ptr(g, PyList_GET_ITEM(gptrs.ptr(), i))) return false;
        if (check_versions) {
            PyObject* v = PyObject_GetAttr(graw, s_version);
            if (!v) throw py::error_already_set();
            const int eq = PyObject_RichCompareBool(v, PyList_GET_ITEM(versions.ptr(), i), Py_EQ);
            Py_DECREF(v);
            if (eq < 0) throw py::error_already_set();
            if (eq == 1) return false;  // cleared by zero_grad and not written since
        }
    }
    return true;
}

// Sum of squares of every element of a list of PointerLists (float32 and float64 lists may
// mix), accumulated in float64 with the kernels' fixed chunking: one pass, deterministic.
template <class T>
double sumsq_lists(const std::vector<const PointerList*>& ls) {
    std::vector<const T*> ptrs;
    std::vector<std::size_t> sizes;
    for (const PointerList* l : ls) {
        for (std::size_t i = 0; i < l->ptrs.size(); ++i) {
            ptrs.push_back(static_cast<const T*>(l->ptrs[i]));
            sizes.push_back(l->sizes[i]);
        }
    }
    if (ptrs.empty()) return 0.0;
    const int nt = dispatch::num_threads();
    const auto kernel = dispatch::active().ops<T>().sumsq;
    // Safe: the pointers are into buffers that the PointerLists (held by the caller) keep alive.
    py::gil_scoped_release nogil;
    return kernel(ptrs.data(), sizes.data(), ptrs.size(), nt);
}

double sumsq(py::list lists) {
    std::vector<const PointerList*> f32, f64;
    for (std::size_t i = 0; i < static_cast<std::size_t>(lists.size()); ++i) {
        const PointerList* l = nullptr;
        if (!as_pointer_list(lists[i], &l))
            throw py::type_error("lists[" + std::to_string(i) + "] is not a _PointerList");
        (l->dtype == DType::f32 ? f32 : f64).push_back(l);
    }
    return sumsq_lists<float>(f32) + sumsq_lists<double>(f64);
}

}  // namespace

bool as_pointer_list(py::handle h, const PointerList** out) {
    static PyTypeObject* type = nullptr;
    if (!type) {
        auto* ti = py::detail::get_type_info(typeid(PointerList));
        if (!ti) return false;
        type = ti->type;
    }
    if (Py_TYPE(h.ptr()) != type) return false;
    *out = &py::cast<const PointerList&>(h);
    return true;
}

void bind_pointers(py::module_& m) {
    using namespace pybind11::literals;
    s_is_contiguous = PyUnicode_InternFromString("is_contiguous");
    s_data_ptr = PyUnicode_InternFromString("data_ptr");
    s_nbytes = PyUnicode_InternFromString("nbytes");
    s_grad = PyUnicode_InternFromString("grad");
    s_version = PyUnicode_InternFromString("_version");
    py::class_<PointerList>(m, "_PointerList",
                            "Validated data pointers of a list of buffers (private).")
        .def("__len__", [](const PointerList& l) { return l.ptrs.size(); });
    m.def("_pointer_list", &pointer_list, "arrays"_a, "writable"_a,
          "A _PointerList over arrays, checked as the kernels check them (private).");
    m.def("_grad_pointers", &grad_pointers, "grads"_a, "like"_a,
          "A _PointerList over one step's gradient tensors, matching `like` (private).");
    m.def("_fast_grads", &fast_grads, "params"_a, "plan_params"_a, "like"_a,
          "The gradients' _PointerList if a cached one-part plan still holds, else None "
          "(private).");
    m.def("_arena_fast", &arena_fast, "params"_a, "plan_params"_a, "agrads"_a, "ptrs"_a,
          "gptrs"_a, "versions"_a,
          "Whether an arena's cached one-call step still holds (private).");
    m.def("_sumsq", &sumsq, "lists"_a,
          "Sum of squares of all elements of a list of _PointerLists, in float64 (private).");
}

}  // namespace fastoptim::bind
