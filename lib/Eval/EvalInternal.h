//===- EvalInternal.h - the interpreter's shared parts ----------*- C++ -*-===//
//
// Private to lib/Eval. The parts of the reference interpreter (Evaluator.h)
// share the element-type helpers, the scalar programs (`Plan`) and the
// instruction that runs one step of them, and the `Interpreter` class. Its
// evaluation of each dialect lives in a file of its own:
//   Evaluator.cpp   the function, op dispatch, result checks
//   EvalArith.cpp   compiling scalar code (arith, math, tensor.extract/dim),
//                   constants, scalar and element-wise arith/math ops
//   EvalLinalg.cpp  linalg structured ops and linalg.softmax
//   EvalTensor.cpp  tensor ops
//   EvalMoE.cpp     moe ops
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_EVAL_EVALINTERNAL_H
#define MOEC_LIB_EVAL_EVALINTERNAL_H

#include "moec/Eval/Evaluator.h"

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "llvm/ADT/DenseMap.h"

#include <cmath>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

namespace moec::eval::detail {

// A private header: its code names MLIR's types unqualified, as the
// interpreter's files do.
using namespace mlir;

//===----------------------------------------------------------------------===//
// Element types
//===----------------------------------------------------------------------===//

inline bool isSupportedElement(Type t) {
  if (isa<FloatType>(t) || t.isIndex())
    return true;
  auto it = dyn_cast<IntegerType>(t);
  return it && it.getWidth() <= 64;
}

/// Bit width of an integer or index type (index: 64).
inline unsigned intWidth(Type t) {
  if (auto it = dyn_cast<IntegerType>(t))
    return it.getWidth();
  return 64;
}

/// Wraps `v` to `w` bits, sign-extended; i1 as 0/1.
inline int64_t wrapInt(unsigned w, int64_t v) {
  if (w >= 64)
    return v;
  if (w == 1)
    return v & 1;
  uint64_t mask = (uint64_t(1) << w) - 1;
  uint64_t u = uint64_t(v) & mask;
  if (u >> (w - 1))
    u |= ~mask;
  return int64_t(u);
}

/// The signed value of a stored `w`-bit integer (i1 true is -1).
inline int64_t signedVal(unsigned w, int64_t v) {
  return w == 1 ? -(v & 1) : v;
}

/// The unsigned value of a stored `w`-bit integer.
inline uint64_t unsignedVal(unsigned w, int64_t v) {
  return w >= 64 ? uint64_t(v) : uint64_t(v) & ((uint64_t(1) << w) - 1);
}

/// Rounds doubles to the precision of a float type.
struct FloatRound {
  enum Kind : uint8_t { None, F32, Sem } kind = None;
  const llvm::fltSemantics *sem = nullptr;

  static FloatRound of(Type t) {
    FloatRound r;
    if (auto ft = dyn_cast<FloatType>(t)) {
      if (ft.isF32()) {
        r.kind = F32;
      } else if (!ft.isF64()) {
        r.kind = Sem;
        r.sem = &ft.getFloatSemantics();
      }
    }
    return r;
  }
  double operator()(double v) const {
    if (kind == None)
      return v;
    if (kind == F32)
      return double(float(v));
    APFloat a(v);
    bool lost;
    a.convert(*sem, APFloat::rmNearestTiesToEven, &lost);
    return a.convertToDouble();
  }
};

/// Calls `fn(k, flat)` for each element `k` (row-major) of a strided slice
/// of `sizes` at `offs` with `steps`, where `flat` is its index in the tensor
/// with `strides`.
inline void forEachSliceElement(ArrayRef<int64_t> sizes, ArrayRef<int64_t> offs,
                                ArrayRef<int64_t> steps,
                                ArrayRef<int64_t> strides,
                                function_ref<void(int64_t, int64_t)> fn) {
  int64_t n = 1;
  for (int64_t d : sizes)
    n *= d;
  for (int64_t k = 0; k < n; ++k) {
    int64_t rem = k, flat = 0;
    for (int64_t d = int64_t(sizes.size()) - 1; d >= 0; --d) {
      flat += (offs[d] + (rem % sizes[d]) * steps[d]) * strides[d];
      rem /= sizes[d];
    }
    fn(k, flat);
  }
}

inline SmallVector<int64_t> stridesOf(ArrayRef<int64_t> shape) {
  SmallVector<int64_t> s(shape.size(), 1);
  for (int64_t d = int64_t(shape.size()) - 2; d >= 0; --d)
    s[d] = s[d + 1] * shape[d + 1];
  return s;
}

inline int64_t product(ArrayRef<int64_t> v) {
  int64_t n = 1;
  for (int64_t d : v)
    n *= d;
  return n;
}

inline std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [k, d] : llvm::enumerate(shape))
    s += (k ? ", " : "") + std::to_string(d);
  return s + "]";
}

/// Copies element `from` of `src` to element `to` of `dst` (same kind).
inline void copyElt(const Tensor &src, int64_t from, Tensor &dst, int64_t to) {
  if (dst.isFloat())
    dst.f[to] = src.f[from];
  else
    dst.i[to] = src.i[from];
}

//===----------------------------------------------------------------------===//
// Scalar programs
//===----------------------------------------------------------------------===//

/// A scalar register: floats in `f`, integers, index and i1 in `i`.
struct Scalar {
  double f = 0;
  int64_t i = 0;
};

enum class Code : uint8_t {
  // Float -> float, rounded to the result type.
  UnF,
  BinF,
  Fma,
  FPowI,
  RoundF, // extf, truncf
  // Float -> i1.
  CmpF,
  TestF,
  // Integers, wrapped to the result width.
  AddI,
  SubI,
  MulI,
  DivSI,
  DivUI,
  RemSI,
  RemUI,
  CeilDivSI,
  CeilDivUI,
  FloorDivSI,
  MaxSI,
  MinSI,
  MaxUI,
  MinUI,
  AndI,
  OrI,
  XOrI,
  ShLI,
  ShRSI,
  ShRUI,
  AbsI,
  CmpI,
  // Conversions.
  FPToSI,
  FPToUI,
  SIToFP,
  UIToFP,
  SExt, // extsi, trunci, index_cast
  ZExt, // extui, index_castui
  Select,
  // linalg.index and tensor.extract of a tensor defined outside the body.
  Index,
  Extract,
};

struct Instr {
  Code code;
  int res = -1, a = -1, b = -1, c = -1;
  FloatRound round; // of a float result
  unsigned w = 64;  // width of an integer result
  unsigned sw = 64; // width of the (first) integer operand
  int64_t attr = 0; // comparison predicate, linalg.index dimension
  double (*un)(double) = nullptr;
  double (*bin)(double, double) = nullptr;
  bool (*test)(double) = nullptr;
  const Tensor *tensor = nullptr;
  SmallVector<int64_t, 4> strides;
  SmallVector<int, 4> indices;
  Operation *op = nullptr;
};

/// A compiled region body: instructions over a register file whose initial
/// contents (constants, values captured from outside) are `init`.
struct Plan {
  std::vector<Instr> code;
  std::vector<Scalar> init;
  SmallVector<int> yields;
  /// Index of the first instruction that needs the loop position.
  bool usesIndex = false;
};

inline bool cmpF(int64_t pred, double a, double b) {
  bool unord = std::isnan(a) || std::isnan(b);
  using P = arith::CmpFPredicate;
  switch (P(pred)) {
  case P::AlwaysFalse:
    return false;
  case P::OEQ:
    return !unord && a == b;
  case P::OGT:
    return !unord && a > b;
  case P::OGE:
    return !unord && a >= b;
  case P::OLT:
    return !unord && a < b;
  case P::OLE:
    return !unord && a <= b;
  case P::ONE:
    return !unord && a != b;
  case P::ORD:
    return !unord;
  case P::UEQ:
    return unord || a == b;
  case P::UGT:
    return unord || a > b;
  case P::UGE:
    return unord || a >= b;
  case P::ULT:
    return unord || a < b;
  case P::ULE:
    return unord || a <= b;
  case P::UNE:
    return unord || a != b;
  case P::UNO:
    return unord;
  case P::AlwaysTrue:
    return true;
  }
  return false;
}

inline bool cmpI(int64_t pred, unsigned w, int64_t a, int64_t b) {
  int64_t sa = signedVal(w, a), sb = signedVal(w, b);
  uint64_t ua = unsignedVal(w, a), ub = unsignedVal(w, b);
  using P = arith::CmpIPredicate;
  switch (P(pred)) {
  case P::eq:
    return a == b;
  case P::ne:
    return a != b;
  case P::slt:
    return sa < sb;
  case P::sle:
    return sa <= sb;
  case P::sgt:
    return sa > sb;
  case P::sge:
    return sa >= sb;
  case P::ult:
    return ua < ub;
  case P::ule:
    return ua <= ub;
  case P::ugt:
    return ua > ub;
  case P::uge:
    return ua >= ub;
  }
  return false;
}

/// Float to integer, saturating (NaN -> 0) instead of undefined behaviour.
inline int64_t toInt(double v) {
  if (std::isnan(v))
    return 0;
  v = std::trunc(v);
  if (v <= -9223372036854775808.0)
    return std::numeric_limits<int64_t>::min();
  if (v >= 9223372036854775807.0)
    return std::numeric_limits<int64_t>::max();
  return int64_t(v);
}

inline uint64_t toUInt(double v) {
  if (std::isnan(v) || v <= 0)
    return 0;
  v = std::trunc(v);
  if (v >= 18446744073709551615.0)
    return std::numeric_limits<uint64_t>::max();
  return uint64_t(v);
}

/// Runs one instruction. Returns false with `why` set on a run-time error.
inline bool exec(const Instr &in, Scalar *r, const int64_t *loop,
                 size_t numLoops, std::string &why) {
  Scalar &out = r[in.res];
  auto F = [&](int k) { return r[k].f; };
  auto I = [&](int k) { return r[k].i; };
  auto setI = [&](int64_t v) { out.i = wrapInt(in.w, v); };
  auto divZero = [&]() {
    why = "integer division by zero";
    return false;
  };
  switch (in.code) {
  case Code::UnF:
    out.f = in.round(in.un(F(in.a)));
    return true;
  case Code::BinF:
    out.f = in.round(in.bin(F(in.a), F(in.b)));
    return true;
  case Code::Fma:
    out.f = in.round(std::fma(F(in.a), F(in.b), F(in.c)));
    return true;
  case Code::FPowI:
    out.f = in.round(std::pow(F(in.a), double(signedVal(in.sw, I(in.b)))));
    return true;
  case Code::RoundF:
    out.f = in.round(F(in.a));
    return true;
  case Code::CmpF:
    out.i = cmpF(in.attr, F(in.a), F(in.b));
    return true;
  case Code::TestF:
    out.i = in.test(F(in.a));
    return true;
  case Code::AddI:
    setI(int64_t(uint64_t(I(in.a)) + uint64_t(I(in.b))));
    return true;
  case Code::SubI:
    setI(int64_t(uint64_t(I(in.a)) - uint64_t(I(in.b))));
    return true;
  case Code::MulI:
    setI(int64_t(uint64_t(I(in.a)) * uint64_t(I(in.b))));
    return true;
  case Code::DivSI:
  case Code::RemSI:
  case Code::CeilDivSI:
  case Code::FloorDivSI: {
    int64_t a = signedVal(in.w, I(in.a)), b = signedVal(in.w, I(in.b));
    if (b == 0)
      return divZero();
    if (b == -1) { // avoid INT64_MIN / -1
      setI(in.code == Code::RemSI ? 0 : int64_t(0 - uint64_t(a)));
      return true;
    }
    int64_t q = a / b, m = a % b;
    if (in.code == Code::RemSI)
      setI(m);
    else if (in.code == Code::CeilDivSI)
      setI(q + (m != 0 && ((m > 0) == (b > 0))));
    else if (in.code == Code::FloorDivSI)
      setI(q - (m != 0 && ((m < 0) != (b < 0))));
    else
      setI(q);
    return true;
  }
  case Code::DivUI:
  case Code::RemUI:
  case Code::CeilDivUI: {
    uint64_t a = unsignedVal(in.w, I(in.a)), b = unsignedVal(in.w, I(in.b));
    if (b == 0)
      return divZero();
    if (in.code == Code::DivUI)
      setI(int64_t(a / b));
    else if (in.code == Code::RemUI)
      setI(int64_t(a % b));
    else
      setI(int64_t(a / b + (a % b != 0)));
    return true;
  }
  case Code::MaxSI:
    setI(std::max(signedVal(in.w, I(in.a)), signedVal(in.w, I(in.b))));
    return true;
  case Code::MinSI:
    setI(std::min(signedVal(in.w, I(in.a)), signedVal(in.w, I(in.b))));
    return true;
  case Code::MaxUI:
    setI(int64_t(
        std::max(unsignedVal(in.w, I(in.a)), unsignedVal(in.w, I(in.b)))));
    return true;
  case Code::MinUI:
    setI(int64_t(
        std::min(unsignedVal(in.w, I(in.a)), unsignedVal(in.w, I(in.b)))));
    return true;
  case Code::AndI:
    setI(I(in.a) & I(in.b));
    return true;
  case Code::OrI:
    setI(I(in.a) | I(in.b));
    return true;
  case Code::XOrI:
    setI(I(in.a) ^ I(in.b));
    return true;
  case Code::ShLI:
  case Code::ShRSI:
  case Code::ShRUI: {
    uint64_t s = unsignedVal(in.w, I(in.b));
    if (s >= in.w) { // poison in arith; 0 here
      setI(0);
      return true;
    }
    if (in.code == Code::ShLI)
      setI(int64_t(unsignedVal(in.w, I(in.a)) << s));
    else if (in.code == Code::ShRUI)
      setI(int64_t(unsignedVal(in.w, I(in.a)) >> s));
    else
      setI(signedVal(in.w, I(in.a)) >> s);
    return true;
  }
  case Code::AbsI: {
    int64_t a = signedVal(in.w, I(in.a));
    setI(a < 0 ? int64_t(0 - uint64_t(a)) : a);
    return true;
  }
  case Code::CmpI:
    out.i = cmpI(in.attr, in.sw, I(in.a), I(in.b));
    return true;
  case Code::FPToSI:
    setI(toInt(F(in.a)));
    return true;
  case Code::FPToUI:
    setI(int64_t(toUInt(F(in.a))));
    return true;
  case Code::SIToFP:
    out.f = in.round(double(signedVal(in.sw, I(in.a))));
    return true;
  case Code::UIToFP:
    out.f = in.round(double(unsignedVal(in.sw, I(in.a))));
    return true;
  case Code::SExt:
    setI(signedVal(in.sw, I(in.a)));
    return true;
  case Code::ZExt:
    setI(int64_t(unsignedVal(in.sw, I(in.a))));
    return true;
  case Code::Select:
    out = I(in.a) ? r[in.b] : r[in.c];
    return true;
  case Code::Index:
    if (size_t(in.attr) >= numLoops) {
      why = "linalg.index dimension out of range";
      return false;
    }
    out.i = loop[in.attr];
    return true;
  case Code::Extract: {
    const Tensor &t = *in.tensor;
    int64_t k = 0;
    for (size_t d = 0; d < in.indices.size(); ++d) {
      int64_t i = I(in.indices[d]);
      if (i < 0 || i >= t.shape[d]) {
        why = "tensor.extract index " + std::to_string(i) +
              " out of range for dim " + std::to_string(d) + " of size " +
              std::to_string(t.shape[d]);
        return false;
      }
      k += i * in.strides[d];
    }
    if (t.isFloat())
      out.f = t.f[k];
    else
      out.i = t.i[k];
    return true;
  }
  }
  why = "bad instruction";
  return false;
}

//===----------------------------------------------------------------------===//
// The interpreter
//===----------------------------------------------------------------------===//

struct ValueHash {
  size_t operator()(Value v) const { return hash_value(v); }
};

class Interpreter {
public:
  explicit Interpreter(std::string &error) : error(error) {}

  LogicalResult run(func::FuncOp func, ArrayRef<Tensor> inputs,
                    std::vector<Tensor> &results);

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
  LogicalResult checkResults(Operation *op);
  LogicalResult evalConstant(arith::ConstantOp op);
  LogicalResult evalScalarOp(Operation *op);
  LogicalResult evalElementwise(Operation *op);
  LogicalResult evalStructured(linalg::LinalgOp op);
  LogicalResult evalSoftmax(linalg::SoftmaxOp op);
  LogicalResult evalTensorOp(Operation *op);
  LogicalResult evalIndexBody(Operation *op, Block &body,
                              ArrayRef<int64_t> shape, Tensor &out,
                              function_ref<bool(ArrayRef<int64_t>)> skip);
  LogicalResult evalMoE(Operation *op);
  LogicalResult evalTopK(moe::TopKOp op);
  LogicalResult evalScatterElements(moe::ScatterElementsOp op);
  LogicalResult evalScatterND(moe::ScatterNDOp op);
  LogicalResult evalRoute(moe::RouteOp op);
  LogicalResult evalExperts(moe::ExpertsOp op);

  // Compiling scalar code.
  LogicalResult compileOp(Operation *op, Plan &plan,
                          DenseMap<Value, int> &slots);
  FailureOr<int> slotOf(Value v, Operation *user, Plan &plan,
                        DenseMap<Value, int> &slots);
  LogicalResult compileBody(Block &body, Plan &plan,
                            DenseMap<Value, int> &slots);
  LogicalResult runPlan(const Plan &plan, Scalar *regs, ArrayRef<int64_t> loop);

  const Tensor &T(Value v) { return tensors.find(v)->second; }
  Scalar S(Value v) { return scalars.lookup(v); }
  int64_t idx(Value v) { return scalars.lookup(v).i; }
  /// The value of `v` for `user` to own: moved out when `user` is its last
  /// use and uses it only once, else copied.
  Tensor take(Value v, Operation *user);
  void setTensor(Value v, Tensor t) { tensors[v] = std::move(t); }
  /// Static or dynamic (SSA) sizes of OpFoldResults.
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

  // Node-based map: references to entries stay valid while others are
  // inserted.
  std::unordered_map<Value, Tensor, ValueHash> tensors;
  DenseMap<Value, Scalar> scalars;
  /// Index of the top-level op that uses a value last.
  DenseMap<Value, unsigned> lastUse;
  unsigned current = 0;
  std::string &error;
};

} // namespace moec::eval::detail

#endif // MOEC_LIB_EVAL_EVALINTERNAL_H
