//===- StaticShapes.cpp - data-dependent shapes the plans cannot hold ----===//

#include "moec/Analysis/StaticShapes.h"

#include "moec/Analysis/Mesh.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/SetVector.h"

using namespace mlir;
using namespace moec;

namespace {

bool hasDynamicDim(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  return r && !r.hasStaticShape();
}

/// The ONNX op an op with a data-dependent result comes from, for the
/// error ("NonZero"), or its MLIR name.
std::string dataDependentOpName(Operation *op) {
  if (isa<moe::NonZeroOp>(op))
    return "NonZero";
  return "'" + op->getName().getStringRef().str() + "'";
}

} // namespace

// Without this check the partitioning failed much later, with an error in
// every op of the loop.
LogicalResult moec::checkStaticShapes(func::FuncOp func, StringRef forWhat) {
  Operation *origin = nullptr;
  func.walk([&](Operation *op) {
    if (isa<moe::DispatchOp>(op) ||
        llvm::none_of(op->getResultTypes(), hasDynamicDim) ||
        llvm::any_of(op->getOperandTypes(), hasDynamicDim))
      return WalkResult::advance();
    origin = op;
    return WalkResult::interrupt();
  });
  if (!origin)
    return success();
  // The unraised router this op depends on, if any.
  Operation *router = nullptr;
  SmallVector<Operation *> work{origin};
  DenseSet<Operation *> seen{origin};
  while (!work.empty() && !router) {
    Operation *op = work.pop_back_val();
    // Operands, and the values a region reads from outside (a gather's
    // table, a one-hot's indices).
    llvm::SetVector<Value> used(op->operand_begin(), op->operand_end());
    getUsedValuesDefinedAbove(op->getRegions(), used);
    for (Value v : used) {
      Operation *def = v.getDefiningOp();
      if (!def || !seen.insert(def).second)
        continue;
      if (def->hasAttr(kNotRaisedAttr)) {
        router = def;
        break;
      }
      work.push_back(def);
    }
  }
  std::string type;
  llvm::raw_string_ostream(type)
      << *llvm::find_if(origin->getResultTypes(), hasDynamicDim);
  InFlightDiagnostic d = origin->emitError();
  d << "a data-dependent shape (" << dataDependentOpName(origin) << ": " << type
    << ") outside a raised MoE layer cannot be partitioned (" << forWhat
    << "): plans need static shapes";
  if (router) {
    std::string node = nodeName(router->getLoc());
    d << "; the MoE layer routed by "
      << (node.empty() ? "'" + router->getName().getStringRef().str() + "'"
                       : "node '" + node + "'")
      << " was not raised: "
      << router->getAttrOfType<StringAttr>(kNotRaisedAttr).getValue();
  } else {
    d << "; it is not in an MoE layer that moe-raise-experts recognised "
         "(docs/raising.md lists the forms it raises)";
  }
  return failure();
}
