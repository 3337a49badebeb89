// One Adam step on a float buffer with fastoptim's header-only C++ API. Build:
//   c++ -std=c++17 -O2 -fopenmp -I"$(python -c 'import fastoptim; print(fastoptim.get_include())')" \
//       readme_adam.cpp -o readme_adam
#include <cstdio>
#include <string>
#include <vector>

#include <fastoptim/kernels.hpp>

int main() {
    std::vector<float> param{1.0f, -2.0f, 3.0f}, grad{0.5f, 0.25f, -1.0f};
    std::vector<float> exp_avg(param.size(), 0.0f), exp_avg_sq(param.size(), 0.0f);
    fastoptim::AdamTensor<float> t{param.data(), grad.data(), exp_avg.data(),
                                   exp_avg_sq.data(), /*max_exp_avg_sq=*/nullptr, param.size()};
    fastoptim::AdamConfig cfg;  // torch.optim.Adam's defaults: betas (0.9, 0.999), eps 1e-8
    cfg.lr = 1e-3;
    cfg.step = 1;  // counts from 1, as torch's state["step"] after the first step
    std::string error = fastoptim::validate(cfg);
    if (!error.empty()) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return 1;
    }
    fastoptim::adam_multi<float>(&t, 1, cfg, /*nthreads=*/1);
    for (float p : param) std::printf("%.9g\n", static_cast<double>(p));
    return 0;
}
