// GELU (exact erf form) on the CPU, forward and backward, element by element (jseg/ops/gelu.py):
//   y  = x * Phi(x),                 Phi(x) = (1 + erf(x / sqrt(2))) / 2
//   dx = dy * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
#include <cmath>
#include <omp.h>

namespace jseg_gelu {
typedef long long idx_t;
constexpr idx_t PAR_MIN = 1 << 16;   // elements below which one thread does it all

template <class T>
void forward(const T* __restrict__ x, T* __restrict__ y, idx_t n) {
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (idx_t i = 0; i < n; i++) y[i] = x[i] * T(0.5) * (T(1) + std::erf(x[i] * T(M_SQRT1_2)));
}

template <class T>
void backward(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, idx_t n) {
    const T inv_sqrt_2pi = T(0.3989422804014327);
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (idx_t i = 0; i < n; i++) {
        const T v = x[i];
        const T cdf = T(0.5) * (T(1) + std::erf(v * T(M_SQRT1_2)));
        dx[i] = dy[i] * (cdf + v * inv_sqrt_2pi * std::exp(T(-0.5) * v * v));
    }
}
}  // namespace jseg_gelu
