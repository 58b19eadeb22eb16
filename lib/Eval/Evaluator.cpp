//===- Evaluator.cpp - reference interpreter for moec's IR ----------------===//
//
// Top-level ops of the function run one after the other on concrete tensors.
// Scalar code (linalg bodies, tensor.pad/generate bodies, scalar arith/math
// ops, element-wise arith/math ops on tensors) is first compiled into a small
// register program (`Plan`) and then run per element, so the inner loops do
// no map look-ups. linalg structured ops, named or generic, share one path:
// the loop ranges come from the run-time operand shapes, each operand's
// indexing map becomes a linear offset that is updated incrementally, and the
// body program runs at every point of the loop space.
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
#include <limits>
#include <numeric>
#include <unordered_map>

using namespace mlir;
using namespace moec;
using namespace moec::eval;

Tensor Tensor::zeros(ArrayRef<int64_t> shape, Type elementType) {
  Tensor t;
  t.shape.assign(shape.begin(), shape.end());
  t.elementType = elementType;
  if (t.isFloat())
    t.f.assign(t.numElements(), 0.0);
  else
    t.i.assign(t.numElements(), 0);
  return t;
}

int64_t Tensor::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

bool Tensor::isFloat() const { return isa<FloatType>(elementType); }

namespace {

//===----------------------------------------------------------------------===//
// Element types
//===----------------------------------------------------------------------===//

bool isSupportedElement(Type t) {
  if (isa<FloatType>(t) || t.isIndex())
    return true;
  auto it = dyn_cast<IntegerType>(t);
  return it && it.getWidth() <= 64;
}

/// Bit width of an integer or index type (index: 64).
unsigned intWidth(Type t) {
  if (auto it = dyn_cast<IntegerType>(t))
    return it.getWidth();
  return 64;
}

/// Wraps `v` to `w` bits, sign-extended; i1 as 0/1.
int64_t wrapInt(unsigned w, int64_t v) {
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
int64_t signedVal(unsigned w, int64_t v) { return w == 1 ? -(v & 1) : v; }

/// The unsigned value of a stored `w`-bit integer.
uint64_t unsignedVal(unsigned w, int64_t v) {
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
void forEachSliceElement(ArrayRef<int64_t> sizes, ArrayRef<int64_t> offs,
                         ArrayRef<int64_t> steps, ArrayRef<int64_t> strides,
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

SmallVector<int64_t> stridesOf(ArrayRef<int64_t> shape) {
  SmallVector<int64_t> s(shape.size(), 1);
  for (int64_t d = int64_t(shape.size()) - 2; d >= 0; --d)
    s[d] = s[d + 1] * shape[d + 1];
  return s;
}

int64_t product(ArrayRef<int64_t> v) {
  int64_t n = 1;
  for (int64_t d : v)
    n *= d;
  return n;
}

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [k, d] : llvm::enumerate(shape))
    s += (k ? ", " : "") + std::to_string(d);
  return s + "]";
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

bool cmpF(int64_t pred, double a, double b) {
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

bool cmpI(int64_t pred, unsigned w, int64_t a, int64_t b) {
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
int64_t toInt(double v) {
  if (std::isnan(v))
    return 0;
  v = std::trunc(v);
  if (v <= -9223372036854775808.0)
    return std::numeric_limits<int64_t>::min();
  if (v >= 9223372036854775807.0)
    return std::numeric_limits<int64_t>::max();
  return int64_t(v);
}

uint64_t toUInt(double v) {
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

double nanMax(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
}
double nanMin(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b);
}

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

Tensor Interpreter::take(Value v, Operation *user) {
  auto it = tensors.find(v);
  auto last = lastUse.find(v);
  if (last != lastUse.end() && last->second == current) {
    unsigned uses = 0;
    user->walk([&](Operation *o) {
      for (Value x : o->getOperands())
        uses += x == v;
    });
    if (uses == 1) {
      Tensor t = std::move(it->second);
      tensors.erase(it);
      return t;
    }
  }
  return it->second;
}

LogicalResult Interpreter::run(func::FuncOp func, ArrayRef<Tensor> inputs,
                               std::vector<Tensor> &results) {
  if (func.isExternal()) {
    error = "the function has no body";
    return failure();
  }
  Block &entry = func.getBody().front();
  if (!func.getBody().hasOneBlock()) {
    error = "functions with more than one block are not supported";
    return failure();
  }
  if (inputs.size() != entry.getNumArguments()) {
    error = "the function takes " + std::to_string(entry.getNumArguments()) +
            " inputs, " + std::to_string(inputs.size()) + " given";
    return failure();
  }
  for (auto [arg, in] : llvm::zip(entry.getArguments(), inputs)) {
    std::string which = "input " + std::to_string(arg.getArgNumber());
    auto type = dyn_cast<RankedTensorType>(arg.getType());
    if (!type || !isSupportedElement(type.getElementType())) {
      error = which + " has an unsupported type";
      return failure();
    }
    if (in.elementType != type.getElementType()) {
      error = which + " has the wrong element type";
      return failure();
    }
    bool ok = int64_t(in.shape.size()) == type.getRank();
    for (int64_t d = 0; ok && d < type.getRank(); ++d)
      ok = in.shape[d] >= 0 &&
           (type.isDynamicDim(d) || type.getDimSize(d) == in.shape[d]);
    if (!ok) {
      std::string s;
      llvm::raw_string_ostream os(s);
      os << which << " has shape " << shapeStr(in.shape) << ", the function "
         << "takes " << type;
      error = s;
      return failure();
    }
    size_t n = size_t(in.numElements());
    if ((in.isFloat() ? in.f.size() : in.i.size()) != n) {
      error = which + " holds " +
              std::to_string(in.isFloat() ? in.f.size() : in.i.size()) +
              " elements, its shape " + shapeStr(in.shape) + " needs " +
              std::to_string(n);
      return failure();
    }
    Tensor t = in;
    t.f.resize(t.isFloat() ? n : 0);
    t.i.resize(t.isFloat() ? 0 : n);
    FloatRound round = FloatRound::of(t.elementType);
    for (double &v : t.f)
      v = round(v);
    unsigned w = intWidth(t.elementType);
    for (int64_t &v : t.i)
      v = wrapInt(w, v);
    tensors[arg] = std::move(t);
  }

  // Last uses, to free (or reuse) tensors nobody needs any more.
  unsigned numOps = 0;
  for (Operation &op : entry) {
    op.walk([&](Operation *inner) {
      for (Value v : inner->getOperands())
        lastUse[v] = numOps;
    });
    ++numOps;
  }
  std::vector<SmallVector<Value>> dying(numOps);
  for (auto [v, i] : lastUse)
    dying[i].push_back(v);

  for (Operation &op : entry) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      for (Value v : ret.getOperands()) {
        if (isa<RankedTensorType>(v.getType())) {
          results.push_back(T(v));
          continue;
        }
        Type t = v.getType();
        Tensor s = Tensor::zeros({}, t);
        if (s.isFloat())
          s.f[0] = S(v).f;
        else
          s.i[0] = S(v).i;
        results.push_back(std::move(s));
      }
      return success();
    }
    for (Value v : op.getOperands()) {
      bool have = isa<TensorType>(v.getType()) ? tensors.count(v) != 0
                                               : scalars.count(v) != 0;
      if (!have)
        return fail(&op, "an operand has no value");
    }
    if (failed(evalOp(&op)) || failed(checkResults(&op)))
      return failure();
    for (Value v : dying[current]) {
      tensors.erase(v);
      scalars.erase(v);
    }
    ++current;
  }
  error = "the function does not end in func.return";
  return failure();
}

LogicalResult Interpreter::checkResults(Operation *op) {
  for (Value r : op->getResults()) {
    auto type = dyn_cast<RankedTensorType>(r.getType());
    if (!type) {
      if (isa<TensorType>(r.getType()))
        return fail(op, "unranked tensors are not supported");
      if (!scalars.count(r))
        return fail(op, "produced no value");
      continue;
    }
    auto it = tensors.find(r);
    if (it == tensors.end())
      return fail(op, "produced no value");
    Tensor &t = it->second;
    bool ok = int64_t(t.shape.size()) == type.getRank();
    for (int64_t d = 0; ok && d < type.getRank(); ++d)
      ok = type.isDynamicDim(d) || type.getDimSize(d) == t.shape[d];
    if (!ok) {
      std::string s;
      llvm::raw_string_ostream os(s);
      os << "the result has shape " << shapeStr(t.shape)
         << ", which contradicts its type " << type;
      return fail(op, s);
    }
    t.elementType = type.getElementType();
  }
  return success();
}

LogicalResult Interpreter::evalOp(Operation *op) {
  for (Type t : op->getResultTypes()) {
    Type elt = getElementTypeOrSelf(t);
    if (!isSupportedElement(elt)) {
      std::string s;
      llvm::raw_string_ostream os(s);
      os << "unsupported type " << t;
      return fail(op, s);
    }
  }
  if (auto c = dyn_cast<arith::ConstantOp>(op))
    return evalConstant(c);
  if (auto s = dyn_cast<linalg::SoftmaxOp>(op))
    return evalSoftmax(s);
  if (auto l = dyn_cast<linalg::LinalgOp>(op))
    return evalStructured(l);
  Dialect *dialect = op->getDialect();
  if (isa_and_nonnull<tensor::TensorDialect>(dialect))
    return evalTensorOp(op);
  if (isa_and_nonnull<moe::MoEDialect>(dialect))
    return evalMoE(op);
  if (op->getNumRegions() == 0 && op->getNumResults() == 1 &&
      isa_and_nonnull<arith::ArithDialect, math::MathDialect>(dialect)) {
    if (isa<RankedTensorType>(op->getResult(0).getType()))
      return evalElementwise(op);
    if (!isa<ShapedType>(op->getResult(0).getType()))
      return evalScalarOp(op);
  }
  return fail(op, "unsupported op");
}

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
    if (!blob)
      return fail(op, "the weight blob '" + res.getRawHandle().getKey() +
                          "' has no data (printed with elided weights? use "
                          "moec --emit-weights)");
    ArrayRef<char> data = blob->getData();
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
    a.coef.assign(numLoops, 0);
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

//===----------------------------------------------------------------------===//
// tensor
//===----------------------------------------------------------------------===//

/// Copies element `from` of `src` to element `to` of `dst` (same kind).
inline void copyElt(const Tensor &src, int64_t from, Tensor &dst, int64_t to) {
  if (dst.isFloat())
    dst.f[to] = src.f[from];
  else
    dst.i[to] = src.i[from];
}

LogicalResult
Interpreter::evalIndexBody(Operation *op, Block &body, ArrayRef<int64_t> shape,
                           Tensor &out,
                           function_ref<bool(ArrayRef<int64_t>)> skip) {
  // tensor.pad and tensor.generate: the body maps an index to an element.
  Plan plan;
  DenseMap<Value, int> slots;
  if (body.getNumArguments() != shape.size())
    return fail(op, "the body takes the wrong number of indices");
  plan.init.resize(shape.size());
  for (BlockArgument arg : body.getArguments())
    slots[arg] = int(arg.getArgNumber());
  if (failed(compileBody(body, plan, slots)))
    return failure();
  if (plan.yields.size() != 1)
    return fail(op, "the body must yield one value");
  std::vector<Scalar> regs = plan.init;
  SmallVector<int64_t> pos(shape.size(), 0);
  for (int64_t k = 0, n = out.numElements(); k < n; ++k) {
    int64_t rem = k;
    for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
      pos[d] = rem % shape[d];
      rem /= shape[d];
    }
    if (skip(pos))
      continue;
    for (size_t d = 0; d < shape.size(); ++d)
      regs[d].i = pos[d];
    if (failed(runPlan(plan, regs.data(), {})))
      return failure();
    const Scalar &s = regs[plan.yields[0]];
    if (out.isFloat())
      out.f[k] = s.f;
    else
      out.i[k] = s.i;
  }
  return success();
}

LogicalResult Interpreter::evalTensorOp(Operation *op) {
  auto dynShape = [&](RankedTensorType type, ValueRange dyn,
                      SmallVectorImpl<int64_t> &shape) -> LogicalResult {
    unsigned k = 0;
    for (int64_t d : type.getShape()) {
      int64_t s = ShapedType::isDynamic(d) ? idx(dyn[k++]) : d;
      if (s < 0)
        return fail(op, "negative size " + Twine(s));
      shape.push_back(s);
    }
    return success();
  };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](tensor::EmptyOp e) -> LogicalResult {
        SmallVector<int64_t> shape;
        if (failed(dynShape(e.getType(), e.getDynamicSizes(), shape)))
          return failure();
        setTensor(e, Tensor::zeros(shape, e.getType().getElementType()));
        return success();
      })
      .Case([&](tensor::SplatOp s) -> LogicalResult {
        SmallVector<int64_t> shape;
        if (failed(dynShape(s.getType(), s.getDynamicSizes(), shape)))
          return failure();
        Tensor t = Tensor::zeros(shape, s.getType().getElementType());
        Scalar v = S(s.getInput());
        std::fill(t.f.begin(), t.f.end(), v.f);
        std::fill(t.i.begin(), t.i.end(), v.i);
        setTensor(s, std::move(t));
        return success();
      })
      .Case([&](tensor::DimOp d) -> LogicalResult {
        const Tensor &t = T(d.getSource());
        int64_t i = idx(d.getIndex());
        if (i < 0 || i >= int64_t(t.shape.size()))
          return fail(op, "dim index " + Twine(i) + " out of range");
        scalars[d] = Scalar{0, t.shape[i]};
        return success();
      })
      .Case([&](tensor::ExtractOp e) -> LogicalResult {
        Plan plan;
        DenseMap<Value, int> slots;
        if (failed(compileOp(op, plan, slots)))
          return failure();
        std::vector<Scalar> regs = plan.init;
        if (failed(runPlan(plan, regs.data(), {})))
          return failure();
        scalars[e] = regs[slots[e]];
        return success();
      })
      .Case([&](tensor::FromElementsOp f) -> LogicalResult {
        auto type = f.getType();
        Tensor t = Tensor::zeros(type.getShape(), type.getElementType());
        if (int64_t(f.getElements().size()) != t.numElements())
          return fail(op, "wrong number of elements");
        for (auto [k, v] : llvm::enumerate(f.getElements())) {
          if (t.isFloat())
            t.f[k] = S(v).f;
          else
            t.i[k] = S(v).i;
        }
        setTensor(f, std::move(t));
        return success();
      })
      .Case([&](tensor::ReshapeOp r) -> LogicalResult {
        const Tensor &s = T(r.getShape());
        if (s.isFloat() || s.shape.size() != 1)
          return fail(op, "the shape operand must be a 1-d integer tensor");
        std::vector<int64_t> shape(s.i.begin(), s.i.end());
        for (int64_t d : shape)
          if (d < 0)
            return fail(op, "negative size in shape " + shapeStr(shape));
        Tensor t = take(r.getSource(), op);
        if (product(shape) != t.numElements())
          return fail(op, "cannot reshape " + shapeStr(t.shape) + " to " +
                              shapeStr(shape));
        t.shape = std::move(shape);
        setTensor(r, std::move(t));
        return success();
      })
      .Case([&](tensor::CastOp c) {
        setTensor(c, take(c.getSource(), op));
        return success();
      })
      .Case([&](tensor::CollapseShapeOp c) -> LogicalResult {
        Tensor t = take(c.getSrc(), op);
        SmallVector<int64_t> shape;
        size_t seen = 0;
        for (const auto &group : c.getReassociationIndices()) {
          int64_t p = 1;
          for (int64_t d : group)
            p *= d < int64_t(t.shape.size()) ? t.shape[d] : 0;
          seen += group.size();
          shape.push_back(p);
        }
        if (seen != t.shape.size())
          return fail(op, "reassociation does not match the source rank");
        t.shape.assign(shape.begin(), shape.end());
        setTensor(c, std::move(t));
        return success();
      })
      .Case([&](tensor::ExpandShapeOp e) -> LogicalResult {
        Tensor t = take(e.getSrc(), op);
        SmallVector<int64_t> shape = values(e.getMixedOutputShape());
        auto groups = e.getReassociationIndices();
        if (groups.size() != t.shape.size())
          return fail(op, "reassociation does not match the source rank");
        for (auto [g, group] : llvm::enumerate(groups)) {
          int64_t p = 1;
          for (int64_t d : group)
            p *= shape[d];
          if (p != t.shape[g])
            return fail(op, "cannot expand " + shapeStr(t.shape) + " to " +
                                shapeStr(shape));
        }
        t.shape.assign(shape.begin(), shape.end());
        setTensor(e, std::move(t));
        return success();
      })
      .Case([&](tensor::ExtractSliceOp s) -> LogicalResult {
        const Tensor &src = T(s.getSource());
        SmallVector<int64_t> offs = values(s.getMixedOffsets()),
                             sizes = values(s.getMixedSizes()),
                             steps = values(s.getMixedStrides());
        if (offs.size() != src.shape.size())
          return fail(op, "rank mismatch");
        for (size_t d = 0; d < offs.size(); ++d) {
          int64_t last = offs[d] + (sizes[d] - 1) * steps[d];
          if (sizes[d] < 0 ||
              (sizes[d] > 0 && (offs[d] < 0 || offs[d] >= src.shape[d] ||
                                last < 0 || last >= src.shape[d])))
            return fail(op, "slice out of bounds in dim " + Twine(d) +
                                " (offset " + Twine(offs[d]) + ", size " +
                                Twine(sizes[d]) + ", stride " +
                                Twine(steps[d]) + ", source " +
                                shapeStr(src.shape) + ")");
        }
        SmallVector<int64_t> st = stridesOf(src.shape);
        Tensor out = Tensor::zeros(sizes, s.getType().getElementType());
        forEachSliceElement(
            sizes, offs, steps, st,
            [&](int64_t k, int64_t flat) { copyElt(src, flat, out, k); });
        if (s.getType().getRank() != int64_t(sizes.size())) {
          // Rank-reducing: the dropped unit dims go, the data order stays.
          llvm::SmallBitVector dropped = s.getDroppedDims();
          std::vector<int64_t> kept;
          for (size_t d = 0; d < sizes.size(); ++d)
            if (!dropped.test(d))
              kept.push_back(sizes[d]);
          out.shape = std::move(kept);
        }
        setTensor(s, std::move(out));
        return success();
      })
      .Case([&](tensor::InsertSliceOp s) -> LogicalResult {
        const Tensor &src = T(s.getSource());
        SmallVector<int64_t> offs = values(s.getMixedOffsets()),
                             sizes = values(s.getMixedSizes()),
                             steps = values(s.getMixedStrides());
        Tensor dst = take(s.getDest(), op);
        if (offs.size() != dst.shape.size())
          return fail(op, "rank mismatch");
        if (product(sizes) != src.numElements())
          return fail(op, "source " + shapeStr(src.shape) +
                              " does not fill the slice " + shapeStr(sizes));
        for (size_t d = 0; d < offs.size(); ++d) {
          int64_t last = offs[d] + (sizes[d] - 1) * steps[d];
          if (sizes[d] < 0 ||
              (sizes[d] > 0 && (offs[d] < 0 || offs[d] >= dst.shape[d] ||
                                last < 0 || last >= dst.shape[d])))
            return fail(op, "slice out of bounds in dim " + Twine(d));
        }
        SmallVector<int64_t> st = stridesOf(dst.shape);
        forEachSliceElement(
            sizes, offs, steps, st,
            [&](int64_t k, int64_t flat) { copyElt(src, k, dst, flat); });
        setTensor(s, std::move(dst));
        return success();
      })
      .Case([&](tensor::ConcatOp c) -> LogicalResult {
        int64_t axis = c.getDim();
        SmallVector<const Tensor *> ins;
        for (Value v : c.getInputs())
          ins.push_back(&T(v));
        std::vector<int64_t> shape = ins[0]->shape;
        if (axis < 0 || axis >= int64_t(shape.size()))
          return fail(op, "axis out of range");
        shape[axis] = 0;
        for (const Tensor *t : ins) {
          bool ok = t->shape.size() == shape.size();
          for (size_t d = 0; ok && d < shape.size(); ++d)
            ok = int64_t(d) == axis || t->shape[d] == shape[d];
          if (!ok)
            return fail(op, "operand shapes " + shapeStr(ins[0]->shape) +
                                " and " + shapeStr(t->shape) +
                                " cannot be concatenated");
          shape[axis] += t->shape[axis];
        }
        Tensor out = Tensor::zeros(shape, c.getType().getElementType());
        int64_t outer = product(ArrayRef<int64_t>(shape).take_front(axis));
        int64_t k = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (const Tensor *t : ins) {
            int64_t chunk = t->numElements() / outer;
            for (int64_t j = 0; j < chunk; ++j, ++k)
              copyElt(*t, o * chunk + j, out, k);
          }
        setTensor(c, std::move(out));
        return success();
      })
      .Case([&](tensor::PadOp p) -> LogicalResult {
        const Tensor &src = T(p.getSource());
        SmallVector<int64_t> low = values(p.getMixedLowPad()),
                             high = values(p.getMixedHighPad());
        SmallVector<int64_t> shape;
        for (size_t d = 0; d < src.shape.size(); ++d) {
          if (low[d] < 0 || high[d] < 0)
            return fail(op, "negative padding");
          shape.push_back(low[d] + src.shape[d] + high[d]);
        }
        Tensor out = Tensor::zeros(shape, p.getType().getElementType());
        auto inside = [&](ArrayRef<int64_t> pos) {
          for (size_t d = 0; d < pos.size(); ++d)
            if (pos[d] < low[d] || pos[d] >= low[d] + src.shape[d])
              return false;
          return true;
        };
        if (failed(
                evalIndexBody(op, p.getRegion().front(), shape, out, inside)))
          return failure();
        SmallVector<int64_t> st = stridesOf(shape), pos(shape.size());
        for (int64_t k = 0, n = src.numElements(); k < n; ++k) {
          int64_t rem = k, flat = 0;
          for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
            pos[d] = rem % src.shape[d];
            rem /= src.shape[d];
          }
          for (size_t d = 0; d < shape.size(); ++d)
            flat += (pos[d] + low[d]) * st[d];
          copyElt(src, k, out, flat);
        }
        setTensor(p, std::move(out));
        return success();
      })
      .Case([&](tensor::GenerateOp g) -> LogicalResult {
        SmallVector<int64_t> shape;
        if (failed(dynShape(g.getType(), g.getDynamicExtents(), shape)))
          return failure();
        Tensor out = Tensor::zeros(shape, g.getType().getElementType());
        if (failed(evalIndexBody(op, g.getBody().front(), shape, out,
                                 [](ArrayRef<int64_t>) { return false; })))
          return failure();
        setTensor(g, std::move(out));
        return success();
      })
      .Default([&](Operation *) { return fail(op, "unsupported op"); });
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
           (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  case moe::Activation::silu:
    return x / (1 + std::exp(-x));
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
  if (k < 1 || k > e)
    return fail(op, "top_k " + Twine(k) + " with " + Twine(e) + " experts");
  if (groups < 1 || e % groups != 0 || keepGroups < 1 || keepGroups > groups)
    return fail(op, "bad grouping: " + Twine(groups) + " groups of " +
                        Twine(e) + " experts, " + Twine(keepGroups) + " kept");
  int64_t per = e / groups;
  if (groups > 1 && keepGroups * per < k)
    return fail(op, "the kept groups hold fewer than top_k experts");
  if (groups > 1 && op.getGroupScore() == moe::GroupScore::top2_sum && per < 2)
    return fail(op, "top2_sum needs at least two experts per group");
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
        v /= sum;
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
  std::vector<double> a(f), b(f), acc(h), y(h);
  for (int64_t t = 0; t < tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const double *xt = &x.f[t * h];
    for (int64_t j = 0; j < k; ++j) {
      int64_t ex = ids.i[t * k + j] - offset;
      if (ex < 0 || ex >= e)
        continue; // an expert held elsewhere contributes nothing
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
        double v = activate(op.getActivation(),
                            round(a[c] + (bg ? bg->f[ex * f + c] : 0.0)));
        if (up)
          v = round(v) * round(b[c] + (bu ? bu->f[ex * f + c] : 0.0));
        a[c] = round(v);
      }
      std::fill(y.begin(), y.end(), 0.0);
      for (int64_t c = 0; c < f; ++c) {
        const double *dr = &dn.f[(ex * f + c) * h];
        for (int64_t o = 0; o < h; ++o)
          y[o] += a[c] * dr[o];
      }
      double wt = w.f[t * k + j];
      for (int64_t o = 0; o < h; ++o)
        acc[o] += wt * round(y[o] + (bd ? bd->f[ex * h + o] : 0.0));
    }
    for (int64_t o = 0; o < h; ++o)
      out.f[t * h + o] = round(acc[o]);
  }
  setTensor(op.getResult(), std::move(out));
  return success();
}

} // namespace

FailureOr<std::vector<Tensor>> moec::eval::evaluate(func::FuncOp func,
                                                    ArrayRef<Tensor> inputs,
                                                    std::string &error) {
  Interpreter interp(error);
  std::vector<Tensor> results;
  if (failed(interp.run(func, inputs, results)))
    return failure();
  return results;
}
