//===- RaiseActivations.cpp - expert FFN activations ----------------------===//
//
// The activations of an expert FFN as torch.onnx writes them, read back
// element-wise generic by generic: GELU with erf and with tanh, and
// GPT-OSS's clamped SwiGLU (RaiseFFN.cpp matches the rest of the FFN).
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "mlir/Dialect/Math/IR/Math.h"

#include <cmath>

using namespace mlir;
using namespace moec;

namespace moec::raising {

namespace {

/// `0.5 * (x * q)` or `(x * 0.5) * q`, products in either order, where
/// `inner(q)` reads q back to the same x (GELU's `1 + erf(...)` or
/// `1 + tanh(...)`): returns x.
Value matchHalfXTimes(Value v, llvm::function_ref<Value(Value)> inner) {
  auto mul = matchBinary<arith::MulFOp>(v);
  if (!mul)
    return {};
  for (auto [a, b] : {std::pair(mul->first, mul->second),
                      std::pair(mul->second, mul->first)}) {
    if (std::optional<double> half = scalarFloat(b); half && *half == 0.5)
      if (auto xq = matchBinary<arith::MulFOp>(a))
        for (auto [u, q] : {std::pair(xq->first, xq->second),
                            std::pair(xq->second, xq->first)})
          if (Value x = inner(q); x && x == u)
            return u;
    if (auto uh = matchScalarBinary<arith::MulFOp>(a); uh && uh->second == 0.5)
      if (Value x = inner(b); x && x == uh->first)
        return x;
  }
  return {};
}

} // namespace

/// GELU with erf as torch.onnx writes it: (u * (erf(u / sqrt(2)) + 1)) *
/// 0.5, or (u * 0.5) * (erf(u / sqrt(2)) + 1): returns u.
Value matchGeluErf(Value v) {
  auto near = [](double a, double b) {
    return std::abs(a - b) <= 1e-6 * std::abs(b);
  };
  // 1 + erf(u / sqrt(2)) with the same u.
  auto onePlusErf = [&](Value q) -> Value {
    auto add = matchScalarBinary<arith::AddFOp>(q);
    if (!add || add->second != 1.0)
      return {};
    auto g = add->first.getDefiningOp<linalg::GenericOp>();
    if (!g || g.getNumDpsInputs() != 1 || bodyOps(g).size() != 1 ||
        !isa<math::ErfOp>(bodyOps(g)[0]) ||
        bodyOps(g)[0]->getOperand(0) != g.getBody()->getArgument(0))
      return {};
    Value d = g.getDpsInputs()[0];
    if (auto div = matchBinary<arith::DivFOp>(d)) {
      std::optional<double> c = scalarFloat(div->second);
      if (c && near(*c, std::sqrt(2.0)))
        return div->first;
    }
    if (auto mul = matchScalarBinary<arith::MulFOp>(d);
        mul && near(mul->second, 1.0 / std::sqrt(2.0)))
      return mul->first;
    return {};
  };
  return matchHalfXTimes(v, onePlusErf);
}

namespace {

/// `min(x, c)` with a scalar constant c: {x, c}; {v, -1} when `v` is no
/// such clamp.
std::pair<Value, double> stripClampMax(Value v) {
  if (auto m = matchScalarBinary<arith::MinimumFOp>(v); m && m->second > 0)
    return {m->first, m->second};
  return {v, -1.0};
}

/// `min(max(x, -c), c)` (one generic, as the importer writes Clip with a
/// min and a max) with a scalar constant c: {x, c}; {v, -1} otherwise.
std::pair<Value, double> stripClampSym(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 3 || g.getNumResults() != 1)
    return {v, -1.0};
  SmallVector<Operation *> ops = bodyOps(g);
  Block *b = g.getBody();
  if (ops.size() != 2 || !isa<arith::MaximumFOp>(ops[0]) ||
      !isa<arith::MinimumFOp>(ops[1]) ||
      ops[0]->getOperand(0) != b->getArgument(0) ||
      ops[0]->getOperand(1) != b->getArgument(1) ||
      ops[1]->getOperand(0) != ops[0]->getResult(0) ||
      ops[1]->getOperand(1) != b->getArgument(2) ||
      b->getTerminator()->getOperand(0) != ops[1]->getResult(0))
    return {v, -1.0};
  std::optional<double> lo = scalarFloat(g.getDpsInputs()[1]),
                        hi = scalarFloat(g.getDpsInputs()[2]);
  if (!lo || !hi || *hi <= 0 || *lo != -*hi)
    return {v, -1.0};
  return {g.getDpsInputs()[0], *hi};
}

} // namespace

/// GPT-OSS's clamped SwiGLU, read back from its product:
/// `(u' + beta) * (g' * sigmoid(alpha * g'))`, g' = min(g, limit) (Clip
/// with a max only), u' = clamp(u, -limit, limit) (Clip with both), each
/// of beta, alpha and the clamps optional (limit -1: none); operands of
/// both products in either order.
std::optional<ClampedSwiglu> matchClampedSwiglu(Value h) {
  auto mul = matchBinary<arith::MulFOp>(h);
  if (!mul)
    return std::nullopt;
  for (auto [p, q] : {std::pair(mul->first, mul->second),
                      std::pair(mul->second, mul->first)}) {
    auto glu = matchBinary<arith::MulFOp>(q);
    if (!glu)
      continue;
    for (auto [gc, s] : {std::pair(glu->first, glu->second),
                         std::pair(glu->second, glu->first)}) {
      Value in = matchSigmoid(s);
      if (!in)
        continue;
      ClampedSwiglu c;
      if (in != gc) {
        auto scaled = matchScalarBinary<arith::MulFOp>(in);
        if (!scaled || scaled->first != gc)
          continue;
        c.alpha = scaled->second;
      }
      Value uc = p;
      if (auto add = matchScalarBinary<arith::AddFOp>(p)) {
        uc = add->first;
        c.beta = add->second;
      }
      auto [g, gLimit] = stripClampMax(gc);
      auto [u, uLimit] = stripClampSym(uc);
      if (gLimit != uLimit)
        continue;
      c.gate = g;
      c.up = u;
      c.limit = gLimit;
      return c;
    }
  }
  return std::nullopt;
}

namespace {

/// `x * x * x` in any association, or `pow(x, 3)`: returns x.
Value matchCube(Value v) {
  if (auto p = matchBinary<math::PowFOp>(v)) {
    std::optional<double> e = scalarFloat(p->second);
    return e && *e == 3.0 ? p->first : Value();
  }
  auto mul = matchBinary<arith::MulFOp>(v);
  if (!mul)
    return {};
  for (auto [a, b] :
       {std::pair(mul->first, mul->second), std::pair(mul->second, mul->first)})
    if (auto sq = matchBinary<arith::MulFOp>(b);
        sq && sq->first == a && sq->second == a)
      return a;
  return {};
}

} // namespace

/// GELU with tanh (`gelu(x, approximate="tanh")`, gelu_pytorch_tanh) as
/// torch.onnx writes it: 0.5 * (x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 *
/// x^3)))), or (x * 0.5) * (1 + tanh(...)): returns x.
Value matchGeluTanh(Value v) {
  auto near = [](double a, double b) {
    return std::abs(a - b) <= 1e-6 * std::abs(b);
  };
  // 1 + tanh(k (x + c x^3)) with the same x.
  auto onePlusTanh = [&](Value q) -> Value {
    auto add = matchScalarBinary<arith::AddFOp>(q);
    if (!add || add->second != 1.0)
      return {};
    auto g = add->first.getDefiningOp<linalg::GenericOp>();
    if (!g || g.getNumDpsInputs() != 1 || bodyOps(g).size() != 1 ||
        !isa<math::TanhOp>(bodyOps(g)[0]) ||
        bodyOps(g)[0]->getOperand(0) != g.getBody()->getArgument(0))
      return {};
    auto k = matchScalarBinary<arith::MulFOp>(g.getDpsInputs()[0]);
    if (!k || !near(k->second, std::sqrt(2.0 / M_PI)))
      return {};
    auto sum = matchBinary<arith::AddFOp>(k->first);
    if (!sum)
      return {};
    for (auto [x, t] : {std::pair(sum->first, sum->second),
                        std::pair(sum->second, sum->first)})
      if (auto c = matchScalarBinary<arith::MulFOp>(t);
          c && near(c->second, 0.044715) && matchCube(c->first) == x)
        return x;
    return {};
  };
  return matchHalfXTimes(v, onePlusTanh);
}

} // namespace moec::raising
