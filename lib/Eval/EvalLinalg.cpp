//===- EvalLinalg.cpp - linalg ops ----------------------------------------===//
//
// linalg structured ops, named or generic, share one path: the loop ranges
// come from the run-time operand shapes, each operand's indexing map becomes
// a linear offset that is updated incrementally, and the body program runs
// at every point of the loop space. linalg.softmax has its own.
//
//===----------------------------------------------------------------------===//

#include "EvalInternal.h"

#include <algorithm>

using namespace mlir;
using namespace moec;
using namespace moec::eval;
using namespace moec::eval::detail;

namespace {

//===----------------------------------------------------------------------===//
// Affine maps
//===----------------------------------------------------------------------===//

int64_t floorDiv(int64_t l, int64_t r) {
  int64_t q = l / r;
  return (l % r != 0 && ((l < 0) != (r < 0))) ? q - 1 : q;
}

int64_t evalAffine(AffineExpr e, ArrayRef<int64_t> dims) {
  switch (e.getKind()) {
  case AffineExprKind::DimId:
    return dims[cast<AffineDimExpr>(e).getPosition()];
  case AffineExprKind::Constant:
    return cast<AffineConstantExpr>(e).getValue();
  case AffineExprKind::SymbolId:
    return 0;
  default: {
    auto bin = cast<AffineBinaryOpExpr>(e);
    int64_t l = evalAffine(bin.getLHS(), dims);
    int64_t r = evalAffine(bin.getRHS(), dims);
    switch (e.getKind()) {
    case AffineExprKind::Add:
      return l + r;
    case AffineExprKind::Mul:
      return l * r;
    case AffineExprKind::Mod:
      return r == 0 ? 0 : ((l % r) + r) % r;
    case AffineExprKind::FloorDiv:
      return r == 0 ? 0 : floorDiv(l, r);
    case AffineExprKind::CeilDiv:
      return r == 0 ? 0 : -floorDiv(-l, r);
    default:
      return 0;
    }
  }
  }
}

/// Adds `scale * e` to the linear form `coef . dims + cst`; false when `e` is
/// not linear in the dims.
bool linearize(AffineExpr e, int64_t scale, MutableArrayRef<int64_t> coef,
               int64_t &cst) {
  switch (e.getKind()) {
  case AffineExprKind::DimId:
    coef[cast<AffineDimExpr>(e).getPosition()] += scale;
    return true;
  case AffineExprKind::Constant:
    cst += scale * cast<AffineConstantExpr>(e).getValue();
    return true;
  case AffineExprKind::Add: {
    auto bin = cast<AffineBinaryOpExpr>(e);
    return linearize(bin.getLHS(), scale, coef, cst) &&
           linearize(bin.getRHS(), scale, coef, cst);
  }
  case AffineExprKind::Mul: {
    auto bin = cast<AffineBinaryOpExpr>(e);
    if (auto c = dyn_cast<AffineConstantExpr>(bin.getRHS()))
      return linearize(bin.getLHS(), scale * c.getValue(), coef, cst);
    if (auto c = dyn_cast<AffineConstantExpr>(bin.getLHS()))
      return linearize(bin.getRHS(), scale * c.getValue(), coef, cst);
    return false;
  }
  default:
    return false;
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// linalg
//===----------------------------------------------------------------------===//

LogicalResult Interpreter::evalStructured(linalg::LinalgOp op) {
  if (!op.hasPureTensorSemantics())
    return fail(op, "only linalg ops on tensors are supported");
  unsigned numOperands = op->getNumOperands();
  unsigned numIns = op.getNumDpsInputs(), numOuts = op.getNumDpsInits();
  if (numIns + numOuts != numOperands || op->getNumResults() != numOuts)
    return fail(op, "unexpected operand structure");
  Block *body = op.getBlock();
  if (!body || body->getNumArguments() != numOperands)
    return fail(op, "the op has no body to interpret");

  // Loop ranges from the run-time operand shapes.
  SmallVector<int64_t> flatDims;
  for (Value v : op->getOperands())
    if (isa<RankedTensorType>(v.getType()))
      llvm::append_range(flatDims, T(v).shape);
  AffineMap s2l = op.getShapesToLoopsMap();
  if (!s2l || s2l.getNumDims() != flatDims.size())
    return fail(op, "cannot derive the loop ranges from the operand shapes");
  SmallVector<int64_t> ranges;
  for (AffineExpr e : s2l.getResults())
    ranges.push_back(evalAffine(e, flatDims));
  unsigned numLoops = ranges.size();
  if (numLoops != op.getNumLoops())
    return fail(op, "cannot derive the loop ranges from the operand shapes");
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  if (maps.size() != numOperands)
    return fail(op, "unexpected number of indexing maps");

  // Results start as the inits.
  std::vector<Tensor> outs;
  outs.reserve(numOuts);
  for (Value init : op.getDpsInits())
    outs.push_back(take(init, op));

  // The body.
  Plan plan;
  DenseMap<Value, int> slots;
  plan.init.resize(numOperands);
  for (BlockArgument arg : body->getArguments())
    slots[arg] = int(arg.getArgNumber());
  if (failed(compileBody(*body, plan, slots)))
    return failure();
  if (plan.yields.size() != numOuts)
    return fail(op, "the body yields the wrong number of values");

  // Operand accesses: offset = base + coef . loop position when the map is
  // linear (checked against the bounds once), else evaluated per point.
  struct Access {
    const Tensor *t = nullptr;
    Tensor *out = nullptr;
    bool load = false, linear = true;
    int64_t base = 0;
    SmallVector<int64_t> coef;
    SmallVector<int64_t> strides;
  };
  SmallVector<Access> acc(numOperands);
  int64_t total = product(ranges);
  for (unsigned n = 0; n < numOperands; ++n) {
    Value v = op->getOperand(n);
    Access &a = acc[n];
    // Zero for scalar operands too: the loop below steps every operand's
    // offset (found by the unit tests under ASan with assertions on).
    a.coef.assign(numLoops, 0);
    if (n < numIns && !isa<RankedTensorType>(v.getType())) {
      plan.init[n] = S(v); // a scalar input, e.g. linalg.fill's value
      continue;
    }
    a.t = n < numIns ? &T(v) : &outs[n - numIns];
    if (n >= numIns)
      a.out = &outs[n - numIns];
    a.load = !body->getArgument(n).use_empty();
    AffineMap m = maps[n];
    ArrayRef<int64_t> shape = a.t->shape;
    if (m.getNumResults() != shape.size() || m.getNumDims() != numLoops)
      return fail(op, "operand #" + Twine(n) +
                          " does not match its indexing map's rank");
    a.strides = stridesOf(shape);
    for (unsigned r = 0; r < m.getNumResults() && a.linear; ++r) {
      SmallVector<int64_t> c(numLoops, 0);
      int64_t cst = 0;
      if (!linearize(m.getResult(r), 1, c, cst)) {
        a.linear = false;
        break;
      }
      if (total > 0) {
        int64_t lo = cst, hi = cst;
        for (unsigned d = 0; d < numLoops; ++d) {
          int64_t span = c[d] * (ranges[d] - 1);
          (span < 0 ? lo : hi) += span;
        }
        bool exact = true;
        if (auto dim = dyn_cast<AffineDimExpr>(m.getResult(r)))
          exact = ranges[dim.getPosition()] == shape[r];
        if (lo < 0 || hi >= shape[r] || !exact)
          return fail(
              op, "operand #" + Twine(n) + " of shape " + shapeStr(shape) +
                      " does not match the loop ranges " + shapeStr(ranges));
      }
      for (unsigned d = 0; d < numLoops; ++d)
        a.coef[d] += c[d] * a.strides[r];
      a.base += cst * a.strides[r];
    }
  }

  if (total > 0) {
    std::vector<Scalar> regs = plan.init;
    SmallVector<int64_t> pos(numLoops, 0), off(numOperands, 0);
    for (unsigned n = 0; n < numOperands; ++n)
      off[n] = acc[n].base;
    // Flat index of a non-linear access at the current point; -1 when out of
    // bounds.
    auto general = [&](unsigned n) -> int64_t {
      AffineMap m = maps[n];
      int64_t k = 0;
      for (unsigned r = 0; r < m.getNumResults(); ++r) {
        int64_t c = evalAffine(m.getResult(r), pos);
        if (c < 0 || c >= acc[n].t->shape[r])
          return -1;
        k += c * acc[n].strides[r];
      }
      return k;
    };
    std::string why;
    for (;;) {
      for (unsigned n = 0; n < numOperands; ++n) {
        const Access &a = acc[n];
        if (!a.load)
          continue;
        int64_t k = a.linear ? off[n] : general(n);
        if (k < 0)
          return fail(op, "operand #" + Twine(n) + " accessed out of bounds");
        if (a.t->isFloat())
          regs[n].f = a.t->f[k];
        else
          regs[n].i = a.t->i[k];
      }
      for (const Instr &in : plan.code)
        if (!exec(in, regs.data(), pos.data(), numLoops, why))
          return fail(in.op, why);
      for (unsigned r = 0; r < numOuts; ++r) {
        unsigned n = numIns + r;
        int64_t k = acc[n].linear ? off[n] : general(n);
        if (k < 0)
          return fail(op, "result #" + Twine(r) + " accessed out of bounds");
        const Scalar &s = regs[plan.yields[r]];
        if (outs[r].isFloat())
          outs[r].f[k] = s.f;
        else
          outs[r].i[k] = s.i;
      }
      // Next point, innermost loop fastest.
      int d = int(numLoops) - 1;
      for (; d >= 0; --d) {
        if (++pos[d] < ranges[d]) {
          for (unsigned n = 0; n < numOperands; ++n)
            off[n] += acc[n].coef[d];
          break;
        }
        for (unsigned n = 0; n < numOperands; ++n)
          off[n] -= acc[n].coef[d] * (ranges[d] - 1);
        pos[d] = 0;
      }
      if (d < 0)
        break;
    }
  }
  for (unsigned r = 0; r < numOuts; ++r)
    setTensor(op->getResult(r), std::move(outs[r]));
  return success();
}

LogicalResult Interpreter::evalSoftmax(linalg::SoftmaxOp op) {
  Tensor t = take(op.getInput(), op);
  if (!t.isFloat())
    return fail(op, "softmax of a non-float tensor");
  if (T(op.getOutput()).shape != t.shape)
    return fail(op, "input and output shapes differ");
  int64_t axis = op.getDimension(), rank = t.shape.size();
  if (axis < 0 || axis >= rank)
    return fail(op, "dimension out of range");
  int64_t inner = 1, outer = 1, n = t.shape[axis];
  for (int64_t d = 0; d < rank; ++d) {
    if (d < axis)
      outer *= t.shape[d];
    else if (d > axis)
      inner *= t.shape[d];
  }
  FloatRound round =
      FloatRound::of(getElementTypeOrSelf(op.getOutput().getType()));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t in = 0; in < inner; ++in) {
      auto at = [&](int64_t j) -> double & {
        return t.f[(o * n + j) * inner + in];
      };
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < n; ++j)
        mx = std::max(mx, at(j));
      for (int64_t j = 0; j < n; ++j)
        sum += std::exp(at(j) - mx);
      for (int64_t j = 0; j < n; ++j)
        at(j) = round(std::exp(at(j) - mx) / sum);
    }
  setTensor(op->getResult(0), std::move(t));
  return success();
}
