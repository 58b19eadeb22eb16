//===- packed_matmul_bench.cpp - GEMMs on packed int4/int8 weights --------===//
//
// moert-packed-bench: C[M, N] = A[M, K] * W for a packed weight W (4 or 8
// bits, block 32, zero points), three ways in one run, alternating so that
// all see the same machine load:
//   packed   cpu::packedMatmul on the codes (what plans run now)
//   expand   cpu::dequantize of W into memory, then cblas_sgemm (what they
//            ran before: a deferred dequantize step, then a matmul)
//   fp32     cblas_sgemm on W expanded once (moec --packed-weights=expand:
//            4 or 8 times the weight bytes)
// and prints median milliseconds and the ratios expand/packed and
// fp32/packed (above 1: packed is faster).
//
//   moert-packed-bench [--k 2048] [--n 2048] [--bits 4] [--iters 20]
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace moert;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename Fn> double seconds(Fn &&fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}
} // namespace

int main(int argc, char **argv) {
  int64_t K = 2048, N = 2048, bits = 4, iters = 20;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    int64_t *target = arg == "--k"       ? &K
                      : arg == "--n"     ? &N
                      : arg == "--bits"  ? &bits
                      : arg == "--iters" ? &iters
                                         : nullptr;
    if (!target || i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: %s [--k K] [--n N] [--bits 4|8] "
                   "[--iters I]\n",
                   argv[0]);
      return 2;
    }
    *target = std::atoll(argv[++i]);
  }
  const int64_t bs = 32;
  if (K < bs || K % bs || N < 1 || (bits != 4 && bits != 8) || iters < 1) {
    std::fprintf(stderr, "moert-packed-bench: K a multiple of 32, N >= 1, "
                         "bits 4 or 8\n");
    return 2;
  }
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int64_t blocks = K / bs;
  std::vector<uint8_t> codes(size_t(N * K * bits / 8));
  for (uint8_t &c : codes)
    c = uint8_t(rng());
  std::vector<float> scales(size_t(N * blocks)), zps(size_t(N * blocks));
  for (size_t i = 0; i < scales.size(); ++i) {
    scales[i] = 0.01f * u(rng);
    zps[i] = float(rng() % (1u << bits));
  }
  cpu::PackedWeight w;
  w.codes = codes.data();
  w.scales = scales.data();
  w.zeroPoints = zps.data();
  w.n = N;
  w.k = K;
  w.bits = bits;
  w.blockSize = bs;
  std::vector<float> wf(size_t(K * N)), tmp(size_t(K * N));
  cpu::dequantize(codes.data(), scales.data(), zps.data(), 1, N, K, bits, bs,
                  wf.data());

  std::printf("moert-packed-bench: W [%lld, %lld], %lld bits, block 32, zero "
              "points, %u hardware threads",
              (long long)K, (long long)N, (long long)bits,
              std::thread::hardware_concurrency());
#ifdef OPENBLAS_VERSION
  std::printf(", OpenBLAS threads %d", openblas_get_num_threads());
#endif
  std::printf("\n\n%5s %11s %11s %11s %14s %12s %10s\n", "M", "packed ms",
              "expand ms", "fp32 ms", "expand/packed", "fp32/packed",
              "max |diff|");
  for (int64_t M : {1, 2, 4, 8, 16, 64, 256}) {
    std::vector<float> A(size_t(M * K)), c0(size_t(M * N)), c1(c0), c2(c0);
    for (float &x : A)
      x = u(rng);
    auto sgemm = [&](const float *B, float *C) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(N),
                  int(K), 1.0f, A.data(), int(K), B, int(N), 0.0f, C, int(N));
    };
    auto packed = [&] { cpu::packedMatmul(A.data(), M, w, c0.data(), false); };
    auto expand = [&] {
      cpu::dequantize(codes.data(), scales.data(), zps.data(), 1, N, K, bits,
                      bs, tmp.data());
      sgemm(tmp.data(), c1.data());
    };
    auto fp32 = [&] { sgemm(wf.data(), c2.data()); };
    packed();
    expand();
    fp32();
    std::vector<double> tp, te, tf;
    for (int64_t i = 0; i < iters; ++i) {
      tp.push_back(seconds(packed));
      te.push_back(seconds(expand));
      tf.push_back(seconds(fp32));
    }
    double diff = 0;
    for (size_t i = 0; i < c0.size(); ++i)
      diff = std::max(diff, double(std::abs(c0[i] - c2[i])));
    double p = median(tp), e = median(te), f = median(tf);
    std::printf("%5lld %11.3f %11.3f %11.3f %13.2fx %11.2fx %10.2e\n",
                (long long)M, p * 1e3, e * 1e3, f * 1e3, e / p, f / p, diff);
  }
  return 0;
}
