//===- gpu_moe_bench.cu - grouped expert GEMM and MoE layer benchmark -----===//
//
// moert-gpu-bench [--out FILE] [--tokens T] [--hidden H] [--ffn F]
//                 [--experts E] [--topk K] [--dtype bf16|f16|f32]
//                 [--iters N] [--warmup N] [--no-check]
//
// 1. Dense cuBLAS GEMM (cublasGemmEx) of the experts' total FLOPs, and a
//    square one: the peak dense rate of this GPU in this dtype.
// 2. The grouped expert GEMM (E problems of T*k/E rows) through
//    cublasGemmGroupedBatchedEx and through a loop of cublasGemmEx.
// 3. A whole MoE layer as the runtime runs it on one rank: router GEMM ->
//    route -> planDispatch -> packRows -> counts to the host -> groupedFFN
//    -> combineRows, with the time of each stage, against the FLOP floor
//    (layer FLOPs / the peak dense rate of 1.).
// 4. A check of two tokens of the layer against a CPU loop.
// Defaults: Mixtral 8x7B (H=4096, F=14336, E=8, k=2), 4096 tokens, bf16.
// Prints a table to stdout and to --out; "RESULT name value" lines are for
// scripts (scripts/gpu-check.sh).
//
//===----------------------------------------------------------------------===//

#include "moert/cuda/Kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

using namespace moert;
using namespace moert::cuda;

namespace {

struct Options {
  std::string out;
  int64_t T = 4096, H = 4096, F = 14336, E = 8, k = 2;
  DType dtype = DType::bf16;
  int iters = 20, warmup = 3;
  bool check = true;
};

[[noreturn]] void usage(const char *why) {
  std::fprintf(stderr,
               "moert-gpu-bench: %s\nusage: moert-gpu-bench [--out FILE] "
               "[--tokens T] [--hidden H] [--ffn F] [--experts E] [--topk K] "
               "[--dtype bf16|f16|f32] [--iters N] [--warmup N] "
               "[--no-check]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc)
        usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--out")
      o.out = next();
    else if (a == "--tokens")
      o.T = std::stoll(next());
    else if (a == "--hidden")
      o.H = std::stoll(next());
    else if (a == "--ffn")
      o.F = std::stoll(next());
    else if (a == "--experts")
      o.E = std::stoll(next());
    else if (a == "--topk")
      o.k = std::stoll(next());
    else if (a == "--iters")
      o.iters = std::stoi(next());
    else if (a == "--warmup")
      o.warmup = std::stoi(next());
    else if (a == "--no-check")
      o.check = false;
    else if (a == "--dtype") {
      if (!parseDType(next(), o.dtype))
        usage("bad --dtype");
    } else
      usage(("unknown argument " + a).c_str());
  }
  if (o.T < 1 || o.H < 1 || o.F < 1 || o.E < 1 || o.k < 1 || o.k > o.E ||
      o.iters < 1 || o.warmup < 0)
    usage("bad sizes");
  return o;
}

/// Deterministic uniform values in [-scale, scale), written as T.
template <typename T>
__global__ void fillKernel(T *p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = uint64_t(i) * 0x9E3779B97F4A7C15ull + seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float u = float(z >> 40) / float(1ull << 24); // [0, 1)
    float v = (2.f * u - 1.f) * scale;
    if constexpr (std::is_same<T, float>::value)
      p[i] = v;
    else if constexpr (std::is_same<T, __half>::value)
      p[i] = __float2half_rn(v);
    else
      p[i] = __float2bfloat16_rn(v);
  }
}

void fill(void *p, DType t, int64_t n, uint64_t seed, float scale,
          cudaStream_t s) {
  unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 1 << 16));
  switch (t) {
  case DType::f32:
    fillKernel<<<blocks, 256, 0, s>>>(static_cast<float *>(p), n, seed, scale);
    break;
  case DType::bf16:
    fillKernel<<<blocks, 256, 0, s>>>(static_cast<__nv_bfloat16 *>(p), n, seed,
                                      scale);
    break;
  case DType::f16:
    fillKernel<<<blocks, 256, 0, s>>>(static_cast<__half *>(p), n, seed, scale);
    break;
  }
  MOERT_CUDA_CHECK_LAUNCH();
}

struct Buf {
  void *p = nullptr;
  explicit Buf(size_t bytes) {
    MOERT_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 1)));
  }
  ~Buf() { (void)cudaFree(p); }
  Buf(const Buf &) = delete;
  template <typename T> T *as() const { return static_cast<T *>(p); }
};

struct Events {
  cudaEvent_t a, b;
  Events() {
    MOERT_CUDA_CHECK(cudaEventCreate(&a));
    MOERT_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Events() {
    (void)cudaEventDestroy(a);
    (void)cudaEventDestroy(b);
  }
};

/// Mean ms of fn() over iters runs after warmup runs, on stream s.
template <typename Fn>
double timeIt(cudaStream_t s, int warmup, int iters, Fn &&fn) {
  for (int i = 0; i < warmup; ++i)
    fn();
  Events ev;
  MOERT_CUDA_CHECK(cudaEventRecord(ev.a, s));
  for (int i = 0; i < iters; ++i)
    fn();
  MOERT_CUDA_CHECK(cudaEventRecord(ev.b, s));
  MOERT_CUDA_CHECK(cudaEventSynchronize(ev.b));
  float ms = 0;
  MOERT_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.a, ev.b));
  return double(ms) / iters;
}

float toF(DType t, const unsigned char *p) {
  if (t == DType::f32) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  if (t == DType::bf16) {
    __nv_bfloat16 v;
    std::memcpy(&v, p, 2);
    return __bfloat162float(v);
  }
  __half v;
  std::memcpy(&v, p, 2);
  return __half2float(v);
}

float roundTo(DType t, float x) {
  if (t == DType::bf16)
    return __bfloat162float(__float2bfloat16(x));
  if (t == DType::f16)
    return __half2float(__float2half(x));
  return x;
}

std::vector<float> download(const void *p, DType t, int64_t n) {
  std::vector<unsigned char> raw(static_cast<size_t>(n) * dtypeSize(t));
  MOERT_CUDA_CHECK(
      cudaMemcpy(raw.data(), p, raw.size(), cudaMemcpyDeviceToHost));
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[size_t(i)] = toF(t, raw.data() + size_t(i) * dtypeSize(t));
  return v;
}

struct Table {
  std::ostringstream os;
  void row(const std::string &what, double ms, double tflops,
           const std::string &note = "") {
    char buf[512];
    if (tflops > 0)
      std::snprintf(buf, sizeof buf, "| %-58s | %9.3f | %8.1f | %s |\n",
                    what.c_str(), ms, tflops, note.c_str());
    else
      std::snprintf(buf, sizeof buf, "| %-58s | %9.3f | %8s | %s |\n",
                    what.c_str(), ms, "", note.c_str());
    os << buf;
  }
};

} // namespace

int main(int argc, char **argv) {
  Options o = parse(argc, argv);
  std::string why;
  if (!deviceAvailable(&why)) {
    std::fprintf(stderr, "moert-gpu-bench: no CUDA device: %s\n", why.c_str());
    return 2;
  }
  int dev = 0;
  MOERT_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  MOERT_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  // Owns the stream; declared before everything that uses it (Blas, the
  // buffers) so that it is destroyed after them.
  struct StreamOwner {
    cudaStream_t s = nullptr;
    ~StreamOwner() {
      if (s)
        (void)cudaStreamDestroy(s);
    }
  } streamOwner;
  MOERT_CUDA_CHECK(
      cudaStreamCreateWithFlags(&streamOwner.s, cudaStreamNonBlocking));
  cudaStream_t s = streamOwner.s;
  Blas blas(s);

  const DType t = o.dtype;
  const size_t elt = dtypeSize(t);
  const int64_t T = o.T, H = o.H, F = o.F, E = o.E, k = o.k, R = T * k;
  Table tab;
  std::ostringstream head;
  head << "moert GPU benchmark: " << prop.name << " (sm_" << prop.major
       << prop.minor << ", " << prop.multiProcessorCount << " SMs), "
       << dtypeName(t) << ", fp32 accumulation\n"
       << "MoE layer: tokens=" << T << " hidden=" << H << " ffn=" << F
       << " experts=" << E << " top_k=" << k << " (SwiGLU experts)\n\n"
       << "| measurement | ms | TFLOP/s | note |\n"
       << "| --- | ---: | ---: | --- |\n";
  std::vector<std::pair<std::string, double>> results;

  // --- 1. dense GEMMs: the peak --------------------------------------------
  const double gemmFlops = 2.0 * double(R) * double(H) * double(F);
  double peak = 0;
  {
    Buf A(static_cast<size_t>(R * H) * elt),
        B(static_cast<size_t>(H * F) * elt),
        C(static_cast<size_t>(R * F) * elt);
    fill(A.p, t, R * H, 1, 1.f, s);
    fill(B.p, t, H * F, 2, 0.02f, s);
    double ms = timeIt(s, o.warmup, o.iters, [&] {
      matmul(blas, t, A.p, B.p, nullptr, t, C.p, R, H, F, false);
    });
    double tf = gemmFlops / ms / 1e9;
    peak = std::max(peak, tf);
    tab.row("dense GEMM " + std::to_string(R) + "x" + std::to_string(H) + "x" +
                std::to_string(F) + " (cublasGemmEx)",
            ms, tf, "same FLOPs as one expert GEMM");
    results.push_back({"dense_gemm_tflops", tf});
  }
  {
    const int64_t n = 8192;
    Buf A(static_cast<size_t>(n * n) * elt),
        B(static_cast<size_t>(n * n) * elt),
        C(static_cast<size_t>(n * n) * elt);
    fill(A.p, t, n * n, 3, 1.f, s);
    fill(B.p, t, n * n, 4, 0.02f, s);
    double ms = timeIt(s, o.warmup, o.iters, [&] {
      matmul(blas, t, A.p, B.p, nullptr, t, C.p, n, n, n, false);
    });
    double tf = 2.0 * n * n * n / ms / 1e9;
    peak = std::max(peak, tf);
    tab.row("dense GEMM 8192x8192x8192 (cublasGemmEx)", ms, tf, "");
  }
  results.push_back({"peak_dense_tflops", peak});

  // --- weights of the layer ------------------------------------------------
  Buf wg(static_cast<size_t>(E * H * F) * elt),
      wu(static_cast<size_t>(E * H * F) * elt),
      wd(static_cast<size_t>(E * F * H) * elt),
      wr(static_cast<size_t>(H * E) * elt);
  fill(wg.p, t, E * H * F, 11, 1.f / std::sqrt(float(H)), s);
  fill(wu.p, t, E * H * F, 12, 1.f / std::sqrt(float(H)), s);
  fill(wd.p, t, E * F * H, 13, 1.f / std::sqrt(float(F)), s);
  fill(wr.p, t, H * E, 14, 1.f / std::sqrt(float(H)), s);

  // --- 2. grouped expert GEMM ----------------------------------------------
  {
    Buf A(static_cast<size_t>(R * H) * elt),
        C(static_cast<size_t>(R * F) * elt);
    fill(A.p, t, R * H, 5, 1.f, s);
    std::vector<GemmProblem> probs;
    for (int64_t e = 0; e < E; ++e) {
      int64_t lo = R * e / E, hi = R * (e + 1) / E;
      GemmProblem p;
      p.m = hi - lo;
      p.k = H;
      p.n = F;
      p.A = A.as<char>() + lo * H * int64_t(elt);
      p.B = wg.as<char>() + e * H * F * int64_t(elt);
      p.C = C.as<char>() + lo * F * int64_t(elt);
      probs.push_back(p);
    }
    std::string note = std::to_string(E) + " experts x " +
                       std::to_string(R / E) + " rows, K=" + std::to_string(H) +
                       ", N=" + std::to_string(F);
    blas.setGroupedMode(Blas::GroupedMode::grouped);
    double ms =
        timeIt(s, o.warmup, o.iters, [&] { groupedGemm(blas, t, probs); });
    double tf = gemmFlops / ms / 1e9;
    bool fell = blas.fellBack();
    tab.row(fell ? "grouped expert GEMM (grouped call NOT SUPPORTED: loop)"
                 : "grouped expert GEMM (cublasGemmGroupedBatchedEx)",
            ms, tf, note);
    results.push_back({"grouped_gemm_tflops", tf});
    blas.setGroupedMode(Blas::GroupedMode::loop);
    double msLoop =
        timeIt(s, o.warmup, o.iters, [&] { groupedGemm(blas, t, probs); });
    tab.row("grouped expert GEMM (loop of cublasGemmEx)", msLoop,
            gemmFlops / msLoop / 1e9, note);
    results.push_back({"loop_gemm_tflops", gemmFlops / msLoop / 1e9});
    if (!fell)
      blas.setGroupedMode(Blas::GroupedMode::grouped);
  }

  // --- 3. the MoE layer ----------------------------------------------------
  Buf x(static_cast<size_t>(T * H) * elt),
      logits(static_cast<size_t>(T * E) * 4),
      weights(static_cast<size_t>(T * k) * 4),
      ids(static_cast<size_t>(T * k) * 8),
      sendPos(static_cast<size_t>(T * k) * 8),
      counts(static_cast<size_t>(E) * 8), stats(3 * 8),
      send(static_cast<size_t>(R * H) * elt),
      y(static_cast<size_t>(R * H) * elt),
      out(static_cast<size_t>(T * H) * elt);
  fill(x.p, t, T * H, 21, 1.f, s);
  RouteParams rp;
  rp.topK = k;
  rp.renormalize = true;
  Placement pl;
  pl.numExperts = E;
  pl.groupSize = 1;
  pl.slotsPerRank = E;
  pl.replicas.resize(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e)
    pl.replicas[size_t(e)].push_back({0, int32_t(e)});
  DevicePlacement dp(pl, s);
  size_t wsBytes = planDispatchWorkspace(T, k, dp);
  Buf ws(wsBytes);
  DeviceExpertWeights w;
  w.wGate = wg.p;
  w.wUp = wu.p;
  w.wDown = wd.p;
  w.H = H;
  w.F = F;
  w.act = Activation::silu;
  w.dtype = t;
  size_t scratchBytes = groupedFFNScratch(R, w);
  Buf scratch(scratchBytes);
  std::vector<int64_t> hostCounts(static_cast<size_t>(E)),
      slotOffsets(static_cast<size_t>(E) + 1);
  int64_t hostStats[3] = {0, 0, 0};

  const int nStages = 5;
  const char *stageNames[nStages] = {
      "  router GEMM (cublasGemmEx, fp32 logits)",
      "  route + planDispatch (CUB sort/scan) + packRows",
      "  counts to the host (D2H copy + stream sync)",
      "  grouped FFN: gate/up grouped GEMM, SiLU*up, down GEMM",
      "  combineRows (weighted sum of the top-k rows)"};
  std::vector<cudaEvent_t> ev(nStages + 1);
  for (auto &e : ev)
    MOERT_CUDA_CHECK(cudaEventCreate(&e));
  std::vector<double> stageMs(nStages, 0);
  // One rank: the send buffer (rank, then slot) is already slot-major, so it
  // is the experts' input; one slot per expert.
  auto layer = [&](bool record) {
    if (record)
      MOERT_CUDA_CHECK(cudaEventRecord(ev[0], s));
    matmul(blas, t, x.p, wr.p, nullptr, DType::f32, logits.p, T, H, E, false);
    if (record)
      MOERT_CUDA_CHECK(cudaEventRecord(ev[1], s));
    route(logits.as<float>(), nullptr, T, E, rp, weights.as<float>(),
          ids.as<int64_t>(), s);
    planDispatch(ids.as<int64_t>(), T, k, dp, -1, sendPos.as<int64_t>(),
                 counts.as<int64_t>(), stats.as<int64_t>(), ws.p, wsBytes, s);
    packRows(x.p, size_t(H) * elt, sendPos.as<int64_t>(), T, k, send.p, s);
    if (record)
      MOERT_CUDA_CHECK(cudaEventRecord(ev[2], s));
    MOERT_CUDA_CHECK(cudaMemcpyAsync(hostCounts.data(), counts.p, size_t(E) * 8,
                                     cudaMemcpyDeviceToHost, s));
    MOERT_CUDA_CHECK(
        cudaMemcpyAsync(hostStats, stats.p, 3 * 8, cudaMemcpyDeviceToHost, s));
    MOERT_CUDA_CHECK(cudaStreamSynchronize(s));
    slotOffsets[0] = 0;
    for (int64_t e = 0; e < E; ++e)
      slotOffsets[size_t(e) + 1] =
          slotOffsets[size_t(e)] + hostCounts[size_t(e)];
    if (record)
      MOERT_CUDA_CHECK(cudaEventRecord(ev[3], s));
    groupedFFN(blas, send.p, slotOffsets, w, y.p, scratch.p, scratchBytes);
    if (record)
      MOERT_CUDA_CHECK(cudaEventRecord(ev[4], s));
    combineRows(y.p, t, H, sendPos.as<int64_t>(), T, k, weights.as<float>(),
                out.p, s);
    if (record)
      MOERT_CUDA_CHECK(cudaEventRecord(ev[5], s));
  };
  for (int i = 0; i < o.warmup; ++i)
    layer(false);
  MOERT_CUDA_CHECK(cudaStreamSynchronize(s));
  double layerMs = timeIt(s, 0, o.iters, [&] { layer(false); });
  for (int i = 0; i < o.iters; ++i) {
    layer(true);
    MOERT_CUDA_CHECK(cudaEventSynchronize(ev[nStages]));
    for (int st = 0; st < nStages; ++st) {
      float ms = 0;
      MOERT_CUDA_CHECK(
          cudaEventElapsedTime(&ms, ev[size_t(st)], ev[size_t(st) + 1]));
      stageMs[size_t(st)] += ms / o.iters;
    }
  }
  const double routerFlops = 2.0 * T * H * E;
  const double expertFlops = 2.0 * double(R) * 3.0 * double(H) * double(F);
  const double layerFlops = routerFlops + expertFlops;
  tab.row("MoE layer (router, route, permute, grouped FFN, combine)", layerMs,
          layerFlops / layerMs / 1e9,
          "rows " + std::to_string(hostStats[0]) + ", dropped " +
              std::to_string(hostStats[1]));
  for (int st = 0; st < nStages; ++st)
    tab.row(stageNames[st], stageMs[size_t(st)],
            st == 3 ? expertFlops / stageMs[3] / 1e9 : 0.0);
  double floorMs = layerFlops / (peak * 1e9);
  tab.row("FLOP floor (layer FLOPs / peak dense rate)", floorMs, peak,
          std::to_string(layerFlops / 1e12).substr(0, 6) + " TFLOP");
  char ratio[64];
  std::snprintf(ratio, sizeof ratio, "%.2fx the floor", layerMs / floorMs);
  tab.row("MoE layer / FLOP floor", layerMs / floorMs, 0, ratio);
  int64_t maxRows = *std::max_element(hostCounts.begin(), hostCounts.end());
  std::ostringstream counts_;
  for (int64_t e = 0; e < E; ++e)
    counts_ << (e ? "," : "") << hostCounts[size_t(e)];
  results.push_back({"moe_layer_ms", layerMs});
  results.push_back({"flop_floor_ms", floorMs});
  results.push_back({"grouped_ffn_ms", stageMs[3]});

  // --- 4. check two tokens on the CPU -------------------------------------
  std::string checkLine = "check skipped (--no-check)";
  bool checkOk = true;
  if (o.check) {
    std::vector<int64_t> hids(static_cast<size_t>(T * k));
    std::vector<float> hw(static_cast<size_t>(T * k));
    MOERT_CUDA_CHECK(cudaMemcpy(hids.data(), ids.p, hids.size() * 8,
                                cudaMemcpyDeviceToHost));
    MOERT_CUDA_CHECK(cudaMemcpy(hw.data(), weights.p, hw.size() * 4,
                                cudaMemcpyDeviceToHost));
    double worst = 0;
    for (int64_t tok : {int64_t(0), T - 1}) {
      std::vector<float> xt =
          download(x.as<char>() + tok * H * int64_t(elt), t, H);
      std::vector<float> got =
          download(out.as<char>() + tok * H * int64_t(elt), t, H);
      std::vector<double> ref(static_cast<size_t>(H), 0);
      for (int64_t j = 0; j < k; ++j) {
        int64_t e = hids[size_t(tok * k + j)];
        std::vector<float> g =
            download(wg.as<char>() + e * H * F * int64_t(elt), t, H * F);
        std::vector<float> u =
            download(wu.as<char>() + e * H * F * int64_t(elt), t, H * F);
        std::vector<float> d =
            download(wd.as<char>() + e * F * H * int64_t(elt), t, F * H);
        std::vector<double> gs(static_cast<size_t>(F), 0),
            us(static_cast<size_t>(F), 0);
        for (int64_t h = 0; h < H; ++h)
          for (int64_t f = 0; f < F; ++f) {
            gs[size_t(f)] += double(xt[size_t(h)]) * g[size_t(h * F + f)];
            us[size_t(f)] += double(xt[size_t(h)]) * u[size_t(h * F + f)];
          }
        std::vector<double> a(static_cast<size_t>(F));
        for (int64_t f = 0; f < F; ++f) {
          double gv = roundTo(t, float(gs[size_t(f)]));
          double uv = roundTo(t, float(us[size_t(f)]));
          a[size_t(f)] = roundTo(t, float(gv / (1 + std::exp(-gv)) * uv));
        }
        std::vector<double> yv(static_cast<size_t>(H), 0);
        for (int64_t f = 0; f < F; ++f)
          for (int64_t h = 0; h < H; ++h)
            yv[size_t(h)] += a[size_t(f)] * d[size_t(f * H + h)];
        for (int64_t h = 0; h < H; ++h)
          ref[size_t(h)] += double(hw[size_t(tok * k + j)]) *
                            roundTo(t, float(yv[size_t(h)]));
      }
      double scale = 0, err = 0;
      for (int64_t h = 0; h < H; ++h)
        scale = std::max(scale, std::fabs(ref[size_t(h)]));
      for (int64_t h = 0; h < H; ++h)
        err = std::max(err, std::fabs(got[size_t(h)] - ref[size_t(h)]));
      worst = std::max(worst, scale > 0 ? err / scale : err);
    }
    // bf16 output: 2^-8 relative per rounding; allow 4 ulps of the largest.
    double tol = t == DType::f32   ? 1e-4
                 : t == DType::f16 ? 4.0 / 2048
                                   : 4.0 / 256;
    checkOk = worst <= tol;
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "check tokens 0 and %lld vs CPU loop: max error %.2e of the "
                  "row max (tolerance %.1e): %s",
                  (long long)(T - 1), worst, tol, checkOk ? "ok" : "FAILED");
    checkLine = buf;
  }

  std::ostringstream all;
  all << head.str() << tab.os.str() << "\nrows per expert: " << counts_.str()
      << " (largest " << maxRows << ")\n"
      << "grouped GEMM API: "
      << (blas.fellBack() ? "loop of cublasGemmEx (grouped call not supported)"
                          : "cublasGemmGroupedBatchedEx")
      << "\n"
      << checkLine << "\n";
  for (const auto &r : results)
    all << "RESULT " << r.first << " " << r.second << "\n";
  all << "RESULT check " << (checkOk ? "ok" : "FAILED") << "\n";
  std::cout << all.str();
  if (!o.out.empty()) {
    std::ofstream f(o.out);
    f << all.str();
    if (!f) {
      std::fprintf(stderr, "moert-gpu-bench: cannot write %s\n", o.out.c_str());
      return 1;
    }
  }
  for (auto &e : ev)
    MOERT_CUDA_CHECK(cudaEventDestroy(e));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(s));
  return checkOk ? 0 : 1; // the stream goes after blas and the buffers
}
