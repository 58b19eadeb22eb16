//===- StepChecks.cpp - the backend-independent checks of steps -----------===//
//
// The check*Step helpers of moert/Executor.h: each parses a step's
// attributes and checks its operands' shapes and dtypes against each other
// before a backend runs it, and throws ctx.error naming the operand.
//
//===----------------------------------------------------------------------===//

#include "moert/Executor.h"

#include <algorithm>
#include <climits>
#include <cmath>

using namespace moert;

int64_t moert::checkExpertsStep(ExecContext &ctx, size_t index, int64_t H,
                                int64_t S, int64_t recvRows) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  auto opt = [&](size_t i) -> const Value * {
    return i < s.inputs.size() && s.inputs[i] >= 0
               ? &p.values[size_t(s.inputs[i])]
               : nullptr;
  };
  const Value &x = p.values[size_t(s.inputs[0])];
  const Value &wg = p.values[size_t(s.inputs[1])];
  const Value &wd = p.values[size_t(s.inputs[3])];
  const Value &y = p.values[size_t(s.outputs[0])];
  need(x.shape.size() == 2 && x.shape[1] == H && x.shape[0] >= recvRows,
       "recv " + shapeString(x.shape) + " does not hold the " +
           std::to_string(recvRows) + " received rows of " + std::to_string(H));
  need(y.numElements() >= recvRows * H,
       "y " + shapeString(y.shape) + " is too small");
  need(wg.shape.size() == 3 && wg.shape[0] == S && wg.shape[1] == H,
       "w_gate " + shapeString(wg.shape) + " is not [" + std::to_string(S) +
           "," + std::to_string(H) + ",F]");
  int64_t F = wg.shape[2];
  need(wd.shape == std::vector<int64_t>{S, F, H},
       "w_down " + shapeString(wd.shape) + " is not [" + std::to_string(S) +
           "," + std::to_string(F) + "," + std::to_string(H) + "]");
  if (const Value *wu = opt(2))
    need(wu->shape == wg.shape, "w_up " + shapeString(wu->shape) +
                                    " differs from w_gate " +
                                    shapeString(wg.shape));
  if (const Value *b = opt(4))
    need(b->numElements() == S * F, "b_gate has the wrong size");
  if (const Value *b = opt(5))
    need(b->numElements() == S * F, "b_up has the wrong size");
  if (const Value *b = opt(6))
    need(b->numElements() == S * H, "b_down has the wrong size");
  return F;
}

namespace {
/// The operand `id` of step `index`, or an error naming `role`.
const Value &operand(ExecContext &ctx, size_t index, int32_t id,
                     const char *role) {
  const Plan &p = ctx.plan();
  if (id < 0 || id >= int32_t(p.values.size()))
    throw ctx.error(index, std::string("missing operand (") + role + ")");
  return p.values[size_t(id)];
}
int64_t lastDim(const Value &v) { return v.shape.empty() ? 1 : v.shape.back(); }
} // namespace

moert::MatmulDims moert::checkMatmulStep(ExecContext &ctx, size_t index) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &a = operand(ctx, index, s.inputs[0], "A");
  const Value &b = operand(ctx, index, s.inputs[1], "B");
  const Value &c = operand(ctx, index, s.outputs[0], "C");
  MatmulDims d;
  d.transB = s.attrs.Asmatmul()->trans_b;
  need(b.shape.size() == 2, "B must be 2-d, got " + shapeString(b.shape));
  d.K = d.transB ? b.shape[1] : b.shape[0];
  d.N = d.transB ? b.shape[0] : b.shape[1];
  need(lastDim(a) == d.K, "A " + shapeString(a.shape) + " does not match B " +
                              shapeString(b.shape) +
                              (d.transB ? " (transposed)" : ""));
  d.M = d.K ? a.numElements() / d.K : 0;
  need(c.numElements() == d.M * d.N, "C " + shapeString(c.shape) + " is not " +
                                         std::to_string(d.M) + "x" +
                                         std::to_string(d.N));
  need(a.dtype == b.dtype, std::string("B has dtype ") + dtypeName(b.dtype) +
                               ", A " + dtypeName(a.dtype));
  need(c.dtype == DType::f32 || c.dtype == a.dtype,
       std::string("C has dtype ") + dtypeName(c.dtype) + " for inputs of " +
           dtypeName(a.dtype));
  if (s.inputs.size() > 2 && s.inputs[2] >= 0) {
    const Value &bias = operand(ctx, index, s.inputs[2], "bias");
    need(bias.numElements() == d.N, "bias has the wrong size");
    need(bias.dtype == c.dtype, "bias and C differ in dtype");
  }
  return d;
}

moert::BatchMatmulDims moert::checkBatchMatmulStep(ExecContext &ctx,
                                                   size_t index) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &a = operand(ctx, index, s.inputs[0], "A");
  const Value &b = operand(ctx, index, s.inputs[1], "B");
  const Value &c = operand(ctx, index, s.outputs[0], "C");
  for (auto [v, role] : {std::pair<const Value *, const char *>{&a, "A"},
                         {&b, "B"},
                         {&c, "C"}}) {
    need(v->shape.size() == 3,
         std::string(role) + " must be 3-d, got " + shapeString(v->shape));
    need(v->dtype == DType::f32, std::string(role) + " has dtype " +
                                     dtypeName(v->dtype) +
                                     "; batch_matmul takes f32");
  }
  BatchMatmulDims d;
  d.transB = s.attrs.Asbatch_matmul()->trans_b;
  d.batch = a.shape[0];
  d.M = a.shape[1];
  d.K = a.shape[2];
  d.N = b.shape[d.transB ? 1 : 2];
  need(b.shape[0] == d.batch && b.shape[d.transB ? 2 : 1] == d.K,
       "A " + shapeString(a.shape) + " does not match B " +
           shapeString(b.shape) + (d.transB ? " (transposed)" : ""));
  need(c.shape == std::vector<int64_t>{d.batch, d.M, d.N},
       "C " + shapeString(c.shape) + " is not " + std::to_string(d.batch) +
           "x" + std::to_string(d.M) + "x" + std::to_string(d.N));
  return d;
}

moert::RouteParams moert::checkRouteStep(ExecContext &ctx, size_t index,
                                         int64_t &T, int64_t &E) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &lg = operand(ctx, index, s.inputs[0], "logits");
  E = lastDim(lg);
  T = E ? lg.numElements() / E : 0;
  const fb::RouteT &a = *s.attrs.Asroute();
  RouteParams rp;
  rp.topK = a.top_k;
  rp.score = a.score_func;
  rp.renormalize = a.renormalize;
  rp.renormEps = a.renorm_eps;
  rp.scalingFactor = a.scaling_factor;
  rp.numGroups = a.num_groups;
  rp.topkGroups = a.topk_groups;
  rp.groupScore = a.group_score;
  need(rp.topK >= 1 && rp.topK <= E, "top_k " + std::to_string(rp.topK) +
                                         " outside [1, " + std::to_string(E) +
                                         "]");
  // The grouping rules (num_groups divides E, ...), as moe-eval checks them.
  if (std::string why = routeParamsError(E, rp); !why.empty())
    throw ctx.error(index, why);
  need(operand(ctx, index, s.outputs[0], "weights").numElements() ==
               T * rp.topK &&
           operand(ctx, index, s.outputs[1], "ids").numElements() ==
               T * rp.topK,
       "results must hold " + std::to_string(T) + "x" +
           std::to_string(rp.topK) + " elements");
  if (s.inputs.size() > 1 && s.inputs[1] >= 0)
    need(operand(ctx, index, s.inputs[1], "bias").numElements() == E,
         "bias has the wrong size");
  return rp;
}

int64_t moert::checkUnaryStep(ExecContext &ctx, size_t index, cpu::Unary &fn) {
  const Step &s = ctx.plan().steps[index];
  fn = s.attrs.Asunary()->fn;
  int64_t n = operand(ctx, index, s.inputs[0], "x").numElements();
  if (operand(ctx, index, s.outputs[0], "y").numElements() != n)
    throw ctx.error(index, "x and y differ in size");
  return n;
}

void moert::checkBinaryStep(ExecContext &ctx, size_t index, cpu::Binary &fn,
                            std::vector<int64_t> &aShape,
                            std::vector<int64_t> &bShape) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  fn = s.attrs.Asbinary()->fn;
  const Value &a = operand(ctx, index, s.inputs[0], "a");
  const Value &b = operand(ctx, index, s.inputs[1], "b");
  const Value &c = operand(ctx, index, s.outputs[0], "c");
  size_t rank = c.shape.size();
  need(a.shape.size() <= rank && b.shape.size() <= rank,
       "operands have a higher rank than the result");
  auto pad = [&](const std::vector<int64_t> &sh) {
    std::vector<int64_t> r(rank - sh.size(), 1);
    r.insert(r.end(), sh.begin(), sh.end());
    return r;
  };
  aShape = pad(a.shape);
  bShape = pad(b.shape);
  for (size_t d = 0; d < rank; ++d)
    need((aShape[d] == 1 || aShape[d] == c.shape[d]) &&
             (bShape[d] == 1 || bShape[d] == c.shape[d]),
         "shapes " + shapeString(a.shape) + " and " + shapeString(b.shape) +
             " do not broadcast to " + shapeString(c.shape));
}

int64_t moert::dispatchCapacity(ExecContext &ctx, const fb::DispatchT &at,
                                int64_t k) {
  if (!(at.capacity_factor > 0))
    return at.capacity;
  // verifyPlan: the factor is finite, num_experts >= 1, tb <= the maximum.
  double c = std::ceil(at.capacity_factor * double(ctx.symbols().tb) *
                       double(k) / double(at.num_experts));
  int64_t cap = c >= double(INT32_MAX) ? INT32_MAX : int64_t(c);
  return at.capacity >= 0 ? std::min(cap, at.capacity) : cap;
}

void moert::checkDispatchStep(ExecContext &ctx, size_t index, int64_t &H,
                              int64_t &k, int64_t &T) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &tok = operand(ctx, index, s.inputs[0], "tokens");
  const Value &ids = operand(ctx, index, s.inputs[1], "ids");
  const Value &recv = operand(ctx, index, s.outputs[0], "recv");
  H = lastDim(tok);
  k = lastDim(ids);
  T = k ? ids.numElements() / k : 0;
  need(tok.numElements() == T * H, "tokens " + shapeString(tok.shape) +
                                       " and ids " + shapeString(ids.shape) +
                                       " differ in token count");
  need(recv.shape.size() == 2 && recv.shape[1] == H,
       "recv " + shapeString(recv.shape) + " is not [rows, " +
           std::to_string(H) + "]");
  need(recv.dtype == tok.dtype, "recv and tokens differ in dtype");
  if (dispatchScalesRows(s)) {
    const Value &w = operand(ctx, index, s.inputs[2], "weights");
    need(w.dtype == DType::f32 && w.numElements() == T * k,
         "weights " + shapeString(w.shape) + " is not " + std::to_string(T) +
             "x" + std::to_string(k) + " f32");
  }
}

moert::Placement moert::dispatchPlacement(ExecContext &ctx, size_t index,
                                          int64_t G) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  Placement pl;
  const fb::DispatchT &a = *s.attrs.Asdispatch();
  pl.numExperts = a.num_experts;
  pl.groupSize = G;
  pl.slotsPerRank = a.slots_per_rank;
  need(pl.numExperts > 0 && pl.slotsPerRank > 0,
       "num_experts and slots_per_rank must be positive");
  const std::vector<int64_t> &reps = a.replicas;
  // Every expert takes at least 3 entries: bound the count by the list
  // before allocating per expert.
  need(uint64_t(pl.numExperts) <= reps.size() / 3,
       "attribute 'replicas' (" + std::to_string(reps.size()) +
           " entries) is too short for " + std::to_string(pl.numExperts) +
           " experts");
  size_t pos = 0;
  pl.replicas.resize(size_t(pl.numExperts));
  for (int64_t e = 0; e < pl.numExperts; ++e) {
    need(pos < reps.size(), "attribute 'replicas' is too short");
    int64_t n = reps[pos++];
    need(n >= 1 && pos + 2 * size_t(n) <= reps.size(),
         "attribute 'replicas': expert " + std::to_string(e) +
             " has a bad replica list");
    for (int64_t r = 0; r < n; ++r, pos += 2) {
      int64_t rk = reps[pos], sl = reps[pos + 1];
      need(rk >= 0 && rk < G && sl >= 0 && sl < pl.slotsPerRank,
           "attribute 'replicas': expert " + std::to_string(e) + " on (rank " +
               std::to_string(rk) + ", slot " + std::to_string(sl) +
               ") outside the " + std::to_string(G) + "-rank group with " +
               std::to_string(pl.slotsPerRank) + " slots");
      pl.replicas[size_t(e)].push_back({int32_t(rk), int32_t(sl)});
    }
  }
  need(pos == reps.size(), "attribute 'replicas' is too long");
  return pl;
}

void moert::checkCombineStep(ExecContext &ctx, size_t index, int64_t H,
                             int64_t T, int64_t k, int64_t recvRows) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &y = operand(ctx, index, s.inputs[0], "y");
  const Value &out = operand(ctx, index, s.outputs[0], "out");
  need(y.numElements() >= recvRows * H && lastDim(y) == H,
       "y " + shapeString(y.shape) + " does not hold the " +
           std::to_string(recvRows) + " expert rows");
  // No weights: the dispatch scaled the rows (verifyPlan checks which).
  if (s.inputs[1] >= 0) {
    const Value &wt = operand(ctx, index, s.inputs[1], "weights");
    need(wt.numElements() == T * k, "weights " + shapeString(wt.shape) +
                                        " is not " + std::to_string(T) + "x" +
                                        std::to_string(k));
  }
  need(out.numElements() == T * H, "out " + shapeString(out.shape) +
                                       " is not " + std::to_string(T) + "x" +
                                       std::to_string(H));
  need(out.dtype == y.dtype, "y and out differ in dtype");
}

/// The shared check of all_gather (y = G copies of x), all_slice and
/// reduce_scatter (x = G copies of y): `big` is G copies of `small` along
/// `axis`.
static int64_t checkCopies(ExecContext &ctx, size_t index, int64_t G,
                           const Value &small, const char *smallName,
                           const Value &big, const char *bigName,
                           int64_t axis) {
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  std::string sn = std::string(smallName) + " " + shapeString(small.shape);
  std::string bn = std::string(bigName) + " " + shapeString(big.shape);
  need(small.dtype == big.dtype && small.shape.size() == big.shape.size() &&
           axis >= 0 && axis < int64_t(small.shape.size()),
       sn + " and " + bn + " do not fit axis " + std::to_string(axis));
  for (size_t d = 0; d < small.shape.size(); ++d)
    need(big.shape[d] == (int64_t(d) == axis ? G : 1) * small.shape[d],
         bn + " is not " + std::to_string(G) + " copies of " + sn +
             " along axis " + std::to_string(axis));
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= small.shape[size_t(d)];
  return outer;
}

int64_t moert::checkAllSliceStep(ExecContext &ctx, size_t index, int64_t G) {
  const Step &s = ctx.plan().steps[index];
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  const Value &y = operand(ctx, index, s.outputs[0], "y");
  return checkCopies(ctx, index, G, y, "y", x, "x",
                     s.attrs.Asall_slice()->axis);
}

int64_t moert::checkReduceScatterStep(ExecContext &ctx, size_t index,
                                      int64_t G) {
  const Step &s = ctx.plan().steps[index];
  const fb::ReduceScatterT &a = *s.attrs.Asreduce_scatter();
  if (a.reduction != fb::Reduction::sum)
    throw ctx.error(index, std::string("unsupported reduction '") +
                               fb::EnumNameReduction(a.reduction) + "'");
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  const Value &y = operand(ctx, index, s.outputs[0], "y");
  return checkCopies(ctx, index, G, y, "y", x, "x", a.axis);
}

int64_t moert::checkAllGatherStep(ExecContext &ctx, size_t index, int64_t G) {
  const Step &s = ctx.plan().steps[index];
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  const Value &y = operand(ctx, index, s.outputs[0], "y");
  return checkCopies(ctx, index, G, x, "x", y, "y",
                     s.attrs.Asall_gather()->axis);
}

bool moert::checkRowBlocks(ExecContext &ctx, size_t index, int64_t G, int64_t g,
                           RowBlocks &rows) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  if (!rowBlockStep(p, s)) // its rules: verifyPlan
    return false;
  bool slice = !s.attrs.Asall_gather();
  int32_t axis = s.attrs.Asall_slice()        ? s.attrs.Asall_slice()->axis
                 : s.attrs.Asreduce_scatter() ? s.attrs.Asreduce_scatter()->axis
                                              : s.attrs.Asall_gather()->axis;
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  const Value &y = operand(ctx, index, s.outputs[0], "y");
  const Value &whole = slice ? x : y, &block = slice ? y : x;
  int64_t a = 1;
  for (const SymDim &d : whole.symDims)
    if (d.dim == axis)
      a = d.a;
  rows.T = ctx.symbols().T;
  rows.tb = G ? (rows.T + G - 1) / G : 0;
  rows.t = std::clamp<int64_t>(rows.T - g * rows.tb, 0, rows.tb);
  rows.rowBytes = dtypeSize(whole.dtype) * uint64_t(a);
  for (size_t d = 0; d < whole.shape.size(); ++d)
    if (int32_t(d) != axis)
      rows.rowBytes *= uint64_t(whole.shape[d]);
  if (whole.shape[size_t(axis)] != a * rows.T ||
      block.shape[size_t(axis)] != a * rows.t || whole.dtype != block.dtype)
    throw ctx.error(
        index, std::string(slice ? "x " : "y ") + shapeString(whole.shape) +
                   " and " + (slice ? "y " : "x ") + shapeString(block.shape) +
                   " are not the token count's rows (T = " +
                   std::to_string(rows.T) + ") and block " + std::to_string(g) +
                   " of them (" + std::to_string(rows.t) + " rows)");
  return true;
}

moert::TopKDims moert::checkTopKStep(ExecContext &ctx, size_t index) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  if (std::string why = indexStepError(p, s); !why.empty())
    throw ctx.error(index, why);
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  TopKDims d;
  d.n = lastDim(x);
  d.rows = d.n ? x.numElements() / d.n : 0;
  d.k = s.attrs.Astopk()->k;
  d.largest = s.attrs.Astopk()->largest;
  d.i64 = x.dtype == DType::i64;
  return d;
}

moert::DequantizeDims moert::checkDequantizeStep(ExecContext &ctx,
                                                 size_t index) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  if (std::string why = indexStepError(p, s); !why.empty())
    throw ctx.error(index, why);
  const fb::DequantizeT &a = *s.attrs.Asdequantize();
  DequantizeDims d;
  const std::vector<int64_t> &codes =
      operand(ctx, index, s.inputs[0], "codes").shape;
  d.n = codes[codes.size() - 3];
  for (size_t i = 0; i + 3 < codes.size(); ++i)
    d.batch *= codes[i];
  int64_t blocks = codes[codes.size() - 2];
  d.codesPerWeight = d.n * blocks * codes.back();
  d.scalesPerWeight = d.n * blocks;
  d.k = a.k;
  d.bits = a.bits;
  d.blockSize = a.block_size;
  d.zeroPoints = s.inputs.size() > 2 && s.inputs[2] >= 0;
  return d;
}

moert::DequantizeReaders moert::dequantizeReaders(const Plan &p, size_t index) {
  DequantizeReaders r;
  const Step &s = p.steps[index];
  const fb::DequantizeT *a = s.attrs.Asdequantize();
  if (!a || s.outputs.empty())
    return r;
  int32_t out = s.outputs[0];
  for (const ModelIO &io : p.outputs)
    if (io.value == out)
      return r;
  const Value &w = p.values[size_t(out)];
  int64_t k = w.shape.size() >= 2 ? w.shape[w.shape.size() - 2] : 0;
  bool any = false;
  for (size_t j = 0; j < p.steps.size(); ++j) {
    const Step &t = p.steps[j];
    for (size_t i = 0; j != index && i < t.inputs.size(); ++i) {
      if (t.inputs[i] != out)
        continue;
      any = true;
      if (a->dispatch >= 0) {
        const fb::ExpertsT *e = t.attrs.Asexperts();
        if (!e || e->dispatch != a->dispatch || i < 1 || i > 3)
          return r;
        continue;
      }
      const fb::MatmulT *m = t.attrs.Asmatmul();
      if (!m || m->trans_b || i != 1 || t.outputs.empty() || t.inputs[0] < 0 ||
          k <= 0)
        return r;
      const Value &av = p.values[size_t(t.inputs[0])];
      const Value &cv = p.values[size_t(t.outputs[0])];
      r.maxRows = std::max(r.maxRows, av.numElements() / k);
      r.f32Matmuls &= av.dtype == DType::f32 && cv.dtype == DType::f32;
    }
  }
  r.gemmsOnly = any;
  return r;
}

moert::ScatterElementsDims moert::checkScatterElementsStep(ExecContext &ctx,
                                                           size_t index) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  if (std::string why = indexStepError(p, s); !why.empty())
    throw ctx.error(index, why);
  const fb::ScatterElementsT &a = *s.attrs.Asscatter_elements();
  const Value &data = operand(ctx, index, s.inputs[0], "data");
  const Value &idx = operand(ctx, index, s.inputs[1], "indices");
  ScatterElementsDims d;
  d.shape = cpu::scatterShape(data.shape, idx.shape, a.axis);
  d.reduction = a.reduction;
  d.indices64 = idx.dtype == DType::i64;
  d.dtype = data.dtype;
  return d;
}

RunError moert::scatterIndexError(ExecContext &ctx, size_t index,
                                  int64_t position, int64_t value) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  const Value &data = operand(ctx, index, s.inputs[0], "data");
  const Value &idx = operand(ctx, index, s.inputs[1], "indices");
  int64_t axis = s.attrs.Asscatter_elements()->axis;
  return ctx.error(
      index, "index " + std::to_string(value) + " at position " +
                 std::to_string(position) + " of indices " +
                 shapeString(idx.shape) + " is out of range for axis " +
                 std::to_string(axis) + " of data " + shapeString(data.shape));
}
