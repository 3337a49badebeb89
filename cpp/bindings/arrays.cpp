#include "bindings/arrays.hpp"

#include <algorithm>
#include <cmath>

namespace fastoptim::bind {

namespace {

std::string type_name(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")); }

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        s += std::to_string(a.shape(d));
        if (a.ndim() == 1 || d + 1 < a.ndim()) s += a.ndim() == 1 ? "," : ", ";
    }
    return s + ")";
}

bool same_shape(const py::array& a, const py::array& b) {
    if (a.ndim() != b.ndim()) return false;
    for (py::ssize_t d = 0; d < a.ndim(); ++d)
        if (a.shape(d) != b.shape(d)) return false;
    return true;
}

}  // namespace

std::string ArrayList::item_name(std::size_t i) const {
    return single ? std::string(name) : std::string(name) + "[" + std::to_string(i) + "]";
}

ArrayList Gate::parse(py::handle obj, const char* name) const {
    ArrayList out;
    out.name = name;
    if (py::isinstance<py::array>(obj)) {
        out.single = true;
        out.arrays.push_back(py::reinterpret_borrow<py::array>(obj));
    } else if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
        py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
        const std::size_t n = static_cast<std::size_t>(seq.size());
        out.arrays.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            py::handle item = seq[i];
            if (!py::isinstance<py::array>(item))
                throw py::type_error(std::string(name) + "[" + std::to_string(i) +
                                     "] must be a numpy.ndarray, got " + type_name(item));
            out.arrays.push_back(py::reinterpret_borrow<py::array>(item));
        }
    } else {
        throw py::type_error(std::string(name) +
                             " must be a numpy.ndarray or a list of numpy.ndarray, got " +
                             type_name(obj));
    }
    return out;
}

void Gate::check_array(const py::array& a, const std::string& name, bool writable) {
    const py::dtype dt = a.dtype();
    const int num = dt.num();
    const bool native = dt.byteorder() != '>';
    DType kind;
    if (num == py::detail::npy_api::NPY_FLOAT_ && native) kind = DType::f32;
    else if (num == py::detail::npy_api::NPY_DOUBLE_ && native) kind = DType::f64;
    else
        throw py::type_error(name + " must be a float32 or float64 array (native byte order), got dtype " +
                             std::string(py::str(dt)));
    if (!have_dtype_) {
        dtype_ = kind;
        have_dtype_ = true;
    } else if (kind != dtype_) {
        const char* want = dtype_ == DType::f32 ? "float32" : "float64";
        throw py::type_error(name + " has dtype " + std::string(py::str(dt)) + " but " +
                             ref_name_ + " are " + want +
                             "; every array of one call must have the same dtype");
    }
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(name +
                              " must be C-contiguous (got a strided, Fortran-order or "
                              "negative-stride view); arrays are updated in place and never "
                              "copied, so pass a contiguous array and keep using it");
    // A float32 view at an odd byte offset (np.frombuffer with an offset, packed records):
    // kernels take T*, and a misaligned T* is undefined behaviour.
    if (!py::detail::check_flags(a.ptr(), py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(name + " is not aligned to its dtype (a view at an odd byte "
                                     "offset); pass an aligned array");
    if (writable && !a.writeable())
        throw py::value_error(name + " is read-only; it is updated in place and must be writeable");
    if (a.size() > 0) {
        const char* b = static_cast<const char*>(a.data());
        ranges_.push_back(Range{b, b + a.nbytes(), name});
    }
}

ArrayList Gate::first(py::handle obj, const char* name, bool writable) {
    ArrayList l = parse(obj, name);
    ref_name_ = name;
    ref_single_ = l.single;
    for (std::size_t i = 0; i < l.size(); ++i) check_array(l.arrays[i], l.item_name(i), writable);
    ref_arrays_ = l.arrays;
    return l;
}

ArrayList Gate::like(py::handle obj, const char* name, bool writable) {
    ArrayList l = parse(obj, name);
    if (l.single != ref_single_)
        throw py::type_error(std::string(name) + " must be " +
                             (ref_single_ ? "a numpy.ndarray" : "a list of numpy.ndarray") +
                             ", like " + ref_name_);
    if (l.size() != ref_arrays_.size())
        throw py::value_error(std::string(name) + " has " + std::to_string(l.size()) +
                              " arrays but " + ref_name_ + " has " +
                              std::to_string(ref_arrays_.size()));
    for (std::size_t i = 0; i < l.size(); ++i) {
        const std::string item = l.item_name(i);
        check_array(l.arrays[i], item, writable);
        if (!same_shape(l.arrays[i], ref_arrays_[i]))
            throw py::value_error(item + " has shape " + shape_str(l.arrays[i]) + " but " +
                                  (ref_single_ ? std::string(ref_name_)
                                               : std::string(ref_name_) + "[" +
                                                     std::to_string(i) + "]") +
                                  " has shape " + shape_str(ref_arrays_[i]));
    }
    return l;
}

void Gate::check_no_overlap() const {
    if (ranges_.size() < 2) return;
    std::vector<const Range*> r;
    r.reserve(ranges_.size());
    for (const Range& x : ranges_) r.push_back(&x);
    std::sort(r.begin(), r.end(), [](const Range* a, const Range* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < r.size(); ++i)
        if (r[i]->begin < r[i - 1]->end)
            throw py::value_error(r[i - 1]->name + " and " + r[i]->name +
                                  " share memory (the same buffer or overlapping views); "
                                  "every array of one call must be a separate buffer");
}

void check_hyper(double x, const char* name) {
    if (!(x >= 0.0) || std::isinf(x))
        throw py::value_error(std::string(name) + " must be a finite number >= 0, got " +
                              std::string(py::str(py::float_(x))));
}

}  // namespace fastoptim::bind
