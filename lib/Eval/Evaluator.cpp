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
// This file holds the entry point, the walk over the function and the
// dispatch of each op to the file for its dialect (see EvalInternal.h).
//
//===----------------------------------------------------------------------===//

#include "EvalInternal.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace moec;
using namespace moec::eval;
using namespace moec::eval::detail;

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

FailureOr<std::vector<Tensor>> moec::eval::evaluate(func::FuncOp func,
                                                    ArrayRef<Tensor> inputs,
                                                    std::string &error) {
  Interpreter interp(error);
  std::vector<Tensor> results;
  if (failed(interp.run(func, inputs, results)))
    return failure();
  return results;
}
