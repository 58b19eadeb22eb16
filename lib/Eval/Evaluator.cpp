//===- Evaluator.cpp - reference interpreter for moec's IR ----------------===//
//
// Values are interpreted op by op. linalg structured ops (named or generic)
// run through one path: iterate the loop space, read operands through their
// indexing maps, interpret the body. Matmuls have a direct loop for speed;
// moe ops follow the semantics in their TableGen descriptions.
//
//===----------------------------------------------------------------------===//

#include "moec/Eval/Evaluator.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <unordered_map>

using namespace mlir;
using namespace moec;
using namespace moec::eval;

int64_t Tensor::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

bool Tensor::isFloat() const { return isa<FloatType>(elementType); }

namespace {

/// Rounds `v` to the precision of float type `t`.
double roundTo(Type t, double v) {
  if (t.isF64())
    return v;
  if (t.isF32())
    return double(float(v));
  APFloat a(v);
  bool lost;
  a.convert(cast<FloatType>(t).getFloatSemantics(),
            APFloat::rmNearestTiesToEven, &lost);
  return a.convertToDouble();
}

/// Wraps an integer to the width of `t` (sign-extended), i1 as 0/1.
int64_t wrapInt(Type t, int64_t v) {
  if (t.isIndex())
    return v;
  unsigned w = t.getIntOrFloatBitWidth();
  if (w == 1)
    return v & 1;
  if (w >= 64)
    return v;
  uint64_t mask = (uint64_t(1) << w) - 1;
  uint64_t u = uint64_t(v) & mask;
  if (u >> (w - 1))
    u |= ~mask;
  return int64_t(u);
}

Tensor makeTensor(ArrayRef<int64_t> shape, Type elt) {
  Tensor t;
  t.shape.assign(shape.begin(), shape.end());
  t.elementType = elt;
  if (isa<FloatType>(elt))
    t.f.assign(t.numElements(), 0.0);
  else
    t.i.assign(t.numElements(), 0);
  return t;
}

SmallVector<int64_t> stridesOf(ArrayRef<int64_t> shape) {
  SmallVector<int64_t> s(shape.size(), 1);
  for (int64_t d = int64_t(shape.size()) - 2; d >= 0; --d)
    s[d] = s[d + 1] * shape[d + 1];
  return s;
}

double valueAt(const Tensor &t, int64_t k) {
  return t.isFloat() ? t.f[k] : double(t.i[k]);
}

/// A scalar SSA value: floats in `f`, everything else in `i`.
struct Scalar {
  double f = 0;
  int64_t i = 0;
};

class Interpreter {
public:
  explicit Interpreter(std::string &error) : error(error) {}

  LogicalResult run(Block &block);
  // Node-based maps: references to entries stay valid while others are
  // inserted.
  struct ValueHash {
    size_t operator()(Value v) const { return hash_value(v); }
  };
  std::unordered_map<Value, Tensor, ValueHash> tensors;
  std::unordered_map<Value, Scalar, ValueHash> scalars;

private:
  LogicalResult fail(Operation *op, const Twine &why) {
    std::string s;
    llvm::raw_string_ostream os(s);
    os << "cannot evaluate '" << op->getName() << "' at " << op->getLoc()
       << ": " << why;
    error = s;
    return failure();
  }

  LogicalResult evalOp(Operation *op);
  LogicalResult evalScalar(Operation *op);
  LogicalResult evalConstant(arith::ConstantOp op);
  LogicalResult evalStructured(linalg::LinalgOp op);
  LogicalResult evalMatmul(linalg::LinalgOp op, bool batched);
  LogicalResult evalSoftmax(linalg::SoftmaxOp op);
  LogicalResult evalTensorOp(Operation *op);
  LogicalResult evalMoE(Operation *op);
  LogicalResult evalRoute(moe::RouteOp op);
  LogicalResult evalExperts(moe::ExpertsOp op);
  LogicalResult applyReduction(Operation *op, moe::Reduction r, Tensor &out,
                               int64_t at, const Tensor &upd, int64_t from);

  Tensor &T(Value v) { return tensors[v]; }
  int64_t idx(Value v) { return scalars[v].i; }
  /// Static or dynamic (SSA) sizes of an op's OpFoldResults.
  SmallVector<int64_t> values(ArrayRef<OpFoldResult> ofrs) {
    SmallVector<int64_t> r;
    for (OpFoldResult o : ofrs) {
      if (auto a = dyn_cast<Attribute>(o))
        r.push_back(cast<IntegerAttr>(a).getInt());
      else
        r.push_back(idx(cast<Value>(o)));
    }
    return r;
  }

  std::string &error;
  /// Loop indices of the innermost linalg op being interpreted.
  SmallVector<int64_t> loopIndex;
};

LogicalResult Interpreter::run(Block &block) {
  for (Operation &op : block) {
    if (isa<func::ReturnOp, linalg::YieldOp>(op))
      continue;
    if (failed(evalOp(&op)))
      return failure();
  }
  return success();
}

LogicalResult Interpreter::evalOp(Operation *op) {
  if (auto c = dyn_cast<arith::ConstantOp>(op))
    return evalConstant(c);
  if (auto s = dyn_cast<linalg::SoftmaxOp>(op))
    return evalSoftmax(s);
  if (auto l = dyn_cast<linalg::LinalgOp>(op)) {
    if (isa<linalg::MatmulOp>(op))
      return evalMatmul(l, false);
    if (isa<linalg::BatchMatmulOp>(op))
      return evalMatmul(l, true);
    return evalStructured(l);
  }
  if (isa<tensor::TensorDialect>(op->getDialect()))
    return evalTensorOp(op);
  if (isa<moe::MoEDialect>(op->getDialect()))
    return evalMoE(op);
  if (op->getNumResults() == 1 && !isa<TensorType>(op->getResult(0).getType()))
    return evalScalar(op);
  return fail(op, "unsupported op");
}

//===----------------------------------------------------------------------===//
// Constants and scalars
//===----------------------------------------------------------------------===//

LogicalResult Interpreter::evalConstant(arith::ConstantOp op) {
  Attribute attr = op.getValue();
  if (auto ia = dyn_cast<IntegerAttr>(attr)) {
    scalars[op] = Scalar{0, ia.getType().isIndex() ? ia.getInt()
                                                   : wrapInt(ia.getType(),
                                                             ia.getValue().getSExtValue())};
    if (ia.getType().isInteger(1))
      scalars[op].i = ia.getValue().getZExtValue();
    return success();
  }
  if (auto fa = dyn_cast<FloatAttr>(attr)) {
    scalars[op] = Scalar{fa.getValueAsDouble(), 0};
    return success();
  }
  auto type = cast<RankedTensorType>(op.getType());
  Tensor t = makeTensor(type.getShape(), type.getElementType());
  Type elt = type.getElementType();
  int64_t n = t.numElements();
  if (auto dense = dyn_cast<DenseElementsAttr>(attr)) {
    if (isa<FloatType>(elt)) {
      auto vals = dense.getValues<APFloat>();
      for (int64_t k = 0; k < n; ++k)
        t.f[k] = (dense.isSplat() ? vals[0] : vals[k]).convertToDouble();
    } else {
      auto vals = dense.getValues<APInt>();
      for (int64_t k = 0; k < n; ++k) {
        APInt v = dense.isSplat() ? vals[0] : vals[k];
        t.i[k] = elt.isInteger(1) ? int64_t(v.getZExtValue()) : v.getSExtValue();
      }
    }
  } else if (auto res = dyn_cast<DenseResourceElementsAttr>(attr)) {
    AsmResourceBlob *blob = res.getRawHandle().getBlob();
    if (!blob)
      return fail(op, "the weight blob '" + res.getRawHandle().getKey() +
                          "' has no data (printed with elided weights? use "
                          "moec --emit-weights)");
    ArrayRef<char> data = blob->getData();
    unsigned bytes = elt.isInteger(1) ? 1 : elt.getIntOrFloatBitWidth() / 8;
    if (int64_t(data.size()) != n * bytes)
      return fail(op, "blob size does not match the type");
    for (int64_t k = 0; k < n; ++k) {
      uint64_t bits = 0;
      std::memcpy(&bits, data.data() + k * bytes, bytes);
      if (auto ft = dyn_cast<FloatType>(elt)) {
        APFloat v(ft.getFloatSemantics(), APInt(ft.getWidth(), bits));
        t.f[k] = v.convertToDouble();
      } else {
        t.i[k] = wrapInt(elt, int64_t(bits));
      }
    }
  } else {
    return fail(op, "unsupported constant attribute");
  }
  tensors[op] = std::move(t);
  return success();
}

double cmpF(arith::CmpFPredicate p, double a, double b) {
  bool unord = std::isnan(a) || std::isnan(b);
  using P = arith::CmpFPredicate;
  switch (p) {
  case P::OEQ: return !unord && a == b;
  case P::OGT: return !unord && a > b;
  case P::OGE: return !unord && a >= b;
  case P::OLT: return !unord && a < b;
  case P::OLE: return !unord && a <= b;
  case P::ONE: return !unord && a != b;
  case P::UNE: return unord || a != b;
  case P::UEQ: return unord || a == b;
  case P::UGT: return unord || a > b;
  case P::ULT: return unord || a < b;
  case P::ORD: return !unord;
  case P::UNO: return unord;
  case P::AlwaysTrue: return true;
  default: return false;
  }
}

bool cmpI(arith::CmpIPredicate p, int64_t a, int64_t b) {
  using P = arith::CmpIPredicate;
  switch (p) {
  case P::eq: return a == b;
  case P::ne: return a != b;
  case P::slt: return a < b;
  case P::sle: return a <= b;
  case P::sgt: return a > b;
  case P::sge: return a >= b;
  case P::ult: return uint64_t(a) < uint64_t(b);
  case P::ule: return uint64_t(a) <= uint64_t(b);
  case P::ugt: return uint64_t(a) > uint64_t(b);
  case P::uge: return uint64_t(a) >= uint64_t(b);
  }
  return false;
}

LogicalResult Interpreter::evalScalar(Operation *op) {
  Value res = op->getResult(0);
  Type rt = res.getType();
  auto F = [&](unsigned k) { return scalars[op->getOperand(k)].f; };
  auto I = [&](unsigned k) { return scalars[op->getOperand(k)].i; };
  auto setF = [&](double v) {
    scalars[res] = Scalar{roundTo(rt, v), 0};
    return success();
  };
  auto setI = [&](int64_t v) {
    scalars[res] = Scalar{0, wrapInt(rt, v)};
    return success();
  };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](arith::AddFOp) { return setF(F(0) + F(1)); })
      .Case([&](arith::SubFOp) { return setF(F(0) - F(1)); })
      .Case([&](arith::MulFOp) { return setF(F(0) * F(1)); })
      .Case([&](arith::DivFOp) { return setF(F(0) / F(1)); })
      .Case([&](arith::NegFOp) { return setF(-F(0)); })
      .Case([&](arith::MaximumFOp) {
        return setF(std::isnan(F(0)) || std::isnan(F(1))
                        ? NAN
                        : std::max(F(0), F(1)));
      })
      .Case([&](arith::MinimumFOp) {
        return setF(std::isnan(F(0)) || std::isnan(F(1))
                        ? NAN
                        : std::min(F(0), F(1)));
      })
      .Case([&](arith::MaxNumFOp) { return setF(std::fmax(F(0), F(1))); })
      .Case([&](arith::MinNumFOp) { return setF(std::fmin(F(0), F(1))); })
      .Case([&](arith::AddIOp) { return setI(I(0) + I(1)); })
      .Case([&](arith::SubIOp) { return setI(I(0) - I(1)); })
      .Case([&](arith::MulIOp) { return setI(I(0) * I(1)); })
      .Case([&](arith::DivSIOp) -> LogicalResult {
        if (I(1) == 0)
          return fail(op, "division by zero");
        return setI(I(0) / I(1));
      })
      .Case([&](arith::DivUIOp) -> LogicalResult {
        if (I(1) == 0)
          return fail(op, "division by zero");
        return setI(int64_t(uint64_t(I(0)) / uint64_t(I(1))));
      })
      .Case([&](arith::RemUIOp) -> LogicalResult {
        if (I(1) == 0)
          return fail(op, "division by zero");
        return setI(int64_t(uint64_t(I(0)) % uint64_t(I(1))));
      })
      .Case([&](arith::RemSIOp) -> LogicalResult {
        if (I(1) == 0)
          return fail(op, "division by zero");
        return setI(I(0) % I(1));
      })
      .Case([&](arith::MaxSIOp) { return setI(std::max(I(0), I(1))); })
      .Case([&](arith::MinSIOp) { return setI(std::min(I(0), I(1))); })
      .Case([&](arith::MaxUIOp) {
        return setI(int64_t(std::max(uint64_t(I(0)), uint64_t(I(1)))));
      })
      .Case([&](arith::MinUIOp) {
        return setI(int64_t(std::min(uint64_t(I(0)), uint64_t(I(1)))));
      })
      .Case([&](arith::AndIOp) { return setI(I(0) & I(1)); })
      .Case([&](arith::OrIOp) { return setI(I(0) | I(1)); })
      .Case([&](arith::XOrIOp) { return setI(I(0) ^ I(1)); })
      .Case([&](arith::CmpFOp c) {
        return setI(int64_t(cmpF(c.getPredicate(), F(0), F(1))));
      })
      .Case([&](arith::CmpIOp c) {
        return setI(int64_t(cmpI(c.getPredicate(), I(0), I(1))));
      })
      .Case([&](arith::SelectOp s) {
        Scalar v = scalars[I(0) ? s.getTrueValue() : s.getFalseValue()];
        scalars[res] = v;
        return success();
      })
      .Case([&](arith::ExtFOp) { return setF(F(0)); })
      .Case([&](arith::TruncFOp) { return setF(F(0)); })
      .Case([&](arith::FPToSIOp) { return setI(int64_t(std::trunc(F(0)))); })
      .Case([&](arith::SIToFPOp) { return setF(double(I(0))); })
      .Case([&](arith::UIToFPOp) {
        Type it = op->getOperand(0).getType();
        unsigned w = it.getIntOrFloatBitWidth();
        uint64_t u = w >= 64 ? uint64_t(I(0))
                             : uint64_t(I(0)) & ((uint64_t(1) << w) - 1);
        return setF(double(u));
      })
      .Case([&](arith::ExtSIOp) { return setI(I(0)); })
      .Case([&](arith::ExtUIOp) {
        Type it = op->getOperand(0).getType();
        unsigned w = it.getIntOrFloatBitWidth();
        return setI(int64_t(uint64_t(I(0)) & ((uint64_t(1) << w) - 1)));
      })
      .Case([&](arith::TruncIOp) { return setI(I(0)); })
      .Case([&](arith::IndexCastOp) { return setI(I(0)); })
      .Case([&](math::ExpOp) { return setF(std::exp(F(0))); })
      .Case([&](math::LogOp) { return setF(std::log(F(0))); })
      .Case([&](math::ErfOp) { return setF(std::erf(F(0))); })
      .Case([&](math::TanhOp) { return setF(std::tanh(F(0))); })
      .Case([&](math::SqrtOp) { return setF(std::sqrt(F(0))); })
      .Case([&](math::RsqrtOp) { return setF(1.0 / std::sqrt(F(0))); })
      .Case([&](math::PowFOp) { return setF(std::pow(F(0), F(1))); })
      .Case([&](math::SinOp) { return setF(std::sin(F(0))); })
      .Case([&](math::CosOp) { return setF(std::cos(F(0))); })
      .Case([&](math::AbsFOp) { return setF(std::fabs(F(0))); })
      .Case([&](linalg::IndexOp i) -> LogicalResult {
        if (i.getDim() >= loopIndex.size())
          return fail(op, "linalg.index outside a linalg op");
        return setI(loopIndex[i.getDim()]);
      })
      .Default([&](Operation *) { return fail(op, "unsupported op"); });
}

//===----------------------------------------------------------------------===//
// linalg
//===----------------------------------------------------------------------===//

int64_t evalAffine(AffineExpr e, ArrayRef<int64_t> dims) {
  switch (e.getKind()) {
  case AffineExprKind::DimId:
    return dims[cast<AffineDimExpr>(e).getPosition()];
  case AffineExprKind::Constant:
    return cast<AffineConstantExpr>(e).getValue();
  default: {
    auto bin = cast<AffineBinaryOpExpr>(e);
    int64_t l = evalAffine(bin.getLHS(), dims), r = evalAffine(bin.getRHS(), dims);
    switch (e.getKind()) {
    case AffineExprKind::Add:
      return l + r;
    case AffineExprKind::Mul:
      return l * r;
    case AffineExprKind::Mod:
      return ((l % r) + r) % r;
    case AffineExprKind::FloorDiv:
      return l >= 0 ? l / r : -((-l + r - 1) / r);
    case AffineExprKind::CeilDiv:
      return l >= 0 ? (l + r - 1) / r : -(-l / r);
    default:
      return 0;
    }
  }
  }
}

LogicalResult Interpreter::evalStructured(linalg::LinalgOp op) {
  // Loop ranges from the runtime shapes of all operands.
  SmallVector<int64_t> flatDims;
  for (OpOperand &o : op->getOpOperands()) {
    if (!isa<RankedTensorType>(o.get().getType())) {
      continue;
    }
    if (!tensors.count(o.get()))
      return fail(op, "operand has no value");
    for (int64_t d : T(o.get()).shape)
      flatDims.push_back(d);
  }
  AffineMap s2l = op.getShapesToLoopsMap();
  if (!s2l)
    return fail(op, "cannot derive loop ranges");
  SmallVector<int64_t> ranges;
  for (AffineExpr e : s2l.getResults())
    ranges.push_back(evalAffine(e, flatDims));
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  // Results start as copies of the inits.
  SmallVector<Tensor> outs;
  for (OpOperand &init : op.getDpsInitsMutable())
    outs.push_back(T(init.get()));
  Block *body = op.getBlock();
  unsigned numIns = op.getNumDpsInputs();
  int64_t total = 1;
  for (int64_t r : ranges)
    total *= r;
  SmallVector<int64_t> pos(ranges.size(), 0);
  SmallVector<int64_t> coords;
  SmallVector<SmallVector<int64_t>> strides;
  for (OpOperand &o : op->getOpOperands()) {
    unsigned n = o.getOperandNumber();
    if (n < numIns)
      strides.push_back(isa<RankedTensorType>(o.get().getType())
                            ? stridesOf(T(o.get()).shape)
                            : SmallVector<int64_t>());
    else
      strides.push_back(stridesOf(outs[n - numIns].shape));
  }
  SmallVector<SmallVector<int64_t>> shapes;
  for (OpOperand &o : op->getOpOperands()) {
    unsigned n = o.getOperandNumber();
    if (n >= numIns)
      shapes.push_back(SmallVector<int64_t>(outs[n - numIns].shape.begin(),
                                            outs[n - numIns].shape.end()));
    else if (isa<RankedTensorType>(o.get().getType()))
      shapes.push_back(SmallVector<int64_t>(T(o.get()).shape.begin(),
                                            T(o.get()).shape.end()));
    else
      shapes.push_back({});
  }
  bool outOfBounds = false;
  auto flatIndex = [&](unsigned operand, ArrayRef<int64_t> p) {
    int64_t k = 0;
    AffineMap m = maps[operand];
    for (unsigned r = 0; r < m.getNumResults(); ++r) {
      int64_t c = evalAffine(m.getResult(r), p);
      if (c < 0 || c >= shapes[operand][r]) {
        outOfBounds = true;
        return int64_t(0);
      }
      k += c * strides[operand][r];
    }
    return k;
  };
  SmallVector<int64_t> savedLoop = loopIndex;
  for (int64_t it = 0; it < total; ++it) {
    int64_t rem = it;
    for (int64_t d = int64_t(ranges.size()) - 1; d >= 0; --d) {
      pos[d] = rem % ranges[d];
      rem /= ranges[d];
    }
    loopIndex.assign(pos.begin(), pos.end());
    for (unsigned a = 0; a < body->getNumArguments(); ++a) {
      Value arg = body->getArgument(a);
      Scalar s;
      if (a < numIns) {
        Value in = op->getOperand(a);
        if (!isa<RankedTensorType>(in.getType())) {
          s = scalars[in];
        } else {
          const Tensor &t = T(in);
          int64_t k = flatIndex(a, pos);
          if (t.isFloat())
            s.f = t.f[k];
          else
            s.i = t.i[k];
        }
      } else {
        const Tensor &t = outs[a - numIns];
        int64_t k = flatIndex(a, pos);
        if (t.isFloat())
          s.f = t.f[k];
        else
          s.i = t.i[k];
      }
      scalars[arg] = s;
    }
    if (outOfBounds)
      return fail(op, "operand shapes disagree with the loop ranges");
    for (Operation &bop : body->without_terminator())
      if (failed(evalOp(&bop)))
        return failure();
    Operation *yield = body->getTerminator();
    for (unsigned r = 0; r < outs.size(); ++r) {
      const Scalar &s = scalars[yield->getOperand(r)];
      int64_t k = flatIndex(numIns + r, pos);
      if (outs[r].isFloat())
        outs[r].f[k] = s.f;
      else
        outs[r].i[k] = s.i;
    }
  }
  loopIndex = savedLoop;
  for (unsigned r = 0; r < outs.size(); ++r)
    tensors[op->getResult(r)] = std::move(outs[r]);
  return success();
}

LogicalResult Interpreter::evalMatmul(linalg::LinalgOp op, bool batched) {
  const Tensor &a = T(op.getDpsInputs()[0]), &b = T(op.getDpsInputs()[1]);
  Tensor c = T(op.getDpsInits()[0]);
  int64_t nb = batched ? a.shape[0] : 1;
  int64_t m = a.shape[batched], k = a.shape[batched + 1],
          n = b.shape[batched + 1];
  if (b.shape[batched] != k)
    return fail(op, "contraction sizes differ at run time");
  for (int64_t x = 0; x < nb; ++x)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = c.f[(x * m + i) * n + j];
        for (int64_t p = 0; p < k; ++p)
          acc += a.f[(x * m + i) * k + p] * b.f[(x * k + p) * n + j];
        c.f[(x * m + i) * n + j] = roundTo(c.elementType, acc);
      }
  tensors[op->getResult(0)] = std::move(c);
  return success();
}

LogicalResult Interpreter::evalSoftmax(linalg::SoftmaxOp op) {
  Tensor t = T(op.getInput());
  int64_t axis = op.getDimension();
  int64_t inner = 1, outer = 1, n = t.shape[axis];
  for (int64_t d = 0; d < int64_t(t.shape.size()); ++d) {
    if (d < axis)
      outer *= t.shape[d];
    else if (d > axis)
      inner *= t.shape[d];
  }
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
        at(j) = roundTo(t.elementType, std::exp(at(j) - mx) / sum);
    }
  tensors[op->getResult(0)] = std::move(t);
  return success();
}

//===----------------------------------------------------------------------===//
// tensor
//===----------------------------------------------------------------------===//

LogicalResult Interpreter::evalTensorOp(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](tensor::EmptyOp e) {
        auto type = e.getType();
        SmallVector<int64_t> shape;
        unsigned k = 0;
        for (int64_t d : type.getShape())
          shape.push_back(ShapedType::isDynamic(d)
                              ? idx(e.getDynamicSizes()[k++])
                              : d);
        tensors[e] = makeTensor(shape, type.getElementType());
        return success();
      })
      .Case([&](tensor::DimOp d) -> LogicalResult {
        const Tensor &t = T(d.getSource());
        int64_t i = idx(d.getIndex());
        if (i < 0 || i >= int64_t(t.shape.size()))
          return fail(op, "dim index out of range");
        scalars[d] = Scalar{0, t.shape[i]};
        return success();
      })
      .Case([&](tensor::ExtractOp e) -> LogicalResult {
        const Tensor &t = T(e.getTensor());
        int64_t k = 0;
        SmallVector<int64_t> st = stridesOf(t.shape);
        for (auto [d, v] : llvm::enumerate(e.getIndices())) {
          int64_t i = idx(v);
          if (i < 0 || i >= t.shape[d])
            return fail(op, "index " + Twine(i) + " out of range for dim " +
                                Twine(d) + " of size " + Twine(t.shape[d]));
          k += i * st[d];
        }
        scalars[e] = t.isFloat() ? Scalar{t.f[k], 0} : Scalar{0, t.i[k]};
        return success();
      })
      .Case([&](tensor::FromElementsOp f) {
        auto type = f.getType();
        Tensor t = makeTensor(type.getShape(), type.getElementType());
        for (auto [k, v] : llvm::enumerate(f.getElements())) {
          if (t.isFloat())
            t.f[k] = scalars[v].f;
          else
            t.i[k] = scalars[v].i;
        }
        tensors[f] = std::move(t);
        return success();
      })
      .Case([&](tensor::ReshapeOp r) -> LogicalResult {
        Tensor t = T(r.getSource());
        const Tensor &s = T(r.getShape());
        std::vector<int64_t> shape(s.i.begin(), s.i.end());
        int64_t n = 1;
        for (int64_t d : shape)
          n *= d;
        if (n != t.numElements())
          return fail(op, "reshape of " + Twine(t.numElements()) +
                              " elements to " + Twine(n));
        t.shape = shape;
        tensors[r] = std::move(t);
        return success();
      })
      .Case([&](tensor::CastOp c) {
        tensors[c] = T(c.getSource());
        return success();
      })
      .Case([&](tensor::CollapseShapeOp c) {
        Tensor t = T(c.getSrc());
        SmallVector<int64_t> shape;
        for (const auto &group : c.getReassociationIndices()) {
          int64_t p = 1;
          for (int64_t d : group)
            p *= t.shape[d];
          shape.push_back(p);
        }
        t.shape.assign(shape.begin(), shape.end());
        tensors[c] = std::move(t);
        return success();
      })
      .Case([&](tensor::ExpandShapeOp e) {
        Tensor t = T(e.getSrc());
        SmallVector<int64_t> shape = values(e.getMixedOutputShape());
        t.shape.assign(shape.begin(), shape.end());
        tensors[e] = std::move(t);
        return success();
      })
      .Case([&](tensor::ExtractSliceOp s) -> LogicalResult {
        const Tensor &src = T(s.getSource());
        SmallVector<int64_t> offs = values(s.getMixedOffsets()),
                             sizes = values(s.getMixedSizes()),
                             steps = values(s.getMixedStrides());
        auto type = s.getType();
        SmallVector<int64_t> st = stridesOf(src.shape);
        for (size_t d = 0; d < offs.size(); ++d)
          if (sizes[d] > 0 &&
              (offs[d] < 0 || offs[d] + (sizes[d] - 1) * steps[d] >= src.shape[d]))
            return fail(op, "slice out of bounds in dim " + Twine(d));
        // Rank-reducing slices drop unit dims; the data order is the same.
        Tensor out = makeTensor(sizes, type.getElementType());
        SmallVector<int64_t> p(sizes.size(), 0);
        for (int64_t k = 0; k < out.numElements(); ++k) {
          int64_t rem = k, flat = 0;
          for (int64_t d = int64_t(sizes.size()) - 1; d >= 0; --d) {
            p[d] = rem % sizes[d];
            rem /= sizes[d];
          }
          for (size_t d = 0; d < sizes.size(); ++d)
            flat += (offs[d] + p[d] * steps[d]) * st[d];
          if (out.isFloat())
            out.f[k] = src.f[flat];
          else
            out.i[k] = src.i[flat];
        }
        SmallVector<int64_t> shape;
        unsigned dyn = 0;
        for (int64_t d : type.getShape())
          shape.push_back(ShapedType::isDynamic(d) ? -1 : d);
        (void)dyn;
        if (int64_t(shape.size()) != int64_t(sizes.size())) {
          // Rank-reduced: keep the non-dropped sizes.
          SmallVector<int64_t> kept;
          llvm::SmallBitVector dropped = s.getDroppedDims();
          for (size_t d = 0; d < sizes.size(); ++d)
            if (!dropped.test(d))
              kept.push_back(sizes[d]);
          out.shape.assign(kept.begin(), kept.end());
        }
        tensors[s] = std::move(out);
        return success();
      })
      .Case([&](tensor::ConcatOp c) {
        int64_t axis = c.getDim();
        SmallVector<const Tensor *> ins;
        for (Value v : c.getInputs())
          ins.push_back(&T(v));
        SmallVector<int64_t> shape(ins[0]->shape.begin(), ins[0]->shape.end());
        shape[axis] = 0;
        for (const Tensor *t : ins)
          shape[axis] += t->shape[axis];
        Tensor out = makeTensor(shape, c.getType().getElementType());
        int64_t outer = 1;
        for (int64_t d = 0; d < axis; ++d)
          outer *= shape[d];
        int64_t k = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (const Tensor *t : ins) {
            int64_t chunk = outer ? t->numElements() / outer : 0;
            for (int64_t j = 0; j < chunk; ++j, ++k) {
              if (out.isFloat())
                out.f[k] = t->f[o * chunk + j];
              else
                out.i[k] = t->i[o * chunk + j];
            }
          }
        tensors[c] = std::move(out);
        return success();
      })
      .Default([&](Operation *) { return fail(op, "unsupported tensor op"); });
}

//===----------------------------------------------------------------------===//
// moe
//===----------------------------------------------------------------------===//

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
           (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  case moe::Activation::silu:
    return x / (1 + std::exp(-x));
  }
  return x;
}

/// Indices of the k largest (or smallest) of `v`, ties to the lower index.
SmallVector<int64_t> topK(ArrayRef<double> v, int64_t k, bool largest) {
  SmallVector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return largest ? v[a] > v[b] : v[a] < v[b];
  });
  order.resize(k);
  return order;
}

LogicalResult Interpreter::evalMoE(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](moe::TopKOp t) {
        const Tensor &in = T(t.getInput());
        int64_t axis = t.getAxis(), k = t.getK();
        SmallVector<int64_t> shape(in.shape.begin(), in.shape.end());
        int64_t n = shape[axis];
        shape[axis] = k;
        Tensor vals = makeTensor(shape, in.elementType);
        Tensor ids = makeTensor(shape, IntegerType::get(op->getContext(), 64));
        int64_t inner = 1, outer = 1;
        for (int64_t d = 0; d < int64_t(shape.size()); ++d) {
          if (d < axis)
            outer *= shape[d];
          else if (d > axis)
            inner *= shape[d];
        }
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t i = 0; i < inner; ++i) {
            SmallVector<double> row;
            for (int64_t j = 0; j < n; ++j)
              row.push_back(valueAt(in, (o * n + j) * inner + i));
            SmallVector<int64_t> best = topK(row, k, t.getLargest());
            for (int64_t j = 0; j < k; ++j) {
              int64_t dst = (o * k + j) * inner + i;
              if (vals.isFloat())
                vals.f[dst] = row[best[j]];
              else
                vals.i[dst] = int64_t(row[best[j]]);
              ids.i[dst] = best[j];
            }
          }
        tensors[t.getValues()] = std::move(vals);
        tensors[t.getIndices()] = std::move(ids);
        return success();
      })
      .Case([&](moe::NonZeroOp nz) {
        const Tensor &in = T(nz.getInput());
        int64_t rank = in.shape.size();
        SmallVector<int64_t> hits;
        for (int64_t k = 0; k < in.numElements(); ++k)
          if (in.isFloat() ? in.f[k] != 0 : in.i[k] != 0)
            hits.push_back(k);
        int64_t n = hits.size();
        Tensor out = makeTensor({rank, n}, IntegerType::get(op->getContext(), 64));
        SmallVector<int64_t> st = stridesOf(in.shape);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t d = 0; d < rank; ++d)
            out.i[d * n + j] = (hits[j] / st[d]) % in.shape[d];
        tensors[nz] = std::move(out);
        return success();
      })
      .Case([&](moe::ScatterElementsOp s) -> LogicalResult {
        Tensor out = T(s.getData());
        const Tensor &ix = T(s.getIndices()), &up = T(s.getUpdates());
        int64_t axis = s.getAxis();
        SmallVector<int64_t> st = stridesOf(out.shape), ist = stridesOf(ix.shape);
        for (int64_t k = 0; k < ix.numElements(); ++k) {
          int64_t flat = 0;
          for (int64_t d = 0; d < int64_t(ix.shape.size()); ++d) {
            int64_t c = (k / ist[d]) % ix.shape[d];
            if (d == axis) {
              c = ix.i[k] < 0 ? ix.i[k] + out.shape[d] : ix.i[k];
              if (c < 0 || c >= out.shape[d])
                return fail(op, "index " + Twine(ix.i[k]) + " out of range");
            }
            flat += c * st[d];
          }
          if (failed(applyReduction(op, s.getReduction(), out, flat, up, k)))
            return failure();
        }
        tensors[s] = std::move(out);
        return success();
      })
      .Case([&](moe::ScatterNDOp s) -> LogicalResult {
        Tensor out = T(s.getData());
        const Tensor &ix = T(s.getIndices()), &up = T(s.getUpdates());
        int64_t q = ix.shape.back();
        int64_t tuples = ix.numElements() / std::max<int64_t>(q, 1);
        SmallVector<int64_t> st = stridesOf(out.shape);
        int64_t slice = 1;
        for (int64_t d = q; d < int64_t(out.shape.size()); ++d)
          slice *= out.shape[d];
        for (int64_t t = 0; t < tuples; ++t) {
          int64_t base = 0;
          for (int64_t d = 0; d < q; ++d) {
            int64_t c = ix.i[t * q + d];
            if (c < 0)
              c += out.shape[d];
            if (c < 0 || c >= out.shape[d])
              return fail(op, "index out of range");
            base += c * st[d];
          }
          for (int64_t j = 0; j < slice; ++j)
            if (failed(applyReduction(op, s.getReduction(), out, base + j, up,
                                      t * slice + j)))
              return failure();
        }
        tensors[s] = std::move(out);
        return success();
      })
      .Case([&](moe::RouteOp r) { return evalRoute(r); })
      .Case([&](moe::ExpertsOp e) { return evalExperts(e); })
      .Default([&](Operation *) { return fail(op, "unsupported moe op"); });
}

LogicalResult Interpreter::applyReduction(Operation *op, moe::Reduction r,
                                          Tensor &out, int64_t at,
                                          const Tensor &upd, int64_t from) {
  auto combine = [&](auto a, auto b) -> decltype(a) {
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
  if (out.isFloat())
    out.f[at] = roundTo(out.elementType, combine(out.f[at], upd.f[from]));
  else
    out.i[at] = wrapInt(out.elementType, combine(out.i[at], upd.i[from]));
  (void)op;
  return success();
}

LogicalResult Interpreter::evalRoute(moe::RouteOp op) {
  const Tensor &logits = T(op.getLogits());
  int64_t tokens = logits.shape[0], e = logits.shape[1], k = op.getTopK();
  int64_t groups = op.getNumGroups(), keepGroups = op.getTopkGroups();
  Type elt = logits.elementType;
  Tensor w = makeTensor({tokens, k}, cast<RankedTensorType>(op.getWeights().getType()).getElementType());
  Tensor ids = makeTensor({tokens, k}, IntegerType::get(op.getContext(), 64));
  const Tensor *bias = op.getBias() ? &T(op.getBias()) : nullptr;
  for (int64_t t = 0; t < tokens; ++t) {
    SmallVector<double> s(e), sel(e);
    if (op.getScoreFunc() == moe::ScoreFunc::softmax) {
      double mx = -INFINITY, sum = 0;
      for (int64_t x = 0; x < e; ++x)
        mx = std::max(mx, logits.f[t * e + x]);
      for (int64_t x = 0; x < e; ++x)
        sum += std::exp(logits.f[t * e + x] - mx);
      for (int64_t x = 0; x < e; ++x)
        s[x] = roundTo(elt, std::exp(logits.f[t * e + x] - mx) / sum);
    } else {
      for (int64_t x = 0; x < e; ++x)
        s[x] = roundTo(elt, 1.0 / (1.0 + std::exp(-logits.f[t * e + x])));
    }
    for (int64_t x = 0; x < e; ++x)
      sel[x] = s[x] + (bias ? bias->f[x] : 0.0);
    if (groups > 1) {
      int64_t per = e / groups;
      SmallVector<double> gscore(groups);
      for (int64_t g = 0; g < groups; ++g) {
        ArrayRef<double> members(sel.data() + g * per, per);
        SmallVector<int64_t> best =
            topK(members, op.getGroupScore() == moe::GroupScore::max ? 1 : 2,
                 true);
        gscore[g] = 0;
        for (int64_t b : best)
          gscore[g] += members[b];
      }
      SmallVector<int64_t> keep = topK(gscore, keepGroups, true);
      for (int64_t g = 0; g < groups; ++g)
        if (!llvm::is_contained(keep, g))
          for (int64_t x = g * per; x < (g + 1) * per; ++x)
            sel[x] = -INFINITY;
    }
    SmallVector<int64_t> best = topK(sel, k, true);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j)
      sum += s[best[j]];
    for (int64_t j = 0; j < k; ++j) {
      double v = s[best[j]];
      if (op.getRenormalize())
        v /= sum;
      v *= op.getScalingFactor().convertToDouble();
      w.f[t * k + j] = roundTo(w.elementType, v);
      ids.i[t * k + j] = best[j];
    }
  }
  tensors[op.getWeights()] = std::move(w);
  tensors[op.getIndices()] = std::move(ids);
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
  int64_t tokens = x.shape[0], h = x.shape[1], k = ids.shape[1];
  int64_t e = g.shape[0], f = g.shape[2];
  int64_t offset = op.getExpertOffset();
  Type elt = x.elementType;
  Tensor out = makeTensor({tokens, h}, elt);
  SmallVector<double> hidden(f), acc(h);
  for (int64_t t = 0; t < tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      int64_t ex = ids.i[t * k + j] - offset;
      if (ex < 0 || ex >= e)
        continue; // held by another rank
      for (int64_t c = 0; c < f; ++c) {
        double a = 0, b = 0;
        for (int64_t i = 0; i < h; ++i) {
          double xi = x.f[t * h + i];
          a += xi * g.f[(ex * h + i) * f + c];
          if (up)
            b += xi * up->f[(ex * h + i) * f + c];
        }
        a = roundTo(elt, a + (bg ? bg->f[ex * f + c] : 0.0));
        double v = activate(op.getActivation(), a);
        if (up)
          v *= roundTo(elt, b + (bu ? bu->f[ex * f + c] : 0.0));
        hidden[c] = roundTo(elt, v);
      }
      double wt = w.f[t * k + j];
      for (int64_t o = 0; o < h; ++o) {
        double y = 0;
        for (int64_t c = 0; c < f; ++c)
          y += hidden[c] * dn.f[(ex * f + c) * h + o];
        y = roundTo(elt, y + (bd ? bd->f[ex * h + o] : 0.0));
        acc[o] += wt * y;
      }
    }
    for (int64_t o = 0; o < h; ++o)
      out.f[t * h + o] = roundTo(elt, acc[o]);
  }
  tensors[op.getResult()] = std::move(out);
  return success();
}

} // namespace

std::optional<std::vector<Tensor>>
moec::eval::evaluate(func::FuncOp func, ArrayRef<Tensor> inputs,
                     std::string &error) {
  Block &entry = func.getBody().front();
  if (inputs.size() != entry.getNumArguments()) {
    error = "the function takes " + std::to_string(entry.getNumArguments()) +
            " inputs, " + std::to_string(inputs.size()) + " given";
    return std::nullopt;
  }
  Interpreter interp(error);
  for (auto [arg, in] : llvm::zip(entry.getArguments(), inputs)) {
    auto type = cast<RankedTensorType>(arg.getType());
    if (in.elementType != type.getElementType() ||
        int64_t(in.shape.size()) != type.getRank()) {
      error = "input " + std::to_string(arg.getArgNumber()) +
              " has the wrong element type or rank";
      return std::nullopt;
    }
    for (int64_t d = 0; d < type.getRank(); ++d)
      if (!type.isDynamicDim(d) && type.getDimSize(d) != in.shape[d]) {
        error = "input " + std::to_string(arg.getArgNumber()) +
                " has the wrong shape";
        return std::nullopt;
      }
    interp.tensors[arg] = in;
  }
  if (failed(interp.run(entry)))
    return std::nullopt;
  std::vector<Tensor> results;
  for (Value v : entry.getTerminator()->getOperands())
    results.push_back(interp.tensors[v]);
  return results;
}
