//===- Route.cu - routing (top-k gating) on the device --------------------===//
//
// One warp per token, computing exactly what cpu::route computes (the same
// operations in the same types and order, so that weights and ids are
// bit-identical): scores in double rounded to fp32, the softmax sum added up
// serially in expert order, selection scores s + bias in fp32, group scores
// in double, and the final weights in double. Each warp keeps the token's
// scores, selection scores, group scores and flags in shared memory; the
// top-k (and the group selection) are k warp-wide arg-max reductions under
// cpu::route's order (NaN first, then larger, then lower id), a total order,
// so every reduction tree gives the CPU's choice.
//
//===----------------------------------------------------------------------===//

#include "Common.cuh"

#include <climits>
#include <cmath>

namespace moert {
namespace cuda {

using namespace detail;

namespace {

constexpr int kMaxRouteWarps = 4;
constexpr size_t kRouteSmemLimit = 48 * 1024;

struct RouteArgs {
  int64_t T;
  int E, k, G, keepG;
  bool softmax, renorm, top2, hasBias;
  double scale, renormEps;
  int warpBytes;
};

/// Per warp: ex[E] (double, the softmax exponentials; sel[E] (fp32) reuses
/// its first half once the scores are computed), gscore[G] (double), s[E]
/// (fp32), used[E], keep[G] (bytes).
size_t routeWarpBytes(int64_t E, int64_t G) {
  size_t b = sizeof(double) * size_t(E + G) + sizeof(float) * size_t(E) +
             size_t(E + G);
  return (b + 15) / 16 * 16;
}

/// cpu::route's ranksBefore: whether value x at position a ranks before y at
/// position b: NaN first, then larger, ties (and NaN pairs) to the lower
/// position.
template <typename V>
__device__ __forceinline__ bool ranksBefore(V x, int a, V y, int b) {
  bool xn = isnan(x), yn = isnan(y);
  if (xn != yn)
    return xn;
  if (!xn && x != y)
    return x > y;
  return a < b;
}

/// Warp-wide arg-max under ranksBefore; every lane gets the result. Lanes
/// without a candidate hold (-inf, INT_MAX), which every real one beats.
template <typename V> __device__ __forceinline__ void warpArgMax(V &v, int &i) {
  for (int off = kWarp / 2; off > 0; off /= 2) {
    V ov = __shfl_xor_sync(0xffffffffu, v, off);
    int oi = __shfl_xor_sync(0xffffffffu, i, off);
    if (ranksBefore(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

/// Max ignoring NaN (as std::max(mx, x) from -inf does); order-independent.
__device__ __forceinline__ double warpMax(double v) {
  for (int off = kWarp / 2; off > 0; off /= 2)
    v = fmax(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__global__ void routeKernel(const float *__restrict__ logits,
                            const float *__restrict__ bias,
                            float *__restrict__ weights,
                            int64_t *__restrict__ ids, RouteArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int warps = blockDim.x / kWarp;
  const int E = a.E, G = a.G;
  unsigned char *base = smem + size_t(warp) * a.warpBytes;
  double *ex = reinterpret_cast<double *>(base);
  float *sel = reinterpret_cast<float *>(base); // aliases ex, see step 2
  double *gscore = ex + E;
  float *s = reinterpret_cast<float *>(gscore + G);
  unsigned char *used = reinterpret_cast<unsigned char *>(s + E);
  unsigned char *keep = used + E;

  for (int64_t t = int64_t(blockIdx.x) * warps + warp; t < a.T;
       t += int64_t(gridDim.x) * warps) {
    const float *x = logits + t * E;
    // 1. scores, in double, rounded to fp32.
    if (a.softmax) {
      double mx = -INFINITY;
      for (int j = lane; j < E; j += kWarp)
        mx = fmax(mx, double(x[j]));
      mx = warpMax(mx);
      for (int j = lane; j < E; j += kWarp)
        ex[j] = exp(double(x[j]) - mx);
      __syncwarp();
      // The CPU adds the exponentials up in expert order; any other order
      // may round the sum differently, so one lane adds them serially.
      double sum = 0;
      if (lane == 0)
        for (int j = 0; j < E; ++j)
          sum += ex[j];
      sum = __shfl_sync(0xffffffffu, sum, 0);
      for (int j = lane; j < E; j += kWarp)
        s[j] = float(ex[j] / sum);
    } else {
      for (int j = lane; j < E; j += kWarp)
        s[j] = float(1.0 / (1.0 + exp(-double(x[j]))));
    }
    __syncwarp(); // ex is read; sel overwrites it
    // 2. selection scores, fp32 (NaN kept: it ranks first).
    for (int j = lane; j < E; j += kWarp) {
      sel[j] = a.hasBias ? s[j] + bias[j] : s[j];
      used[j] = 0;
    }
    __syncwarp();
    // 3. group-limited routing: keep the best keepG groups. A group's score
    // is its best selection score (plus its second best for top2_sum), in
    // double; the best two are found in cpu::route's order.
    const int per = E / G;
    if (G > 1) {
      for (int g = lane; g < G; g += kWarp) {
        int b0 = g * per, b1 = -1;
        for (int j = g * per + 1; j < (g + 1) * per; ++j) {
          if (ranksBefore(sel[j], j, sel[b0], b0)) {
            b1 = b0;
            b0 = j;
          } else if (b1 < 0 || ranksBefore(sel[j], j, sel[b1], b1)) {
            b1 = j;
          }
        }
        double gs = sel[b0];
        if (a.top2 && b1 >= 0)
          gs += double(sel[b1]);
        gscore[g] = gs;
        keep[g] = 0;
      }
      __syncwarp();
      for (int r = 0; r < a.keepG; ++r) {
        double bv = -INFINITY;
        int bi = INT_MAX;
        for (int g = lane; g < G; g += kWarp)
          if (!keep[g] && ranksBefore(gscore[g], g, bv, bi)) {
            bv = gscore[g];
            bi = g;
          }
        warpArgMax(bv, bi);
        if (lane == 0 && bi < G)
          keep[bi] = 1;
        __syncwarp();
      }
    }
    // 4. top-k among the candidates, best first.
    for (int r = 0; r < a.k; ++r) {
      float bv = -INFINITY;
      int bi = INT_MAX;
      for (int j = lane; j < E; j += kWarp) {
        if (used[j] || (G > 1 && !keep[j / per]))
          continue;
        if (ranksBefore(sel[j], j, bv, bi)) {
          bv = sel[j];
          bi = j;
        }
      }
      warpArgMax(bv, bi);
      if (lane == 0) {
        if (bi >= E) // cannot happen for valid parameters
          bi = 0;
        used[bi] = 1;
        ids[t * a.k + r] = bi;
      }
      __syncwarp();
    }
    // 5. weights: unbiased scores, renormalised, scaled, in double as on the
    // CPU (lane 0, in order).
    if (lane == 0) {
      double sum = 0;
      for (int r = 0; r < a.k; ++r)
        sum += s[ids[t * a.k + r]];
      for (int r = 0; r < a.k; ++r) {
        double v = s[ids[t * a.k + r]];
        if (a.renorm)
          v /= sum + a.renormEps;
        weights[t * a.k + r] = float(v * a.scale);
      }
    }
    __syncwarp();
  }
}

} // namespace

std::string checkRoute(int64_t E, const RouteParams &p) {
  if (std::string why = routeParamsError(E, p); !why.empty())
    return why;
  if (routeWarpBytes(E, p.numGroups) > kRouteSmemLimit)
    return "too many experts for the routing kernel (" + std::to_string(E) +
           ")";
  return "";
}

void route(const float *logits, const float *bias, int64_t T, int64_t E,
           const RouteParams &p, float *weights, int64_t *ids,
           cudaStream_t stream) {
  std::string why = checkRoute(E, p);
  MOERT_CUDA_REQUIRE(why.empty(), "route: " + why);
  if (T == 0)
    return;
  RouteArgs a;
  a.T = T;
  a.E = int(E);
  a.k = int(p.topK);
  a.G = int(p.numGroups);
  a.keepG = int(p.topkGroups);
  a.softmax = p.score == ScoreFunc::softmax;
  a.renorm = p.renormalize;
  a.renormEps = p.renormEps;
  a.top2 = p.groupScore == GroupScore::top2_sum;
  a.hasBias = bias != nullptr;
  a.scale = p.scalingFactor;
  size_t wb = routeWarpBytes(E, p.numGroups);
  a.warpBytes = int(wb);
  int warps = int(std::max<size_t>(
      1, std::min<size_t>(kMaxRouteWarps, kRouteSmemLimit / wb)));
  unsigned blocks = blocksFor(T, warps, int64_t(1) << 16);
  routeKernel<<<blocks, warps * kWarp, wb * warps, stream>>>(logits, bias,
                                                             weights, ids, a);
  MOERT_CUDA_CHECK_LAUNCH();
}

} // namespace cuda
} // namespace moert
