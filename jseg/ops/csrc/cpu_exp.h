// exp(x) that g++ vectorises: the one home of the polynomial exponential of jseg's CPU kernels
// (softmax_cpu.cc, softmax_nll_cpu.cc).
#ifndef JSEG_CPU_EXP_H
#define JSEG_CPU_EXP_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace jseg_math {
// exp(x) for float: Cody-Waite reduction by ln 2 and a degree-6 polynomial (the Cephes expf
// coefficients), about 1 ulp over the whole range. Written without calls or branches so that g++
// vectorises the loops that use it at any SIMD width (-march=native), unlike a libm call;
// underflow (x below -87.3, -inf included) gives exactly 0.
inline float exp_approx(float x) {
    const float lo = -87.33654f, hi = 88.72284f;
    const float xc = x < lo ? lo : (x > hi ? hi : x);
    const float fx = std::floor(xc * 1.44269504088896341f + 0.5f);
    float r = xc - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    const float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;   // 2^fx
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return x < lo ? 0.0f : p * scale;
}

inline double exp_approx(double x) { return std::exp(x); }
}  // namespace jseg_math

#endif  // JSEG_CPU_EXP_H
