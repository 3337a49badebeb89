// The binding gate: every array that reaches a kernel passes through here first.
//
// Arrays are never converted or copied: an in-place update on a temporary would be lost.
// Anything that is not exactly right (dtype, byte order, C-contiguity, alignment, writeability,
// shape, overlap with another buffer) is a TypeError/ValueError naming the argument, raised
// before any kernel runs, so no buffer is touched.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>
#include <vector>

namespace fastoptim::bind {

namespace py = pybind11;

enum class DType { f32, f64 };

// One buffer of a call: a numpy.ndarray or a CPU torch.Tensor (both zero copy).
struct Buffer {
    py::object obj;         // keeps the array or tensor alive while the GIL is released
    void* data;
    std::size_t n;          // elements
    std::size_t dim_off;    // its shape is ArrayList::dims[dim_off, dim_off + ndim)
    int ndim;
};

// A list of buffers parsed from one array/tensor or a list/tuple of them.
struct ArrayList {
    const char* name;
    std::vector<Buffer> items;
    std::vector<py::ssize_t> dims;
    bool single = false;  // the caller passed one array or tensor, not a list

    std::size_t size() const { return items.size(); }
    std::string item_name(std::size_t i) const;
    std::string shape_str(std::size_t i) const;
    bool same_shape(std::size_t i, const ArrayList& o) const;
    template <class T>
    T* data(std::size_t i) const {
        return static_cast<T*>(items[i].data);
    }
    std::size_t count(std::size_t i) const { return items[i].n; }
};

// Collects the arrays of one call and checks them against each other. Each item may be a
// numpy.ndarray or a dense CPU torch.Tensor (recognised only once torch is imported).
class Gate {
public:
    // Parses `obj` as the first (reference) list: it fixes the dtype, count and shapes.
    ArrayList first(py::handle obj, const char* name, bool writable);
    // Parses a further list that must match the reference one element by element.
    ArrayList like(py::handle obj, const char* name, bool writable);
    // Parses one ndarray of the call's dtype whose shape the caller checks (a bias next to
    // a matrix, a label-free target); it joins the overlap check like every other array.
    py::array single(py::handle obj, const char* name, bool writable);
    // Parses read-only int64 class indices (C-contiguous, native byte order).
    py::array indices(py::handle obj, const char* name);
    // Raises ValueError if any two registered buffers share a byte.
    void check_no_overlap() const;
    DType dtype() const { return dtype_; }

private:
    ArrayList parse(py::handle obj, const char* name, bool writable);
    void add(ArrayList& out, py::handle item, std::size_t i, bool writable);
    // An argument's name, e.g. "params[17]", kept as parts: the string is only built for
    // an error message (building it for every array cost ~100 ns per tensor).
    struct Name {
        const char* base;
        std::ptrdiff_t index;  // -1: the argument itself, not a list element
        std::string str() const;
    };
    void add_array(ArrayList& out, py::handle item, const Name& name, bool writable);
    void add_tensor(ArrayList& out, py::handle item, const Name& name);
    void set_dtype(DType kind, const Name& name, py::handle got);
    struct Range {
        const char* begin;
        const char* end;
        Name name;
    };
    DType dtype_ = DType::f32;
    bool have_dtype_ = false;
    ArrayList ref_;
    bool ref_single_ = false;
    const char* ref_name_ = nullptr;
    std::vector<Range> ranges_;
};

// "(2, 3)" / "(5,)": an array's shape for error messages.
std::string shape_str(const py::array& a);

// ValueError unless x is finite and >= 0 (or > 0 when strictly_positive).
void check_hyper(double x, const char* name);

}  // namespace fastoptim::bind
