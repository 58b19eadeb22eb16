//===- Route.cu - routing (top-k gating) on the device --------------------===//
//
// One warp per token. Each warp keeps the token's scores, selection scores
// and flags in shared memory; the top-k (and the group selection) are k
// warp-wide arg-max reductions whose order is (value desc, id asc), so ties
// go to the lower id exactly as in the CPU kernel.
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
  float scale;
  int warpBytes;
};

size_t routeWarpBytes(int64_t E, int64_t G) {
  // s[E], sel[E], gscore[G] (fp32), used[E], keep[G] (bytes).
  size_t b = sizeof(float) * size_t(2 * E + G) + size_t(E + G);
  return (b + 15) / 16 * 16;
}

/// (v, i) beats (bv, bi): larger value, then lower index. NaN never wins.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

/// Warp-wide arg-max; every lane gets the result.
__device__ __forceinline__ void warpArgMax(float &v, int &i) {
  for (int off = kWarp / 2; off > 0; off /= 2) {
    float ov = __shfl_xor_sync(0xffffffffu, v, off);
    int oi = __shfl_xor_sync(0xffffffffu, i, off);
    if (better(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

__device__ __forceinline__ float warpMax(float v) {
  for (int off = kWarp / 2; off > 0; off /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ float warpSum(float v) {
  for (int off = kWarp / 2; off > 0; off /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, off);
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
  float *s = reinterpret_cast<float *>(base);
  float *sel = s + E;
  float *gscore = sel + E;
  unsigned char *used = reinterpret_cast<unsigned char *>(gscore + G);
  unsigned char *keep = used + E;

  for (int64_t t = int64_t(blockIdx.x) * warps + warp; t < a.T;
       t += int64_t(gridDim.x) * warps) {
    const float *x = logits + t * E;
    // 1. scores.
    if (a.softmax) {
      float mx = -INFINITY;
      for (int j = lane; j < E; j += kWarp)
        mx = fmaxf(mx, x[j]);
      mx = warpMax(mx);
      float sum = 0.f;
      for (int j = lane; j < E; j += kWarp)
        sum += expf(x[j] - mx);
      sum = warpSum(sum);
      for (int j = lane; j < E; j += kWarp)
        s[j] = expf(x[j] - mx) / sum;
    } else {
      for (int j = lane; j < E; j += kWarp)
        s[j] = 1.f / (1.f + expf(-x[j]));
    }
    // 2. selection scores (NaN never wins).
    for (int j = lane; j < E; j += kWarp) {
      float c = a.hasBias ? s[j] + bias[j] : s[j];
      sel[j] = isnan(c) ? -INFINITY : c;
      used[j] = 0;
    }
    __syncwarp();
    // 3. group-limited routing: keep the best keepG groups.
    const int per = E / G;
    if (G > 1) {
      for (int g = lane; g < G; g += kWarp) {
        float b1 = -INFINITY, b2 = -INFINITY;
        for (int j = g * per; j < (g + 1) * per; ++j) {
          float c = sel[j];
          if (c > b1) {
            b2 = b1;
            b1 = c;
          } else if (c > b2) {
            b2 = c;
          }
        }
        gscore[g] = a.top2 ? b1 + b2 : b1;
        keep[g] = 0;
      }
      __syncwarp();
      for (int r = 0; r < a.keepG; ++r) {
        float bv = -INFINITY;
        int bi = INT_MAX;
        for (int g = lane; g < G; g += kWarp)
          if (!keep[g] &&
              better(isnan(gscore[g]) ? -INFINITY : gscore[g], g, bv, bi)) {
            bv = isnan(gscore[g]) ? -INFINITY : gscore[g];
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
        if (better(sel[j], j, bv, bi)) {
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
    // 5. weights: unbiased scores, renormalised, scaled (lane 0, in order).
    if (lane == 0) {
      float sum = 0.f;
      for (int r = 0; r < a.k; ++r)
        sum += s[ids[t * a.k + r]];
      for (int r = 0; r < a.k; ++r) {
        float v = s[ids[t * a.k + r]];
        if (a.renorm)
          v /= sum;
        weights[t * a.k + r] = v * a.scale;
      }
    }
    __syncwarp();
  }
}

} // namespace

std::string checkRoute(int64_t E, const RouteParams &p) {
  if (E < 1)
    return "no experts";
  if (p.topK < 1 || p.topK > E)
    return "top_k " + std::to_string(p.topK) + " with " + std::to_string(E) +
           " experts";
  if (p.numGroups < 1 || E % p.numGroups != 0 || p.topkGroups < 1 ||
      p.topkGroups > p.numGroups)
    return "bad grouping: " + std::to_string(p.numGroups) + " groups of " +
           std::to_string(E) + " experts, " + std::to_string(p.topkGroups) +
           " kept";
  int64_t per = E / p.numGroups;
  if (p.numGroups > 1 && p.topkGroups * per < p.topK)
    return "the kept groups hold fewer than top_k experts";
  if (p.numGroups > 1 && p.groupScore == GroupScore::top2_sum && per < 2)
    return "top2_sum needs at least two experts per group";
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
  a.top2 = p.groupScore == GroupScore::top2_sum;
  a.hasBias = bias != nullptr;
  a.scale = float(p.scalingFactor);
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
