//===- Kernels.cpp - CPU kernels of the moe runtime -----------------------===//
//
// GEMMs go to the BLAS (cblas_sgemm), always called from serial code so that
// the BLAS's own threads (OpenBLAS pthreads, OPENBLAS_NUM_THREADS) are the
// only ones inside a GEMM. The loops around them (routing, packing, the fused
// activation, elementwise ops) use OpenMP when the library is built with it.
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

#include "KernelSupport.h"

#ifdef MOERT_HAVE_CBLAS
#include <cblas.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

using namespace moert;
using cpu::Binary;
using cpu::Unary;

using cpu::detail::kParallelWork;

//===----------------------------------------------------------------------===//
// Names
//===----------------------------------------------------------------------===//

namespace {
/// The schema's enum value named `s` (its generated EnumValues/EnumName).
template <typename E, size_t N>
bool parseEnum(const std::string &s, const E (&values)[N],
               const char *(*name)(E), E &out) {
  for (E v : values)
    if (s == name(v)) {
      out = v;
      return true;
    }
  return false;
}
} // namespace

bool moert::parseScoreFunc(const std::string &s, ScoreFunc &out) {
  return parseEnum(s, fb::EnumValuesScoreFunc(), fb::EnumNameScoreFunc, out);
}

bool moert::parseGroupScore(const std::string &s, GroupScore &out) {
  return parseEnum(s, fb::EnumValuesGroupScore(), fb::EnumNameGroupScore, out);
}

bool moert::parseActivation(const std::string &s, Activation &out) {
  return parseEnum(s, fb::EnumValuesActivation(), fb::EnumNameActivation, out);
}

bool cpu::parseUnary(const std::string &s, Unary &out) {
  return parseEnum(s, fb::EnumValuesUnaryFn(), fb::EnumNameUnaryFn, out);
}

bool cpu::parseBinary(const std::string &s, Binary &out) {
  return parseEnum(s, fb::EnumValuesBinaryFn(), fb::EnumNameBinaryFn, out);
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

namespace {
/// Whether value x at position a ranks before value y at position b: larger
/// first, NaN counts as the largest, ties go to the lower position (the
/// order of moe-eval's topK).
template <typename V> bool ranksBefore(V x, int64_t a, V y, int64_t b) {
  bool xn = std::isnan(x), yn = std::isnan(y);
  if (xn != yn)
    return xn;
  if (!xn && x != y)
    return x > y;
  return a < b;
}
} // namespace

void cpu::route(const float *logits, const float *bias, int64_t T, int64_t E,
                const RouteParams &p, float *weights, int64_t *ids) {
  // The parameters are validated by checkRouteStep (moert/Routing.h, the
  // rules moe-eval applies too):
  // 1 <= topK <= E, E % numGroups == 0, 1 <= topkGroups <= numGroups,
  // topkGroups * (E / numGroups) >= topK, two experts per group for top2_sum.
  const int64_t k = p.topK;
  const int64_t groups = p.numGroups > 1 ? p.numGroups : 1;
  const int64_t per = E / groups;
  const int64_t keepGroups = groups > 1 ? p.topkGroups : 1;
  const double scale = p.scalingFactor;
  // About 16 floats' worth of work per score (double exp, selection).
  MOERT_OMP(parallel if (T * E > kParallelWork / 16)) {
    // Scores are computed in double and rounded to float, like moe-eval, so
    // that both pick the same experts on near-ties.
    std::vector<double> ex(E), gscore(groups);
    std::vector<float> s(E), sel(E);
    std::vector<int64_t> cand(E), order(groups);
    MOERT_OMP(for schedule(static))
    for (int64_t t = 0; t < T; ++t) {
      const float *x = logits + t * E;
      if (p.score == ScoreFunc::softmax) {
        double mx = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int64_t e = 0; e < E; ++e)
          mx = std::max(mx, double(x[e]));
        for (int64_t e = 0; e < E; ++e) {
          ex[e] = std::exp(double(x[e]) - mx);
          sum += ex[e];
        }
        for (int64_t e = 0; e < E; ++e)
          s[e] = float(ex[e] / sum);
      } else {
        for (int64_t e = 0; e < E; ++e)
          s[e] = float(1.0 / (1.0 + std::exp(-double(x[e]))));
      }
      for (int64_t e = 0; e < E; ++e)
        sel[e] = bias ? s[e] + bias[e] : s[e];
      auto before = [&](int64_t a, int64_t b) {
        return ranksBefore(sel[a], a, sel[b], b);
      };

      // Candidates in id order: every expert, or those of the kept groups.
      int64_t nCand = 0;
      if (groups > 1) {
        for (int64_t g = 0; g < groups; ++g) {
          int64_t b0 = g * per, b1 = -1;
          for (int64_t e = g * per + 1; e < (g + 1) * per; ++e) {
            if (before(e, b0)) {
              b1 = b0;
              b0 = e;
            } else if (b1 < 0 || before(e, b1)) {
              b1 = e;
            }
          }
          gscore[g] = sel[b0];
          if (p.groupScore == GroupScore::top2_sum && b1 >= 0)
            gscore[g] += double(sel[b1]);
        }
        for (int64_t g = 0; g < groups; ++g)
          order[g] = g;
        std::partial_sort(order.begin(), order.begin() + keepGroups,
                          order.end(), [&](int64_t a, int64_t b) {
                            return ranksBefore(gscore[a], a, gscore[b], b);
                          });
        std::sort(order.begin(), order.begin() + keepGroups);
        for (int64_t i = 0; i < keepGroups; ++i)
          for (int64_t e = order[i] * per; e < (order[i] + 1) * per; ++e)
            cand[nCand++] = e;
      } else {
        for (int64_t e = 0; e < E; ++e)
          cand[nCand++] = e;
      }
      // Ties go to the lower expert id: `before` compares ids.
      std::partial_sort(cand.begin(), cand.begin() + k, cand.begin() + nCand,
                        before);
      double sum = 0;
      for (int64_t j = 0; j < k; ++j)
        sum += s[cand[j]];
      for (int64_t j = 0; j < k; ++j) {
        double v = s[cand[j]];
        if (p.renormalize)
          v /= sum + p.renormEps;
        weights[t * k + j] = float(v * scale);
        ids[t * k + j] = cand[j];
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// GEMM
//===----------------------------------------------------------------------===//

void cpu::detail::sgemm(const float *A, int64_t lda, const float *B,
                        int64_t ldb, bool transB, float *C, int64_t ldc,
                        int64_t M, int64_t K, int64_t N, bool accumulate) {
#ifdef MOERT_HAVE_CBLAS
  if (M == 1 && K > 0 && N > 0) {
    // One row (a decode step's dense layers and experts): a GEMV streams B
    // once, where sgemm first copies all of B into its packed panels
    // (OpenBLAS 0.3.21: the copy took more time than the products).
    cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans,
                transB ? int(N) : int(K), transB ? int(K) : int(N), 1.0f, B,
                int(ldb), A, 1, accumulate ? 1.0f : 0.0f, C, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              int(M), int(N), int(K), 1.0f, A, int(lda), B, int(ldb),
              accumulate ? 1.0f : 0.0f, C, int(ldc));
#else
  // No BLAS in this build (runtime/CMakeLists.txt): rows in parallel, the
  // inner loops in the order that walks B and C contiguously.
  MOERT_OMP(parallel for if (M * N * K > kParallelWork) schedule(static))
  for (int64_t m = 0; m < M; ++m) {
    float *c = C + m * ldc;
    const float *a = A + m * lda;
    if (transB) {
      for (int64_t n = 0; n < N; ++n) {
        const float *b = B + n * ldb;
        float s = 0.0f;
        for (int64_t k = 0; k < K; ++k)
          s += a[k] * b[k];
        c[n] = accumulate ? c[n] + s : s;
      }
      continue;
    }
    if (!accumulate)
      std::fill(c, c + N, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float av = a[k];
      const float *b = B + k * ldb;
      for (int64_t n = 0; n < N; ++n)
        c[n] += av * b[n];
    }
  }
#endif
}

/// C[M,N] = A[M,K] * B[K,N] (+ C when accumulate), all contiguous.
static void sgemm(const float *A, const float *B, float *C, int64_t M,
                  int64_t K, int64_t N, bool transB, bool accumulate) {
  cpu::detail::sgemm(A, K, B, transB ? K : N, transB, C, N, M, K, N,
                     accumulate);
}

/// Every row of C[M,N] = bias, or 0 without bias.
static void fillRows(float *C, const float *bias, int64_t M, int64_t N) {
  MOERT_OMP(parallel for if (M * N > kParallelWork) schedule(static))
  for (int64_t m = 0; m < M; ++m) {
    if (bias)
      std::memcpy(C + m * N, bias, N * sizeof(float));
    else
      std::memset(C + m * N, 0, N * sizeof(float));
  }
}

void cpu::matmul(const float *A, const float *B, const float *bias, float *C,
                 int64_t M, int64_t K, int64_t N, bool transB) {
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0 || bias)
    fillRows(C, bias, M, N);
  if (K > 0)
    sgemm(A, B, C, M, K, N, transB, bias != nullptr);
}

//===----------------------------------------------------------------------===//
// Dispatch and combine
//===----------------------------------------------------------------------===//

bool cpu::planDispatch(const int64_t *ids, int64_t T, int64_t k,
                       const Placement &placement, int64_t capacity,
                       DispatchLayout &layout, std::string &error) {
  const int64_t E = placement.numExperts, S = placement.slotsPerRank;
  const int64_t nDest = placement.groupSize * S;
  if (int64_t(placement.replicas.size()) != E) {
    error = "placement lists " + std::to_string(placement.replicas.size()) +
            " experts, " + std::to_string(E) + " expected";
    return false;
  }
  // First replica of each expert in a flat array of per-replica counters.
  std::vector<int64_t> firstReplica(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    const auto &reps = placement.replicas[e];
    if (reps.empty()) {
      error = "expert " + std::to_string(e) + " has no replica";
      return false;
    }
    for (auto [rank, slot] : reps)
      if (rank < 0 || rank >= placement.groupSize || slot < 0 || slot >= S) {
        error = "expert " + std::to_string(e) + " placed on (rank " +
                std::to_string(rank) + ", slot " + std::to_string(slot) +
                ") outside " + std::to_string(placement.groupSize) +
                " ranks of " + std::to_string(S) + " slots";
        return false;
      }
    firstReplica[e + 1] = firstReplica[e] + int64_t(reps.size());
  }

  const int64_t nA = T * k;
  layout.T = T;
  layout.k = k;
  layout.sendPos.assign(nA, -1);
  layout.sendCounts.assign(nDest, 0);
  layout.sendRows = 0;
  layout.dropped = 0;
  std::vector<int64_t> accepted(firstReplica[E], 0);
  // Pass 1: destination (rank * S + slot) of every assignment, in sendPos.
  for (int64_t a = 0; a < nA; ++a) {
    int64_t e = ids[a];
    if (e < 0 || e >= E) {
      error = "expert id " + std::to_string(e) + " of token " +
              std::to_string(a / k) + " (choice " + std::to_string(a % k) +
              ") outside [0, " + std::to_string(E) + ")";
      return false;
    }
    const auto &reps = placement.replicas[e];
    int64_t r = a % int64_t(reps.size());
    int64_t &n = accepted[firstReplica[e] + r];
    if (capacity >= 0 && n >= capacity) {
      ++layout.dropped;
      continue;
    }
    ++n;
    int64_t dest = int64_t(reps[r].first) * S + reps[r].second;
    layout.sendPos[a] = dest;
    ++layout.sendCounts[dest];
  }
  // Pass 2: rows, by destination then assignment index.
  std::vector<int64_t> next(nDest);
  int64_t rows = 0;
  for (int64_t d = 0; d < nDest; ++d) {
    next[d] = rows;
    rows += layout.sendCounts[d];
  }
  for (int64_t a = 0; a < nA; ++a)
    if (layout.sendPos[a] >= 0)
      layout.sendPos[a] = next[layout.sendPos[a]]++;
  layout.sendRows = rows;
  return true;
}

void cpu::packRowBytes(const void *x, size_t rowBytes,
                       const DispatchLayout &layout, void *send) {
  const int64_t nA = layout.T * layout.k, k = layout.k;
  const int64_t *pos = layout.sendPos.data();
  const char *xs = static_cast<const char *>(x);
  char *sd = static_cast<char *>(send);
  const int64_t work = nA * int64_t(rowBytes / sizeof(float));
  MOERT_OMP(parallel for if (work > kParallelWork) schedule(static))
  for (int64_t a = 0; a < nA; ++a)
    if (pos[a] >= 0)
      std::memcpy(sd + pos[a] * rowBytes, xs + (a / k) * rowBytes, rowBytes);
}

void cpu::packScaledRows(const float *x, int64_t H,
                         const DispatchLayout &layout, const float *weights,
                         float *send) {
  const int64_t nA = layout.T * layout.k, k = layout.k;
  const int64_t *pos = layout.sendPos.data();
  MOERT_OMP(parallel for if (nA * H > kParallelWork) schedule(static))
  for (int64_t a = 0; a < nA; ++a) {
    if (pos[a] < 0)
      continue;
    const float w = weights[a];
    const float *from = x + (a / k) * H;
    float *to = send + pos[a] * H;
    for (int64_t h = 0; h < H; ++h)
      to[h] = w * from[h];
  }
}

void cpu::expertMajorOrder(const int64_t *recvCounts, int64_t groupSize,
                           int64_t slots, std::vector<int64_t> &perm,
                           std::vector<int64_t> &slotOffsets) {
  // Source-major offset of every (source, slot) block.
  std::vector<int64_t> srcOffset(groupSize * slots);
  int64_t rows = 0;
  for (int64_t i = 0; i < groupSize * slots; ++i) {
    srcOffset[i] = rows;
    rows += recvCounts[i];
  }
  perm.resize(rows);
  slotOffsets.assign(slots + 1, 0);
  int64_t i = 0;
  for (int64_t slot = 0; slot < slots; ++slot) {
    slotOffsets[slot] = i;
    for (int64_t src = 0; src < groupSize; ++src) {
      int64_t base = srcOffset[src * slots + slot];
      for (int64_t r = 0, n = recvCounts[src * slots + slot]; r < n; ++r)
        perm[i++] = base + r;
    }
  }
  slotOffsets[slots] = i;
}

void cpu::gatherRowBytes(const void *src, size_t rowBytes, const int64_t *perm,
                         int64_t n, void *dst) {
  const char *s = static_cast<const char *>(src);
  char *d = static_cast<char *>(dst);
  const int64_t work = n * int64_t(rowBytes / sizeof(float));
  MOERT_OMP(parallel for if (work > kParallelWork) schedule(static))
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(d + i * rowBytes, s + perm[i] * rowBytes, rowBytes);
}

void cpu::scatterRowBytes(const void *src, size_t rowBytes, const int64_t *perm,
                          int64_t n, void *dst) {
  const char *s = static_cast<const char *>(src);
  char *d = static_cast<char *>(dst);
  const int64_t work = n * int64_t(rowBytes / sizeof(float));
  MOERT_OMP(parallel for if (work > kParallelWork) schedule(static))
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(d + perm[i] * rowBytes, s + i * rowBytes, rowBytes);
}

void cpu::combineRows(const float *back, int64_t H,
                      const DispatchLayout &layout, const float *weights,
                      float *out) {
  const int64_t T = layout.T, k = layout.k;
  const int64_t *pos = layout.sendPos.data();
  MOERT_OMP(parallel for if (T * k * H > kParallelWork) schedule(static))
  for (int64_t t = 0; t < T; ++t) {
    float *o = out + t * H;
    std::fill(o, o + H, 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      int64_t row = pos[t * k + j];
      if (row < 0)
        continue;
      const float w = weights ? weights[t * k + j] : 1.0f;
      const float *b = back + row * H;
      for (int64_t h = 0; h < H; ++h)
        o[h] += w * b[h];
    }
  }
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

namespace {
/// exp(x) in float without libm calls, so that the loops using it vectorise
/// (Cephes expf: |relative error| < 2 ulp). Inputs are clamped to the
/// normal range; NaN propagates. The clamps are written so that NaN becomes
/// -87.3 (its power of two below is then an int: converting NaN to int32 is
/// undefined behaviour), and the NaN is put back at the end.
inline float fastExp(float in) {
  float x = in > -87.3f ? in : -87.3f; // NaN: -87.3
  x = x < 88.3f ? x : 88.3f;
  // n = round(x / ln2) by the 1.5 * 2^23 trick (exact for |n| < 2^22).
  const float shifter = 12582912.0f;
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  float e = q * r * r + r + 1.0f;
  int32_t bits = (int32_t(n) + 127) << 23;
  float pow2;
  std::memcpy(&pow2, &bits, sizeof(pow2));
  return in != in ? in : e * pow2;
}

template <Activation A> inline float activate(float x) {
  if constexpr (A == Activation::silu)
    return x / (1.0f + fastExp(-x));
  if constexpr (A == Activation::gelu)
    return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
  // 0.5 x (1 + tanh(z)) = x * sigmoid(2z).
  if constexpr (A == Activation::gelu_tanh)
    return x /
           (1.0f + fastExp(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
  if constexpr (A == Activation::relu)
    return x > 0.0f ? x : 0.0f;
  return x;
}

/// g[n,F] = act(g + bg) [* (u + bu)] in place, serially.
template <Activation A>
MOERT_ALWAYS_INLINE inline void fuseRows(float *g, const float *u,
                                         const float *bg, const float *bu,
                                         int64_t n, int64_t F) {
  for (int64_t r = 0; r < n; ++r) {
    float *gr = g + r * F;
    const float *ur = u ? u + r * F : nullptr;
    if (bg)
      for (int64_t f = 0; f < F; ++f)
        gr[f] += bg[f];
    if (!ur) {
      for (int64_t f = 0; f < F; ++f)
        gr[f] = activate<A>(gr[f]);
    } else if (bu) {
      for (int64_t f = 0; f < F; ++f)
        gr[f] = activate<A>(gr[f]) * (ur[f] + bu[f]);
    } else {
      for (int64_t f = 0; f < F; ++f)
        gr[f] = activate<A>(gr[f]) * ur[f];
    }
  }
}

/// GPT-OSS's clamped SwiGLU in place: g[n,F] = g' sigmoid(alpha g') (u' +
/// beta), g' = min(g + bg, limit), u' = clamp(u + bu, -limit, limit).
MOERT_ALWAYS_INLINE inline void
fuseRowsClamped(float *g, const float *u, const float *bg, const float *bu,
                int64_t n, int64_t F, float alpha, float beta, float limit) {
  for (int64_t r = 0; r < n; ++r) {
    float *gr = g + r * F;
    const float *ur = u + r * F;
    for (int64_t f = 0; f < F; ++f) {
      float x = std::min(gr[f] + (bg ? bg[f] : 0.0f), limit);
      float y = std::clamp(ur[f] + (bu ? bu[f] : 0.0f), -limit, limit);
      gr[f] = x / (1.0f + fastExp(-alpha * x)) * (y + beta);
    }
  }
}

/// fuseRows for the activations whose loops vectorise (all but gelu, which
/// calls erf), also compiled for AVX2/FMA where the compiler can dispatch.
MOERT_SIMD_CLONES void fuseRowsVectorised(Activation a, float *g,
                                          const float *u, const float *bg,
                                          const float *bu, int64_t n,
                                          int64_t F) {
  switch (a) {
  case Activation::silu:
    return fuseRows<Activation::silu>(g, u, bg, bu, n, F);
  case Activation::gelu_tanh:
    return fuseRows<Activation::gelu_tanh>(g, u, bg, bu, n, F);
  case Activation::relu:
    return fuseRows<Activation::relu>(g, u, bg, bu, n, F);
  case Activation::identity:
    return fuseRows<Activation::identity>(g, u, bg, bu, n, F);
  case Activation::gelu:
    return fuseRows<Activation::gelu>(g, u, bg, bu, n, F);
  case Activation::clamped_swiglu: // fuseActivation calls fuseRowsClamped
    break;
  }
}

/// g[n,F] = act(g + bg) [* (u + bu)] in place, blocks of rows in parallel.
void fuseActivation(const cpu::ExpertWeights &w, float *g, const float *u,
                    const float *bg, const float *bu, int64_t n, int64_t F) {
  const int64_t block = 8;
  Activation a = w.act;
  MOERT_OMP(parallel for if (n * F > kParallelWork) schedule(static))
  for (int64_t r = 0; r < n; r += block) {
    int64_t m = std::min(block, n - r);
    float *gr = g + r * F;
    const float *ur = u ? u + r * F : nullptr;
    if (a == Activation::clamped_swiglu)
      fuseRowsClamped(gr, ur, bg, bu, m, F, w.alpha, w.beta, w.limit);
    else if (a == Activation::gelu)
      fuseRows<Activation::gelu>(gr, ur, bg, bu, m, F);
    else
      fuseRowsVectorised(a, gr, ur, bg, bu, m, F);
  }
}
} // namespace

size_t cpu::groupedFFNScratch(int64_t rows, const ExpertWeights &w) {
  return size_t(rows) * size_t(w.F) * (w.hasUp() ? 2 : 1) * sizeof(float);
}

void cpu::groupedFFN(const float *x, const std::vector<int64_t> &slotOffsets,
                     const ExpertWeights &w, float *y, void *scratch) {
  const int64_t H = w.H, F = w.F;
  const int64_t slots = int64_t(slotOffsets.size()) - 1;
  for (int64_t s = 0; s < slots; ++s) {
    const int64_t begin = slotOffsets[s], n = slotOffsets[s + 1] - begin;
    if (n <= 0)
      continue;
    const float *xs = x + begin * H;
    float *ys = y + begin * H;
    // n <= the total rows, so both fit in groupedFFNScratch(total rows).
    float *g = static_cast<float *>(scratch);
    float *u = w.hasUp() ? g + n * F : nullptr;
    // x [n, H] * W [H, F] of slot s, or W [F, H] for the down projection.
    auto gemm = [&](const float *a, const float *wf, const PackedWeight *wp,
                    float *c, int64_t K, int64_t N, bool accumulate) {
      if (wp)
        packedMatmul(a, n, wp->at(s), c, accumulate);
      else
        sgemm(a, wf + s * K * N, c, n, K, N, false, accumulate);
    };
    gemm(xs, w.wGate, w.pGate, g, H, F, false);
    if (u)
      gemm(xs, w.wUp, w.pUp, u, H, F, false);
    fuseActivation(w, g, u, w.bGate ? w.bGate + s * F : nullptr,
                   w.bUp ? w.bUp + s * F : nullptr, n, F);
    if (w.bDown)
      fillRows(ys, w.bDown + s * H, n, H);
    gemm(g, w.wDown, w.pDown, ys, F, H, w.bDown != nullptr);
  }
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

namespace {
template <Unary U> inline float apply(float x) {
  if constexpr (U == Unary::neg)
    return -x;
  if constexpr (U == Unary::exp)
    return std::exp(x);
  if constexpr (U == Unary::sigmoid)
    return 1.0f / (1.0f + std::exp(-x));
  if constexpr (U == Unary::silu)
    return x / (1.0f + std::exp(-x));
  if constexpr (U == Unary::gelu)
    return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
  if constexpr (U == Unary::gelu_tanh)
    return 0.5f * x *
           (1.0f +
            std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  if constexpr (U == Unary::relu)
    return x > 0.0f ? x : 0.0f;
  if constexpr (U == Unary::tanh)
    return std::tanh(x);
  if constexpr (U == Unary::sqrt)
    return std::sqrt(x);
  if constexpr (U == Unary::rsqrt)
    return 1.0f / std::sqrt(x);
  return x;
}

template <Unary U> void unaryLoop(const float *x, float *y, int64_t n) {
  MOERT_OMP(parallel for if (n > kParallelWork) schedule(static))
  for (int64_t i = 0; i < n; ++i)
    y[i] = apply<U>(x[i]);
}

template <Binary B> inline float apply(float a, float b) {
  if constexpr (B == Binary::add)
    return a + b;
  if constexpr (B == Binary::sub)
    return a - b;
  if constexpr (B == Binary::mul)
    return a * b;
  if constexpr (B == Binary::div)
    return a / b;
  // NaN propagates, as in numpy.
  if constexpr (B == Binary::max)
    return (a > b || a != a) ? a : b;
  return (a < b || a != a) ? a : b;
}

/// Strides of an operand of shape `s` over the output's dims (right-aligned;
/// 0 along broadcast dims).
std::vector<int64_t> broadcastStrides(const std::vector<int64_t> &s,
                                      const std::vector<int64_t> &outShape) {
  const int64_t rank = int64_t(outShape.size());
  const int64_t off = rank - int64_t(s.size());
  std::vector<int64_t> st(rank, 0);
  int64_t acc = 1;
  for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
    if (s[d] != 1 && d + off >= 0)
      st[d + off] = acc;
    acc *= s[d];
  }
  return st;
}

template <Binary B>
void binaryLoop(const float *a, const std::vector<int64_t> &aShape,
                const float *b, const std::vector<int64_t> &bShape, float *out,
                const std::vector<int64_t> &outShape) {
  int64_t n = 1, na = 1, nb = 1;
  for (int64_t d : outShape)
    n *= d;
  for (int64_t d : aShape)
    na *= d;
  for (int64_t d : bShape)
    nb *= d;
  if (n <= 0)
    return;
  // Fast paths: equal shapes or a scalar operand.
  if ((na == n || na == 1) && (nb == n || nb == 1)) {
    const int64_t sa = na == n ? 1 : 0, sb = nb == n ? 1 : 0;
    MOERT_OMP(parallel for if (n > kParallelWork) schedule(static))
    for (int64_t i = 0; i < n; ++i)
      out[i] = apply<B>(a[i * sa], b[i * sb]);
    return;
  }
  // General case: rows of the output's last dim.
  const int64_t rank = int64_t(outShape.size());
  const std::vector<int64_t> sa = broadcastStrides(aShape, outShape);
  const std::vector<int64_t> sb = broadcastStrides(bShape, outShape);
  const int64_t inner = outShape[rank - 1], outer = n / inner;
  const int64_t ia = sa[rank - 1], ib = sb[rank - 1];
  MOERT_OMP(parallel for if (n > kParallelWork) schedule(static))
  for (int64_t o = 0; o < outer; ++o) {
    int64_t offA = 0, offB = 0;
    for (int64_t d = rank - 2, rest = o; d >= 0; --d) {
      int64_t i = rest % outShape[d];
      rest /= outShape[d];
      offA += i * sa[d];
      offB += i * sb[d];
    }
    const float *ar = a + offA, *br = b + offB;
    float *orow = out + o * inner;
    for (int64_t i = 0; i < inner; ++i)
      orow[i] = apply<B>(ar[i * ia], br[i * ib]);
  }
}
} // namespace

void cpu::unary(Unary op, const float *x, float *y, int64_t n) {
  switch (op) {
#define MOERT_UNARY(name)                                                      \
  case Unary::name:                                                            \
    return unaryLoop<Unary::name>(x, y, n);
    MOERT_UNARY(neg)
    MOERT_UNARY(exp)
    MOERT_UNARY(sigmoid)
    MOERT_UNARY(silu)
    MOERT_UNARY(gelu)
    MOERT_UNARY(gelu_tanh)
    MOERT_UNARY(relu)
    MOERT_UNARY(tanh)
    MOERT_UNARY(sqrt)
    MOERT_UNARY(rsqrt)
    MOERT_UNARY(copy)
#undef MOERT_UNARY
  }
}

void cpu::binary(Binary op, const float *a, const std::vector<int64_t> &aShape,
                 const float *b, const std::vector<int64_t> &bShape, float *out,
                 const std::vector<int64_t> &outShape) {
  switch (op) {
#define MOERT_BINARY(name)                                                     \
  case Binary::name:                                                           \
    return binaryLoop<Binary::name>(a, aShape, b, bShape, out, outShape);
    MOERT_BINARY(add)
    MOERT_BINARY(sub)
    MOERT_BINARY(mul)
    MOERT_BINARY(div)
    MOERT_BINARY(max)
    MOERT_BINARY(min)
#undef MOERT_BINARY
  }
}

void cpu::softmax(const float *x, float *y, int64_t rows, int64_t n) {
  MOERT_OMP(parallel for if (rows * n > kParallelWork) schedule(static))
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * n;
    float *yr = y + r * n;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i)
      mx = std::max(mx, xr[i]);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      yr[i] = std::exp(xr[i] - mx);
      sum += yr[i];
    }
    const float inv = float(1.0 / sum);
    for (int64_t i = 0; i < n; ++i)
      yr[i] *= inv;
  }
}
