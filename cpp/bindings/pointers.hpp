// Pointer lists: buffers checked once by the Gate and then passed again and again.
//
// The torch adapter calls a kernel every step on the same parameters and state: a
// PointerList holds their validated data pointers (built through the Gate, overlap check
// included), and grad_pointers() reads a step's gradient tensors with three method calls
// each instead of the Gate's seven attribute reads. The Gate accepts a PointerList wherever
// it accepts a list; its items are one-dimensional (n,) and skip the overlap check, which
// was done when the list was built (gradients are only read).
#pragma once

#include <cstddef>
#include <vector>

#include "bindings/arrays.hpp"

namespace fastoptim::bind {

struct PointerList {
    std::vector<void*> ptrs;
    std::vector<std::size_t> sizes;
    DType dtype = DType::f32;
    bool writable = false;
    py::object keep;  // the arrays or tensors the pointers point into
};

// True if h is a PointerList; then *out points at it.
bool as_pointer_list(py::handle h, const PointerList** out);

}  // namespace fastoptim::bind
