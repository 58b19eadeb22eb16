//===- ImportElementwise.cpp - element-wise ONNX ops ----------------------===//
//
// Add Sub Mul Div Pow Sqrt Neg Exp Erf Tanh Sigmoid Relu Sin Cos Log Abs
// Softplus Max Min Sum Mean Sign Mod Floor Ceil Round Equal Less Greater
// LessOrEqual GreaterOrEqual IsNaN IsInf Not And Or Xor Where Cast Clip: one
// linalg.generic each, numpy broadcasting in the indexing maps. Small constant
// operands (shape arithmetic) fold on the host instead.
//
//===----------------------------------------------------------------------===//

#include "GraphImporter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"

#include <cmath>

using namespace mlir;
using namespace moec::onnximport;

namespace {
using HostFn = std::function<double(ArrayRef<double>)>;
using BuildFn = std::function<Value(OpBuilder &, Location, ValueRange)>;

/// Broadcast index of output position `k` into an operand of `shape`.
int64_t broadcastIndex(ArrayRef<int64_t> outShape, ArrayRef<int64_t> shape,
                       int64_t k) {
  int64_t idx = 0, stride = 1;
  for (int64_t d = int64_t(outShape.size()) - 1, s = int64_t(shape.size()) - 1;
       d >= 0; --d, --s) {
    int64_t coord = k % outShape[d];
    k /= outShape[d];
    if (s < 0)
      continue;
    idx += (shape[s] == 1 ? 0 : coord) * stride;
    stride *= shape[s];
  }
  return idx;
}

/// Folds an element-wise op on known operands. `resultDtype` 0 means "the
/// dtype of the first operand".
LogicalResult foldHost(GraphImporter &gi, const HostFn &fn,
                       int32_t resultDtype) {
  std::vector<const HostTensor *> ins;
  std::vector<int64_t> outShape;
  for (unsigned i = 0; i < gi.numInputs(); ++i) {
    ins.push_back(gi.inputConst(i));
    const auto &s = ins.back()->shape;
    if (s.size() > outShape.size())
      outShape.insert(outShape.begin(), s.size() - outShape.size(), 1);
    for (size_t d = 0; d < s.size(); ++d) {
      int64_t &o = outShape[outShape.size() - s.size() + d];
      if (o == 1)
        o = s[d];
      else if (s[d] != 1 && s[d] != o)
        return gi.fail("operand shapes do not broadcast");
    }
  }
  HostTensor out;
  out.shape = outShape;
  out.dtype = resultDtype ? resultDtype : ins[0]->dtype;
  int64_t n = out.size();
  SmallVector<double> args(ins.size());
  for (int64_t k = 0; k < n; ++k) {
    for (size_t i = 0; i < ins.size(); ++i)
      args[i] = ins[i]->asDouble(broadcastIndex(outShape, ins[i]->shape, k));
    double r = fn(args);
    if (out.isFloat())
      out.f.push_back(r);
    else
      out.i.push_back(saturatingInt(r)); // NaN or beyond int64: defined
  }
  gi.setOutputConst(0, std::move(out));
  return success();
}

bool isFloatType(Type t) { return isa<FloatType>(t); }

/// Registers an op whose result has the operands' element type.
/// `floatOnly` ops reject integer inputs with a clear error.
void addArith(
    OpTable &t, StringRef name, HostFn host,
    std::function<Value(OpBuilder &, Location, ValueRange, bool)> build,
    unsigned arity, bool floatOnly = false) {
  t[name] = [=](GraphImporter &gi) -> LogicalResult {
    if (gi.numInputs() != arity)
      return gi.fail("expects " + Twine(arity) + " inputs, got " +
                     Twine(gi.numInputs()));
    Type elt = gi.inputType(0).getElementType();
    for (unsigned i = 1; i < arity; ++i)
      if (gi.inputType(i).getElementType() != elt &&
          gi.node().op_type() != "Pow")
        return gi.fail("operands have different element types");
    bool isF = isFloatType(elt);
    if (floatOnly && !isF)
      return gi.fail("integer inputs are not supported");
    if (host && gi.allInputsConst())
      return foldHost(gi, host, 0);
    SmallVector<Value> ins;
    for (unsigned i = 0; i < arity; ++i)
      ins.push_back(gi.input(i));
    FailureOr<Value> r =
        gi.elementwise(ins, elt, [&](OpBuilder &b, Location l, ValueRange a) {
          return build(b, l, a, isF);
        });
    if (failed(r))
      return failure();
    gi.setOutput(0, *r);
    return success();
  };
}

/// Registers a comparison or logical op: the result is i1.
void addPredicate(
    OpTable &t, StringRef name, HostFn host,
    std::function<Value(OpBuilder &, Location, ValueRange, bool)> build,
    unsigned arity) {
  t[name] = [=](GraphImporter &gi) -> LogicalResult {
    if (gi.numInputs() != arity)
      return gi.fail("expects " + Twine(arity) + " inputs");
    bool isF = isFloatType(gi.inputType(0).getElementType());
    if (host && gi.allInputsConst())
      return foldHost(gi, host, onnx::TensorProto_DataType_BOOL);
    SmallVector<Value> ins;
    for (unsigned i = 0; i < arity; ++i)
      ins.push_back(gi.input(i));
    FailureOr<Value> r =
        gi.elementwise(ins, gi.builder().getI1Type(),
                       [&](OpBuilder &b, Location l, ValueRange a) {
                         return build(b, l, a, isF);
                       });
    if (failed(r))
      return failure();
    gi.setOutput(0, *r);
    return success();
  };
}

Value fconst(OpBuilder &b, Location l, Type t, double v) {
  return arith::ConstantOp::create(b, l, FloatAttr::get(t, v));
}

/// Registers a variadic op (Max, Min, Sum, Mean: one or more inputs,
/// broadcast together) as a chain of the binary `build`; `finish` (Mean)
/// rewrites the result given the input count.
void addVariadic(
    OpTable &t, StringRef name, HostFn host,
    std::function<Value(OpBuilder &, Location, Value, Value, bool)> build,
    std::function<Value(OpBuilder &, Location, Value, unsigned)> finish = {}) {
  t[name] = [=](GraphImporter &gi) -> LogicalResult {
    unsigned n = gi.numInputs();
    if (n == 0)
      return gi.fail("expects at least one input");
    Type elt = gi.inputType(0).getElementType();
    for (unsigned i = 1; i < n; ++i)
      if (gi.inputType(i).getElementType() != elt)
        return gi.fail("operands have different element types");
    bool isF = isFloatType(elt);
    if (finish && !isF)
      return gi.fail("integer inputs are not supported");
    if (host && gi.allInputsConst())
      return foldHost(gi, host, 0);
    SmallVector<Value> ins;
    for (unsigned i = 0; i < n; ++i)
      ins.push_back(gi.input(i));
    FailureOr<Value> r =
        gi.elementwise(ins, elt, [&](OpBuilder &b, Location l, ValueRange a) {
          Value v = a[0];
          for (unsigned i = 1; i < a.size(); ++i)
            v = build(b, l, v, a[i], isF);
          return finish ? finish(b, l, v, a.size()) : v;
        });
    if (failed(r))
      return failure();
    gi.setOutput(0, *r);
    return success();
  };
}

/// Max, Min, Sum, Mean, Sign, Mod, Floor, Ceil, Round.
void addMathOps(OpTable &t) {
  using A = ArrayRef<double>;
  using B = OpBuilder &;
  using L = Location;
  // Max/Min propagate NaN (onnxruntime does).
  addVariadic(
      t, "Max",
      [](A a) {
        double m = a[0];
        for (double x : a)
          m = std::isnan(x) || std::isnan(m) ? NAN : std::max(m, x);
        return m;
      },
      [](B b, L l, Value x, Value y, bool f) -> Value {
        return f ? Value(arith::MaximumFOp::create(b, l, x, y))
                 : Value(arith::MaxSIOp::create(b, l, x, y));
      });
  addVariadic(
      t, "Min",
      [](A a) {
        double m = a[0];
        for (double x : a)
          m = std::isnan(x) || std::isnan(m) ? NAN : std::min(m, x);
        return m;
      },
      [](B b, L l, Value x, Value y, bool f) -> Value {
        return f ? Value(arith::MinimumFOp::create(b, l, x, y))
                 : Value(arith::MinSIOp::create(b, l, x, y));
      });
  auto add = [](B b, L l, Value x, Value y, bool f) -> Value {
    return f ? Value(arith::AddFOp::create(b, l, x, y))
             : Value(arith::AddIOp::create(b, l, x, y));
  };
  addVariadic(
      t, "Sum",
      [](A a) {
        double s = 0;
        for (double x : a)
          s += x;
        return s;
      },
      add);
  addVariadic(
      t, "Mean",
      [](A a) {
        double s = 0;
        for (double x : a)
          s += x;
        return s / double(a.size());
      },
      add,
      [](B b, L l, Value v, unsigned n) -> Value {
        return arith::DivFOp::create(b, l, v, fconst(b, l, v.getType(), n));
      });
  // Sign: -1, 0 or 1 (0 for NaN).
  addArith(
      t, "Sign", [](A a) { return double((a[0] > 0) - (a[0] < 0)); },
      [](B b, L l, ValueRange a, bool f) -> Value {
        Type ty = a[0].getType();
        Value gt, lt, one, neg, zero;
        if (f) {
          zero = fconst(b, l, ty, 0.0);
          one = fconst(b, l, ty, 1.0);
          neg = fconst(b, l, ty, -1.0);
          gt = arith::CmpFOp::create(b, l, arith::CmpFPredicate::OGT, a[0],
                                     zero);
          lt = arith::CmpFOp::create(b, l, arith::CmpFPredicate::OLT, a[0],
                                     zero);
        } else {
          zero = arith::ConstantOp::create(b, l, IntegerAttr::get(ty, 0));
          one = arith::ConstantOp::create(b, l, IntegerAttr::get(ty, 1));
          neg = arith::ConstantOp::create(b, l, IntegerAttr::get(ty, -1));
          gt = arith::CmpIOp::create(b, l, arith::CmpIPredicate::sgt, a[0],
                                     zero);
          lt = arith::CmpIOp::create(b, l, arith::CmpIPredicate::slt, a[0],
                                     zero);
        }
        return arith::SelectOp::create(
            b, l, gt, one, arith::SelectOp::create(b, l, lt, neg, zero));
      },
      1);
  addArith(
      t, "Floor", [](A a) { return std::floor(a[0]); },
      [](B b, L l, ValueRange a, bool) -> Value {
        return math::FloorOp::create(b, l, a[0]);
      },
      1, true);
  addArith(
      t, "Ceil", [](A a) { return std::ceil(a[0]); },
      [](B b, L l, ValueRange a, bool) -> Value {
        return math::CeilOp::create(b, l, a[0]);
      },
      1, true);
  // Round: halves to even, as ONNX says.
  addArith(
      t, "Round", [](A a) { return std::nearbyint(a[0]); },
      [](B b, L l, ValueRange a, bool) -> Value {
        return math::RoundEvenOp::create(b, l, a[0]);
      },
      1, true);
  // Mod: fmod=0 (integers only) takes the divisor's sign, as Python's %;
  // fmod=1 the dividend's, as C's fmod. A zero divisor is undefined in
  // ONNX; the host fold gives 0.
  t["Mod"] = [](GraphImporter &gi) -> LogicalResult {
    if (gi.numInputs() != 2)
      return gi.fail("expects 2 inputs");
    Type elt = gi.inputType(0).getElementType();
    if (gi.inputType(1).getElementType() != elt)
      return gi.fail("operands have different element types");
    bool isF = isFloatType(elt);
    bool cmod = gi.intAttr("fmod", 0) != 0;
    if (isF && !cmod)
      return gi.fail("fmod=0 on floating-point inputs (ONNX requires fmod=1 "
                     "for them)");
    if (gi.allInputsConst())
      return foldHost(
          gi,
          [=](A a) {
            if (a[1] == 0)
              return 0.0;
            double r = std::fmod(a[0], a[1]);
            if (!cmod && r != 0 && ((r < 0) != (a[1] < 0)))
              r += a[1];
            return r;
          },
          0);
    FailureOr<Value> r = gi.elementwise(
        ValueRange{gi.input(0), gi.input(1)}, elt,
        [&](OpBuilder &b, Location l, ValueRange a) -> Value {
          if (isF)
            return arith::RemFOp::create(b, l, a[0], a[1]);
          Value rem = arith::RemSIOp::create(b, l, a[0], a[1]);
          if (cmod)
            return rem;
          Value zero =
              arith::ConstantOp::create(b, l, IntegerAttr::get(elt, 0));
          Value nz =
              arith::CmpIOp::create(b, l, arith::CmpIPredicate::ne, rem, zero);
          Value rneg =
              arith::CmpIOp::create(b, l, arith::CmpIPredicate::slt, rem, zero);
          Value dneg = arith::CmpIOp::create(b, l, arith::CmpIPredicate::slt,
                                             a[1], zero);
          Value differ = arith::XOrIOp::create(b, l, rneg, dneg);
          Value fix = arith::AndIOp::create(b, l, nz, differ);
          return arith::SelectOp::create(
              b, l, fix, arith::AddIOp::create(b, l, rem, a[1]), rem);
        });
    if (failed(r))
      return failure();
    gi.setOutput(0, *r);
    return success();
  };
}
} // namespace

void moec::onnximport::addElementwiseOps(OpTable &t) {
  using A = ArrayRef<double>;
  using V = ValueRange;
  using B = OpBuilder &;
  using L = Location;
  addArith(
      t, "Add", [](A a) { return a[0] + a[1]; },
      [](B b, L l, V a, bool f) -> Value {
        return f ? Value(arith::AddFOp::create(b, l, a[0], a[1]))
                 : Value(arith::AddIOp::create(b, l, a[0], a[1]));
      },
      2);
  addArith(
      t, "Sub", [](A a) { return a[0] - a[1]; },
      [](B b, L l, V a, bool f) -> Value {
        return f ? Value(arith::SubFOp::create(b, l, a[0], a[1]))
                 : Value(arith::SubIOp::create(b, l, a[0], a[1]));
      },
      2);
  addArith(
      t, "Mul", [](A a) { return a[0] * a[1]; },
      [](B b, L l, V a, bool f) -> Value {
        return f ? Value(arith::MulFOp::create(b, l, a[0], a[1]))
                 : Value(arith::MulIOp::create(b, l, a[0], a[1]));
      },
      2);
  // Integer Div truncates toward zero, as in ONNX (and C).
  addArith(
      t, "Div", [](A a) { return a[1] == 0 ? 0.0 : a[0] / a[1]; },
      [](B b, L l, V a, bool f) -> Value {
        return f ? Value(arith::DivFOp::create(b, l, a[0], a[1]))
                 : Value(arith::DivSIOp::create(b, l, a[0], a[1]));
      },
      2);
  addArith(
      t, "Pow", [](A a) { return std::pow(a[0], a[1]); },
      [](B b, L l, V a, bool f) -> Value {
        Value e = a[1];
        if (e.getType() != a[0].getType()) {
          // Pow allows a different exponent type; compute in the base's.
          Type bt = a[0].getType();
          e = isa<FloatType>(e.getType())
                  ? Value(arith::TruncFOp::create(b, l, bt, e))
                  : Value(arith::SIToFPOp::create(b, l, bt, e));
        }
        return math::PowFOp::create(b, l, a[0], e);
      },
      2, /*floatOnly=*/true);
  addArith(
      t, "Sqrt", [](A a) { return std::sqrt(a[0]); },
      [](B b, L l, V a, bool) -> Value {
        return math::SqrtOp::create(b, l, a[0]);
      },
      1, true);
  addArith(
      t, "Reciprocal", [](A a) { return 1.0 / a[0]; },
      [](B b, L l, V a, bool) -> Value {
        return arith::DivFOp::create(b, l, fconst(b, l, a[0].getType(), 1.0),
                                     a[0]);
      },
      1, true);
  addArith(
      t, "Neg", [](A a) { return -a[0]; },
      [](B b, L l, V a, bool f) -> Value {
        if (f)
          return arith::NegFOp::create(b, l, a[0]);
        Value zero = arith::ConstantOp::create(
            b, l, IntegerAttr::get(a[0].getType(), 0));
        return arith::SubIOp::create(b, l, zero, a[0]);
      },
      1);
  addArith(
      t, "Exp", [](A a) { return std::exp(a[0]); },
      [](B b, L l, V a, bool) -> Value {
        return math::ExpOp::create(b, l, a[0]);
      },
      1, true);
  addArith(
      t, "Erf", [](A a) { return std::erf(a[0]); },
      [](B b, L l, V a, bool) -> Value {
        return math::ErfOp::create(b, l, a[0]);
      },
      1, true);
  addArith(
      t, "Tanh", [](A a) { return std::tanh(a[0]); },
      [](B b, L l, V a, bool) -> Value {
        return math::TanhOp::create(b, l, a[0]);
      },
      1, true);
  addArith(
      t, "Log", [](A a) { return std::log(a[0]); },
      [](B b, L l, V a, bool) -> Value {
        return math::LogOp::create(b, l, a[0]);
      },
      1, true);
  // |x|: integers as max(x, -x) (INT_MIN stays INT_MIN, as in ONNX's
  // two's-complement reference).
  addArith(
      t, "Abs", [](A a) { return std::fabs(a[0]); },
      [](B b, L l, V a, bool f) -> Value {
        if (f)
          return math::AbsFOp::create(b, l, a[0]);
        Value zero = arith::ConstantOp::create(
            b, l, IntegerAttr::get(a[0].getType(), 0));
        return arith::MaxSIOp::create(b, l, a[0],
                                      arith::SubIOp::create(b, l, zero, a[0]));
      },
      1);
  // Softplus log(1 + e^x), without overflow: max(x, 0) + log(1 + e^-|x|)
  // (PhiMoE-style routers, Doge, Laguna).
  addArith(
      t, "Softplus",
      [](A a) {
        return std::max(a[0], 0.0) + std::log1p(std::exp(-std::fabs(a[0])));
      },
      [](B b, L l, V a, bool) -> Value {
        Type ty = a[0].getType();
        Value zero = fconst(b, l, ty, 0.0), one = fconst(b, l, ty, 1.0);
        Value pos = arith::MaximumFOp::create(b, l, a[0], zero);
        Value e = math::ExpOp::create(
            b, l,
            arith::NegFOp::create(b, l, math::AbsFOp::create(b, l, a[0])));
        Value lg =
            math::LogOp::create(b, l, arith::AddFOp::create(b, l, one, e));
        return arith::AddFOp::create(b, l, pos, lg);
      },
      1, true);
  addArith(
      t, "Sin", [](A a) { return std::sin(a[0]); },
      [](B b, L l, V a, bool) -> Value {
        return math::SinOp::create(b, l, a[0]);
      },
      1, true);
  addArith(
      t, "Cos", [](A a) { return std::cos(a[0]); },
      [](B b, L l, V a, bool) -> Value {
        return math::CosOp::create(b, l, a[0]);
      },
      1, true);
  addArith(
      t, "Sigmoid", [](A a) { return 1.0 / (1.0 + std::exp(-a[0])); },
      [](B b, L l, V a, bool) -> Value {
        Type ty = a[0].getType();
        Value one = fconst(b, l, ty, 1.0);
        Value e = math::ExpOp::create(b, l, arith::NegFOp::create(b, l, a[0]));
        return arith::DivFOp::create(b, l, one,
                                     arith::AddFOp::create(b, l, one, e));
      },
      1, true);
  addArith(
      t, "Relu", [](A a) { return a[0] > 0 ? a[0] : 0.0; },
      [](B b, L l, V a, bool f) -> Value {
        Type ty = a[0].getType();
        if (f)
          return arith::MaximumFOp::create(b, l, a[0], fconst(b, l, ty, 0.0));
        Value zero = arith::ConstantOp::create(b, l, IntegerAttr::get(ty, 0));
        return arith::MaxSIOp::create(b, l, a[0], zero);
      },
      1);

  // Clip: min(max(x, lo), hi) (so hi wins when lo > hi, as ONNX says; NaN
  // propagates); lo and hi are optional scalar inputs.
  t["Clip"] = [](GraphImporter &gi) -> LogicalResult {
    if (gi.numInputs() < 1 || gi.numInputs() > 3)
      return gi.fail("expects 1 to 3 inputs (input, min, max)");
    Type elt = gi.inputType(0).getElementType();
    bool isF = isFloatType(elt);
    SmallVector<Value> ins{gi.input(0)};
    bool haveLo = false, haveHi = false;
    int64_t rank = gi.inputType(0).getRank();
    for (unsigned i = 1; i < 3; ++i) {
      if (!gi.hasInput(i))
        continue;
      RankedTensorType bt = gi.inputType(i);
      StringRef what = i == 1 ? "min" : "max";
      if (bt.getElementType() != elt)
        return gi.fail(what + " must have the input's element type");
      if (!bt.hasStaticShape() || bt.getNumElements() != 1 ||
          bt.getRank() > rank)
        return gi.fail(what + " must be a scalar (one element)");
      ins.push_back(gi.input(i));
      (i == 1 ? haveLo : haveHi) = true;
    }
    if (ins.size() == 1) { // no bounds: the identity
      gi.setOutput(0, ins[0]);
      return success();
    }
    FailureOr<Value> r = gi.elementwise(
        ins, elt, [&](OpBuilder &b, Location l, ValueRange a) -> Value {
          Value v = a[0];
          unsigned k = 1;
          if (haveLo)
            v = isF ? Value(arith::MaximumFOp::create(b, l, v, a[k++]))
                    : Value(arith::MaxSIOp::create(b, l, v, a[k++]));
          if (haveHi)
            v = isF ? Value(arith::MinimumFOp::create(b, l, v, a[k++]))
                    : Value(arith::MinSIOp::create(b, l, v, a[k++]));
          return v;
        });
    if (failed(r))
      return failure();
    gi.setOutput(0, *r);
    return success();
  };

  auto cmp = [](arith::CmpFPredicate fp, arith::CmpIPredicate ip) {
    return [=](B b, L l, V a, bool f) -> Value {
      if (f)
        return arith::CmpFOp::create(b, l, fp, a[0], a[1]);
      return arith::CmpIOp::create(b, l, ip, a[0], a[1]);
    };
  };
  addPredicate(
      t, "Equal", [](A a) { return double(a[0] == a[1]); },
      cmp(arith::CmpFPredicate::OEQ, arith::CmpIPredicate::eq), 2);
  addPredicate(
      t, "Less", [](A a) { return double(a[0] < a[1]); },
      cmp(arith::CmpFPredicate::OLT, arith::CmpIPredicate::slt), 2);
  addPredicate(
      t, "Greater", [](A a) { return double(a[0] > a[1]); },
      cmp(arith::CmpFPredicate::OGT, arith::CmpIPredicate::sgt), 2);
  addPredicate(
      t, "LessOrEqual", [](A a) { return double(a[0] <= a[1]); },
      cmp(arith::CmpFPredicate::OLE, arith::CmpIPredicate::sle), 2);
  addPredicate(
      t, "GreaterOrEqual", [](A a) { return double(a[0] >= a[1]); },
      cmp(arith::CmpFPredicate::OGE, arith::CmpIPredicate::sge), 2);
  // IsNaN: x unordered with itself; IsInf: |x| == inf, signs as the
  // detect_negative / detect_positive attributes say (HunYuan, FlexOlmo).
  addPredicate(
      t, "IsNaN", [](A a) { return double(std::isnan(a[0])); },
      [](B b, L l, V a, bool f) -> Value {
        if (!f)
          return arith::ConstantOp::create(b, l, b.getBoolAttr(false));
        return arith::CmpFOp::create(b, l, arith::CmpFPredicate::UNO, a[0],
                                     a[0]);
      },
      1);
  t["IsInf"] = [](GraphImporter &gi) -> LogicalResult {
    if (gi.numInputs() != 1)
      return gi.fail("expects 1 input");
    Type elt = gi.inputType(0).getElementType();
    if (!isFloatType(elt))
      return gi.fail("integer inputs are not supported");
    bool neg = gi.intAttr("detect_negative", 1) != 0;
    bool pos = gi.intAttr("detect_positive", 1) != 0;
    if (gi.allInputsConst())
      return foldHost(
          gi,
          [=](A a) {
            return double(std::isinf(a[0]) && (a[0] > 0 ? pos : neg));
          },
          onnx::TensorProto_DataType_BOOL);
    FailureOr<Value> r = gi.elementwise(
        ValueRange{gi.input(0)}, IntegerType::get(elt.getContext(), 1),
        [&](OpBuilder &b, Location l, ValueRange a) -> Value {
          Value inf = fconst(b, l, elt, INFINITY);
          Value ninf = fconst(b, l, elt, -INFINITY);
          Value isPos =
              arith::CmpFOp::create(b, l, arith::CmpFPredicate::OEQ, a[0], inf);
          Value isNeg = arith::CmpFOp::create(b, l, arith::CmpFPredicate::OEQ,
                                              a[0], ninf);
          Value none = arith::ConstantOp::create(b, l, b.getBoolAttr(false));
          return arith::OrIOp::create(b, l, pos ? isPos : none,
                                      neg ? isNeg : none);
        });
    if (failed(r))
      return failure();
    gi.setOutput(0, *r);
    return success();
  };
  addPredicate(
      t, "Not", [](A a) { return double(a[0] == 0); },
      [](B b, L l, V a, bool) -> Value {
        Value one = arith::ConstantOp::create(b, l, b.getBoolAttr(true));
        return arith::XOrIOp::create(b, l, a[0], one);
      },
      1);
  addPredicate(
      t, "And", [](A a) { return double(a[0] != 0 && a[1] != 0); },
      [](B b, L l, V a, bool) -> Value {
        return arith::AndIOp::create(b, l, a[0], a[1]);
      },
      2);

  addPredicate(
      t, "Or", [](A a) { return double(a[0] != 0 || a[1] != 0); },
      [](B b, L l, V a, bool) -> Value {
        return arith::OrIOp::create(b, l, a[0], a[1]);
      },
      2);
  addPredicate(
      t, "Xor", [](A a) { return double((a[0] != 0) != (a[1] != 0)); },
      [](B b, L l, V a, bool) -> Value {
        return arith::XOrIOp::create(b, l, a[0], a[1]);
      },
      2);
  addMathOps(t);

  t["Where"] = [](GraphImporter &gi) -> LogicalResult {
    if (gi.numInputs() != 3)
      return gi.fail("expects 3 inputs (condition, X, Y)");
    if (gi.allInputsConst())
      return foldHost(
          gi, [](A a) { return a[0] != 0 ? a[1] : a[2]; },
          gi.inputConst(1)->dtype);
    Type elt = gi.inputType(1).getElementType();
    if (gi.inputType(2).getElementType() != elt)
      return gi.fail("X and Y have different element types");
    FailureOr<Value> r =
        gi.elementwise(ValueRange{gi.input(0), gi.input(1), gi.input(2)}, elt,
                       [](OpBuilder &b, Location l, ValueRange a) -> Value {
                         return arith::SelectOp::create(b, l, a[0], a[1], a[2]);
                       });
    if (failed(r))
      return failure();
    gi.setOutput(0, *r);
    return success();
  };

  t["Cast"] = [](GraphImporter &gi) -> LogicalResult {
    int64_t to = gi.intAttr("to", 0);
    Type elt = gi.elementType(int32_t(to));
    if (!elt)
      return gi.fail("cast to unsupported dtype " + onnxTypeName(int32_t(to)));
    if (gi.allInputsConst()) {
      bool toBool = to == onnx::TensorProto_DataType_BOOL;
      bool toFloat = isa<FloatType>(elt);
      return foldHost(
          gi,
          [=](A a) {
            if (toBool)
              return double(a[0] != 0);
            return toFloat ? a[0] : std::trunc(a[0]);
          },
          int32_t(to));
    }
    gi.setOutput(0, gi.castTensor(gi.input(0), elt));
    return success();
  };
}
