// _core._pointer_list / _core._grad_pointers: see pointers.hpp.
#include "bindings/pointers.hpp"

#include <pybind11/numpy.h>

#include <cstring>
#include <string>
#include <utility>

#include "dispatch/table.hpp"

namespace fastoptim::bind {

namespace {

// torch's own tensor accessors, called directly on objects whose type is exactly one of
// the types torch.py registers at import (torch.Tensor, torch.nn.Parameter): attribute
// lookup on them finds exactly these descriptors of torch._C.TensorBase, so the direct
// call reads the same value without the lookup (about a third of each read). Whenever a
// registered type's version tag changes (the type or a base was patched), its lookups are
// checked again once and the direct calls stay only if they still find these descriptors
// with generic attribute access. A tensor subclass or anything else goes through ordinary
// lookup. (An instance attribute shadowing data_ptr or is_contiguous is not consulted: the
// checks want the tensor's real storage.)
struct Accessor {
    PyObject* name = nullptr;      // interned
    PyObject* descr = nullptr;     // what lookup on the registered types found
    getter get = nullptr;          // a property's getter
    PyCFunction noargs = nullptr;  // a METH_NOARGS method
    bool method = false;           // a method (else a property)
};
Accessor s_grad, s_version, s_nbytes, s_data_ptr, s_is_contiguous;
Accessor* const s_all[] = {&s_grad, &s_version, &s_nbytes, &s_data_ptr, &s_is_contiguous};
struct Registered {
    PyTypeObject* type = nullptr;
    unsigned int tag = 0;  // the version tag last checked (0: none)
    bool direct = false;   // whether lookup found s_all's descriptors at that tag
};
Registered s_types[2];

// Whether lookup on t finds s_all's descriptors, through generic attribute access.
bool finds_accessors(PyTypeObject* t) {
    if (t->tp_getattro != PyObject_GenericGetAttr) return false;
    for (const Accessor* a : s_all) {
        PyObject* d = PyObject_GetAttr(reinterpret_cast<PyObject*>(t), a->name);
        if (!d) {
            PyErr_Clear();
            return false;
        }
        Py_DECREF(d);  // (the type holds it)
        if (d != a->descr) return false;
    }
    return true;
}

bool direct(PyObject* o) {
    PyTypeObject* t = Py_TYPE(o);
    for (Registered& r : s_types) {
        if (t != r.type) continue;
        if (t->tp_version_tag == 0 || t->tp_version_tag != r.tag) {
            // changed since last checked (the lookups assign a new tag)
            r.direct = finds_accessors(t);
            r.tag = t->tp_version_tag;
            if (r.tag == 0) r.direct = false;
        }
        return r.direct;
    }
    return false;
}

// o.name (a property) or o.name() (a method); nullptr with the Python error set on failure.
PyObject* read(PyObject* o, const Accessor& a) {
    if (a.descr && direct(o)) {
        if (a.get) return a.get(o, nullptr);
        if (a.noargs) return a.noargs(o, nullptr);
        return PyObject_Vectorcall(a.descr, &o, 1, nullptr);
    }
    return a.method ? PyObject_CallMethodNoArgs(o, a.name) : PyObject_GetAttr(o, a.name);
}

py::object call0(py::handle h, const Accessor& a) {
    PyObject* o = read(h.ptr(), a);
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
}

// t.data_ptr() as a pointer (the Python error propagates).
void* data_pointer(py::handle t) {
    void* v = PyLong_AsVoidPtr(call0(t, s_data_ptr).ptr());
    if (!v && PyErr_Occurred()) throw py::error_already_set();
    return v;
}

// _core._register_torch_types((torch.Tensor, torch.nn.Parameter)): the accessors as lookup
// finds them on those types (one descriptor, of a common C base, for both); False, with
// nothing registered, when anything is not as expected.
bool register_torch_types(py::tuple types) {
    if (types.size() != 2 || !PyType_Check(types[0].ptr()) || !PyType_Check(types[1].ptr()))
        throw py::type_error("types must be (torch.Tensor, torch.nn.Parameter)");
    PyTypeObject* ts[2] = {reinterpret_cast<PyTypeObject*>(types[0].ptr()),
                           reinterpret_cast<PyTypeObject*>(types[1].ptr())};
    Accessor found[5];
    for (int k = 0; k < 5; ++k) {
        found[k].name = s_all[k]->name;
        found[k].method = s_all[k]->method;
        PyObject* d = PyObject_GetAttr(types[0].ptr(), found[k].name);
        if (!d) {
            PyErr_Clear();
            return false;
        }
        Py_DECREF(d);
        const bool property = !found[k].method;
        PyTypeObject* owner = nullptr;
        if (property && Py_TYPE(d) == &PyGetSetDescr_Type) {
            auto* g = reinterpret_cast<PyGetSetDescrObject*>(d);
            owner = PyDescr_TYPE(g);
            found[k].get = g->d_getset->get;
            if (!found[k].get) return false;
        } else if (!property && Py_TYPE(d) == &PyMethodDescr_Type) {
            auto* m = reinterpret_cast<PyMethodDescrObject*>(d);
            owner = PyDescr_TYPE(m);
            if ((m->d_method->ml_flags & ~METH_COEXIST) == METH_NOARGS)
                found[k].noargs = m->d_method->ml_meth;
        } else {
            return false;  // (a Python-level property or method: ordinary lookup)
        }
        // the C function expects an instance of the descriptor's own type
        if (!PyType_IsSubtype(ts[0], owner) || !PyType_IsSubtype(ts[1], owner)) return false;
        found[k].descr = d;
    }
    for (int k = 0; k < 5; ++k) *s_all[k] = found[k];
    for (int i = 0; i < 2; ++i) {
        if (!finds_accessors(ts[i]) || ts[i]->tp_version_tag == 0) {
            for (Accessor* a : s_all) *a = Accessor{a->name, nullptr, nullptr, nullptr, a->method};
            return false;
        }
    }
    for (int i = 0; i < 2; ++i) {
        Py_INCREF(ts[i]);  // (the tags are only compared while the types live)
        s_types[i] = Registered{ts[i], ts[i]->tp_version_tag, true};
    }
    return true;
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
        PyObject* c = read(g.ptr(), s_is_contiguous);
        if (!c) {  // a sparse tensor has no is_contiguous
            PyErr_Clear();
            throw py::value_error("grads[" + std::to_string(i) + "] is not a dense tensor");
        }
        Py_DECREF(c);
        if (c != Py_True)
            throw py::value_error("grads[" + std::to_string(i) + "] is not contiguous");
        PyObject* nb = read(g.ptr(), s_nbytes);
        if (!nb) throw py::error_already_set();
        const Py_ssize_t nbytes = PyLong_AsSsize_t(nb);
        Py_DECREF(nb);
        if (nbytes < 0 || static_cast<std::size_t>(nbytes) != like.sizes[i] * item)
            throw py::value_error("grads[" + std::to_string(i) + "] has " +
                                  std::to_string(nbytes) + " bytes, expected " +
                                  std::to_string(like.sizes[i] * item));
        out.ptrs[i] = data_pointer(g);
    }
    return out;
}

// The steady-state check of a cached plan with one part (torch.py's _prepare and
// _steady_step): params is group["params"] now, plan_params the list the plan was built
// from, like the part's parameter PointerList (each parameter's data pointer when it was
// built). Fills ptrs and keep (a new list holding the gradients) and returns true, or
// returns false when anything differs -- another parameter object, a parameter without a
// gradient, a parameter whose storage was replaced, a gradient that is not a contiguous
// tensor of the expected byte size -- and the caller then takes the full path. Five C-API
// calls per tensor, no Python frames.
bool collect_grads(py::list params, py::list plan_params, const PointerList& like,
                   std::vector<void*>& ptrs, py::object& keep_out) {
    const Py_ssize_t n = PyList_GET_SIZE(params.ptr());
    if (n != PyList_GET_SIZE(plan_params.ptr()) ||
        static_cast<std::size_t>(n) != like.ptrs.size())
        return false;
    const std::size_t item = like.dtype == DType::f32 ? 4 : 8;
    ptrs.resize(static_cast<std::size_t>(n));
    py::list keep(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
        const std::size_t k = static_cast<std::size_t>(i);
        PyObject* p = PyList_GET_ITEM(params.ptr(), i);
        if (p != PyList_GET_ITEM(plan_params.ptr(), i)) return false;
        if (data_pointer(p) != like.ptrs[k]) return false;
        PyObject* graw = read(p, s_grad);
        if (!graw) throw py::error_already_set();
        py::object g = py::reinterpret_steal<py::object>(graw);
        if (graw == Py_None) return false;
        PyObject* c = read(graw, s_is_contiguous);
        if (!c) {  // a sparse gradient: the full path reports it
            PyErr_Clear();
            return false;
        }
        Py_DECREF(c);
        if (c != Py_True) return false;
        PyObject* nb = read(graw, s_nbytes);
        if (!nb) throw py::error_already_set();
        const Py_ssize_t nbytes = PyLong_AsSsize_t(nb);
        Py_DECREF(nb);
        if (nbytes < 0 || static_cast<std::size_t>(nbytes) != like.sizes[k] * item)
            return false;
        ptrs[k] = data_pointer(graw);
        PyList_SET_ITEM(keep.ptr(), i, g.release().ptr());
    }
    keep_out = std::move(keep);
    return true;
}

// The gradients' PointerList when collect_grads' checks hold, else None.
py::object fast_grads(py::list params, py::list plan_params, const PointerList& like) {
    PointerList out;
    if (!collect_grads(params, plan_params, like, out.ptrs, out.keep)) return py::none();
    out.dtype = like.dtype;
    out.sizes = like.sizes;
    return py::cast(std::move(out));
}

// The float32 step counters of a part (the buffer behind its state["step"] tensors) all
// hold float32(step) bit for bit: nobody changed a step tensor in place.
float* counters_of(const py::object& steps, std::size_t& n) {
    if (steps.is_none()) {
        n = 0;
        return nullptr;
    }
    py::array a = py::reinterpret_borrow<py::array>(steps);
    if (a.dtype().num() != py::detail::npy_api::NPY_FLOAT_ || !(a.flags() & py::array::c_style) ||
        !a.writeable())
        throw py::type_error("steps must be a writeable C-contiguous float32 array");
    n = static_cast<std::size_t>(a.size());
    return static_cast<float*>(a.mutable_data());
}

bool counters_hold(const float* c, std::size_t n, std::int64_t step) {
    const float want = static_cast<float>(step);
    for (std::size_t i = 0; i < n; ++i)
        if (std::memcmp(c + i, &want, sizeof want) != 0) return false;
    return true;
}

bool counters_at(py::object steps, std::int64_t step) {
    std::size_t n = 0;
    const float* c = counters_of(steps, n);
    return counters_hold(c, n, step);
}

// torch.py's _steady_step in one native call: the gradient checks of collect_grads, the
// kernel's keyword arguments read from the parameter group, and the kernel call itself
// (through its Python entry point, so every check of the binding still runs). Built once
// per cached plan; `grads` is its own PointerList, refilled each step.
class SteadyCall {
public:
    // fn: the kernel; like: the parameters' PointerList; states: the state lists (None for
    // a buffer the kernel does not get); fixed: (kernel name, value) pairs; sources:
    // (kernel name, group key, index into the group value or -1) triples; structure:
    // (group key, truth) pairs, the flags that decided which state exists when the plan
    // was built.
    SteadyCall(py::object fn, py::object like, py::tuple states, py::list fixed,
               py::list sources, bool kernel_step, bool first_step, py::object steps,
               py::list structure)
        : fn_(std::move(fn)), like_obj_(std::move(like)), steps_obj_(std::move(steps)),
          kernel_step_(kernel_step), first_step_(first_step) {
        steps_ = counters_of(steps_obj_, nsteps_);
        for (py::handle f : structure) {
            py::tuple t = py::reinterpret_borrow<py::tuple>(f);
            flags_.emplace_back(py::reinterpret_borrow<py::object>(t[0]), t[1].cast<bool>());
        }
        if (!as_pointer_list(like_obj_, &like_))
            throw py::type_error("like must be a _PointerList");
        for (py::handle st : states) states_.push_back(py::reinterpret_borrow<py::object>(st));
        py::list names;
        for (py::handle f : fixed) {
            py::tuple t = py::reinterpret_borrow<py::tuple>(f);
            names.append(t[0]);
            fixed_.push_back(t[1]);
        }
        for (py::handle src : sources) {
            py::tuple t = py::reinterpret_borrow<py::tuple>(src);
            names.append(t[0]);
            keys_.push_back(py::reinterpret_borrow<py::object>(t[1]));
            index_.push_back(t[2].cast<Py_ssize_t>());
        }
        if (kernel_step_) names.append("step");
        if (first_step_) names.append("first_step");
        py::tuple kw(names.size());
        for (std::size_t i = 0; i < names.size(); ++i) {  // interned: matched by pointer
            PyObject* nm = PyUnicode_InternFromString(names[i].cast<std::string>().c_str());
            if (!nm) throw py::error_already_set();
            PyTuple_SET_ITEM(kw.ptr(), static_cast<Py_ssize_t>(i), nm);
        }
        kwnames_ = std::move(kw);
        PointerList g;
        g.dtype = like_->dtype;
        g.sizes = like_->sizes;
        grads_obj_ = py::cast(std::move(g));
        grads_ = &py::cast<PointerList&>(grads_obj_);
    }

    // Step `step`: false (nothing done) when a structure flag's truth changed, a step
    // counter no longer holds step - 1 or collect_grads' checks fail; otherwise the kernel
    // runs (its exceptions propagate), the counters are set to step and the result is true.
    // grads: an arena's flat gradient PointerList (its checks done by the caller), or None.
    bool operator()(py::list params, py::list plan_params, py::dict group, std::int64_t step,
                    bool fresh, py::object grads) {
        if (busy_) return false;  // a step of this optimizer from another thread is running
        for (const auto& [key, want] : flags_) {
            PyObject* v = PyDict_GetItemWithError(group.ptr(), key.ptr());
            if (!v) {
                if (PyErr_Occurred()) throw py::error_already_set();
                return false;  // the general path reports the missing entry
            }
            const int truth = PyObject_IsTrue(v);
            if (truth < 0) throw py::error_already_set();
            if ((truth == 1) != want) return false;
        }
        if (!counters_hold(steps_, nsteps_, step - 1)) return false;
        const PointerList* flat = nullptr;
        if (!grads.is_none() && !as_pointer_list(grads, &flat))
            throw py::type_error("grads must be None or a _PointerList");
        if (!flat && !collect_grads(params, plan_params, *like_, grads_->ptrs, grads_->keep))
            return false;
        std::vector<py::object> values;
        values.reserve(fixed_.size() + keys_.size() + 2);
        for (const py::object& v : fixed_) values.push_back(v);
        for (std::size_t i = 0; i < keys_.size(); ++i) {
            PyObject* v = PyDict_GetItemWithError(group.ptr(), keys_[i].ptr());
            if (!v) {
                if (PyErr_Occurred()) throw py::error_already_set();
                grads_->keep = py::object();
                return false;  // the general path reports the missing entry
            }
            py::object value = py::reinterpret_borrow<py::object>(v);
            if (index_[i] >= 0) {
                PyObject* item = PySequence_GetItem(v, index_[i]);
                if (!item) throw py::error_already_set();
                value = py::reinterpret_steal<py::object>(item);
            }
            values.push_back(std::move(value));
        }
        if (kernel_step_) values.push_back(py::int_(step));
        if (first_step_) values.push_back(py::bool_(fresh));
        std::vector<PyObject*> args;
        args.reserve(2 + states_.size() + values.size());
        args.push_back(like_obj_.ptr());
        args.push_back(flat ? grads.ptr() : grads_obj_.ptr());
        for (const py::object& s : states_) args.push_back(s.ptr());
        for (const py::object& v : values) args.push_back(v.ptr());
        const std::size_t npos = 2 + states_.size();
        busy_ = true;
        PyObject* r = PyObject_Vectorcall(fn_.ptr(), args.data(), npos, kwnames_.ptr());
        busy_ = false;
        grads_->keep = py::object();  // the gradients are not held past the step
        if (!r) throw py::error_already_set();
        Py_DECREF(r);
        const float now = static_cast<float>(step);
        for (std::size_t i = 0; i < nsteps_; ++i) steps_[i] = now;
        return true;
    }

private:
    py::object fn_, like_obj_, steps_obj_, grads_obj_;
    float* steps_ = nullptr;
    std::size_t nsteps_ = 0;
    const PointerList* like_ = nullptr;
    PointerList* grads_ = nullptr;
    std::vector<py::object> states_, fixed_, keys_;
    std::vector<Py_ssize_t> index_;
    std::vector<std::pair<py::object, bool>> flags_;
    py::tuple kwnames_;
    bool kernel_step_, first_step_;
    bool busy_ = false;
};

// The steady-state checks of one arena (torch.py's _prepare and zero_grad, arena=True),
// built once per arena: the parameter objects it was built from, their gradient views in
// the arena, and both roles' data pointers then, kept as raw pointers: a check reads each
// tensor's pointer and compares it without touching another Python object.
class ArenaCheck {
public:
    ArenaCheck(py::list plan_params, py::list agrads, py::list ptrs, py::list gptrs)
        : plan_params_(std::move(plan_params)), agrads_(std::move(agrads)) {
        const Py_ssize_t n = PyList_GET_SIZE(plan_params_.ptr());
        if (PyList_GET_SIZE(agrads_.ptr()) != n || static_cast<Py_ssize_t>(ptrs.size()) != n ||
            static_cast<Py_ssize_t>(gptrs.size()) != n)
            throw py::value_error("plan_params, agrads, ptrs and gptrs must have one entry "
                                  "per parameter");
        for (Py_ssize_t i = 0; i < n; ++i) {
            ptrs_.push_back(PyLong_AsVoidPtr(ptrs[static_cast<std::size_t>(i)].ptr()));
            gptrs_.push_back(PyLong_AsVoidPtr(gptrs[static_cast<std::size_t>(i)].ptr()));
            if (PyErr_Occurred()) throw py::error_already_set();
        }
    }

    // True when params is the list the arena was built from, element by element, every
    // parameter is on the same storage and its .grad is still the arena's view on the same
    // storage -- and, with since_zeroed, every gradient was written after the zero_grad
    // that recorded versions(). False on anything else (the caller takes the full path).
    // Three or four C-API calls per tensor.
    bool operator()(py::list params, bool since_zeroed) const {
        const Py_ssize_t n = PyList_GET_SIZE(params.ptr());
        if (n != PyList_GET_SIZE(plan_params_.ptr())) return false;
        if (since_zeroed && versions_.size() != static_cast<std::size_t>(n)) return false;
        for (Py_ssize_t i = 0; i < n; ++i) {
            const std::size_t k = static_cast<std::size_t>(i);
            PyObject* p = PyList_GET_ITEM(params.ptr(), i);
            if (p != PyList_GET_ITEM(plan_params_.ptr(), i)) return false;
            PyObject* graw = read(p, s_grad);
            if (!graw) throw py::error_already_set();
            py::object g = py::reinterpret_steal<py::object>(graw);
            if (graw != PyList_GET_ITEM(agrads_.ptr(), i)) return false;
            if (data_pointer(p) != ptrs_[k] || data_pointer(graw) != gptrs_[k]) return false;
            if (since_zeroed && version_of(graw) == versions_[k])
                return false;  // cleared by zero_grad and not written since
        }
        return true;
    }

    // Reads and records every arena gradient's _version (zero_grad(set_to_none=True) has
    // just cleared the arena); returns them as a list.
    py::list versions() {
        const Py_ssize_t n = PyList_GET_SIZE(agrads_.ptr());
        std::vector<long long> now(static_cast<std::size_t>(n));
        py::list out(n);
        for (Py_ssize_t i = 0; i < n; ++i) {
            PyObject* g = PyList_GET_ITEM(agrads_.ptr(), i);
            now[static_cast<std::size_t>(i)] = version_of(g);
            PyList_SET_ITEM(out.ptr(), i, PyLong_FromLongLong(now[static_cast<std::size_t>(i)]));
        }
        versions_ = std::move(now);
        return out;
    }

private:
    static long long version_of(PyObject* t) {
        PyObject* r = read(t, s_version);
        if (!r) throw py::error_already_set();
        const long long v = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
        return v;
    }

    py::list plan_params_, agrads_;
    std::vector<void*> ptrs_, gptrs_;
    std::vector<long long> versions_;
};

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
    s_is_contiguous.name = PyUnicode_InternFromString("is_contiguous");
    s_is_contiguous.method = true;
    s_data_ptr.name = PyUnicode_InternFromString("data_ptr");
    s_data_ptr.method = true;
    s_nbytes.name = PyUnicode_InternFromString("nbytes");
    s_grad.name = PyUnicode_InternFromString("grad");
    s_version.name = PyUnicode_InternFromString("_version");
    m.def("_register_torch_types", &register_torch_types, "types"_a,
          "Calls torch's own accessors directly on exact torch.Tensor / torch.nn.Parameter "
          "objects (private); whether it could.");
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
    py::class_<SteadyCall>(m, "_SteadyCall",
                           "A cached plan's whole steady step in one call (private).")
        .def(py::init<py::object, py::object, py::tuple, py::list, py::list, bool, bool,
                      py::object, py::list>(),
             "fn"_a, "like"_a, "states"_a, "fixed"_a, "sources"_a, "kernel_step"_a,
             "first_step"_a, "steps"_a, "structure"_a)
        .def("__call__", &SteadyCall::operator(), "params"_a, "plan_params"_a, "group"_a,
             "step"_a, "fresh"_a, "grads"_a = py::none());
    m.def("_counters_at", &counters_at, "steps"_a, "step"_a,
          "Whether every float32 step counter holds float32(step), bit for bit (private).");
    py::class_<ArenaCheck>(m, "_ArenaCheck",
                           "The steady-state checks of one arena (private).")
        .def(py::init<py::list, py::list, py::list, py::list>(), "plan_params"_a, "agrads"_a,
             "ptrs"_a, "gptrs"_a)
        .def("__call__", &ArenaCheck::operator(), "params"_a, "since_zeroed"_a)
        .def("versions", &ArenaCheck::versions);
    m.def("_sumsq", &sumsq, "lists"_a,
          "Sum of squares of all elements of a list of _PointerLists, in float64 (private).");
}

}  // namespace fastoptim::bind
