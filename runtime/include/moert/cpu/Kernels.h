//===- Kernels.h - CPU kernels of the moe runtime -----------------*- C++
//-*-===//
//
// The kernels a plan's steps run on CPU ranks. They do no communication: the
// executor calls them around the collectives (see docs/plan-format.md for how
// dispatch and combine use them). All tensors are dense, C order, fp32 unless
// stated; GEMMs go to the BLAS (OpenBLAS cblas_sgemm). Each kernel has a plain
// loop reference in runtime/test/CpuKernelsTest.cpp.
//
// Threads: the kernels keep no state and may run concurrently. GEMMs use the
// BLAS's threads (OPENBLAS_NUM_THREADS), the loops around them OpenMP
// (OMP_NUM_THREADS); an executor running several ranks as threads of one
// process should divide the cores between them with these variables.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CPU_KERNELS_H
#define MOERT_CPU_KERNELS_H

#include "moert/Routing.h"
#include "moert/enums_generated.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace moert {

// The routing and activation kinds are the plan schema's
// (runtime/schema/enums.fbs), whose values the compiler static-asserts
// against the moe dialect's TableGen enums.
using Activation = fb::Activation;

/// Parse the names used in plans ("softmax", "top2_sum", "gelu_tanh", ...).
bool parseScoreFunc(const std::string &s, ScoreFunc &out);
bool parseGroupScore(const std::string &s, GroupScore &out);
bool parseActivation(const std::string &s, Activation &out);

/// Where the experts live: expert e has one or more replicas, each a
/// (rank, slot) pair: `rank` is the index inside the EP group, `slot` the
/// expert's index among that rank's local experts. Every rank holds
/// `slotsPerRank` slots (ranks with fewer experts leave the last slots
/// unused).
struct Placement {
  int64_t numExperts = 0;
  int64_t groupSize = 1;    ///< ranks in the EP group
  int64_t slotsPerRank = 0; ///< local expert slots per rank
  /// replicas[e] = list of (rank, slot).
  std::vector<std::vector<std::pair<int32_t, int32_t>>> replicas;
};

namespace cpu {

/// routes T tokens: logits [T,E], bias [E] or null -> weights [T,k], ids
/// [T,k] (global expert ids), in decreasing selection score. The parameters
/// are valid as the plan verifier checks them (1 <= topK <= E, E divisible
/// by numGroups, topkGroups * E/numGroups >= topK, 2 experts per group for
/// top2_sum). Scores are computed in double and rounded to fp32 as in
/// moe-eval; a NaN selection score ranks first.
void route(const float *logits, const float *bias, int64_t T, int64_t E,
           const RouteParams &p, float *weights, int64_t *ids);

/// C[M,N] = A[M,K] * B (+ bias[N] when non-null). B is [K,N], or [N,K] when
/// `transB`. Leading dims are the row lengths (contiguous).
void matmul(const float *A, const float *B, const float *bias, float *C,
            int64_t M, int64_t K, int64_t N, bool transB);

/// The send side of a dispatch, computed from the local routing decisions.
/// Assignment a = t*k + j (token t's j-th expert) goes to replica
/// (t*k + j) mod nReplicas of expert ids[a]. Rows of the send buffer are
/// ordered by destination rank, then slot, then assignment index.
struct DispatchLayout {
  int64_t T = 0, k = 0;
  std::vector<int64_t> sendPos; ///< [T*k] row in the send buffer, -1: dropped
  std::vector<int64_t>
      sendCounts;       ///< [groupSize*slotsPerRank] rows per (rank,slot)
  int64_t sendRows = 0; ///< rows sent in total (not dropped)
  int64_t dropped = 0;  ///< assignments over capacity
};

/// Fills `layout`. `capacity` < 0: dropless. Otherwise each (expert replica)
/// accepts at most `capacity` assignments from this rank (in assignment
/// order); the rest are dropped and contribute nothing to the output.
/// Returns false (with `error`) for an expert id outside [0, numExperts).
bool planDispatch(const int64_t *ids, int64_t T, int64_t k,
                  const Placement &placement, int64_t capacity,
                  DispatchLayout &layout, std::string &error);

/// send[sendPos[a]] = x[a / k] for every non-dropped assignment; x [T,H].
/// Rows are moved as bytes (`rowBytes` = H * element size): any dtype.
void packRowBytes(const void *x, size_t rowBytes, const DispatchLayout &layout,
                  void *send);
inline void packRows(const float *x, int64_t H, const DispatchLayout &layout,
                     float *send) {
  packRowBytes(x, size_t(H) * sizeof(float), layout, send);
}

/// The rows of a dispatch with routing weights (moe.experts with
/// weight_input): send[sendPos[a]] = weights[a] * x[a / k] for every
/// non-dropped assignment; x [T,H], weights [T*k].
void packScaledRows(const float *x, int64_t H, const DispatchLayout &layout,
                    const float *weights, float *send);

/// After the count exchange, rank r has received, from each source rank s
/// (in order) and for each of its slots (in order), recvCounts[s*slots+slot]
/// rows. `expertMajorOrder` returns perm with perm[i] = source-major row of
/// the i-th row in slot-major order (slot, then source), and the slot
/// offsets [slots+1] of the slot-major buffer.
void expertMajorOrder(const int64_t *recvCounts, int64_t groupSize,
                      int64_t slots, std::vector<int64_t> &perm,
                      std::vector<int64_t> &slotOffsets);

/// dst[i] = src[perm[i]] (rows of `rowBytes` bytes), for i < n.
void gatherRowBytes(const void *src, size_t rowBytes, const int64_t *perm,
                    int64_t n, void *dst);
/// dst[perm[i]] = src[i] (rows of `rowBytes` bytes), for i < n.
void scatterRowBytes(const void *src, size_t rowBytes, const int64_t *perm,
                     int64_t n, void *dst);
/// The same on rows of H floats.
inline void gatherRowsByIndex(const float *src, int64_t H, const int64_t *perm,
                              int64_t n, float *dst) {
  gatherRowBytes(src, size_t(H) * sizeof(float), perm, n, dst);
}
inline void scatterRowsByIndex(const float *src, int64_t H, const int64_t *perm,
                               int64_t n, float *dst) {
  scatterRowBytes(src, size_t(H) * sizeof(float), perm, n, dst);
}

struct PackedWeight;

/// Weights of the local experts, stacked over slots like `moe.experts`:
/// wGate, wUp [slots,H,F]; wDown [slots,F,H]; biases [slots,F] / [slots,H].
/// wUp, bGate, bUp, bDown may be null.
struct ExpertWeights {
  const float *wGate = nullptr, *wUp = nullptr, *wDown = nullptr;
  const float *bGate = nullptr, *bUp = nullptr, *bDown = nullptr;
  int64_t H = 0, F = 0;
  Activation act = Activation::silu;
  /// clamped_swiglu's parameters (plan.fbs Experts): g' = min(g, limit),
  /// u' = clamp(u, -limit, limit), g' * sigmoid(alpha g') * (u' + beta).
  float alpha = 1.0f, beta = 0.0f, limit = INFINITY;
  /// Packed weights (a `dequantize` step's operands, stacked over slots)
  /// read in place of wGate, wUp, wDown when set: see packedMatmul.
  const PackedWeight *pGate = nullptr, *pUp = nullptr, *pDown = nullptr;
  bool hasUp() const { return wUp || pUp; }
};

/// Bytes of scratch `groupedFFN` needs for `rows` rows.
size_t groupedFFNScratch(int64_t rows, const ExpertWeights &w);

/// For each slot s: rows slotOffsets[s]..slotOffsets[s+1] of x [R,H] go
/// through expert s: y = (act(x Wg + bg) [* (x Wu + bu)]) Wd + bd. GEMMs via
/// BLAS, or packedMatmul on the slot's codes for the packed weights.
/// `scratch` holds groupedFFNScratch(R, w) bytes.
void groupedFFN(const float *x, const std::vector<int64_t> &slotOffsets,
                const ExpertWeights &w, float *y, void *scratch);

/// out[t] = sum_j weights[t,j] * back[sendPos[t*k+j]] over non-dropped
/// assignments (0 when all were dropped); back has the send buffer's row
/// order (what the combine all-to-all returns). out [T,H]. `weights` null:
/// weight 1 (the dispatch scaled the rows, packScaledRows).
void combineRows(const float *back, int64_t H, const DispatchLayout &layout,
                 const float *weights, float *out);

/// Elementwise ops used for the dense parts of plans.
using Unary = fb::UnaryFn;
using Binary = fb::BinaryFn;
bool parseUnary(const std::string &s, Unary &out);
bool parseBinary(const std::string &s, Binary &out);
void unary(Unary op, const float *x, float *y, int64_t n);
/// out = a op b with numpy broadcasting; shapes given right-aligned with the
/// output's rank (missing leading dims = 1).
void binary(Binary op, const float *a, const std::vector<int64_t> &aShape,
            const float *b, const std::vector<int64_t> &bShape, float *out,
            const std::vector<int64_t> &outShape);
/// Softmax over the last dim of x [rows, n].
void softmax(const float *x, float *y, int64_t rows, int64_t n);

//===----------------------------------------------------------------------===//
// Packed weights: dequantize (QuantKernels.cpp)
//===----------------------------------------------------------------------===//

/// A packed weight W [k, n] as a `dequantize` step holds it: codes
/// [n, blocks, blockSize * bits / 8] of `bits`-wide unsigned integers packed
/// LSB first, scales and zeroPoints (null: 2^(bits - 1) each) [n, blocks],
/// W[c, r] = (code(r, c) - zp[r, c / blockSize]) * scales[r, c / blockSize];
/// or a stack of such weights one after the other.
struct PackedWeight {
  const uint8_t *codes = nullptr;
  const float *scales = nullptr, *zeroPoints = nullptr;
  int64_t n = 0, k = 0, bits = 4, blockSize = 32;
  int64_t blocks() const { return (k + blockSize - 1) / blockSize; }
  int64_t rowBytes() const { return blocks() * blockSize * bits / 8; }
  /// Weight `e` of a stack.
  PackedWeight at(int64_t e) const {
    PackedWeight w = *this;
    w.codes += e * n * rowBytes();
    w.scales += e * n * blocks();
    if (w.zeroPoints)
      w.zeroPoints += e * n * blocks();
    return w;
  }
};

/// C[M, n] = A[M, k] * W (+ C when accumulate), reading W's codes in place
/// (no [k, n] floats written to memory). A few rows of A (decode) take a
/// GEMV that dequantizes each code in registers, 4 rows of A at a time;
/// more take tiles of W's rows expanded into a buffer that stays in cache
/// and a BLAS GEMM per tile. fp32 accumulation either way.
void packedMatmul(const float *A, int64_t M, const PackedWeight &w, float *C,
                  bool accumulate);

/// A `dequantize` step (plan.fbs Dequantize): `batch` weights one after the
/// other, each codes [n, blocks, blockSize * bits / 8] of `bits`-wide
/// unsigned integers packed LSB first, scales and zeroPoints (null:
/// 2^(bits - 1) each) [n, blocks] -> out [k, n] with
/// out[c, r] = (code(r, c) - zp[r, c / blockSize]) * scales[r, c / blockSize].
void dequantize(const uint8_t *codes, const float *scales,
                const float *zeroPoints, int64_t batch, int64_t n, int64_t k,
                int64_t bits, int64_t blockSize, float *out);

//===----------------------------------------------------------------------===//
// Index steps: topk, scatter_elements (IndexKernels.cpp)
//===----------------------------------------------------------------------===//

/// The `k` largest (`largest`) or smallest elements of every row of x
/// [rows, n], 1 <= k <= n: values [rows, k] (the elements' bits) and their
/// indices [rows, k], sorted (descending for largest, ascending otherwise).
/// As moe-eval's moe.topk: ties go to the lower index (-0 and +0 tie), NaN
/// counts as the largest value (first when largest, last otherwise; NaNs
/// among themselves by index).
void topk(const float *x, int64_t rows, int64_t n, int64_t k, bool largest,
          float *values, int64_t *indices);
/// The same over int64 elements (sorting ids: JetMoE's grouped experts).
void topk(const int64_t *x, int64_t rows, int64_t n, int64_t k, bool largest,
          int64_t *values, int64_t *indices);

using ScatterReduction = fb::ScatterReduction;

/// A scatter_elements' geometry: data's and indices' shapes (the same rank,
/// indices' dims at most data's off the axis) with the dims merged that do
/// not change the addressing (dims of 1 off the axis, and an off-axis dim
/// with the off-axis dim inside it when indices span that inner dim whole).
/// A [T, E] scatter along axis 1 stays [T, E]; [B, S, E] with indices
/// [B, S, k] along axis 2 becomes [B*S, E] / [B*S, k].
struct ScatterShape {
  std::vector<int64_t> data, index; ///< one rank, at least 1
  int axis = 0;
  int64_t numIndices() const;
};
ScatterShape scatterShape(const std::vector<int64_t> &data,
                          const std::vector<int64_t> &index, int64_t axis);

/// moe-eval's moe.scatter_elements into `out`, which holds a copy of data:
/// for every position p of indices, in row-major order, the element of out
/// at p with p[axis] replaced by indices[p] (plus data's axis size when
/// negative, once) becomes updates[p] (`none`: moved as `eltBytes` bytes,
/// any dtype; with duplicates the last one wins) or, for f32 only
/// (`eltBytes` 4), out op updates[p] (add, mul; max and min as std::max and
/// std::min: NaN in `out` stays, NaN in updates is ignored). `indices` are
/// i64 (`indices64`) or i32. Returns -1, or the position p (flat, in
/// indices) of the first index outside [-size, size): the scatter stops
/// there, nothing is written out of bounds.
int64_t scatterElements(const ScatterShape &g, const void *indices,
                        bool indices64, const void *updates, size_t eltBytes,
                        ScatterReduction r, void *out);

} // namespace cpu
} // namespace moert

#endif // MOERT_CPU_KERNELS_H
