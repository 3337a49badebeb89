// Instantiates the reduced-precision format kernels for one SIMD target (FASTOPTIM_TARGET =
// scalar | avx2 | avx512 | avx512bf16) inside namespace fastoptim::<target>.
#define FASTOPTIM_KERNEL_NS FASTOPTIM_TARGET
#include "fastoptim/kernels/adam_formats.hpp"
#include "fastoptim/kernels/state_formats.hpp"
#include "dispatch/formats_table.hpp"

#define FO_STR2(x) #x
#define FO_STR(x) FO_STR2(x)
#define FO_CAT2(a, b) a##b
#define FO_CAT(a, b) FO_CAT2(a, b)

namespace fastoptim::dispatch {

const FormatOps* FO_CAT(format_table_, FASTOPTIM_TARGET)() {
    namespace k = fastoptim::FASTOPTIM_TARGET;
    static const FormatOps table{FO_STR(FASTOPTIM_TARGET), &k::adam_format_multi,
                                 &k::sgd_format_multi,  &k::rmsprop_format_multi,
                                 &k::adagrad_format_multi, &k::format_encode,
                                 &k::format_decode,     &k::dynamic_map_values,
                                 &k::adamax_format_multi,   &k::nadam_format_multi,
                                 &k::radam_format_multi,    &k::adadelta_format_multi,
                                 &k::lion_format_multi,     &k::ademamix_format_multi};
    return &table;
}

}  // namespace fastoptim::dispatch
