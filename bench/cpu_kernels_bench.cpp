//===- cpu_kernels_bench.cpp - grouped expert GEMMs vs plain sgemm --------===//
//
// moert-cpu-bench: one MoE layer on one rank holding every expert (random
// routing, dropless), timing route, dispatch (planDispatch, packRows, the
// slot-major reorder), groupedFFN (SwiGLU) and combine, and comparing the
// rate of groupedFFN with the rate of one plain cblas_sgemm of the same total
// FLOPs measured in the same run.
//
//   moert-cpu-bench [--tokens 2048] [--hidden 1024] [--ffn 2816]
//                   [--experts 8] [--topk 2] [--iters 5]
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>

using namespace moert;

namespace {

std::vector<float> randomVec(std::mt19937 &rng, size_t n, float scale) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

double seconds(const std::function<void()> &fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

/// Median and best of some timings.
struct Timing {
  double median, best;
};

Timing summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front()};
}

/// Timing of `iters` runs of `fn`, after one warm-up run.
Timing timeIt(int64_t iters, const std::function<void()> &fn) {
  fn();
  std::vector<double> times;
  for (int64_t i = 0; i < iters; ++i)
    times.push_back(seconds(fn));
  return summarize(times);
}

void printRow(const char *name, Timing t, double flops) {
  if (flops > 0)
    std::printf("%-42s %11.3f %11.3f %9.1f %9.1f\n", name, t.median * 1e3,
                t.best * 1e3, flops / t.median * 1e-9, flops / t.best * 1e-9);
  else
    std::printf("%-42s %11.3f %11.3f\n", name, t.median * 1e3, t.best * 1e3);
}

void usage(const char *argv0) {
  std::fprintf(stderr,
               "usage: %s [--tokens N] [--hidden H] [--ffn F] [--experts E] "
               "[--topk K] [--iters N]\n",
               argv0);
}

} // namespace

int main(int argc, char **argv) {
  int64_t T = 2048, H = 1024, F = 2816, E = 8, k = 2, iters = 5;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    int64_t *target = arg == "--tokens"    ? &T
                      : arg == "--hidden"  ? &H
                      : arg == "--ffn"     ? &F
                      : arg == "--experts" ? &E
                      : arg == "--topk"    ? &k
                      : arg == "--iters"   ? &iters
                                           : nullptr;
    if (!target || i + 1 >= argc) {
      usage(argv[0]);
      return 2;
    }
    *target = std::atoll(argv[++i]);
  }
  if (T < 1 || H < 1 || F < 1 || E < 1 || k < 1 || k > E || iters < 1) {
    usage(argv[0]);
    return 2;
  }

  std::mt19937 rng(0);
  std::vector<float> x = randomVec(rng, T * H, 1.0f);
  std::vector<float> logits = randomVec(rng, T * E, 2.0f);
  float sh = 1.0f / std::sqrt(float(H)), sf = 1.0f / std::sqrt(float(F));
  std::vector<float> wGate = randomVec(rng, E * H * F, sh);
  std::vector<float> wUp = randomVec(rng, E * H * F, sh);
  std::vector<float> wDown = randomVec(rng, E * F * H, sf);

  // One rank holding all experts: expert e in slot e.
  Placement pl;
  pl.numExperts = E;
  pl.groupSize = 1;
  pl.slotsPerRank = E;
  for (int64_t e = 0; e < E; ++e)
    pl.replicas.push_back({{0, int32_t(e)}});

  RouteParams rp;
  rp.topK = k;
  rp.renormalize = true;
  std::vector<float> weights(T * k);
  std::vector<int64_t> ids(T * k);
  Timing tRoute = timeIt(iters, [&] {
    cpu::route(logits.data(), nullptr, T, E, rp, weights.data(), ids.data());
  });

  cpu::DispatchLayout layout;
  std::string error;
  if (!cpu::planDispatch(ids.data(), T, k, pl, -1, layout, error)) {
    std::fprintf(stderr, "planDispatch: %s\n", error.c_str());
    return 1;
  }
  const int64_t rows = layout.sendRows;
  std::vector<float> send(rows * H), recv(rows * H), y(rows * H),
      back(rows * H), out(T * H);
  std::vector<int64_t> perm, slotOffsets;
  Timing tDispatch = timeIt(iters, [&] {
    cpu::planDispatch(ids.data(), T, k, pl, -1, layout, error);
    cpu::packRows(x.data(), H, layout, send.data());
    // One rank: what it receives is what it sent.
    cpu::expertMajorOrder(layout.sendCounts.data(), 1, E, perm, slotOffsets);
    cpu::gatherRowsByIndex(send.data(), H, perm.data(), rows, recv.data());
  });

  cpu::ExpertWeights w;
  w.wGate = wGate.data();
  w.wUp = wUp.data();
  w.wDown = wDown.data();
  w.H = H;
  w.F = F;
  w.act = Activation::silu;
  std::vector<char> scratch(cpu::groupedFFNScratch(rows, w));
  // Plain sgemm of the same total FLOPs: [3*rows, H] x [H, F]. It runs
  // alternately with groupedFFN so that both see the same machine load.
  const int64_t M = 3 * rows;
  std::vector<float> A = randomVec(rng, M * H, 1.0f), C(M * F);
  auto ffn = [&] {
    cpu::groupedFFN(recv.data(), slotOffsets, w, y.data(), scratch.data());
  };
  auto gemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(F),
                int(H), 1.0f, A.data(), int(H), wGate.data(), int(F), 0.0f,
                C.data(), int(F));
  };
  ffn();
  gemm();
  std::vector<double> ffnTimes, gemmTimes;
  for (int64_t i = 0; i < iters; ++i) {
    ffnTimes.push_back(seconds(ffn));
    gemmTimes.push_back(seconds(gemm));
  }
  const Timing tFFN = summarize(ffnTimes), tGemm = summarize(gemmTimes);
  A.clear();
  C.clear();

  Timing tCombine = timeIt(iters, [&] {
    cpu::scatterRowsByIndex(y.data(), H, perm.data(), rows, back.data());
    cpu::combineRows(back.data(), H, layout, weights.data(), out.data());
  });

  int64_t minRows = rows, maxRows = 0;
  for (int64_t e = 0; e < E; ++e) {
    int64_t n = slotOffsets[e + 1] - slotOffsets[e];
    minRows = std::min(minRows, n);
    maxRows = std::max(maxRows, n);
  }
  const double flops = 2.0 * double(rows) * double(H) * double(F) * 3.0;
  std::printf("moert-cpu-bench: tokens=%lld hidden=%lld ffn=%lld experts=%lld "
              "topk=%lld iters=%lld\n",
              (long long)T, (long long)H, (long long)F, (long long)E,
              (long long)k, (long long)iters);
  std::printf("rows=%lld (per expert %lld..%lld), one rank, dropless, "
              "%u hardware threads",
              (long long)rows, (long long)minRows, (long long)maxRows,
              std::thread::hardware_concurrency());
#ifdef OPENBLAS_VERSION
  std::printf(", OpenBLAS threads %d", openblas_get_num_threads());
#endif
  std::printf("\n\n");
  std::printf("%-42s %11s %11s %9s %9s\n", "kernel", "median ms", "best ms",
              "GFLOP/s", "best");
  printRow("route (softmax, renormalize)", tRoute, 0);
  printRow("dispatch (plan, pack, slot-major gather)", tDispatch, 0);
  printRow("groupedFFN (SwiGLU, 3 GEMMs/expert)", tFFN, flops);
  char gemmName[64];
  std::snprintf(gemmName, sizeof(gemmName), "cblas_sgemm %lldx%lldx%lld",
                (long long)M, (long long)H, (long long)F);
  printRow(gemmName, tGemm, flops);
  std::printf("%-42s %11.3f %11.3f\n", "groupedFFN rate / sgemm rate",
              tGemm.median / tFFN.median, tGemm.best / tFFN.best);
  printRow("combine (unorder, combineRows)", tCombine, 0);
  return 0;
}
