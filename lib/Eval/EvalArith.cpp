//===- EvalArith.cpp - scalar code, arith and math ops --------------------===//
//
// Scalar code (linalg bodies, tensor.pad/generate bodies, scalar arith/math
// ops, element-wise arith/math ops on tensors) compiles into a register
// program (`Plan`, EvalInternal.h) that then runs per element. Also
// arith.constant (dense and dense_resource) and element-wise arith/math ops
// on tensors.
//
//===----------------------------------------------------------------------===//

#include "EvalInternal.h"
#include "moec/Analysis/ConstantBytes.h"
#include "moec/Analysis/Weights.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cstring>

using namespace mlir;
using namespace moec;
using namespace moec::eval;
using namespace moec::eval::detail;

namespace {

double nanMax(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
}
double nanMin(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b);
}

} // namespace

//===----------------------------------------------------------------------===//
// Compiling scalar code
//===----------------------------------------------------------------------===//

FailureOr<int> Interpreter::slotOf(Value v, Operation *user, Plan &plan,
                                   DenseMap<Value, int> &slots) {
  auto it = slots.find(v);
  if (it != slots.end())
    return it->second;
  // A scalar defined outside the compiled code: a constant register.
  auto s = scalars.find(v);
  if (s == scalars.end()) {
    (void)fail(user, "an operand has no scalar value");
    return failure();
  }
  int slot = int(plan.init.size());
  plan.init.push_back(s->second);
  slots[v] = slot;
  return slot;
}

LogicalResult Interpreter::compileBody(Block &body, Plan &plan,
                                       DenseMap<Value, int> &slots) {
  for (Operation &op : body.without_terminator())
    if (failed(compileOp(&op, plan, slots)))
      return failure();
  Operation *term = body.getTerminator();
  for (Value v : term->getOperands()) {
    FailureOr<int> s = slotOf(v, term, plan, slots);
    if (failed(s))
      return failure();
    plan.yields.push_back(*s);
  }
  return success();
}

LogicalResult Interpreter::compileOp(Operation *op, Plan &plan,
                                     DenseMap<Value, int> &slots) {
  if (op->getNumResults() != 1 || op->getNumRegions() != 0)
    return fail(op, "unsupported op in scalar code");
  // Shaped values are allowed only where they stand for elements (slots of
  // evalElementwise) and as the tensor of a tensor.extract.
  Value res = op->getResult(0);
  Type rt = getElementTypeOrSelf(res.getType());
  if (!isSupportedElement(rt))
    return fail(op, "unsupported type in scalar code");
  for (Value v : op->getOperands())
    if (isa<ShapedType>(v.getType()) && !slots.count(v) &&
        !isa<tensor::ExtractOp>(op))
      return fail(op, "unsupported op in scalar code");

  // Constants and tensor.dim of outside tensors are known now.
  auto constant = [&](Scalar s) {
    slots[res] = int(plan.init.size());
    plan.init.push_back(s);
    return success();
  };
  if (auto c = dyn_cast<arith::ConstantOp>(op)) {
    if (auto fa = dyn_cast<FloatAttr>(c.getValue()))
      return constant(Scalar{fa.getValueAsDouble(), 0});
    if (auto ia = dyn_cast<IntegerAttr>(c.getValue()))
      return constant(
          Scalar{0, rt.isIndex()
                        ? ia.getInt()
                        : wrapInt(intWidth(rt), ia.getValue().getSExtValue())});
    return fail(op, "unsupported constant");
  }
  if (auto d = dyn_cast<tensor::DimOp>(op)) {
    auto it = tensors.find(d.getSource());
    if (it == tensors.end() || slots.count(d.getIndex()))
      return fail(op, "tensor.dim of a value computed in the body");
    FailureOr<int> i = slotOf(d.getIndex(), op, plan, slots);
    if (failed(i))
      return failure();
    int64_t k = plan.init[*i].i;
    if (k < 0 || k >= int64_t(it->second.shape.size()))
      return fail(op, "dim index out of range");
    return constant(Scalar{0, it->second.shape[k]});
  }

  Instr in;
  in.op = op;
  in.round = FloatRound::of(rt);
  in.w = intWidth(rt);
  if (op->getNumOperands() > 0)
    in.sw = intWidth(getElementTypeOrSelf(op->getOperand(0).getType()));

  if (auto e = dyn_cast<tensor::ExtractOp>(op)) {
    if (slots.count(e.getTensor()))
      return fail(op, "tensor.extract of a value computed in the body");
    auto it = tensors.find(e.getTensor());
    if (it == tensors.end())
      return fail(op, "an operand has no value");
    in.code = Code::Extract;
    in.tensor = &it->second;
    in.strides = stridesOf(it->second.shape);
    for (Value i : e.getIndices()) {
      FailureOr<int> s = slotOf(i, op, plan, slots);
      if (failed(s))
        return failure();
      in.indices.push_back(*s);
    }
  } else {
    using UnFn = double (*)(double);
    using BinFn = double (*)(double, double);
    using TestFn = bool (*)(double);
    auto un = [&](UnFn f) {
      in.code = Code::UnF;
      in.un = f;
    };
    auto bin = [&](BinFn f) {
      in.code = Code::BinF;
      in.bin = f;
    };
    auto test = [&](TestFn f) {
      in.code = Code::TestF;
      in.test = f;
    };
    auto is = [&](Code c) { in.code = c; };
    bool known = true;
    llvm::TypeSwitch<Operation *>(op)
        // Float arithmetic.
        .Case([&](arith::AddFOp) {
          bin(+[](double a, double b) { return a + b; });
        })
        .Case([&](arith::SubFOp) {
          bin(+[](double a, double b) { return a - b; });
        })
        .Case([&](arith::MulFOp) {
          bin(+[](double a, double b) { return a * b; });
        })
        .Case([&](arith::DivFOp) {
          bin(+[](double a, double b) { return a / b; });
        })
        .Case([&](arith::RemFOp) {
          bin(+[](double a, double b) { return std::fmod(a, b); });
        })
        .Case([&](arith::MaximumFOp) { bin(nanMax); })
        .Case([&](arith::MinimumFOp) { bin(nanMin); })
        .Case([&](arith::MaxNumFOp) {
          bin(+[](double a, double b) { return std::fmax(a, b); });
        })
        .Case([&](arith::MinNumFOp) {
          bin(+[](double a, double b) { return std::fmin(a, b); });
        })
        .Case([&](arith::NegFOp) { un(+[](double a) { return -a; }); })
        .Case([&](math::PowFOp) {
          bin(+[](double a, double b) { return std::pow(a, b); });
        })
        .Case([&](math::Atan2Op) {
          bin(+[](double a, double b) { return std::atan2(a, b); });
        })
        .Case([&](math::CopySignOp) {
          bin(+[](double a, double b) { return std::copysign(a, b); });
        })
        .Case([&](math::AbsFOp) { un(+[](double a) { return std::fabs(a); }); })
        .Case([&](math::ExpOp) { un(+[](double a) { return std::exp(a); }); })
        .Case([&](math::Exp2Op) { un(+[](double a) { return std::exp2(a); }); })
        .Case(
            [&](math::ExpM1Op) { un(+[](double a) { return std::expm1(a); }); })
        .Case([&](math::LogOp) { un(+[](double a) { return std::log(a); }); })
        .Case([&](math::Log2Op) { un(+[](double a) { return std::log2(a); }); })
        .Case(
            [&](math::Log10Op) { un(+[](double a) { return std::log10(a); }); })
        .Case(
            [&](math::Log1pOp) { un(+[](double a) { return std::log1p(a); }); })
        .Case([&](math::ErfOp) { un(+[](double a) { return std::erf(a); }); })
        .Case([&](math::ErfcOp) { un(+[](double a) { return std::erfc(a); }); })
        .Case([&](math::TanhOp) { un(+[](double a) { return std::tanh(a); }); })
        .Case([&](math::SinhOp) { un(+[](double a) { return std::sinh(a); }); })
        .Case([&](math::CoshOp) { un(+[](double a) { return std::cosh(a); }); })
        .Case(
            [&](math::AsinhOp) { un(+[](double a) { return std::asinh(a); }); })
        .Case(
            [&](math::AcoshOp) { un(+[](double a) { return std::acosh(a); }); })
        .Case(
            [&](math::AtanhOp) { un(+[](double a) { return std::atanh(a); }); })
        .Case([&](math::SqrtOp) { un(+[](double a) { return std::sqrt(a); }); })
        .Case([&](math::RsqrtOp) {
          un(+[](double a) { return 1.0 / std::sqrt(a); });
        })
        .Case([&](math::CbrtOp) { un(+[](double a) { return std::cbrt(a); }); })
        .Case([&](math::SinOp) { un(+[](double a) { return std::sin(a); }); })
        .Case([&](math::CosOp) { un(+[](double a) { return std::cos(a); }); })
        .Case([&](math::TanOp) { un(+[](double a) { return std::tan(a); }); })
        .Case([&](math::AsinOp) { un(+[](double a) { return std::asin(a); }); })
        .Case([&](math::AcosOp) { un(+[](double a) { return std::acos(a); }); })
        .Case([&](math::AtanOp) { un(+[](double a) { return std::atan(a); }); })
        .Case(
            [&](math::FloorOp) { un(+[](double a) { return std::floor(a); }); })
        .Case([&](math::CeilOp) { un(+[](double a) { return std::ceil(a); }); })
        .Case(
            [&](math::RoundOp) { un(+[](double a) { return std::round(a); }); })
        .Case([&](math::RoundEvenOp) {
          un(+[](double a) { return std::nearbyint(a); });
        })
        .Case(
            [&](math::TruncOp) { un(+[](double a) { return std::trunc(a); }); })
        .Case([&](math::IsNaNOp) {
          test(+[](double a) { return std::isnan(a); });
        })
        .Case([&](math::IsInfOp) {
          test(+[](double a) { return std::isinf(a); });
        })
        .Case([&](math::IsFiniteOp) {
          test(+[](double a) { return std::isfinite(a); });
        })
        .Case([&](math::IsNormalOp) {
          test(+[](double a) { return std::isnormal(a); });
        })
        .Case([&](math::FmaOp) { is(Code::Fma); })
        .Case([&](math::FPowIOp p) {
          is(Code::FPowI);
          in.sw = intWidth(getElementTypeOrSelf(p.getRhs().getType()));
        })
        .Case([&](arith::CmpFOp c) {
          is(Code::CmpF);
          in.attr = int64_t(c.getPredicate());
        })
        // Integer arithmetic.
        .Case([&](arith::AddIOp) { is(Code::AddI); })
        .Case([&](arith::SubIOp) { is(Code::SubI); })
        .Case([&](arith::MulIOp) { is(Code::MulI); })
        .Case([&](arith::DivSIOp) { is(Code::DivSI); })
        .Case([&](arith::DivUIOp) { is(Code::DivUI); })
        .Case([&](arith::RemSIOp) { is(Code::RemSI); })
        .Case([&](arith::RemUIOp) { is(Code::RemUI); })
        .Case([&](arith::CeilDivSIOp) { is(Code::CeilDivSI); })
        .Case([&](arith::CeilDivUIOp) { is(Code::CeilDivUI); })
        .Case([&](arith::FloorDivSIOp) { is(Code::FloorDivSI); })
        .Case([&](arith::MaxSIOp) { is(Code::MaxSI); })
        .Case([&](arith::MinSIOp) { is(Code::MinSI); })
        .Case([&](arith::MaxUIOp) { is(Code::MaxUI); })
        .Case([&](arith::MinUIOp) { is(Code::MinUI); })
        .Case([&](arith::AndIOp) { is(Code::AndI); })
        .Case([&](arith::OrIOp) { is(Code::OrI); })
        .Case([&](arith::XOrIOp) { is(Code::XOrI); })
        .Case([&](arith::ShLIOp) { is(Code::ShLI); })
        .Case([&](arith::ShRSIOp) { is(Code::ShRSI); })
        .Case([&](arith::ShRUIOp) { is(Code::ShRUI); })
        .Case([&](math::AbsIOp) { is(Code::AbsI); })
        .Case([&](arith::CmpIOp c) {
          is(Code::CmpI);
          in.attr = int64_t(c.getPredicate());
        })
        // Conversions and select.
        .Case<arith::ExtFOp, arith::TruncFOp>([&](auto) { is(Code::RoundF); })
        .Case([&](arith::FPToSIOp) { is(Code::FPToSI); })
        .Case([&](arith::FPToUIOp) { is(Code::FPToUI); })
        .Case([&](arith::SIToFPOp) { is(Code::SIToFP); })
        .Case([&](arith::UIToFPOp) { is(Code::UIToFP); })
        .Case<arith::ExtSIOp, arith::TruncIOp, arith::IndexCastOp>(
            [&](auto) { is(Code::SExt); })
        .Case<arith::ExtUIOp, arith::IndexCastUIOp>(
            [&](auto) { is(Code::ZExt); })
        .Case([&](arith::SelectOp) { is(Code::Select); })
        .Case([&](linalg::IndexOp i) {
          is(Code::Index);
          in.attr = int64_t(i.getDim());
        })
        .Default([&](Operation *) { known = false; });
    if (!known)
      return fail(op, "unsupported op");
    if (op->getNumOperands() > 3)
      return fail(op, "unsupported op");
    int *operandSlots[] = {&in.a, &in.b, &in.c};
    for (auto [k, v] : llvm::enumerate(op->getOperands())) {
      FailureOr<int> s = slotOf(v, op, plan, slots);
      if (failed(s))
        return failure();
      *operandSlots[k] = *s;
    }
    if (in.code == Code::Index)
      plan.usesIndex = true;
  }
  in.res = int(plan.init.size());
  plan.init.push_back(Scalar());
  slots[res] = in.res;
  plan.code.push_back(std::move(in));
  return success();
}

LogicalResult Interpreter::runPlan(const Plan &plan, Scalar *regs,
                                   ArrayRef<int64_t> loop) {
  std::string why;
  for (const Instr &in : plan.code)
    if (!exec(in, regs, loop.data(), loop.size(), why))
      return fail(in.op, why);
  return success();
}

//===----------------------------------------------------------------------===//
// Constants, scalar ops, element-wise ops on tensors
//===----------------------------------------------------------------------===//

LogicalResult Interpreter::evalConstant(arith::ConstantOp op) {
  Attribute attr = op.getValue();
  if (!isa<ShapedType>(op.getType())) {
    Plan plan;
    DenseMap<Value, int> slots;
    if (failed(compileOp(op, plan, slots)))
      return failure();
    scalars[op] = plan.init[slots[op]];
    return success();
  }
  auto type = dyn_cast<RankedTensorType>(op.getType());
  if (!type || !type.hasStaticShape())
    return fail(op, "unsupported constant type");
  Type elt = type.getElementType();
  Tensor t = Tensor::zeros(type.getShape(), elt);
  int64_t n = t.numElements();
  unsigned w = intWidth(elt);
  if (auto dense = dyn_cast<DenseElementsAttr>(attr)) {
    if (elt.isF32() && !dense.isSplat()) {
      auto vals = dense.getValues<float>();
      std::copy(vals.begin(), vals.end(), t.f.begin());
    } else if (isa<FloatType>(elt)) {
      auto vals = dense.getValues<APFloat>();
      for (int64_t k = 0; k < n; ++k)
        t.f[k] = (dense.isSplat() ? vals[0] : vals[k]).convertToDouble();
    } else {
      auto vals = dense.getValues<APInt>();
      for (int64_t k = 0; k < n; ++k) {
        APInt v = dense.isSplat() ? vals[0] : vals[k];
        t.i[k] = wrapInt(w, int64_t(v.getZExtValue()));
      }
    }
  } else if (auto res = dyn_cast<DenseResourceElementsAttr>(attr)) {
    AsmResourceBlob *blob = res.getRawHandle().getBlob();
    // A lazy weight (moec/Analysis/Weights.h) is realized here.
    FailureOr<std::vector<char>> lazy = failure();
    if (!blob && lazyWeightOf(res))
      lazy = constantBytes(res);
    if (!blob && failed(lazy))
      return fail(op, "the weight blob '" + res.getRawHandle().getKey() +
                          "' has no data (printed with elided weights? use "
                          "moec --emit-weights)");
    ArrayRef<char> data =
        blob ? blob->getData() : ArrayRef<char>(lazy->data(), lazy->size());
    unsigned bits = elt.isIndex() ? 64 : elt.getIntOrFloatBitWidth();
    if (bits != 1 && bits % 8 != 0)
      return fail(op, "unsupported element width in a resource blob");
    unsigned bytes = bits == 1 ? 1 : bits / 8;
    if (int64_t(data.size()) != n * int64_t(bytes))
      return fail(op, "the weight blob '" + res.getRawHandle().getKey() +
                          "' has " + Twine(data.size()) + " bytes, " +
                          Twine(n * bytes) + " expected");
    if (elt.isF32()) {
      for (int64_t k = 0; k < n; ++k) {
        float v;
        std::memcpy(&v, data.data() + 4 * k, 4);
        t.f[k] = v;
      }
    } else {
      for (int64_t k = 0; k < n; ++k) {
        uint64_t raw = 0;
        std::memcpy(&raw, data.data() + k * bytes, bytes);
        if (auto ft = dyn_cast<FloatType>(elt))
          t.f[k] = APFloat(ft.getFloatSemantics(), APInt(ft.getWidth(), raw))
                       .convertToDouble();
        else
          t.i[k] = wrapInt(w, int64_t(raw));
      }
    }
  } else {
    return fail(op, "unsupported constant attribute");
  }
  setTensor(op, std::move(t));
  return success();
}

LogicalResult Interpreter::evalScalarOp(Operation *op) {
  Plan plan;
  DenseMap<Value, int> slots;
  if (failed(compileOp(op, plan, slots)))
    return failure();
  std::vector<Scalar> regs = plan.init;
  if (failed(runPlan(plan, regs.data(), {})))
    return failure();
  scalars[op->getResult(0)] = regs[slots[op->getResult(0)]];
  return success();
}

LogicalResult Interpreter::evalElementwise(Operation *op) {
  // Element-wise arith/math ops on tensors: operands of one shape (a select
  // may have a scalar condition).
  Value res = op->getResult(0);
  SmallVector<const Tensor *> ins;
  ArrayRef<int64_t> shape;
  Plan plan;
  DenseMap<Value, int> slots;
  for (Value v : op->getOperands()) {
    if (!isa<RankedTensorType>(v.getType()))
      continue;
    const Tensor &t = T(v);
    if (!ins.empty() && ArrayRef<int64_t>(t.shape) != shape)
      return fail(op, "operand shapes " + shapeStr(shape) + " and " +
                          shapeStr(t.shape) + " differ");
    shape = t.shape;
    if (!slots.count(v)) {
      slots[v] = int(plan.init.size());
      plan.init.push_back(Scalar());
      ins.push_back(&t);
    }
  }
  if (ins.empty())
    return fail(op, "unsupported op");
  // Compile against scalar stand-ins of the tensor operands.
  if (failed(compileOp(op, plan, slots)))
    return failure();
  Tensor out =
      Tensor::zeros(shape, cast<ShapedType>(res.getType()).getElementType());
  std::vector<Scalar> regs = plan.init;
  int outSlot = slots[res];
  for (int64_t k = 0, n = out.numElements(); k < n; ++k) {
    for (auto [s, t] : llvm::enumerate(ins)) {
      if (t->isFloat())
        regs[s].f = t->f[k];
      else
        regs[s].i = t->i[k];
    }
    if (failed(runPlan(plan, regs.data(), {})))
      return failure();
    if (out.isFloat())
      out.f[k] = regs[outSlot].f;
    else
      out.i[k] = regs[outSlot].i;
  }
  setTensor(res, std::move(out));
  return success();
}
