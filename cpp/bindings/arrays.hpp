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

// A list of arrays parsed from an ndarray (one tensor) or a list/tuple of ndarrays.
struct ArrayList {
    const char* name;
    std::vector<py::array> arrays;
    bool single = false;  // the caller passed one ndarray, not a list

    std::size_t size() const { return arrays.size(); }
    std::string item_name(std::size_t i) const;
    template <class T>
    T* data(std::size_t i) const {
        return static_cast<T*>(const_cast<void*>(arrays[i].data()));
    }
    std::size_t count(std::size_t i) const { return static_cast<std::size_t>(arrays[i].size()); }
};

// Collects the arrays of one call and checks them against each other.
class Gate {
public:
    // Parses `obj` as the first (reference) list: it fixes the dtype, count and shapes.
    ArrayList first(py::handle obj, const char* name, bool writable);
    // Parses a further list that must match the reference one element by element.
    ArrayList like(py::handle obj, const char* name, bool writable);
    // Raises ValueError if any two registered buffers share a byte.
    void check_no_overlap() const;
    DType dtype() const { return dtype_; }

private:
    ArrayList parse(py::handle obj, const char* name) const;
    void check_array(const py::array& a, const std::string& name, bool writable);
    struct Range {
        const char* begin;
        const char* end;
        std::string name;
    };
    DType dtype_ = DType::f32;
    bool have_dtype_ = false;
    std::vector<py::array> ref_arrays_;
    bool ref_single_ = false;
    const char* ref_name_ = nullptr;
    std::vector<Range> ranges_;
};

// ValueError unless x is finite and >= 0 (or > 0 when strictly_positive).
void check_hyper(double x, const char* name);

}  // namespace fastoptim::bind
