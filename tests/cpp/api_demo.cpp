// Uses the header-only C++ API the way a C++ trainer would: one Adam step and one SGD
// momentum step over two buffers, then prints every resulting value for the Python test.
#include <cstdio>
#include <vector>

#include <fastoptim/kernels.hpp>

int main() {
    std::vector<float> p1{1.0f, -2.0f, 3.0f}, g1{0.5f, 0.25f, -1.0f}, m1(3, 0.0f), v1(3, 0.0f);
    std::vector<float> p2{0.1f, 0.2f}, g2{-0.3f, 0.4f}, m2(2, 0.0f), v2(2, 0.0f);
    fastoptim::AdamTensor<float> ts[] = {
        {p1.data(), g1.data(), m1.data(), v1.data(), nullptr, p1.size()},
        {p2.data(), g2.data(), m2.data(), v2.data(), nullptr, p2.size()}};
    fastoptim::AdamConfig adam;
    adam.lr = 0.1;
    adam.weight_decay = 0.01;
    adam.decoupled_weight_decay = true;
    adam.step = 1;
    if (!fastoptim::validate(adam).empty()) return 1;
    fastoptim::adam_multi<float>(ts, 2, adam, 1);

    std::vector<double> q{1.0, 2.0}, gq{0.5, -0.5}, buf(2, 0.0);
    fastoptim::SGDTensor<double> s{q.data(), gq.data(), buf.data(), q.size()};
    fastoptim::SGDConfig sgd;
    sgd.lr = 0.1;
    sgd.momentum = 0.9;
    sgd.first_step = true;
    fastoptim::sgd_multi<double>(&s, 1, sgd, 1);

    for (float x : p1) std::printf("%.9g\n", static_cast<double>(x));
    for (float x : p2) std::printf("%.9g\n", static_cast<double>(x));
    for (double x : q) std::printf("%.17g\n", x);
    return 0;
}
