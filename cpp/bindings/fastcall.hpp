// Minimal vectorcall argument parsing for the hot entry points.
//
// pybind11's general dispatcher costs ~3 us for a call with a dozen keyword arguments,
// more than an Adam step on 1,000 elements. The optimizer steps are therefore plain
// METH_FASTCALL functions that match keywords against interned names (pointer compare
// first) and convert scalars with the C API; errors still name the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace fastoptim::bind {

namespace py = pybind11;

// Fills out[0..N) with borrowed references (nullptr where not given) from positional
// args (at most max_positional) and keywords. TypeError for unknown or repeated names.
template <std::size_t N>
void parse_args(const char* func, const char* const (&names)[N], std::size_t max_positional,
                PyObject* const* args, Py_ssize_t nargs_in, PyObject* kwnames, PyObject** out) {
    static PyObject* interned[N] = {};
    if (!interned[0])
        for (std::size_t i = 0; i < N; ++i) interned[i] = PyUnicode_InternFromString(names[i]);
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
        for (std::size_t i = 0; i < N && j == N; ++i)
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

inline PyObject* required(PyObject* o, const char* func, const char* name) {
    if (!o)
        throw py::type_error(std::string(func) + "() missing required argument '" + name + "'");
    return o;
}

inline double to_double(PyObject* o, double fallback, const char* name) {
    if (!o) return fallback;
    if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);
    if (PyBool_Check(o) || !PyNumber_Check(o) || PyComplex_Check(o))
        throw py::type_error(std::string(name) + " must be a real number, got " +
                             std::string(py::str(py::type::handle_of(o).attr("__name__"))));
    const double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return v;
}

inline bool to_bool(PyObject* o, bool fallback, const char* name) {
    if (!o) return fallback;
    if (o == Py_True) return true;
    if (o == Py_False) return false;
    // numpy.bool_ and other bool-like objects that are not numbers in disguise
    if (std::string(py::str(py::type::handle_of(o).attr("__name__"))) == "bool")
        return PyObject_IsTrue(o) == 1;
    throw py::type_error(std::string(name) + " must be a bool, got " +
                         std::string(py::str(py::type::handle_of(o).attr("__name__"))));
}

inline std::int64_t to_int64(PyObject* o, const char* name) {
    if (PyBool_Check(o) || !PyIndex_Check(o))
        throw py::type_error(std::string(name) + " must be an integer, got " +
                             std::string(py::str(py::type::handle_of(o).attr("__name__"))));
    PyObject* idx = PyNumber_Index(o);
    if (!idx) throw py::error_already_set();
    const long long v = PyLong_AsLongLong(idx);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    return static_cast<std::int64_t>(v);
}

inline PyObject* none_to_null(PyObject* o) { return o == Py_None ? nullptr : o; }

// Runs body() and turns C++ exceptions into the matching Python exception.
template <class F>
PyObject* guarded(F&& body) {
    try {
        return body();
    } catch (py::error_already_set& e) {
        e.restore();
    } catch (py::builtin_exception& e) {
        e.set_error();
    } catch (const std::invalid_argument& e) {
        PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
}

}  // namespace fastoptim::bind
