//===- EvalMoE.cpp - moe ops ----------------------------------------------===//
//
// The moe dialect's ops, as MoEOps.td describes them: top-k, non-zero,
// scatters, the router (moe.route) and the experts (moe.experts).
//
//===----------------------------------------------------------------------===//

#include "EvalInternal.h"

#include "moert/Routing.h"

#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

using namespace mlir;
using namespace moec;
using namespace moec::eval;
using namespace moec::eval::detail;

//===----------------------------------------------------------------------===//
// moe
//===----------------------------------------------------------------------===//

namespace {

double activate(moe::Activation a, double x) {
  switch (a) {
  case moe::Activation::identity:
    return x;
  case moe::Activation::relu:
    return x > 0 ? x : 0;
  case moe::Activation::gelu:
    return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  case moe::Activation::gelu_tanh:
    return 0.5 * x *
           (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  case moe::Activation::silu:
    return x / (1 + std::exp(-x));
  case moe::Activation::clamped_swiglu: // needs the up value: evalExperts
    break;
  }
  return x;
}

/// Positions of the k largest (or smallest) of `v`; ties go to the lower
/// position, NaN counts as the largest.
SmallVector<int64_t> topK(ArrayRef<double> v, int64_t k, bool largest) {
  SmallVector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    double x = v[a], y = v[b];
    if (largest)
      return (std::isnan(x) && !std::isnan(y)) || x > y;
    return (!std::isnan(x) && std::isnan(y)) || x < y;
  });
  order.resize(std::min<int64_t>(k, v.size()));
  return order;
}

} // namespace

LogicalResult Interpreter::evalMoE(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](moe::TopKOp t) { return evalTopK(t); })
      .Case([&](moe::NonZeroOp nz) {
        const Tensor &in = T(nz.getInput());
        int64_t rank = in.shape.size();
        SmallVector<int64_t> hits;
        for (int64_t k = 0, n = in.numElements(); k < n; ++k)
          if (in.isFloat() ? in.f[k] != 0 : in.i[k] != 0)
            hits.push_back(k);
        int64_t n = hits.size();
        Tensor out = Tensor::zeros({rank, n}, nz.getType().getElementType());
        SmallVector<int64_t> st = stridesOf(in.shape);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t d = 0; d < rank; ++d)
            out.i[d * n + j] = (hits[j] / st[d]) % in.shape[d];
        setTensor(nz, std::move(out));
        return success();
      })
      .Case([&](moe::ScatterElementsOp s) { return evalScatterElements(s); })
      .Case([&](moe::ScatterNDOp s) { return evalScatterND(s); })
      .Case([&](moe::DequantizeOp d) {
        // The plain formula of the op's description, codes read as bytes,
        // once per leading index (stacked experts).
        const Tensor &q = T(d.getCodes()), &s = T(d.getScales());
        const Tensor *z = d.getZeroPoints() ? &T(d.getZeroPoints()) : nullptr;
        int64_t bits = d.getBits(), bs = d.getBlockSize(), k = d.getK();
        size_t rank = q.shape.size();
        int64_t n = q.shape[rank - 3], blocks = q.shape[rank - 2],
                rowBytes = blocks * q.shape[rank - 1], batch = 1;
        for (size_t i = 0; i + 3 < rank; ++i)
          batch *= q.shape[i];
        auto type = cast<RankedTensorType>(d.getType());
        Tensor out = Tensor::zeros(type.getShape(), type.getElementType());
        FloatRound round = FloatRound::of(type.getElementType());
        for (int64_t e = 0; e < batch; ++e)
          for (int64_t r = 0; r < n; ++r)
            for (int64_t c = 0; c < k; ++c) {
              int64_t row = e * n + r;
              int64_t byte = q.i[row * rowBytes + c * bits / 8] & 0xff;
              int64_t code = (byte >> (c * bits % 8)) & ((1 << bits) - 1);
              int64_t b = row * blocks + c / bs;
              double zp = z ? z->f[b] : double(int64_t(1) << (bits - 1));
              out.f[(e * k + c) * n + r] = round((double(code) - zp) * s.f[b]);
            }
        setTensor(d, std::move(out));
        return success();
      })
      .Case([&](moe::RouteOp r) { return evalRoute(r); })
      .Case([&](moe::ExpertsOp e) { return evalExperts(e); })
      .Default([&](Operation *) { return fail(op, "unsupported op"); });
}

LogicalResult Interpreter::evalTopK(moe::TopKOp op) {
  const Tensor &in = T(op.getInput());
  int64_t rank = in.shape.size(), axis = op.getAxis(), k = op.getK();
  if (axis < 0)
    axis += rank;
  if (axis < 0 || axis >= rank)
    return fail(op, "axis out of range");
  std::vector<int64_t> shape = in.shape;
  int64_t n = shape[axis];
  if (k < 0 || k > n)
    return fail(op, "k = " + Twine(k) + " but the axis has " + Twine(n) +
                        " elements");
  shape[axis] = k;
  Tensor vals = Tensor::zeros(
      shape, cast<ShapedType>(op.getValues().getType()).getElementType());
  Tensor ids = Tensor::zeros(
      shape, cast<ShapedType>(op.getIndices().getType()).getElementType());
  int64_t inner = product(ArrayRef<int64_t>(shape).drop_front(axis + 1));
  int64_t outer = product(ArrayRef<int64_t>(shape).take_front(axis));
  SmallVector<int64_t> order(n);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto src = [&](int64_t j) { return (o * n + j) * inner + i; };
      std::iota(order.begin(), order.end(), 0);
      // Integers compare as integers, floats with NaN as the largest.
      auto before = [&](int64_t a, int64_t b) {
        if (!in.isFloat())
          return op.getLargest() ? in.i[src(a)] > in.i[src(b)]
                                 : in.i[src(a)] < in.i[src(b)];
        double x = in.f[src(a)], y = in.f[src(b)];
        if (op.getLargest())
          return (std::isnan(x) && !std::isnan(y)) || x > y;
        return (!std::isnan(x) && std::isnan(y)) || x < y;
      };
      std::stable_sort(order.begin(), order.end(), before);
      for (int64_t j = 0; j < k; ++j) {
        int64_t dst = (o * k + j) * inner + i;
        copyElt(in, src(order[j]), vals, dst);
        ids.i[dst] = order[j];
      }
    }
  setTensor(op.getValues(), std::move(vals));
  setTensor(op.getIndices(), std::move(ids));
  return success();
}

namespace {

/// Combines `upd[from]` into `out[at]`.
void combine(moe::Reduction r, Tensor &out, int64_t at, const Tensor &upd,
             int64_t from) {
  auto apply = [&](auto a, auto b) -> decltype(a) {
    switch (r) {
    case moe::Reduction::none:
      return b;
    case moe::Reduction::add:
      return a + b;
    case moe::Reduction::mul:
      return a * b;
    case moe::Reduction::max:
      return std::max(a, b);
    case moe::Reduction::min:
      return std::min(a, b);
    }
    return b;
  };
  if (out.isFloat()) {
    out.f[at] = FloatRound::of(out.elementType)(apply(out.f[at], upd.at(from)));
  } else {
    int64_t b = upd.isFloat() ? toInt(upd.f[from]) : upd.i[from];
    int64_t v =
        r == moe::Reduction::add   ? int64_t(uint64_t(out.i[at]) + uint64_t(b))
        : r == moe::Reduction::mul ? int64_t(uint64_t(out.i[at]) * uint64_t(b))
                                   : apply(out.i[at], b);
    out.i[at] = wrapInt(intWidth(out.elementType), v);
  }
}

} // namespace

LogicalResult Interpreter::evalScatterElements(moe::ScatterElementsOp op) {
  const Tensor &ix = T(op.getIndices()), &up = T(op.getUpdates());
  Tensor out = take(op.getData(), op);
  int64_t rank = out.shape.size(), axis = op.getAxis();
  if (axis < 0)
    axis += rank;
  if (axis < 0 || axis >= rank)
    return fail(op, "axis out of range");
  if (int64_t(ix.shape.size()) != rank || up.shape != ix.shape)
    return fail(op, "indices " + shapeStr(ix.shape) + " and updates " +
                        shapeStr(up.shape) +
                        " must have one shape, of the data's rank");
  for (int64_t d = 0; d < rank; ++d)
    if (d != axis && ix.shape[d] > out.shape[d])
      return fail(op, "indices " + shapeStr(ix.shape) +
                          " exceed the data shape " + shapeStr(out.shape));
  SmallVector<int64_t> st = stridesOf(out.shape), ist = stridesOf(ix.shape);
  for (int64_t k = 0, n = ix.numElements(); k < n; ++k) {
    int64_t flat = 0;
    for (int64_t d = 0; d < rank; ++d) {
      int64_t c = (k / ist[d]) % ix.shape[d];
      if (d == axis) {
        c = ix.i[k] < 0 ? ix.i[k] + out.shape[d] : ix.i[k];
        if (c < 0 || c >= out.shape[d])
          return fail(op, "index " + Twine(ix.i[k]) +
                              " out of range for an axis of size " +
                              Twine(out.shape[d]));
      }
      flat += c * st[d];
    }
    combine(op.getReduction(), out, flat, up, k);
  }
  setTensor(op, std::move(out));
  return success();
}

LogicalResult Interpreter::evalScatterND(moe::ScatterNDOp op) {
  const Tensor &ix = T(op.getIndices()), &up = T(op.getUpdates());
  Tensor out = take(op.getData(), op);
  int64_t rank = out.shape.size();
  if (ix.shape.empty())
    return fail(op, "indices must have rank >= 1");
  int64_t q = ix.shape.back();
  if (q < 0 || q > rank)
    return fail(op, "index tuples of length " + Twine(q) +
                        " for data of rank " + Twine(rank));
  std::vector<int64_t> want(ix.shape.begin(), ix.shape.end() - 1);
  want.insert(want.end(), out.shape.begin() + q, out.shape.end());
  if (up.shape != want)
    return fail(op, "updates have shape " + shapeStr(up.shape) + ", " +
                        shapeStr(want) + " expected");
  int64_t tuples = product(ArrayRef<int64_t>(ix.shape).drop_back());
  SmallVector<int64_t> st = stridesOf(out.shape);
  int64_t slice = product(ArrayRef<int64_t>(out.shape).drop_front(q));
  for (int64_t t = 0; t < tuples; ++t) {
    int64_t base = 0;
    for (int64_t d = 0; d < q; ++d) {
      int64_t c = ix.i[t * q + d];
      if (c < 0)
        c += out.shape[d];
      if (c < 0 || c >= out.shape[d])
        return fail(op, "index " + Twine(ix.i[t * q + d]) +
                            " out of range for a dim of size " +
                            Twine(out.shape[d]));
      base += c * st[d];
    }
    for (int64_t j = 0; j < slice; ++j)
      combine(op.getReduction(), out, base + j, up, t * slice + j);
  }
  setTensor(op, std::move(out));
  return success();
}

LogicalResult Interpreter::evalRoute(moe::RouteOp op) {
  const Tensor &logits = T(op.getLogits());
  if (logits.shape.size() != 2)
    return fail(op, "logits must be [tokens, experts]");
  int64_t tokens = logits.shape[0], e = logits.shape[1], k = op.getTopK();
  int64_t groups = op.getNumGroups(), keepGroups = op.getTopkGroups();
  moert::RouteParams rule;
  rule.topK = k;
  rule.numGroups = groups;
  rule.topkGroups = keepGroups;
  rule.groupScore = op.getGroupScore() == moe::GroupScore::top2_sum
                        ? moert::GroupScore::top2_sum
                        : moert::GroupScore::max;
  if (std::string why = moert::routeParamsError(e, rule); !why.empty())
    return fail(op, why);
  int64_t per = e / groups;
  const Tensor *bias = op.getBias() ? &T(op.getBias()) : nullptr;
  if (bias && bias->shape != std::vector<int64_t>{e})
    return fail(op, "bias has shape " + shapeStr(bias->shape) + ", [" +
                        Twine(e) + "] expected");
  FloatRound round = FloatRound::of(logits.elementType);
  Tensor w = Tensor::zeros(
      {tokens, k},
      cast<ShapedType>(op.getWeights().getType()).getElementType());
  Tensor ids = Tensor::zeros(
      {tokens, k},
      cast<ShapedType>(op.getIndices().getType()).getElementType());
  FloatRound wround = FloatRound::of(w.elementType);
  double scale = op.getScalingFactor().convertToDouble();
  SmallVector<double> s(e), sel(e);
  for (int64_t t = 0; t < tokens; ++t) {
    const double *x = &logits.f[t * e];
    if (op.getScoreFunc() == moe::ScoreFunc::softmax) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < e; ++j)
        mx = std::max(mx, x[j]);
      for (int64_t j = 0; j < e; ++j)
        sum += std::exp(x[j] - mx);
      for (int64_t j = 0; j < e; ++j)
        s[j] = round(std::exp(x[j] - mx) / sum);
    } else {
      for (int64_t j = 0; j < e; ++j)
        s[j] = round(1.0 / (1.0 + std::exp(-x[j])));
    }
    for (int64_t j = 0; j < e; ++j)
      sel[j] = bias ? round(s[j] + bias->f[j]) : s[j];
    // Candidates: all experts, or those of the best groups (in id order, so
    // that ties still go to the lower id).
    SmallVector<int64_t> cand;
    if (groups > 1) {
      SmallVector<double> gscore(groups);
      for (int64_t g = 0; g < groups; ++g) {
        ArrayRef<double> members(sel.data() + g * per, per);
        int64_t best = op.getGroupScore() == moe::GroupScore::max ? 1 : 2;
        gscore[g] = 0;
        for (int64_t b : topK(members, best, true))
          gscore[g] += members[b];
      }
      SmallVector<int64_t> keep = topK(gscore, keepGroups, true);
      llvm::sort(keep);
      for (int64_t g : keep)
        for (int64_t j = g * per; j < (g + 1) * per; ++j)
          cand.push_back(j);
    } else {
      cand.resize(e);
      std::iota(cand.begin(), cand.end(), 0);
    }
    SmallVector<double> candSel;
    for (int64_t j : cand)
      candSel.push_back(sel[j]);
    SmallVector<int64_t> best = topK(candSel, k, true);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j)
      sum += s[cand[best[j]]];
    for (int64_t j = 0; j < k; ++j) {
      int64_t ex = cand[best[j]];
      double v = s[ex];
      if (op.getRenormalize())
        v /= sum + op.getRenormEps().convertToDouble();
      w.f[t * k + j] = wround(v * scale);
      ids.i[t * k + j] = ex;
    }
  }
  setTensor(op.getWeights(), std::move(w));
  setTensor(op.getIndices(), std::move(ids));
  return success();
}

LogicalResult Interpreter::evalExperts(moe::ExpertsOp op) {
  const Tensor &x = T(op.getTokens()), &ids = T(op.getIndices()),
               &w = T(op.getWeights()), &g = T(op.getWGate()),
               &dn = T(op.getWDown());
  const Tensor *up = op.getWUp() ? &T(op.getWUp()) : nullptr;
  const Tensor *bg = op.getBGate() ? &T(op.getBGate()) : nullptr;
  const Tensor *bu = op.getBUp() ? &T(op.getBUp()) : nullptr;
  const Tensor *bd = op.getBDown() ? &T(op.getBDown()) : nullptr;
  if (x.shape.size() != 2 || ids.shape.size() != 2 || g.shape.size() != 3)
    return fail(op, "tokens must be [T, H], indices [T, K], w_gate [E, H, F]");
  int64_t tokens = x.shape[0], h = x.shape[1], k = ids.shape[1];
  int64_t e = g.shape[0], f = g.shape[2];
  auto expect = [&](const Tensor *t, const char *name,
                    std::vector<int64_t> want) -> LogicalResult {
    if (!t || t->shape == want)
      return success();
    return fail(op, Twine(name) + " has shape " + shapeStr(t->shape) + ", " +
                        shapeStr(want) + " expected");
  };
  if (failed(expect(&ids, "indices", {tokens, k})) ||
      failed(expect(&w, "weights", {tokens, k})) ||
      failed(expect(&g, "w_gate", {e, h, f})) ||
      failed(expect(up, "w_up", {e, h, f})) ||
      failed(expect(&dn, "w_down", {e, f, h})) ||
      failed(expect(bg, "b_gate", {e, f})) ||
      failed(expect(bu, "b_up", {e, f})) ||
      failed(expect(bd, "b_down", {e, h})))
    return failure();
  int64_t offset = op.getExpertOffset();
  Type elt = op.getType().getElementType();
  FloatRound round = FloatRound::of(elt);
  Tensor out = Tensor::zeros({tokens, h}, elt);
  bool clamped = op.getActivation() == moe::Activation::clamped_swiglu;
  if (clamped && !up)
    return fail(op, "clamped_swiglu needs w_up");
  double alpha = op.getAlpha().convertToDouble(),
         beta = op.getBeta().convertToDouble(),
         limit = op.getLimit() ? op.getLimit()->convertToDouble()
                               : std::numeric_limits<double>::infinity();
  // weight_input: the routing weight scales the expert's input (rounded to
  // the tokens' type, as the runtime's dispatch sends it), not its output.
  bool scaleInput = op.getWeightInput();
  std::vector<double> a(f), b(f), acc(h), y(h), scaled(h);
  for (int64_t t = 0; t < tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      int64_t ex = ids.i[t * k + j] - offset;
      if (ex < 0 || ex >= e)
        continue; // an expert held elsewhere contributes nothing
      const double *xt = &x.f[t * h];
      double wt = w.f[t * k + j];
      if (scaleInput) {
        for (int64_t i = 0; i < h; ++i)
          scaled[i] = round(wt * xt[i]);
        xt = scaled.data();
        wt = 1.0;
      }
      std::fill(a.begin(), a.end(), 0.0);
      std::fill(b.begin(), b.end(), 0.0);
      for (int64_t i = 0; i < h; ++i) {
        const double *gr = &g.f[(ex * h + i) * f];
        for (int64_t c = 0; c < f; ++c)
          a[c] += xt[i] * gr[c];
        if (up) {
          const double *ur = &up->f[(ex * h + i) * f];
          for (int64_t c = 0; c < f; ++c)
            b[c] += xt[i] * ur[c];
        }
      }
      for (int64_t c = 0; c < f; ++c) {
        double gv = round(a[c] + (bg ? bg->f[ex * f + c] : 0.0));
        double uv = up ? round(b[c] + (bu ? bu->f[ex * f + c] : 0.0)) : 0.0;
        double v;
        if (clamped) {
          // g' * sigmoid(alpha g') * (u' + beta), g' = min(g, limit), u'
          // = clamp(u, -limit, limit).
          gv = std::min(gv, limit);
          uv = std::clamp(uv, -limit, limit);
          v = round(gv / (1 + std::exp(-alpha * gv))) * round(uv + beta);
        } else {
          v = activate(op.getActivation(), gv);
          if (up)
            v = round(v) * uv;
        }
        a[c] = round(v);
      }
      std::fill(y.begin(), y.end(), 0.0);
      for (int64_t c = 0; c < f; ++c) {
        const double *dr = &dn.f[(ex * f + c) * h];
        for (int64_t o = 0; o < h; ++o)
          y[o] += a[c] * dr[o];
      }
      for (int64_t o = 0; o < h; ++o)
        acc[o] += wt * round(y[o] + (bd ? bd->f[ex * h + o] : 0.0));
    }
    for (int64_t o = 0; o < h; ++o)
      out.f[t * h + o] = round(acc[o]);
  }
  setTensor(op.getResult(), std::move(out));
  return success();
}
