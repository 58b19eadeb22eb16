//===- CudaKernelsTest.cpp - CUDA kernels against plain CPU loops ---------===//
//
// Every kernel of moert/cuda/Kernels.h (and the NCCL wrapper on one rank)
// against a plain loop written here, on random data with odd sizes. Tests
// that need a GPU skip with "no CUDA device: ..." where there is none; the
// checks of the error macros and of the routing parameters run everywhere.
//
//===----------------------------------------------------------------------===//

#include "CpuTestUtil.h"
#include "CudaTestSupport.h"

#include "moert/cuda/Kernels.h"
#ifdef MOERT_HAVE_NCCL
#include "moert/cuda/Nccl.h"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace moert;
using namespace moert::cuda;
using namespace moert::cudatest;
using moert::test::activationRef;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

std::mt19937 &rng() {
  static std::mt19937 g(20240601);
  return g;
}

/// A random injective map of n (token, choice) pairs to rows 0..n-1, every
/// `dropEvery`-th pair dropped (-1); 0: none dropped.
std::vector<int64_t> randomPositions(size_t n, size_t dropEvery) {
  std::vector<int64_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::shuffle(pos.begin(), pos.end(), rng());
  for (size_t a = 0; dropEvery && a < n; a += dropEvery)
    pos[a] = -1;
  return pos;
}

std::vector<float> randomFloats(size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng());
  return v;
}

int64_t randomInt(int64_t lo, int64_t hi) { // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng());
}

/// Values of a dtype stored as 16-bit or 32-bit words on the host.
float roundTo(DType t, float x) {
  switch (t) {
  case DType::f32:
    return x;
  case DType::bf16:
    return __bfloat162float(__float2bfloat16(x));
  case DType::f16:
    return __half2float(__float2half(x));
  }
  return x;
}

/// Encodes floats (already representable) as bytes of dtype t.
std::vector<unsigned char> encode(DType t, const std::vector<float> &v) {
  std::vector<unsigned char> out(v.size() * dtypeSize(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::f32) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else if (t == DType::bf16) {
      __nv_bfloat16 b = __float2bfloat16(v[i]);
      std::memcpy(&out[i * 2], &b, 2);
    } else {
      __half h = __float2half(v[i]);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

std::vector<float> decode(DType t, const std::vector<unsigned char> &b) {
  size_t n = b.size() / dtypeSize(t);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::f32) {
      std::memcpy(&v[i], &b[i * 4], 4);
    } else if (t == DType::bf16) {
      __nv_bfloat16 x;
      std::memcpy(&x, &b[i * 2], 2);
      v[i] = __bfloat162float(x);
    } else {
      __half x;
      std::memcpy(&x, &b[i * 2], 2);
      v[i] = __half2float(x);
    }
  }
  return v;
}

/// Random values representable in t.
std::vector<float> randomIn(DType t, size_t n, float lo = -1.f,
                            float hi = 1.f) {
  std::vector<float> v = randomFloats(n, lo, hi);
  for (float &x : v)
    x = roundTo(t, x);
  return v;
}

/// A device tensor of dtype t holding `v`.
struct DevT {
  DType t;
  Dev<unsigned char> b;
  DevT(DType type, const std::vector<float> &v) : t(type), b(encode(type, v)) {}
  DevT(DType type, size_t n) : t(type), b(n * dtypeSize(type)) {}
  std::vector<float> download() const { return decode(t, b.download()); }
  void *p() { return b.p; }
};

/// Tolerances per dtype. bf16 keeps 8 significant bits (half an ulp is
/// 2^-9 relative), fp16 11 (2^-12). The references below round where the
/// kernels round (GEMM outputs, the activation product, the bias sums), so
/// the differences left are fp32 accumulation order (<< 1e-5 relative here)
/// and outputs that round the other way: at most one ulp of the output,
/// 2^-8 (bf16) or 2^-11 (fp16) relative, plus the effect of such one-ulp
/// flips in intermediates, which the next GEMM averages down. The allowance
/// is two ulps of the output, relative to the element and to the largest
/// reference value (for outputs near zero after cancellation).
double tolFor(DType t) {
  switch (t) {
  case DType::f32:
    return 1e-4; // fp32 accumulation of <= a few hundred terms vs double
  case DType::bf16:
    return 1.0 / 128; // 2 ulps of bf16
  case DType::f16:
    return 1.0 / 1024; // 2 ulps of fp16
  }
  return 0;
}

void expectClose(const std::vector<float> &got, const std::vector<double> &ref,
                 double tol, const std::string &what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double scale = 0;
  for (double r : ref)
    scale = std::max(scale, std::fabs(r));
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double d = std::fabs(double(got[i]) - ref[i]);
    bool ok = std::isnan(ref[i]) ? std::isnan(got[i])
                                 : d <= tol * (std::fabs(ref[i]) + scale);
    if (!ok && bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << " is " << got[i]
                    << ", expected " << ref[i] << " (tolerance " << tol
                    << " relative, scale " << scale << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size()
                    << " elements differ";
}

/// Indices of the k largest values, best first, ties to the lower index.
std::vector<int64_t> topKRef(const std::vector<double> &v, int64_t k) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

//===----------------------------------------------------------------------===//
// References
//===----------------------------------------------------------------------===//

/// The CPU reference itself (cpu::route): the kernel must match it bit for
/// bit, ids and weights.
void routeRef(const std::vector<float> &logits, const float *bias, int64_t T,
              int64_t E, const RouteParams &p, std::vector<float> &w,
              std::vector<int64_t> &ids) {
  w.assign(static_cast<size_t>(T * p.topK), 0);
  ids.assign(static_cast<size_t>(T * p.topK), 0);
  cpu::route(logits.data(), bias, T, E, p, w.data(), ids.data());
}

/// Bit-identical floats, or both NaN (payloads differ between host and
/// device).
bool sameFloat(float a, float b) {
  if (std::isnan(a) || std::isnan(b))
    return std::isnan(a) && std::isnan(b);
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

struct LayoutRef {
  std::vector<int64_t> sendPos, sendCounts;
  int64_t sendRows = 0, dropped = 0, invalid = 0;
};

/// cpu::planDispatch's semantics (invalid ids counted, not fatal).
LayoutRef dispatchRef(const std::vector<int64_t> &ids, int64_t k,
                      const Placement &pl, int64_t capacity) {
  int64_t n = int64_t(ids.size()), B = pl.groupSize * pl.slotsPerRank;
  LayoutRef L;
  L.sendPos.assign(static_cast<size_t>(n), -1);
  L.sendCounts.assign(static_cast<size_t>(B), 0);
  std::vector<int64_t> bucketOf(static_cast<size_t>(n), -1),
      taken(static_cast<size_t>(B), 0);
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(B));
  for (int64_t a = 0; a < n; ++a) {
    int64_t e = ids[a];
    if (e < 0 || e >= pl.numExperts || pl.replicas[e].empty()) {
      ++L.invalid;
      continue;
    }
    const auto &reps = pl.replicas[e];
    auto rs = reps[size_t(a % int64_t(reps.size()))];
    int64_t b = rs.first * pl.slotsPerRank + rs.second;
    if (capacity >= 0 && taken[b] >= capacity) {
      ++L.dropped;
      continue;
    }
    ++taken[b];
    members[b].push_back(a);
  }
  int64_t pos = 0;
  for (int64_t b = 0; b < B; ++b) {
    L.sendCounts[b] = int64_t(members[b].size());
    for (int64_t a : members[b])
      L.sendPos[a] = pos++;
  }
  L.sendRows = pos;
  (void)k;
  return L;
}

//===----------------------------------------------------------------------===//
// Checks that need no GPU
//===----------------------------------------------------------------------===//

cudaError_t returnsInvalidValue() { return cudaErrorInvalidValue; }

TEST(CudaCheck, MessagesNameFileLineCallAndError) {
  std::string msg;
  try {
    MOERT_CUDA_CHECK(returnsInvalidValue());
  } catch (const std::runtime_error &e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("CudaKernelsTest.cpp:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("returnsInvalidValue()"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cudaErrorInvalidValue"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CUDA error"), std::string::npos) << msg;

  msg.clear();
  try {
    MOERT_CUBLAS_CHECK(CUBLAS_STATUS_NOT_SUPPORTED);
  } catch (const std::runtime_error &e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("CUBLAS_STATUS_NOT_SUPPORTED"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cuBLAS error"), std::string::npos) << msg;

#ifdef MOERT_HAVE_NCCL
  msg.clear();
  try {
    MOERT_NCCL_CHECK(ncclInvalidArgument);
  } catch (const std::runtime_error &e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("NCCL error"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ncclInvalidArgument"), std::string::npos) << msg;
#endif
}

TEST(CudaRoute, ParameterChecks) {
  RouteParams p;
  p.topK = 2;
  EXPECT_EQ(checkRoute(8, p), "");
  p.topK = 9;
  EXPECT_NE(checkRoute(8, p), "");
  p.topK = 2;
  p.numGroups = 3;
  EXPECT_NE(checkRoute(8, p), ""); // 8 experts do not split into 3 groups
  p.numGroups = 4;
  p.topkGroups = 1;
  p.topK = 3;
  EXPECT_NE(checkRoute(8, p), ""); // one kept group of 2 < top_k 3
  p.topK = 1;
  p.numGroups = 8;
  p.groupScore = GroupScore::top2_sum;
  EXPECT_NE(checkRoute(8, p), ""); // top2_sum with one expert per group
  EXPECT_NE(checkRoute(100000, RouteParams()), ""); // too large for smem
  EXPECT_THROW(route(nullptr, nullptr, 4, 8, p, nullptr, nullptr, nullptr),
               std::runtime_error);
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

void runRouteCase(int64_t T, int64_t E, const RouteParams &p, bool withBias,
                  const std::vector<float> *fixedLogits = nullptr,
                  std::vector<int64_t> *gotIdsOut = nullptr) {
  Stream s;
  std::vector<float> logits =
      fixedLogits ? *fixedLogits
                  : randomFloats(static_cast<size_t>(T * E), -4.f, 4.f);
  std::vector<float> bias = randomFloats(static_cast<size_t>(E), -0.1f, 0.1f);
  Dev<float> dl(logits), db(bias), dw(static_cast<size_t>(T * p.topK));
  Dev<int64_t> di(static_cast<size_t>(T * p.topK));
  route(dl.p, withBias ? db.p : nullptr, T, E, p, dw.p, di.p, s);
  s.sync();
  std::vector<float> w;
  std::vector<int64_t> ids;
  routeRef(logits, withBias ? bias.data() : nullptr, T, E, p, w, ids);
  std::vector<int64_t> gotIds = di.download();
  std::vector<float> gotW = dw.download();
  // Same experts and bit-identical weights as cpu::route.
  int bad = 0;
  for (size_t i = 0; i < ids.size(); ++i)
    if ((gotIds[i] != ids[i] || !sameFloat(gotW[i], w[i])) && bad++ < 5)
      ADD_FAILURE() << "token " << i / size_t(p.topK) << " choice "
                    << i % size_t(p.topK) << ": expert " << gotIds[i]
                    << " weight " << gotW[i] << ", expected " << ids[i]
                    << " weight " << w[i];
  EXPECT_EQ(bad, 0);
  if (gotIdsOut)
    *gotIdsOut = gotIds;
}

TEST(CudaRoute, MixtralSoftmaxRenormalized) {
  REQUIRE_CUDA_DEVICE();
  RouteParams p;
  p.topK = 2;
  p.renormalize = true;
  runRouteCase(1031, 8, p, false);
  runRouteCase(1, 8, p, false);
}

TEST(CudaRoute, QwenManyExpertsNoRenorm) {
  REQUIRE_CUDA_DEVICE();
  RouteParams p;
  p.topK = 4;
  runRouteCase(333, 60, p, false);
  p.topK = 1; // Switch
  runRouteCase(77, 37, p, false);
}

TEST(CudaRoute, DeepSeekV2GroupMax) {
  REQUIRE_CUDA_DEVICE();
  RouteParams p;
  p.topK = 6;
  p.numGroups = 8;
  p.topkGroups = 3;
  p.groupScore = GroupScore::max;
  p.scalingFactor = 16.0;
  runRouteCase(257, 160, p, false);
}

TEST(CudaRoute, DeepSeekV3SigmoidBiasTop2Sum) {
  REQUIRE_CUDA_DEVICE();
  RouteParams p;
  p.topK = 8;
  p.score = ScoreFunc::sigmoid;
  p.renormalize = true;
  p.numGroups = 8;
  p.topkGroups = 4;
  p.groupScore = GroupScore::top2_sum;
  p.scalingFactor = 2.5;
  runRouteCase(129, 256, p, true);
  runRouteCase(31, 24, p, true); // 3 experts per group
}

TEST(CudaRoute, TiesGoToLowerIds) {
  REQUIRE_CUDA_DEVICE();
  RouteParams p;
  p.topK = 3;
  p.renormalize = true;
  std::vector<float> zeros(5 * 12, 0.f);
  runRouteCase(5, 12, p, false, &zeros); // experts 0, 1, 2
  p.numGroups = 4;
  p.topkGroups = 2;
  runRouteCase(5, 12, p, false, &zeros); // groups 0, 1
  p.groupScore = GroupScore::top2_sum;
  runRouteCase(5, 12, p, false, &zeros);
}

TEST(CudaRoute, ManyExpertsOneToken) {
  REQUIRE_CUDA_DEVICE();
  RouteParams p;
  p.topK = 40; // more choices than lanes in a warp
  runRouteCase(3, 1000, p, false);
}

/// Parameter sets covering both score functions, bias, and both group
/// scores.
std::vector<std::pair<RouteParams, bool>> routeConfigs() {
  std::vector<std::pair<RouteParams, bool>> out;
  RouteParams p;
  p.topK = 2;
  p.renormalize = true;
  out.push_back({p, false}); // Mixtral
  p.topK = 6;
  p.renormalize = false;
  p.numGroups = 8;
  p.topkGroups = 3;
  p.scalingFactor = 16.0;
  out.push_back({p, false}); // DeepSeek-V2
  p.topK = 8;
  p.score = ScoreFunc::sigmoid;
  p.renormalize = true;
  p.topkGroups = 4;
  p.groupScore = GroupScore::top2_sum;
  p.scalingFactor = 2.5;
  out.push_back({p, true}); // DeepSeek-V3
  p.numGroups = 1;
  p.topkGroups = 1;
  out.push_back({p, true}); // sigmoid, no groups
  return out;
}

TEST(CudaRoute, NaNLogitsRankFirstAsOnTheCpu) {
  REQUIRE_CUDA_DEVICE();
  const int64_t T = 64, E = 64;
  std::vector<float> logits =
      randomFloats(static_cast<size_t>(T * E), -4.f, 4.f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // Token t: t % 8 NaNs at random experts (0: none), a few with +-inf too
  // (softmax of +inf is NaN, of -inf 0); token 1 all NaN.
  for (int64_t t = 0; t < T; ++t) {
    float *x = &logits[size_t(t * E)];
    for (int64_t n = 0; n < t % 8; ++n)
      x[randomInt(0, E - 1)] = nan;
    if (t % 5 == 2)
      x[randomInt(0, E - 1)] = inf;
    if (t % 3 == 1)
      x[randomInt(0, E - 1)] = -inf;
  }
  std::fill(logits.begin() + E, logits.begin() + 2 * E, nan);
  for (const auto &[p, withBias] : routeConfigs())
    runRouteCase(T, E, p, withBias, &logits);

  // Sigmoid scores are per expert: the NaN experts come first, lower ids
  // first, whatever the others score.
  RouteParams p;
  p.topK = 3;
  p.score = ScoreFunc::sigmoid;
  std::vector<float> x = randomFloats(static_cast<size_t>(E), -4.f, 4.f);
  x[41] = nan;
  x[7] = nan;
  std::vector<int64_t> got;
  runRouteCase(1, E, p, false, &x, &got);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], 7);
  EXPECT_EQ(got[1], 41);
}

TEST(CudaRoute, NearTiesPickTheCpuExperts) {
  REQUIRE_CUDA_DEVICE();
  // Logits one or two ulps apart: their scores round to the same fp32 value
  // or to neighbours depending on how they are computed, so only the CPU's
  // arithmetic picks the CPU's experts.
  const int64_t T = 512, E = 64;
  std::vector<float> logits(static_cast<size_t>(T * E));
  for (int64_t t = 0; t < T; ++t) {
    float base = randomFloats(1, -3.f, 3.f)[0];
    for (int64_t j = 0; j < E; ++j) {
      float v = base;
      for (int64_t u = randomInt(-2, 2); u != 0; u += u > 0 ? -1 : 1)
        v = std::nextafter(v, u > 0 ? INFINITY : -INFINITY);
      logits[size_t(t * E + j)] = v;
    }
  }
  for (const auto &[p, withBias] : routeConfigs())
    runRouteCase(T, E, p, withBias, &logits);
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

/// E experts over groupSize ranks round-robin, some with two replicas.
Placement makePlacement(int64_t E, int64_t groupSize, int64_t slots,
                        bool replicate) {
  Placement pl;
  pl.numExperts = E;
  pl.groupSize = groupSize;
  pl.slotsPerRank = slots;
  pl.replicas.resize(static_cast<size_t>(E));
  std::vector<int32_t> used(static_cast<size_t>(groupSize), 0);
  for (int64_t e = 0; e < E; ++e) {
    int32_t r = int32_t(e % groupSize);
    pl.replicas[e].push_back({r, used[r]++});
  }
  if (replicate)
    for (int64_t e = 0; e < E; e += 3) {
      int32_t r = int32_t((e + 1) % groupSize);
      if (used[r] < slots)
        pl.replicas[e].push_back({r, used[r]++});
    }
  return pl;
}

void checkDispatch(int64_t T, int64_t k, const Placement &pl, int64_t capacity,
                   bool withInvalid) {
  Stream s;
  std::vector<int64_t> ids(static_cast<size_t>(T * k));
  for (int64_t &e : ids)
    e = randomInt(0, pl.numExperts - 1);
  if (withInvalid && !ids.empty()) {
    ids[0] = pl.numExperts;
    ids[ids.size() / 2] = -1;
  }
  DevicePlacement dp(pl, s);
  Dev<int64_t> di(ids), pos(ids.size()),
      counts(static_cast<size_t>(dp.buckets())), stats(3);
  size_t wsBytes = planDispatchWorkspace(T, k, dp);
  Dev<unsigned char> ws(wsBytes);
  planDispatch(di.p, T, k, dp, capacity, pos.p, counts.p, stats.p, ws.p,
               wsBytes, s);
  s.sync();
  LayoutRef L = dispatchRef(ids, k, pl, capacity);
  EXPECT_EQ(pos.download(), L.sendPos);
  EXPECT_EQ(counts.download(), L.sendCounts);
  std::vector<int64_t> st = stats.download();
  EXPECT_EQ(st[0], L.sendRows);
  EXPECT_EQ(st[1], L.dropped);
  EXPECT_EQ(st[2], L.invalid);
}

TEST(CudaDispatch, PlanMatchesReference) {
  REQUIRE_CUDA_DEVICE();
  checkDispatch(333, 2, makePlacement(10, 4, 3, false), -1, false);
  checkDispatch(333, 2, makePlacement(10, 4, 4, true), -1, false);
  checkDispatch(1, 1, makePlacement(3, 1, 3, false), -1, false);
  checkDispatch(4097, 8, makePlacement(64, 8, 9, true), -1, false);
  checkDispatch(0, 2, makePlacement(8, 2, 4, false), -1, false);
}

TEST(CudaDispatch, CapacityDrops) {
  REQUIRE_CUDA_DEVICE();
  checkDispatch(333, 2, makePlacement(10, 4, 3, false), 7, false);
  checkDispatch(1001, 4, makePlacement(16, 4, 5, true), 0, false);
  checkDispatch(1001, 4, makePlacement(16, 4, 5, true), 100, false);
}

TEST(CudaDispatch, InvalidIdsAreCounted) {
  REQUIRE_CUDA_DEVICE();
  checkDispatch(57, 2, makePlacement(6, 2, 3, false), -1, true);
}

TEST(CudaDispatch, PackRows) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (int64_t H : {13, 64, 7, 1}) {
    for (DType t : {DType::f32, DType::bf16}) {
      const int64_t T = 211, k = 3;
      size_t rowBytes = size_t(H) * dtypeSize(t);
      std::vector<float> x = randomIn(t, size_t(T * H));
      std::vector<int64_t> pos = randomPositions(size_t(T * k), 5);
      int64_t rows = T * k;
      DevT dx(t, x), dsend(t, size_t(rows * H));
      dsend.b.fill(0);
      Dev<int64_t> dpos(pos);
      packRows(dx.p(), rowBytes, dpos.p, T, k, dsend.p(), s);
      s.sync();
      std::vector<double> ref(static_cast<size_t>(rows * H), 0);
      for (int64_t a = 0; a < T * k; ++a)
        if (pos[a] >= 0)
          for (int64_t h = 0; h < H; ++h)
            ref[pos[a] * H + h] = x[(a / k) * H + h];
      expectClose(dsend.download(), ref, 0,
                  "packRows H=" + std::to_string(H) + " " + dtypeName(t));
    }
  }
}

// A dispatch with routing weights (weight_input experts): each row scaled
// in fp32 and rounded once.
TEST(CudaDispatch, PackScaledRows) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (int64_t H : {13, 64, 1}) {
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      const int64_t T = 211, k = 2;
      std::vector<float> x = randomIn(t, size_t(T * H));
      std::vector<float> w = randomFloats(static_cast<size_t>(T * k), 0.f, 1.f);
      std::vector<int64_t> pos = randomPositions(size_t(T * k), 5);
      int64_t rows = T * k;
      DevT dx(t, x), dsend(t, size_t(rows * H));
      dsend.b.fill(0);
      Dev<float> dw(w);
      Dev<int64_t> dpos(pos);
      packScaledRows(dx.p(), t, H, dpos.p, T, k, dw.p, dsend.p(), s);
      s.sync();
      std::vector<double> ref(static_cast<size_t>(rows * H), 0);
      for (int64_t a = 0; a < T * k; ++a)
        if (pos[a] >= 0)
          for (int64_t h = 0; h < H; ++h)
            ref[pos[a] * H + h] = roundTo(t, w[a] * x[(a / k) * H + h]);
      expectClose(dsend.download(), ref, 0,
                  "packScaledRows H=" + std::to_string(H) + " " + dtypeName(t));
    }
  }
}

TEST(CudaDispatch, ExpertMajorOrder) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (auto [G, slots] : std::vector<std::pair<int64_t, int64_t>>{
           {3, 4}, {1, 1}, {5, 2}, {2, 7}}) {
    std::vector<int64_t> counts(static_cast<size_t>(G * slots));
    for (int64_t &c : counts)
      c = randomInt(0, 3) == 0 ? 0 : randomInt(1, 9);
    int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t(0));
    int64_t maxRows = total + 5;
    Dev<int64_t> dc(counts), perm(static_cast<size_t>(maxRows)),
        offs(static_cast<size_t>(slots + 1));
    size_t wsBytes = expertMajorOrderWorkspace(G, slots);
    Dev<unsigned char> ws(wsBytes);
    expertMajorOrder(dc.p, G, slots, maxRows, perm.p, offs.p, ws.p, wsBytes, s);
    s.sync();
    // Reference: source-major offsets, then walk slot-major.
    std::vector<int64_t> srcOff(static_cast<size_t>(G * slots));
    int64_t acc = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      srcOff[i] = acc;
      acc += counts[i];
    }
    std::vector<int64_t> refPerm, refOff;
    for (int64_t q = 0; q < slots; ++q) {
      refOff.push_back(int64_t(refPerm.size()));
      for (int64_t src = 0; src < G; ++src)
        for (int64_t r = 0; r < counts[src * slots + q]; ++r)
          refPerm.push_back(srcOff[src * slots + q] + r);
    }
    refOff.push_back(int64_t(refPerm.size()));
    refPerm.resize(static_cast<size_t>(maxRows), -1);
    EXPECT_EQ(perm.download(), refPerm) << G << " ranks x " << slots;
    EXPECT_EQ(offs.download(), refOff) << G << " ranks x " << slots;
  }
}

TEST(CudaRows, GatherAndScatterByIndex) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (int64_t H : {5, 32, 129}) {
    const int64_t n = 173;
    size_t rowBytes = size_t(H) * 4;
    std::vector<float> src = randomFloats(static_cast<size_t>(n * H));
    std::vector<int64_t> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());
    Dev<float> dsrc(src), dst(static_cast<size_t>(n * H)),
        back(static_cast<size_t>(n * H));
    Dev<int64_t> dperm(perm);
    gatherRowsByIndex(dsrc.p, rowBytes, dperm.p, n, dst.p, s);
    scatterRowsByIndex(dst.p, rowBytes, dperm.p, n, back.p, s);
    s.sync();
    std::vector<double> g(static_cast<size_t>(n * H)),
        b(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        g[i * H + h] = src[perm[i] * H + h];
        b[perm[i] * H + h] = g[i * H + h];
      }
    expectClose(dst.download(), g, 0, "gather H=" + std::to_string(H));
    expectClose(back.download(), b, 0, "scatter H=" + std::to_string(H));
  }
}

TEST(CudaCombine, WeightedSumAllPrecisions) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    const int64_t T = 97, k = 3, H = 45, rows = T * k;
    std::vector<float> back = randomIn(t, size_t(rows * H));
    std::vector<float> w = randomFloats(static_cast<size_t>(T * k), 0.f, 1.f);
    std::vector<int64_t> pos = randomPositions(size_t(T * k), 4);
    for (int64_t j = 0; j < k; ++j) // token 1: everything dropped
      pos[size_t(k + j)] = -1;
    DevT db(t, back), dout(t, size_t(T * H));
    Dev<float> dw(w);
    Dev<int64_t> dpos(pos);
    combineRows(db.p(), t, H, dpos.p, T, k, dw.p, dout.p(), s);
    s.sync();
    std::vector<double> ref(static_cast<size_t>(T * H), 0);
    for (int64_t tk = 0; tk < T; ++tk)
      for (int64_t h = 0; h < H; ++h) {
        float acc = 0;
        for (int64_t j = 0; j < k; ++j)
          if (pos[tk * k + j] >= 0)
            acc += w[tk * k + j] * back[pos[tk * k + j] * H + h];
        ref[tk * H + h] = roundTo(t, acc);
      }
    expectClose(dout.download(), ref, t == DType::f32 ? 1e-6 : tolFor(t),
                std::string("combine ") + dtypeName(t));
  }
}

// No weights: the dispatch scaled the rows; they are summed with weight 1.
TEST(CudaCombine, UnweightedSum) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  const int64_t T = 31, k = 2, H = 40, rows = T * k;
  std::vector<float> back = randomFloats(static_cast<size_t>(rows * H));
  std::vector<int64_t> pos = randomPositions(size_t(T * k), 0);
  pos[3] = -1;
  Dev<float> db(back), dout(static_cast<size_t>(T * H));
  Dev<int64_t> dpos(pos);
  combineRows(db.p, DType::f32, H, dpos.p, T, k, nullptr, dout.p, s);
  s.sync();
  std::vector<double> ref(static_cast<size_t>(T * H), 0);
  for (int64_t tk = 0; tk < T; ++tk)
    for (int64_t h = 0; h < H; ++h) {
      float acc = 0;
      for (int64_t j = 0; j < k; ++j)
        if (pos[tk * k + j] >= 0)
          acc += back[pos[tk * k + j] * H + h];
      ref[tk * H + h] = acc;
    }
  expectClose(dout.download(), ref, 1e-6, "combine without weights");
}

TEST(CudaCombine, SumSlicesInRankOrderAllPrecisions) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    for (int64_t G : {1, 3, 4}) {
      const int64_t n = 1000003; // odd, more than one grid-stride pass
      std::vector<float> x = randomIn(t, size_t(G * n), -4.f, 4.f);
      DevT dx(t, x), dout(t, size_t(n));
      sumSlices(dx.p(), t, G, n, dout.p(), s);
      s.sync();
      // The same fp32 additions in the same order, rounded once: the
      // kernel must agree bit for bit.
      std::vector<float> got = dout.download();
      int64_t bad = 0, first = -1;
      for (int64_t i = 0; i < n; ++i) {
        float acc = 0.f;
        for (int64_t r = 0; r < G; ++r)
          acc += x[size_t(r * n + i)];
        if (got[size_t(i)] != roundTo(t, acc) && bad++ == 0)
          first = i;
      }
      EXPECT_EQ(bad, 0) << dtypeName(t) << " G=" << G << ": first mismatch at "
                        << first;
    }
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

TEST(CudaElementwise, Unary) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  const int64_t n = 1237;
  std::vector<float> x = randomFloats(static_cast<size_t>(n), -5.f, 5.f);
  std::vector<float> xpos = randomFloats(static_cast<size_t>(n), 0.01f, 9.f);
  for (Unary op : {Unary::neg, Unary::exp, Unary::sigmoid, Unary::silu,
                   Unary::gelu, Unary::gelu_tanh, Unary::relu, Unary::tanh,
                   Unary::sqrt, Unary::rsqrt, Unary::copy}) {
    bool positive = op == Unary::sqrt || op == Unary::rsqrt;
    const std::vector<float> &in = positive ? xpos : x;
    Dev<float> dx(in), dy(static_cast<size_t>(n));
    unary(op, dx.p, dy.p, n, s);
    s.sync();
    std::vector<double> ref(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      double v = in[i];
      switch (op) {
      case Unary::neg:
        ref[i] = -v;
        break;
      case Unary::exp:
        ref[i] = std::exp(v);
        break;
      case Unary::sigmoid:
        ref[i] = 1 / (1 + std::exp(-v));
        break;
      case Unary::silu:
        ref[i] = activationRef(Activation::silu, v);
        break;
      case Unary::gelu:
        ref[i] = activationRef(Activation::gelu, v);
        break;
      case Unary::gelu_tanh:
        ref[i] = activationRef(Activation::gelu_tanh, v);
        break;
      case Unary::relu:
        ref[i] = v > 0 ? v : 0;
        break;
      case Unary::tanh:
        ref[i] = std::tanh(v);
        break;
      case Unary::sqrt:
        ref[i] = std::sqrt(v);
        break;
      case Unary::rsqrt:
        ref[i] = 1 / std::sqrt(v);
        break;
      case Unary::copy:
        ref[i] = v;
        break;
      }
    }
    // Relative to the element only (exp spans many magnitudes).
    std::vector<float> got = dy.download();
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(got[i], ref[i], 1e-5 * std::fabs(ref[i]) + 1e-6)
          << "op " << int(op) << " x = " << in[i];
  }
}

TEST(CudaElementwise, BinaryBroadcasting) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  struct Case {
    std::vector<int64_t> a, b, out;
  };
  for (const Case &c : std::vector<Case>{{{3, 1, 5}, {4, 1}, {3, 4, 5}},
                                         {{7, 9}, {7, 9}, {7, 9}},
                                         {{}, {2, 3, 1, 5}, {2, 3, 4, 5}},
                                         {{11}, {1}, {11}}}) {
    auto numel = [](const std::vector<int64_t> &sh) {
      int64_t n = 1;
      for (int64_t d : sh)
        n *= d;
      return n;
    };
    std::vector<float> a =
        randomFloats(static_cast<size_t>(numel(c.a)), 0.5f, 2.f);
    std::vector<float> b =
        randomFloats(static_cast<size_t>(numel(c.b)), 0.5f, 2.f);
    // Some NaNs on either side (and on both): they propagate through every
    // op, max and min included, as on the CPU (numpy's maximum/minimum).
    for (size_t i = 0; i < a.size(); ++i)
      if (i % 7 == 3)
        a[i] = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 0; i < b.size(); ++i)
      if (i % 5 == 1)
        b[i] = std::numeric_limits<float>::quiet_NaN();
    int64_t n = numel(c.out);
    int rank = int(c.out.size());
    for (Binary op : {Binary::add, Binary::sub, Binary::mul, Binary::div,
                      Binary::max, Binary::min}) {
      Dev<float> da(a), dbb(b), dout(static_cast<size_t>(n));
      binary(op, da.p, c.a, dbb.p, c.b, dout.p, c.out, s);
      s.sync();
      std::vector<double> ref(static_cast<size_t>(n));
      int64_t nans = 0;
      for (int64_t i = 0; i < n; ++i) {
        // Multi-index of i, then the broadcast offsets.
        int64_t rem = i, ia = 0, ib = 0, sa = 1, sb = 1;
        for (int d = rank - 1; d >= 0; --d) {
          int64_t idx = rem % c.out[d];
          rem /= c.out[d];
          int da_ = d - (rank - int(c.a.size()));
          int db_ = d - (rank - int(c.b.size()));
          int64_t ea = da_ >= 0 ? c.a[da_] : 1, eb = db_ >= 0 ? c.b[db_] : 1;
          ia += (ea == 1 ? 0 : idx) * sa;
          ib += (eb == 1 ? 0 : idx) * sb;
          sa *= ea;
          sb *= eb;
        }
        float x = a[ia], y = b[ib];
        double r = 0;
        switch (op) {
        case Binary::add:
          r = double(x) + y;
          break;
        case Binary::sub:
          r = double(x) - y;
          break;
        case Binary::mul:
          r = double(x) * y;
          break;
        case Binary::div:
          r = double(x) / y;
          break;
        case Binary::max: // cpu::binary's max: NaN propagates
          r = (x > y || x != x) ? x : y;
          break;
        case Binary::min:
          r = (x < y || x != x) ? x : y;
          break;
        }
        ref[i] = r;
        nans += std::isnan(r);
      }
      EXPECT_GT(nans, 0) << "binary op " << int(op);
      expectClose(dout.download(), ref, 1e-6,
                  "binary op " + std::to_string(int(op)));
    }
  }
}

TEST(CudaElementwise, Softmax) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {17, 33}, {3, 1000}, {1, 1}, {129, 8}}) {
    std::vector<float> x =
        randomFloats(static_cast<size_t>(rows * n), -6.f, 6.f);
    Dev<float> dx(x), dy(x.size());
    softmax(dx.p, dy.p, rows, n, s);
    s.sync();
    std::vector<double> ref(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < n; ++j)
        mx = std::max(mx, double(x[r * n + j]));
      for (int64_t j = 0; j < n; ++j)
        sum += std::exp(x[r * n + j] - mx);
      for (int64_t j = 0; j < n; ++j)
        ref[r * n + j] = std::exp(x[r * n + j] - mx) / sum;
    }
    expectClose(dy.download(), ref, 1e-5, "softmax");
  }
}

//===----------------------------------------------------------------------===//
// GEMMs
//===----------------------------------------------------------------------===//

/// C = A B (+bias) in double from the (representable) inputs, rounded to out.
std::vector<double> matmulRef(const std::vector<float> &A,
                              const std::vector<float> &B, const float *bias,
                              int64_t M, int64_t K, int64_t N, bool transB,
                              DType out) {
  std::vector<double> C(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += double(A[m * K + k]) * (transB ? B[n * K + k] : B[k * N + n]);
      if (bias)
        acc += bias[n];
      C[m * N + n] = roundTo(out, float(acc));
    }
  return C;
}

TEST(CudaGemm, MatmulAllPrecisions) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  Blas blas(s);
  struct Combo {
    DType in, out;
  };
  for (Combo c :
       {Combo{DType::f32, DType::f32}, Combo{DType::bf16, DType::bf16},
        Combo{DType::bf16, DType::f32}, Combo{DType::f16, DType::f16},
        Combo{DType::f16, DType::f32}}) {
    for (bool transB : {false, true}) {
      for (bool withBias : {false, true}) {
        const int64_t M = 37, K = 53, N = 29;
        std::vector<float> A = randomIn(c.in, size_t(M * K));
        std::vector<float> B = randomIn(c.in, size_t(K * N));
        std::vector<float> bias = randomIn(c.out, size_t(N));
        DevT dA(c.in, A), dB(c.in, B), dBias(c.out, bias),
            dC(c.out, size_t(M * N));
        matmul(blas, c.in, dA.p(), dB.p(), withBias ? dBias.p() : nullptr,
               c.out, dC.p(), M, K, N, transB);
        s.sync();
        // With a bias the kernel rounds once (bias folded in with beta = 1).
        std::vector<double> ref = matmulRef(
            A, B, withBias ? bias.data() : nullptr, M, K, N, transB, c.out);
        expectClose(dC.download(), ref, tolFor(c.out),
                    std::string("matmul ") + dtypeName(c.in) + "->" +
                        dtypeName(c.out) + (transB ? " transB" : "") +
                        (withBias ? " bias" : ""));
      }
    }
  }
}

TEST(CudaGemm, BatchMatmul) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  Blas blas(s);
  struct Dims {
    int64_t batch, M, K, N;
  };
  for (Dims d : {Dims{5, 7, 33, 19}, Dims{1, 64, 128, 64}, Dims{3, 1, 9, 1},
                 Dims{2, 4, 0, 3}}) {
    const size_t a = size_t(d.M * d.K), b = size_t(d.K * d.N),
                 c = size_t(d.M * d.N);
    std::vector<float> A = randomIn(DType::f32, d.batch * a);
    std::vector<float> B = randomIn(DType::f32, d.batch * b);
    DevT dA(DType::f32, A), dB(DType::f32, B), dC(DType::f32, d.batch * c);
    // Poison C: K = 0 must still write zeros.
    MOERT_CUDA_CHECK(cudaMemset(dC.p(), 0x7f, d.batch * c * 4));
    batchMatmul(blas, static_cast<const float *>(dA.p()),
                static_cast<const float *>(dB.p()),
                static_cast<float *>(dC.p()), d.batch, d.M, d.K, d.N);
    s.sync();
    std::vector<double> ref;
    for (int64_t n = 0; n < d.batch; ++n) {
      std::vector<float> An(A.begin() + n * a, A.begin() + (n + 1) * a);
      std::vector<float> Bn(B.begin() + n * b, B.begin() + (n + 1) * b);
      std::vector<double> r =
          matmulRef(An, Bn, nullptr, d.M, d.K, d.N, false, DType::f32);
      ref.insert(ref.end(), r.begin(), r.end());
    }
    expectClose(dC.download(), ref, tolFor(DType::f32),
                "batchMatmul " + std::to_string(d.batch) + "x" +
                    std::to_string(d.M) + "x" + std::to_string(d.K) + "x" +
                    std::to_string(d.N));
  }
}

TEST(CudaGemm, GroupedGemmAllPrecisionsBothModes) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (Blas::GroupedMode mode :
       {Blas::GroupedMode::grouped, Blas::GroupedMode::loop}) {
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      Blas blas(s);
      blas.setGroupedMode(mode);
      // Shapes: repeated (one cuBLAS group of 2), odd, empty, transposed.
      struct Shape {
        int64_t m, n, k;
        bool transB;
      };
      std::vector<Shape> shapes = {{17, 24, 40, false}, {17, 24, 40, false},
                                   {1, 9, 33, false},   {0, 8, 8, false},
                                   {45, 31, 19, true},  {64, 64, 64, false}};
      std::vector<std::vector<float>> As, Bs;
      std::vector<std::unique_ptr<DevT>> dA, dB, dC;
      std::vector<GemmProblem> probs;
      for (const Shape &sh : shapes) {
        As.push_back(randomIn(t, size_t(sh.m * sh.k)));
        Bs.push_back(randomIn(t, size_t(sh.k * sh.n)));
        dA.push_back(std::make_unique<DevT>(t, As.back()));
        dB.push_back(std::make_unique<DevT>(t, Bs.back()));
        dC.push_back(std::make_unique<DevT>(t, size_t(sh.m * sh.n)));
        GemmProblem p;
        p.m = sh.m;
        p.n = sh.n;
        p.k = sh.k;
        p.transB = sh.transB;
        p.A = dA.back()->p();
        p.B = dB.back()->p();
        p.C = dC.back()->p();
        probs.push_back(p);
      }
      groupedGemm(blas, t, probs);
      s.sync();
      for (size_t i = 0; i < shapes.size(); ++i) {
        const Shape &sh = shapes[i];
        std::vector<double> ref =
            matmulRef(As[i], Bs[i], nullptr, sh.m, sh.k, sh.n, sh.transB, t);
        expectClose(dC[i]->download(), ref, tolFor(t),
                    std::string("grouped GEMM ") + dtypeName(t) + " problem " +
                        std::to_string(i) +
                        (mode == Blas::GroupedMode::loop ? " (loop)" : ""));
      }
      if (mode == Blas::GroupedMode::grouped && blas.fellBack())
        std::printf("note: cublasGemmGroupedBatchedEx not supported for %s; "
                    "the loop of cublasGemmEx ran instead\n",
                    dtypeName(t));
    }
  }
}

TEST(CudaGemm, GroupedGemmUnalignedHalfPointers) {
  // Rows of activations with an odd row length start at 2-byte boundaries;
  // cuBLAS's grouped GEMM cannot see such pointers (they are in device
  // memory) and assumes 16 bytes when k % 8 == 0: these run as a loop.
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (DType t : {DType::bf16, DType::f16}) {
    Blas blas(s);
    const int64_t m = 7, n = 24, k = 32;
    std::vector<float> A = randomIn(t, size_t(m * k)),
                       B = randomIn(t, size_t(k * n));
    // A and C one element past a 256-byte boundary.
    std::vector<float> Apad(1, 0.f), Cpad(size_t(1 + m * n), 0.f);
    Apad.insert(Apad.end(), A.begin(), A.end());
    DevT dA(t, Apad), dB(t, B), dC(t, Cpad);
    GemmProblem p;
    p.m = m;
    p.n = n;
    p.k = k;
    p.A = static_cast<char *>(dA.p()) + dtypeSize(t);
    p.B = dB.p();
    p.C = static_cast<char *>(dC.p()) + dtypeSize(t);
    groupedGemm(blas, t, {p});
    s.sync();
    std::vector<float> got = dC.download();
    got.erase(got.begin());
    expectClose(got, matmulRef(A, B, nullptr, m, k, n, false, t), tolFor(t),
                std::string("unaligned grouped GEMM ") + dtypeName(t));
    EXPECT_FALSE(blas.fellBack());
    EXPECT_EQ(blas.groupedMode(), Blas::GroupedMode::grouped);
  }
}

/// The FFN of every slot, rounding where the kernels round.
std::vector<double>
ffnRef(DType t, const std::vector<float> &x, const std::vector<int64_t> &off,
       const std::vector<float> &wg, const std::vector<float> *wu,
       const std::vector<float> &wd, const float *bg, const float *bu,
       const float *bd, int64_t H, int64_t F, Activation act,
       std::vector<float> yInit) {
  std::vector<double> y(yInit.begin(), yInit.end());
  std::vector<float> a(static_cast<size_t>(F));
  for (size_t s = 0; s + 1 < off.size(); ++s)
    for (int64_t r = off[s]; r < off[s + 1]; ++r) {
      for (int64_t f = 0; f < F; ++f) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; ++h) {
          double xv = x[r * H + h];
          g += xv * wg[(s * H + h) * F + f];
          if (wu)
            u += xv * (*wu)[(s * H + h) * F + f];
        }
        double gv = roundTo(t, float(g)), uv = roundTo(t, float(u));
        if (bg)
          gv += bg[s * F + f];
        double v = activationRef(act, gv);
        if (wu)
          v *= uv + (bu ? bu[s * F + f] : 0.0);
        a[f] = roundTo(t, float(v));
      }
      for (int64_t h = 0; h < H; ++h) {
        double acc = 0;
        for (int64_t f = 0; f < F; ++f)
          acc += double(a[f]) * wd[(s * F + f) * H + h];
        float o = roundTo(t, float(acc));
        if (bd)
          o = roundTo(t, o + bd[s * H + h]);
        y[r * H + h] = o;
      }
    }
  return y;
}

void checkFFN(DType t, Activation act, bool withUp, bool withBias, int64_t H,
              int64_t F, const std::vector<int64_t> &rowsPerSlot,
              int64_t firstRow, Blas::GroupedMode mode) {
  Stream s;
  Blas blas(s);
  blas.setGroupedMode(mode);
  const int64_t S = int64_t(rowsPerSlot.size());
  std::vector<int64_t> off = {firstRow};
  for (int64_t r : rowsPerSlot)
    off.push_back(off.back() + r);
  const int64_t R = off.back() + 3; // rows past the last slot stay untouched
  std::vector<float> x = randomIn(t, size_t(R * H));
  // Weights ~ 1/sqrt(fan-in) keep the activations O(1).
  float sg = 2.f / std::sqrt(float(H)), sd = 2.f / std::sqrt(float(F));
  std::vector<float> wg = randomIn(t, size_t(S * H * F), -sg, sg);
  std::vector<float> wu = randomIn(t, size_t(S * H * F), -sg, sg);
  std::vector<float> wd = randomIn(t, size_t(S * F * H), -sd, sd);
  std::vector<float> bg = randomIn(t, size_t(S * F), -.5f, .5f);
  std::vector<float> bu = randomIn(t, size_t(S * F), -.5f, .5f);
  std::vector<float> bd = randomIn(t, size_t(S * H), -.5f, .5f);
  std::vector<float> y0 = randomIn(t, size_t(R * H));
  DevT dx(t, x), dwg(t, wg), dwu(t, wu), dwd(t, wd), dbg(t, bg), dbu(t, bu),
      dbd(t, bd), dy(t, y0);
  DeviceExpertWeights w;
  w.wGate = dwg.p();
  w.wUp = withUp ? dwu.p() : nullptr;
  w.wDown = dwd.p();
  if (withBias) {
    w.bGate = dbg.p();
    w.bUp = withUp ? dbu.p() : nullptr;
    w.bDown = dbd.p();
  }
  w.H = H;
  w.F = F;
  w.act = act;
  w.dtype = t;
  size_t scratchBytes = groupedFFNScratch(off.back() - off.front(), w);
  Dev<unsigned char> scratch(scratchBytes);
  groupedFFN(blas, dx.p(), off, w, dy.p(), scratch.p, scratchBytes);
  s.sync();
  std::vector<double> ref = ffnRef(
      t, x, off, wg, withUp ? &wu : nullptr, wd, withBias ? bg.data() : nullptr,
      withBias && withUp ? bu.data() : nullptr, withBias ? bd.data() : nullptr,
      H, F, act, y0);
  expectClose(dy.download(), ref, tolFor(t),
              std::string("groupedFFN ") + dtypeName(t) + " act " +
                  std::to_string(int(act)) + (withUp ? " up" : "") +
                  (withBias ? " bias" : "") + " H=" + std::to_string(H) +
                  " F=" + std::to_string(F));
}

TEST(CudaFFN, AllPrecisionsAndActivations) {
  REQUIRE_CUDA_DEVICE();
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    for (Activation act :
         {Activation::silu, Activation::gelu, Activation::gelu_tanh,
          Activation::relu, Activation::identity})
      checkFFN(t, act, true, false, 48, 80, {5, 0, 17, 1}, 0,
               Blas::GroupedMode::grouped);
}

TEST(CudaFFN, OddSizesBiasesNoUpAndLoop) {
  REQUIRE_CUDA_DEVICE();
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    checkFFN(t, Activation::silu, true, true, 33, 47, {3, 11, 0, 2, 9}, 2,
             Blas::GroupedMode::grouped);
    checkFFN(t, Activation::gelu, false, true, 40, 24, {7, 7, 7}, 0,
             Blas::GroupedMode::grouped);
    checkFFN(t, Activation::relu, false, false, 31, 17, {4, 6}, 1,
             Blas::GroupedMode::grouped);
    checkFFN(t, Activation::silu, true, true, 33, 47, {3, 11, 0, 2, 9}, 2,
             Blas::GroupedMode::loop);
    checkFFN(t, Activation::silu, true, false, 16, 32, {0, 0, 0}, 0,
             Blas::GroupedMode::grouped); // no rows at all
  }
}

//===----------------------------------------------------------------------===//
// A whole MoE layer on one rank
//===----------------------------------------------------------------------===//

TEST(CudaMoE, SingleRankLayerMatchesDirectFormula) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  Blas blas(s);
  const DType t = DType::f32;
  const int64_t T = 67, H = 24, F = 40, E = 6, k = 2;
  RouteParams rp;
  rp.topK = k;
  rp.renormalize = true;
  Placement pl = makePlacement(E, 1, E, false); // expert e in slot e
  std::vector<float> x = randomFloats(static_cast<size_t>(T * H));
  std::vector<float> logits =
      randomFloats(static_cast<size_t>(T * E), -3.f, 3.f);
  float sg = 2.f / std::sqrt(float(H)), sd = 2.f / std::sqrt(float(F));
  std::vector<float> wg = randomFloats(static_cast<size_t>(E * H * F), -sg, sg);
  std::vector<float> wu = randomFloats(static_cast<size_t>(E * H * F), -sg, sg);
  std::vector<float> wd = randomFloats(static_cast<size_t>(E * F * H), -sd, sd);
  Dev<float> dx(x), dl(logits), dwg(wg), dwu(wu), dwd(wd),
      dw(static_cast<size_t>(T * k));
  Dev<int64_t> dids(static_cast<size_t>(T * k)),
      pos(static_cast<size_t>(T * k)), counts(static_cast<size_t>(E)), stats(3),
      perm(static_cast<size_t>(T * k)), offs(static_cast<size_t>(E + 1));
  Dev<float> send(static_cast<size_t>(T * k * H)),
      recv(static_cast<size_t>(T * k * H)), y(static_cast<size_t>(T * k * H)),
      back(static_cast<size_t>(T * k * H)), out(static_cast<size_t>(T * H));
  route(dl.p, nullptr, T, E, rp, dw.p, dids.p, s);
  DevicePlacement dp(pl, s);
  size_t wsBytes = std::max(planDispatchWorkspace(T, k, dp),
                            expertMajorOrderWorkspace(1, E));
  Dev<unsigned char> ws(wsBytes);
  planDispatch(dids.p, T, k, dp, -1, pos.p, counts.p, stats.p, ws.p, wsBytes,
               s);
  packRows(dx.p, size_t(H) * 4, pos.p, T, k, send.p, s);
  // One rank: the "received" rows are the sent rows.
  expertMajorOrder(counts.p, 1, E, T * k, perm.p, offs.p, ws.p, wsBytes, s);
  gatherRowsByIndex(send.p, size_t(H) * 4, perm.p, T * k, recv.p, s);
  std::vector<int64_t> hostOff = offs.download(); // synchronises
  DeviceExpertWeights w;
  w.wGate = dwg.p;
  w.wUp = dwu.p;
  w.wDown = dwd.p;
  w.H = H;
  w.F = F;
  w.dtype = t;
  size_t scratchBytes = groupedFFNScratch(T * k, w);
  Dev<unsigned char> scratch(scratchBytes);
  groupedFFN(blas, recv.p, hostOff, w, y.p, scratch.p, scratchBytes);
  scatterRowsByIndex(y.p, size_t(H) * 4, perm.p, T * k, back.p, s);
  combineRows(back.p, t, H, pos.p, T, k, dw.p, out.p, s);
  s.sync();
  EXPECT_EQ(stats.download()[0], T * k);

  std::vector<float> rw;
  std::vector<int64_t> rids;
  routeRef(logits, nullptr, T, E, rp, rw, rids);
  std::vector<double> ref(static_cast<size_t>(T * H), 0);
  for (int64_t tk = 0; tk < T; ++tk)
    for (int64_t j = 0; j < k; ++j) {
      int64_t e = rids[tk * k + j];
      std::vector<double> a(static_cast<size_t>(F));
      for (int64_t f = 0; f < F; ++f) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; ++h) {
          g += double(x[tk * H + h]) * wg[(e * H + h) * F + f];
          u += double(x[tk * H + h]) * wu[(e * H + h) * F + f];
        }
        a[f] = activationRef(Activation::silu, g) * u;
      }
      for (int64_t h = 0; h < H; ++h) {
        double acc = 0;
        for (int64_t f = 0; f < F; ++f)
          acc += a[f] * wd[(e * F + f) * H + h];
        ref[tk * H + h] += rw[tk * k + j] * acc;
      }
    }
  expectClose(out.download(), ref, 1e-4, "MoE layer");
}

//===----------------------------------------------------------------------===//
// NCCL on one rank
//===----------------------------------------------------------------------===//

#ifdef MOERT_HAVE_NCCL
TEST(CudaNccl, SingleRankRaggedAllToAllAndAllReduce) {
  REQUIRE_CUDA_DEVICE();
  int dev = 0;
  MOERT_CUDA_CHECK(cudaGetDevice(&dev));
  ncclUniqueId id = ncclNewUniqueId();
  NcclComm comm(1, 0, id, dev);
  Stream s;
  const int64_t slots = 3, H = 5;
  std::vector<int64_t> counts = {4, 0, 7};
  int64_t rows = 11;
  std::vector<float> x = randomFloats(static_cast<size_t>(rows * H));
  Dev<float> send(x), recv(static_cast<size_t>(rows * H)), sum(x.size());
  Dev<int64_t> dCounts(counts), dRecvCounts(static_cast<size_t>(slots));
  std::vector<int64_t> hs, hr;
  comm.raggedAllToAll(send.p, dCounts.p, slots, recv.p, rows,
                      size_t(H) * sizeof(float), dRecvCounts.p, hs, hr, s);
  comm.allReduceSum(send.p, sum.p, x.size(), DType::f32, s);
  s.sync();
  EXPECT_EQ(hs, counts);
  EXPECT_EQ(hr, counts);
  std::vector<double> ref(x.begin(), x.end());
  expectClose(recv.download(), ref, 0, "all-to-all on one rank");
  expectClose(sum.download(), ref, 0, "all-reduce on one rank");
  EXPECT_THROW(comm.raggedAllToAll(send.p, dCounts.p, slots, recv.p, rows - 1,
                                   size_t(H) * sizeof(float), dRecvCounts.p, hs,
                                   hr, s),
               std::runtime_error);
}
#endif

} // namespace
