// argmax over one dimension on the CPU (jseg/ops/argmax.py). The input is viewed as
// (outer, n, inner); the result is the index (int32) and the value of the maximum over n for each
// (outer, inner) pair, with Jittor's rule: the first index wins ties and a value replaces the
// running maximum only when it is strictly greater (so NaN never does).
#include <algorithm>
#include <omp.h>

// Jittor compiles operators with -Ofast, under which the compiler may assume there are no NaNs and
// rewrite the compare-and-select; the rule above needs IEEE comparisons.
#pragma GCC push_options
#pragma GCC optimize("no-finite-math-only")

namespace jseg_argmax {
typedef long long idx_t;
constexpr idx_t CHUNK = 512;                 // positions per task: a few KB of running max and index
constexpr double PAR_MIN_WORK = 1 << 20;     // elements below which one thread does it all

// inner == 1 (the last dimension): one row per (outer) index, scanned once.
template <class T>
void rows(const T* __restrict__ x, int* __restrict__ index, T* __restrict__ value, idx_t outer, idx_t n) {
    #pragma omp parallel for schedule(static) if ((double)outer * n > PAR_MIN_WORK)
    for (idx_t o = 0; o < outer; o++) {
        const T* row = x + o * n;
        T best = row[0];
        int arg = 0;
        for (idx_t k = 1; k < n; k++)
            if (row[k] > best) { best = row[k]; arg = (int)k; }
        index[o] = arg;
        value[o] = best;
    }
}

// inner > 1: a chunk of contiguous positions keeps its running maximum and index while the n
// planes stream past; the compare-and-select loop over the chunk vectorises.
template <class T>
void planes(const T* __restrict__ x, int* __restrict__ index, T* __restrict__ value, idx_t outer, idx_t n,
            idx_t inner) {
    const idx_t chunks = (inner + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) if ((double)outer * n * inner > PAR_MIN_WORK)
    for (idx_t task = 0; task < outer * chunks; task++) {
        const idx_t o = task / chunks, start = (task % chunks) * CHUNK;
        const idx_t len = std::min(CHUNK, inner - start);
        const T* base = x + o * n * inner + start;
        T* best = value + o * inner + start;
        int* arg = index + o * inner + start;
        for (idx_t i = 0; i < len; i++) { best[i] = base[i]; arg[i] = 0; }
        for (idx_t k = 1; k < n; k++) {
            const T* plane = base + k * inner;
            const int kk = (int)k;
            for (idx_t i = 0; i < len; i++) {
                const bool greater = plane[i] > best[i];
                best[i] = greater ? plane[i] : best[i];
                arg[i] = greater ? kk : arg[i];
            }
        }
    }
}

template <class T>
void argmax(const T* x, int* index, T* value, idx_t outer, idx_t n, idx_t inner) {
    if (inner == 1) rows(x, index, value, outer, n);
    else planes(x, index, value, outer, n, inner);
}
}  // namespace jseg_argmax
#pragma GCC pop_options
