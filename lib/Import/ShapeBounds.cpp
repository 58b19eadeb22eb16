//===- ShapeBounds.cpp - shapes that can never agree at run time ----------===//

#include "ShapeBounds.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/DenseMap.h"

#include <cstdint>
#include <limits>

using namespace mlir;

namespace {
constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max();

/// An upper bound of `v`'s size along `dim` (kUnbounded when none is
/// known), following the ops the importer builds around run-time sizes.
int64_t upperBound(Value v, int64_t dim, int depth = 0) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  if (!t || dim < 0 || dim >= t.getRank())
    return kUnbounded;
  if (!t.isDynamicDim(dim))
    return t.getDimSize(dim);
  if (depth > 32)
    return kUnbounded;
  Operation *def = v.getDefiningOp();
  if (!def)
    return kUnbounded;
  if (auto c = dyn_cast<tensor::CastOp>(def))
    return upperBound(c.getSource(), dim, depth + 1);
  if (auto s = dyn_cast<tensor::ExtractSliceOp>(def)) {
    if (s.getSourceType().getRank() != t.getRank())
      return kUnbounded; // rank-reducing: dims do not line up
    int64_t b = upperBound(s.getSource(), dim, depth + 1);
    int64_t off = s.getStaticOffsets()[dim];
    if (b != kUnbounded && !ShapedType::isDynamic(off) && off >= 0)
      b = std::max<int64_t>(0, b - off);
    int64_t stride = s.getStaticStrides()[dim];
    if (b != kUnbounded && !ShapedType::isDynamic(stride) && stride > 1)
      b = (b + stride - 1) / stride;
    return b;
  }
  if (auto tr = dyn_cast<linalg::TransposeOp>(def))
    return upperBound(tr.getInput(), tr.getPermutation()[dim], depth + 1);
  if (auto e = dyn_cast<tensor::EmptyOp>(def)) {
    Value size = e.getDynamicSize(dim);
    if (auto d = size.getDefiningOp<tensor::DimOp>())
      if (std::optional<int64_t> i = d.getConstantIndex())
        return upperBound(d.getSource(), *i, depth + 1);
    return kUnbounded;
  }
  if (auto l = dyn_cast<linalg::LinalgOp>(def)) {
    // A result is as large as its init.
    auto r = cast<OpResult>(v);
    return upperBound(l.getDpsInits()[r.getResultNumber()], dim, depth + 1);
  }
  return kUnbounded;
}

std::string describeLoc(Location loc) {
  if (auto n = dyn_cast<NameLoc>(loc)) {
    std::string file;
    if (auto f = dyn_cast<FileLineColLoc>(n.getChildLoc()))
      file = f.getFilename().str() + ": ";
    return file + "node '" + n.getName().str() + "'";
  }
  std::string s;
  llvm::raw_string_ostream os(s);
  os << loc;
  return s;
}
} // namespace

std::string moec::onnximport::unsatisfiableShapes(ModuleOp module) {
  std::string error;
  module.walk([&](linalg::LinalgOp op) {
    SmallVector<AffineMap> maps = op.getIndexingMapsArray();
    unsigned loops = op.getNumLoops();
    // The static size each loop must have, from the operands that fix it.
    SmallVector<int64_t> need(loops, ShapedType::kDynamic);
    for (OpOperand &o : op->getOpOperands()) {
      auto t = dyn_cast<RankedTensorType>(o.get().getType());
      if (!t)
        continue;
      AffineMap m = maps[o.getOperandNumber()];
      for (unsigned r = 0; r < m.getNumResults(); ++r)
        if (auto d = dyn_cast<AffineDimExpr>(m.getResult(r)))
          if (!t.isDynamicDim(r))
            need[d.getPosition()] = t.getDimSize(r);
    }
    for (OpOperand &o : op->getOpOperands()) {
      auto t = dyn_cast<RankedTensorType>(o.get().getType());
      if (!t)
        continue;
      AffineMap m = maps[o.getOperandNumber()];
      for (unsigned r = 0; r < m.getNumResults(); ++r) {
        auto d = dyn_cast<AffineDimExpr>(m.getResult(r));
        if (!d || !t.isDynamicDim(r))
          continue;
        int64_t n = need[d.getPosition()];
        if (ShapedType::isDynamic(n))
          continue;
        int64_t b = upperBound(o.get(), r);
        if (b >= n)
          continue;
        error = describeLoc(op->getLoc()) +
                ": the model's shapes can never agree: a dim computed at " +
                "run time (at most " + std::to_string(b) +
                ", the size of the tensor it is sliced from) must equal " +
                std::to_string(n) + " here";
        return WalkResult::interrupt();
      }
    }
    return WalkResult::advance();
  });
  return error;
}
