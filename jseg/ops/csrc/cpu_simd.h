// The CPU vector width and the block sizes that follow from it: the one place where jseg's JIT CPU
// kernels (carafe_cpu.cc, offset_attention_fused_cpu.cc, offset_attention_gemm_cpu.cc, gemm_cpu.h) learn
// which instruction set they are compiled for. No other source names a width.
//
// Jittor compiles the cpu_src of jt.code operators with -march=native, so the compiler's
// predefined macros describe the machine that runs the kernel (Jittor keeps its kernel cache per
// CPU model, so a cache never serves another instruction set):
//
//   instruction set     JSEG_SIMD_BYTES   vector registers
//   AVX-512F            64                32 (zmm)
//   AVX2 and FMA        32                16 (ymm)
//   anything else       16                16 (xmm: SSE2 on x86-64; NEON on AArch64; GCC lowers
//                                          the vector types to scalar code where there is none)
//
// Define JSEG_SIMD_BYTES (16, 32 or 64) before including this header to force a width, e.g. to
// test a narrower path on a wider machine (tests/ops/test_cpu_simd.py). A width wider than the
// machine's is still correct: GCC splits the vector types into the widest registers it has.
#ifndef JSEG_CPU_SIMD_H
#define JSEG_CPU_SIMD_H

#ifndef JSEG_SIMD_BYTES
#if defined(__AVX512F__)
#define JSEG_SIMD_BYTES 64
#elif defined(__AVX2__) && defined(__FMA__)
#define JSEG_SIMD_BYTES 32
#else
#define JSEG_SIMD_BYTES 16
#endif
#endif

#if JSEG_SIMD_BYTES != 16 && JSEG_SIMD_BYTES != 32 && JSEG_SIMD_BYTES != 64
#error "JSEG_SIMD_BYTES must be 16, 32 or 64"
#endif

namespace jseg_simd {
typedef long long idx_t;

// Bytes per vector register, and the float lanes in one.
constexpr int BYTES = JSEG_SIMD_BYTES;
constexpr int FLOAT_LANES = BYTES / 4;

// A vector of BYTES bytes of T (GCC vector extension).
template <class T> struct Vec { typedef T type __attribute__((vector_size(BYTES))); };

// Register tile of the matrix-product micro-kernels of the fused coupled attention
// (offset_attention_fused_cpu.h) and of the packed GEMM (gemm_cpu.h): GEMM_MR rows x GEMM_NR
// vectors of accumulators, plus GEMM_NR vectors of the right operand and one broadcast, must fit
// the vector registers:
// AVX-512 8 x 2 + 2 + 1 of 32; AVX2 6 x 2 + 2 + 1 of 16; the 16-byte path has no FMA on x86-64
// (a product needs a temporary register), 4 x 2 + 2 + 1 + 1 of 16.
constexpr int GEMM_NR = 2;
constexpr int GEMM_MR = BYTES == 64 ? 8 : BYTES == 32 ? 6 : 4;
// K and C are zero-padded to multiples of GEMM_PAD where they are the vector dimension of a
// product: one register tile row of floats (a multiple of the double tile row too).
constexpr idx_t GEMM_PAD = GEMM_NR * FLOAT_LANES;

// Positions per block of the fused coupled attention (offset_attention_fused_cpu.cc). A multiple
// of GEMM_PAD (in the channels-first kernels the block is a product's vector dimension). Sized
// for L2: the backward's scratch is about 16 * OA_BLOCK * (K + C) bytes per thread (K classes,
// C channels; 0.5 MB at 64 positions, K = 150, C = 256). 64 was tuned with AVX-512; on an AVX2
// core 64 is again the fastest of 32, 48, 64, 96 and 128 (tools/dev/tune_offset_attention_block.py:
// backward 160 ms against 175-190 ms at K = 150, C = 256, HW = 128 x 128); the 16-byte path keeps
// it too (the scratch, not the registers, sets it).
constexpr idx_t OA_BLOCK = 64;

// Positions per strip of the 'gemm' strategy's softmax over classes (offset_attention_gemm_cpu.cc):
// each pass reads OA_COLUMNS contiguous floats of every class row. A cache quantity, not a vector
// one: with HW a power of two, the rows of a narrow strip fall into the same few cache sets (the
// backward operator: 28 ms with strips of 64 positions, 15 ms with 1024, at K = 150,
// HW = 128 x 128 on one AVX2 core); the strip's running maxima and sums (2 x 4 KB) stay in L1.
constexpr int OA_COLUMNS = 1024;

// Output pixels per register tile of the CARAFE forward (carafe_cpu.cc): CARAFE_TILE_VECTORS
// vectors of accumulators stay in registers over all k*k taps, so each multiply-add loads its two
// operands and nothing else. 32 floats with AVX2 (4 ymm) and AVX-512 (2 zmm: the output rows of
// OffSeg's CARAFE calls are multiples of 32 pixels, and a row's last, shorter tile runs element by
// element), 16 floats on the 16-byte path (4 xmm).
constexpr int CARAFE_TILE_VECTORS = BYTES == 64 ? 2 : 4;
template <class T> constexpr int carafe_tile() { return CARAFE_TILE_VECTORS * BYTES / (int)sizeof(T); }

// Cache blocks of the packed GEMM (gemm_cpu.h), in elements of the operand type, Goto/BLIS style:
// a GEMM_KC x (GEMM_NR vectors) strip of the packed B panel and a GEMM_MR x GEMM_KC strip of the
// packed A block stream through L1 (AVX2: 256 x 16 + 6 x 256 floats = 22 KB of 32 KB); the packed
// A block, GEMM_MC x GEMM_KC (144 x 256 floats = 144 KB), stays in the 512 KB L2; the packed B
// panel, GEMM_KC x GEMM_NC (256 x 2048 floats = 2 MB), in L3. GEMM_MC is a multiple of GEMM_MR on
// every path (144 = 24 x 6 = 18 x 8 = 36 x 4). The values are those BLIS uses for its AVX2
// single-precision kernels, checked on one AMD EPYC (AVX2) core: see jseg/ops/gemm.py.
constexpr idx_t GEMM_KC = 256;
constexpr idx_t GEMM_MC = 144;
constexpr idx_t GEMM_NC = 2048;

static_assert(GEMM_MC % GEMM_MR == 0, "GEMM_MC must be a multiple of GEMM_MR");
static_assert(GEMM_NC % GEMM_PAD == 0, "GEMM_NC must be a multiple of GEMM_PAD");
static_assert(OA_BLOCK % GEMM_PAD == 0, "OA_BLOCK must be a multiple of GEMM_PAD");
}  // namespace jseg_simd

#endif  // JSEG_CPU_SIMD_H
