#include "bindings/arrays.hpp"

#include "bindings/pointers.hpp"

#include <algorithm>
#include <cmath>

namespace fastoptim::bind {

namespace {

std::string type_name(py::handle h) { return py::str(py::type::handle_of(h).attr("__name__")); }

// torch objects, looked up once torch is imported (fastoptim never imports it itself).
struct TorchRefs {
    PyObject* tensor_type = nullptr;
    PyObject* float32 = nullptr;
    PyObject* float64 = nullptr;
    PyObject* strided = nullptr;
    PyObject *s_layout, *s_is_cpu, *s_dtype, *s_is_contiguous, *s_data_ptr, *s_shape, *s_device;
};

// The torch.Tensor type if torch is imported, else nullptr. The references are kept
// for the life of the process (torch cannot be unloaded).
const TorchRefs* torch_refs() {
    static TorchRefs r;
    if (r.tensor_type) return &r;
    PyObject* modules = PyImport_GetModuleDict();
    PyObject* torch = PyDict_GetItemString(modules, "torch");  // borrowed
    if (!torch) return nullptr;
    py::handle t(torch);
    if (!py::hasattr(t, "Tensor")) return nullptr;  // torch is still being imported
    r.float32 = py::object(t.attr("float32")).release().ptr();
    r.float64 = py::object(t.attr("float64")).release().ptr();
    r.strided = py::object(t.attr("strided")).release().ptr();
    r.s_layout = PyUnicode_InternFromString("layout");
    r.s_is_cpu = PyUnicode_InternFromString("is_cpu");
    r.s_dtype = PyUnicode_InternFromString("dtype");
    r.s_is_contiguous = PyUnicode_InternFromString("is_contiguous");
    r.s_data_ptr = PyUnicode_InternFromString("data_ptr");
    r.s_shape = PyUnicode_InternFromString("shape");
    r.s_device = PyUnicode_InternFromString("device");
    r.tensor_type = py::object(t.attr("Tensor")).release().ptr();
    return &r;
}

bool is_tensor(py::handle h) {
    if (py::isinstance<py::array>(h)) return false;
    const TorchRefs* r = torch_refs();
    return r && PyObject_TypeCheck(h.ptr(), reinterpret_cast<PyTypeObject*>(r->tensor_type));
}

py::object get(py::handle h, PyObject* name) {
    PyObject* o = PyObject_GetAttr(h.ptr(), name);
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
}

py::object call0(py::handle h, PyObject* name) {
    PyObject* o = PyObject_CallMethodNoArgs(h.ptr(), name);
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
}

}  // namespace

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        s += std::to_string(a.shape(d));
        if (a.ndim() == 1 || d + 1 < a.ndim()) s += a.ndim() == 1 ? "," : ", ";
    }
    return s + ")";
}

std::string ArrayList::item_name(std::size_t i) const {
    return single ? std::string(name) : std::string(name) + "[" + std::to_string(i) + "]";
}

std::string ArrayList::shape_str(std::size_t i) const {
    const Buffer& b = items[i];
    std::string s = "(";
    for (int d = 0; d < b.ndim; ++d) {
        s += std::to_string(dims[b.dim_off + static_cast<std::size_t>(d)]);
        if (b.ndim == 1 || d + 1 < b.ndim) s += b.ndim == 1 ? "," : ", ";
    }
    return s + ")";
}

bool ArrayList::same_shape(std::size_t i, const ArrayList& o) const {
    const Buffer &a = items[i], &b = o.items[i];
    if (a.ndim != b.ndim) return false;
    for (std::size_t d = 0; d < static_cast<std::size_t>(a.ndim); ++d)
        if (dims[a.dim_off + d] != o.dims[b.dim_off + d]) return false;
    return true;
}

std::string Gate::Name::str() const {
    return index < 0 ? std::string(base) : std::string(base) + "[" + std::to_string(index) + "]";
}

void Gate::set_dtype(DType kind, const Name& name, py::handle got) {
    if (!have_dtype_) {
        dtype_ = kind;
        have_dtype_ = true;
    } else if (kind != dtype_) {
        const char* want = dtype_ == DType::f32 ? "float32" : "float64";
        throw py::type_error(name.str() + " has dtype " + std::string(py::str(got)) + " but " + ref_name_ + " are " + want +
                             "; every array of one call must have the same dtype");
    }
}

void Gate::add_array(ArrayList& out, py::handle item, const Name& name, bool writable) {
    py::array a = py::reinterpret_borrow<py::array>(item);
    const py::dtype dt = a.dtype();
    const int num = dt.num();
    const bool native = dt.byteorder() != '>';
    DType kind;
    if (num == py::detail::npy_api::NPY_FLOAT_ && native) kind = DType::f32;
    else if (num == py::detail::npy_api::NPY_DOUBLE_ && native) kind = DType::f64;
    else
        throw py::type_error(name.str() + " must be a float32 or float64 array (native byte order), got dtype " +
                             std::string(py::str(dt)));
    set_dtype(kind, name, dt);
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(name.str() +
                              " must be C-contiguous (got a strided, Fortran-order or "
                              "negative-stride view); arrays are updated in place and never "
                              "copied, so pass a contiguous array and keep using it");
    // A float32 view at an odd byte offset (np.frombuffer with an offset, packed records):
    // kernels take T*, and a misaligned T* is undefined behaviour.
    if (!py::detail::check_flags(a.ptr(), py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(name.str() + " is not aligned to its dtype (a view at an odd byte "
                                     "offset); pass an aligned array");
    if (writable && !a.writeable())
        throw py::value_error(name.str() + " is read-only; it is updated in place and must be writeable");
    Buffer b{a, const_cast<void*>(a.data()), static_cast<std::size_t>(a.size()), out.dims.size(),
             static_cast<int>(a.ndim())};
    for (py::ssize_t d = 0; d < a.ndim(); ++d) out.dims.push_back(a.shape(d));
    if (b.n > 0) {
        const char* p = static_cast<const char*>(b.data);
        ranges_.push_back(Range{p, p + a.nbytes(), name});
    }
    out.items.push_back(std::move(b));
}

// A dense, contiguous CPU float32/float64 torch.Tensor, read through its Python API (no
// libtorch link): device, layout, dtype, contiguity, shape and data pointer.
void Gate::add_tensor(ArrayList& out, py::handle item, const Name& name) {
    const TorchRefs& r = *torch_refs();
    if (get(item, r.s_layout).ptr() != r.strided)
        throw py::type_error(name.str() + " is a " + std::string(py::str(get(item, r.s_layout))) +
                             " tensor; fastoptim updates dense (torch.strided) tensors only");
    if (get(item, r.s_is_cpu).ptr() != Py_True)
        throw py::value_error(name.str() + " is on device " + std::string(py::str(get(item, r.s_device))) +
                              "; fastoptim updates CPU tensors only");
    py::object dt = get(item, r.s_dtype);
    DType kind;
    if (dt.ptr() == r.float32) kind = DType::f32;
    else if (dt.ptr() == r.float64) kind = DType::f64;
    else
        throw py::type_error(name.str() + " must be a float32 or float64 tensor, got " +
                             std::string(py::str(dt)));
    set_dtype(kind, name, dt);
    if (call0(item, r.s_is_contiguous).ptr() != Py_True)
        throw py::value_error(name.str() + " must be a contiguous tensor; tensors are updated in place "
                                     "and never copied");
    py::object shape = get(item, r.s_shape);  // torch.Size, a tuple subclass
    const Py_ssize_t nd = PyTuple_GET_SIZE(shape.ptr());
    Buffer b{py::reinterpret_borrow<py::object>(item), nullptr, 1, out.dims.size(),
             static_cast<int>(nd)};
    for (Py_ssize_t d = 0; d < nd; ++d) {
        const Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape.ptr(), d));
        if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
        out.dims.push_back(v);
        b.n *= static_cast<std::size_t>(v);
    }
    py::object ptr = call0(item, r.s_data_ptr);
    b.data = PyLong_AsVoidPtr(ptr.ptr());
    if (!b.data && PyErr_Occurred()) throw py::error_already_set();
    if (b.n > 0) {
        const char* p = static_cast<const char*>(b.data);
        ranges_.push_back(Range{p, p + b.n * (kind == DType::f32 ? 4 : 8), name});
    }
    out.items.push_back(std::move(b));
}

void Gate::add(ArrayList& out, py::handle item, std::size_t i, bool writable) {
    const Name name{out.name, out.single ? -1 : static_cast<std::ptrdiff_t>(i)};
    if (py::isinstance<py::array>(item)) add_array(out, item, name, writable);
    else if (is_tensor(item)) add_tensor(out, item, name);
    else
        throw py::type_error(name.str() + " must be a numpy.ndarray or a torch.Tensor, got " +
                             type_name(item));
}

ArrayList Gate::parse(py::handle obj, const char* name, bool writable) {
    ArrayList out;
    out.name = name;
    const PointerList* pl = nullptr;
    if (as_pointer_list(obj, &pl)) {  // checked when it was built: see pointers.hpp
        if (writable && !pl->writable)
            throw py::value_error(std::string(name) + " is a read-only pointer list");
        if (!have_dtype_ || pl->dtype != dtype_)  // (the dtype's name is built for errors only)
            set_dtype(pl->dtype, Name{name, -1},
                      py::str(pl->dtype == DType::f32 ? "float32" : "float64"));
        const std::size_t n = pl->ptrs.size();
        out.items.reserve(n);
        out.dims.reserve(n);
        py::object keep = py::reinterpret_borrow<py::object>(obj);
        for (std::size_t i = 0; i < n; ++i) {
            out.items.push_back(Buffer{keep, pl->ptrs[i], pl->sizes[i], out.dims.size(), 1});
            out.dims.push_back(static_cast<py::ssize_t>(pl->sizes[i]));
        }
        return out;
    }
    if (py::isinstance<py::array>(obj) || is_tensor(obj)) {
        out.single = true;
        add(out, obj, 0, writable);
    } else if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
        py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
        const std::size_t n = static_cast<std::size_t>(seq.size());
        out.items.reserve(n);
        out.dims.reserve(2 * n);
        for (std::size_t i = 0; i < n; ++i) add(out, seq[i], i, writable);
    } else {
        throw py::type_error(std::string(name) +
                             " must be a numpy.ndarray or a list of numpy.ndarray, got " +
                             type_name(obj));
    }
    return out;
}

ArrayList Gate::first(py::handle obj, const char* name, bool writable) {
    ref_name_ = name;
    ArrayList l = parse(obj, name, writable);
    ref_single_ = l.single;
    // Only the shapes are needed later: copy them without touching reference counts.
    ref_.name = l.name;
    ref_.single = l.single;
    ref_.dims = l.dims;
    ref_.items.clear();
    ref_.items.reserve(l.items.size());
    for (const Buffer& b : l.items) ref_.items.push_back(Buffer{py::object(), b.data, b.n, b.dim_off, b.ndim});
    return l;
}

ArrayList Gate::like(py::handle obj, const char* name, bool writable) {
    ArrayList l = parse(obj, name, writable);
    if (l.single != ref_single_)
        throw py::type_error(std::string(name) + " must be " +
                             (ref_single_ ? "a numpy.ndarray" : "a list of numpy.ndarray") +
                             ", like " + ref_name_);
    if (l.size() != ref_.size())
        throw py::value_error(std::string(name) + " has " + std::to_string(l.size()) +
                              " arrays but " + ref_name_ + " has " +
                              std::to_string(ref_.size()));
    for (std::size_t i = 0; i < l.size(); ++i)
        if (!l.same_shape(i, ref_))
            throw py::value_error(l.item_name(i) + " has shape " + l.shape_str(i) + " but " +
                                  ref_.item_name(i) + " has shape " + ref_.shape_str(i));
    return l;
}

py::array Gate::single(py::handle obj, const char* name, bool writable) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
    if (!ref_name_) ref_name_ = name;
    ArrayList scratch;
    scratch.name = name;
    scratch.single = true;
    add_array(scratch, obj, Name{name, -1}, writable);
    return py::reinterpret_borrow<py::array>(obj);
}

py::array Gate::indices(py::handle obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
    py::array a = py::reinterpret_borrow<py::array>(obj);
    const py::dtype dt = a.dtype();
    if (dt.num() != py::dtype::of<std::int64_t>().num() || dt.byteorder() == '>')
        throw py::type_error(std::string(name) + " must be an int64 array of class indices, got dtype " +
                             std::string(py::str(dt)));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous");
    if (a.size() > 0) {
        const char* b = static_cast<const char*>(a.data());
        ranges_.push_back(Range{b, b + a.nbytes(), Name{name, -1}});
    }
    return a;
}

void Gate::check_no_overlap() const {
    if (ranges_.size() < 2) return;
    std::vector<const Range*> r;
    r.reserve(ranges_.size());
    for (const Range& x : ranges_) r.push_back(&x);
    std::sort(r.begin(), r.end(), [](const Range* a, const Range* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < r.size(); ++i)
        if (r[i]->begin < r[i - 1]->end)
            throw py::value_error(r[i - 1]->name.str() + " and " + r[i]->name.str() +
                                  " share memory (the same buffer or overlapping views); "
                                  "every array of one call must be a separate buffer");
}

void check_hyper(double x, const char* name) {
    if (!(x >= 0.0) || std::isinf(x))
        throw py::value_error(std::string(name) + " must be a finite number >= 0, got " +
                              std::string(py::str(py::float_(x))));
}

}  // namespace fastoptim::bind
