// fastoptim C++ API: every kernel, header-only.
//
// Include this from a C++ trainer and call, for example,
//   fastoptim::adam_multi<float>(tensors, count, config, nthreads);
// on your own buffers (see config.hpp for the structs). The kernels compile with your
// flags into namespace fastoptim::FASTOPTIM_KERNEL_NS (default `portable`), which is
// brought into namespace fastoptim. The Python extension compiles the same headers once
// per SIMD target and picks one at run time.
#pragma once

#ifndef FASTOPTIM_KERNEL_NS
#define FASTOPTIM_KERNEL_NS portable
#define FASTOPTIM_KERNEL_NS_IS_DEFAULT 1
#endif

#include "fastoptim/config.hpp"
#include "fastoptim/kernels/adam_variants.hpp"
#include "fastoptim/kernels/adaptive.hpp"
#include "fastoptim/kernels/factored.hpp"
#include "fastoptim/nn_config.hpp"
#include "fastoptim/kernels/activations.hpp"
#include "fastoptim/kernels/losses.hpp"
#include "fastoptim/kernels/optimizers.hpp"
#include "fastoptim/kernels/parallel.hpp"
#include "fastoptim/kernels/reductions.hpp"
#include "fastoptim/kernels/regularizers.hpp"
#include "fastoptim/kernels/roofline.hpp"
#include "fastoptim/kernels/schedulefree.hpp"
#include "fastoptim/kernels/trust_ratio.hpp"

#ifdef FASTOPTIM_KERNEL_NS_IS_DEFAULT
namespace fastoptim {
using namespace FASTOPTIM_KERNEL_NS;
}
#endif
