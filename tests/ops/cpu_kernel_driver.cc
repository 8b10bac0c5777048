// A stand-alone driver for jseg's JIT CPU kernels, so that tests/ops/test_cpu_simd.py can compile
// them with g++ for a chosen instruction set (plain, AVX2, AVX-512; see jseg/ops/csrc/cpu_simd.h)
// and compare what they compute with the pure-Jittor references.
//
//   driver width                    prints JSEG_SIMD_BYTES and the block sizes of that build
//   driver OP DIR N1 N2 ...         reads DIR/in<i>.f32, writes DIR/out<i>.f32 (raw float32)
//
// OPs (dims after DIR; inputs -> outputs):
//   carafe K S B C h w G            f, masks, dout -> out, d f, d masks (the blocked kernels)
//   oa_fused CF B N C Bw K          E (E^T if CF), W, G_cls, G_pos -> F_cls, F_pos, dE, dW
//   oa_gemm K N                     A^T, G_cls E^T, W G_pos^T, dcls -> P_cls, P_pos, lse_cls, lse_pos,
//                                   [P_cls; dA], P_pos (stats_cpu, then grad_cpu on its lse)
//   matmul BA AR AC TA BB BR BC TB SUM   a (BA x AR x AC, BA = 0: 2-D), b likewise -> op(a) op(b)
//                                   (the packed GEMM, gemm_cpu.cc; summed over the batch if SUM)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "carafe_cpu.cc"
#include "offset_attention_fused_cpu.cc"
#include "offset_attention_gemm_cpu.cc"
#include "gemm_cpu.cc"

typedef long long idx_t;
typedef std::vector<float> Buf;

static std::string dir;

static Buf load(int i, idx_t n) {
    Buf b(n);
    const std::string path = dir + "/in" + std::to_string(i) + ".f32";
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(b.data(), sizeof(float), n, f) != (size_t)n) {
        std::fprintf(stderr, "cannot read %lld floats from %s\n", n, path.c_str());
        std::exit(2);
    }
    std::fclose(f);
    return b;
}

static void save(int i, const Buf& b) {
    const std::string path = dir + "/out" + std::to_string(i) + ".f32";
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(b.data(), sizeof(float), b.size(), f) != b.size()) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

// Output buffers start as NaN: a kernel that leaves an element unwritten fails the comparison
// (Jittor does not zero the outputs of jt.code operators either).
static Buf output(idx_t n) { return Buf(n, std::strtof("nan", nullptr)); }

template <int KS, int SC>
static void carafe(idx_t B, idx_t C, idx_t h, idx_t w, idx_t G) {
    using namespace jseg_carafe;
    const idx_t H = h * SC, W = w * SC, nf = B * C * h * w, nm = B * G * KS * KS * H * W, no = B * C * H * W;
    const Buf f = load(0, nf), m = load(1, nm), d = load(2, no);
    Buf out = output(no), df = output(nf), dm = output(nm);
    forward_blocked<float, KS, SC>(f.data(), m.data(), out.data(), B, C, h, w, G);
    grad_features_blocked<float, KS, SC>(d.data(), m.data(), df.data(), B, C, h, w, G);
    grad_masks_blocked<float, KS, SC>(d.data(), f.data(), dm.data(), B, C, h, w, G);
    save(0, out);
    save(1, df);
    save(2, dm);
}

static void oa_fused(bool cf, idx_t B, idx_t N, idx_t C, idx_t Bw, idx_t K) {
    using namespace jseg_oa;
    const Buf e = load(0, B * N * C), wt = load(1, Bw * K * C), gc = load(2, B * K * C), gp = load(3, B * N * C);
    Buf f_cls = output(B * K * C), f_pos = output(B * N * C), lse_cls = output(B * K), lse_pos = output(B * N);
    Buf de = output(B * N * C), dw = output(Bw * K * C);
    if (cf) {
        forward_channels_first<float>(e.data(), wt.data(), f_cls.data(), f_pos.data(), lse_cls.data(),
                                      lse_pos.data(), B, N, C, Bw, K);
        backward_channels_first<float>(e.data(), wt.data(), gc.data(), gp.data(), lse_cls.data(), lse_pos.data(),
                                       f_cls.data(), de.data(), dw.data(), B, N, C, Bw, K);
    } else {
        forward_token_major<float>(e.data(), wt.data(), f_cls.data(), f_pos.data(), lse_cls.data(),
                                   lse_pos.data(), B, N, C, Bw, K);
        backward_token_major<float>(e.data(), wt.data(), gc.data(), gp.data(), lse_cls.data(), lse_pos.data(),
                                    f_cls.data(), de.data(), dw.data(), B, N, C, Bw, K);
    }
    save(0, f_cls);
    save(1, f_pos);
    save(2, de);
    save(3, dw);
}

static void oa_gemm(idx_t K, idx_t N) {
    using namespace jseg_oa_gemm;
    const Buf at = load(0, K * N), dpc = load(1, K * N), dpp = load(2, K * N), dcls = load(3, K);
    Buf pc = output(K * N), pp = output(K * N), lse_cls = output(K), lse_pos = output(N);
    Buf pd = output(2 * K * N), pp2 = output(K * N);
    stats_cpu<float>(at.data(), pc.data(), pp.data(), lse_cls.data(), lse_pos.data(), K, N);
    grad_cpu<float>(at.data(), dpc.data(), dpp.data(), lse_cls.data(), lse_pos.data(), dcls.data(), pd.data(),
                    pp2.data(), K, N);
    save(0, pc);
    save(1, pp);
    save(2, lse_cls);
    save(3, lse_pos);
    save(4, pd);
    save(5, pp2);
}

static void matmul(const std::vector<idx_t>& n) {
    const idx_t ba = n[0], ar = n[1], ac = n[2], bb = n[4], br = n[5], bc = n[6];
    const bool ta = n[3] != 0, tb = n[7] != 0, sum = n[8] != 0;
    const Buf a = load(0, std::max<idx_t>(ba, 1) * ar * ac), b = load(1, std::max<idx_t>(bb, 1) * br * bc);
    const idx_t batch = std::max<idx_t>(std::max(ba, bb), 1);
    const idx_t m = ta ? ac : ar, cols = tb ? br : bc;
    Buf c = output((sum ? 1 : batch) * m * cols);
    jseg_gemm::matmul<float>(a.data(), ba, ar, ac, ta, b.data(), bb, br, bc, tb, c.data(), sum);
    save(0, c);
}

int main(int argc, char** argv) {
    if (argc == 2 && std::string(argv[1]) == "width") {
        std::printf("JSEG_SIMD_BYTES=%d GEMM_MR=%d GEMM_NR=%d OA_BLOCK=%lld OA_COLUMNS=%d CARAFE_TILE=%d "
                    "GEMM_KC=%lld GEMM_MC=%lld GEMM_NC=%lld\n",
                    JSEG_SIMD_BYTES, jseg_simd::GEMM_MR, jseg_simd::GEMM_NR, (idx_t)jseg_simd::OA_BLOCK,
                    jseg_simd::OA_COLUMNS, jseg_simd::carafe_tile<float>(), (idx_t)jseg_simd::GEMM_KC,
                    (idx_t)jseg_simd::GEMM_MC, (idx_t)jseg_simd::GEMM_NC);
        return 0;
    }
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s width | OP DIR N1 N2 ...\n", argv[0]);
        return 2;
    }
    const std::string op = argv[1];
    dir = argv[2];
    std::vector<idx_t> n;
    for (int i = 3; i < argc; i++) n.push_back(std::atoll(argv[i]));
    if (op == "carafe" && n.size() == 7) {
        const idx_t k = n[0], s = n[1];
        if (k == 3 && s == 1) carafe<3, 1>(n[2], n[3], n[4], n[5], n[6]);
        else if (k == 3 && s == 2) carafe<3, 2>(n[2], n[3], n[4], n[5], n[6]);
        else if (k == 5 && s == 1) carafe<5, 1>(n[2], n[3], n[4], n[5], n[6]);
        else if (k == 5 && s == 2) carafe<5, 2>(n[2], n[3], n[4], n[5], n[6]);
        else { std::fprintf(stderr, "carafe: no kernel for k=%lld s=%lld\n", k, s); return 2; }
    } else if (op == "oa_fused" && n.size() == 6) {
        oa_fused(n[0] != 0, n[1], n[2], n[3], n[4], n[5]);
    } else if (op == "oa_gemm" && n.size() == 2) {
        oa_gemm(n[0], n[1]);
    } else if (op == "matmul" && n.size() == 9) {
        matmul(n);
    } else {
        std::fprintf(stderr, "unknown operation or wrong number of sizes: %s\n", op.c_str());
        return 2;
    }
    return 0;
}
