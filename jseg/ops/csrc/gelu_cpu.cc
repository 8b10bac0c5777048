// GELU (exact erf form) on the CPU, forward and backward, element by element (jseg/ops/gelu.py):
//   y  = x * Phi(x),                 Phi(x) = (1 + erf(x / sqrt(2))) / 2
//   dx = dy * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// erf is Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, about one float32 ulp of
// values near 1), written with exp and a division only, so that the loops vectorise (the C
// library's erf does not); exp(-x^2/2) is shared by erf and phi.
#include <cmath>
#include <omp.h>

namespace jseg_gelu {
typedef long long idx_t;
constexpr idx_t PAR_MIN = 1 << 16;   // elements below which one thread does it all

// (Phi(x), phi(x)) for one element.
template <class T>
inline void cdf_pdf(T x, T& cdf, T& pdf) {
    const T z = x * T(M_SQRT1_2);                       // erf argument
    const T a = z < T(0) ? -z : z;
    const T t = T(1) / (T(1) + T(0.3275911) * a);
    const T e = std::exp(-z * z);                       // = exp(-x^2 / 2)
    const T poly = t * (T(0.254829592) + t * (T(-0.284496736) + t * (T(1.421413741) +
                   t * (T(-1.453152027) + t * T(1.061405429)))));
    const T erf_a = T(1) - poly * e;
    const T erf_z = z < T(0) ? -erf_a : erf_a;
    cdf = T(0.5) * (T(1) + erf_z);
    pdf = T(0.3989422804014327) * e;
}

template <class T>
void forward(const T* __restrict__ x, T* __restrict__ y, idx_t n) {
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (idx_t i = 0; i < n; i++) {
        T cdf, pdf;
        cdf_pdf(x[i], cdf, pdf);
        y[i] = x[i] * cdf;
    }
}

template <class T>
void backward(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, idx_t n) {
    #pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (idx_t i = 0; i < n; i++) {
        T cdf, pdf;
        cdf_pdf(x[i], cdf, pdf);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}
}  // namespace jseg_gelu
