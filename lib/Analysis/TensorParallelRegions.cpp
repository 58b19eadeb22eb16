//===- TensorParallelRegions.cpp - Megatron regions over tp --------------===//
//
// analyzeTensorParallel: the token-dims analysis in tensor-parallel mode,
// grown from column-split matmuls (docs/sharding.md, "Attention and dense
// layers over tp").
//
//===----------------------------------------------------------------------===//

#include "TokenDimsAnalysis.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/MathExtras.h"

#include <memory>

using namespace mlir;
using namespace moec;
using namespace moec::detail;

#define DEBUG_TYPE "moe-tensor-parallel"

int64_t TokenDimsAnalysis::columnSplits() const {
  int64_t count = 0;
  for (Operation *op : members)
    if (auto m = dyn_cast<linalg::MatmulOp>(op))
      if (!partials.contains(op) && facts.count(m.getInputs()[1]))
        ++count;
  return count;
}

int64_t TokenDimsAnalysis::splitWeightBytes() const {
  int64_t bytes = 0;
  for (auto &[v, d] : facts) {
    auto c = v.getDefiningOp<arith::ConstantOp>();
    auto t = dyn_cast<RankedTensorType>(v.getType());
    if (!c || !t || !t.hasStaticShape())
      continue;
    if (auto dense = dyn_cast<DenseElementsAttr>(c.getValue());
        dense && dense.isSplat())
      continue;
    bytes += t.getNumElements() *
             int64_t(llvm::divideCeil(t.getElementTypeBitWidth(), 8));
  }
  return bytes;
}

void TokenDimsAnalysis::grow(func::FuncOp func, Value seed, TokenDims dims,
                             const DenseSet<Value> &c,
                             const DenseSet<Value> &shared) {
  tp = true;
  claimed = &c;
  // Failed visits are the region's boundaries, not errors.
  ScopedDiagnosticHandler quiet(func.getContext(), [](Diagnostic &d) {
    LLVM_DEBUG(llvm::dbgs()
               << "  stop: " << d.getLocation() << ": " << d.str() << "\n");
    return success();
  });
  if (failed(set(seed, dims, func.getOperation())))
    return;
  expand(func, shared);
}

void TokenDimsAnalysis::expand(func::FuncOp func,
                               const DenseSet<Value> &shared) {
  Block &top = func.getBody().front();
  while (!worklist.empty()) {
    Value v = worklist.pop_back_val();
    if (!facts.count(v))
      continue; // a fact a failed visit took back
    // A constant's split belongs to the use that set it: its other users
    // (a norm weight of all ones the exporter shares between layers) do
    // not join the region.
    // The same holds for a value computed from constants alone that
    // several ops read (a slice of a zero buffer the layers' ScatterNDs
    // share): it is sliced where the region reads it.
    if (v.getDefiningOp<arith::ConstantOp>() || shared.contains(v))
      continue;
    SmallVector<Operation *> ops;
    if (Operation *def = v.getDefiningOp())
      ops.push_back(def);
    for (Operation *user : v.getUsers())
      if (Operation *a = top.findAncestorOpInBlock(*user))
        ops.push_back(a);
    for (Operation *op : ops) {
      if (boundaries.contains(op))
        continue;
      journal.clear();
      pendingPartial = nullptr;
      if (succeeded(visit(op))) {
        members.insert(op);
        if (pendingPartial) {
          partials.insert(pendingPartial);
          partialResults.insert(pendingPartial->getResult(0));
          // A split in the residual stream reaches every later layer's
          // projections: stop early, the region is not kept.
          if (int64_t(partials.size()) > columnSplits() + 1) {
            aborted = true;
            return;
          }
        }
        continue;
      }
      LLVM_DEBUG(llvm::dbgs() << "  boundary " << op->getName() << " at "
                              << op->getLoc() << "\n");
      for (Value j : journal)
        facts.erase(j);
      boundaries.insert(op);
      members.remove(op);
      rowSlices.remove(op);
      rowGathers.remove(op);
      reduceScatters.remove(op);
      if (partials.remove(op))
        partialResults.erase(op->getResult(0));
    }
  }
}

void moec::detail::constantLikeValues(func::FuncOp func,
                                      DenseSet<Value> &constantLike,
                                      DenseSet<Value> &shared) {
  for (Operation &op : func.getBody().front()) {
    if (op.getNumRegions() && !isa<linalg::LinalgOp>(op))
      continue;
    if (!isa<arith::ConstantOp>(op) &&
        (!isMemoryEffectFree(&op) ||
         !llvm::all_of(op.getOperands(),
                       [&](Value v) { return constantLike.contains(v); })))
      continue;
    for (Value res : op.getResults()) {
      constantLike.insert(res);
      if (!isa<arith::ConstantOp, tensor::EmptyOp>(op) && !res.hasOneUse())
        shared.insert(res);
    }
  }
}

/// A weight: a constant, or a transpose (or other copy) of one.
static bool isWeight(Value v) {
  Operation *def = v.getDefiningOp();
  if (isa_and_nonnull<arith::ConstantOp>(def))
    return true;
  auto l = dyn_cast_or_null<linalg::LinalgOp>(def);
  return l && l.getNumDpsInputs() == 1 &&
         l.getDpsInputs()[0].getDefiningOp<arith::ConstantOp>();
}

SmallVector<SplitRegion, 0> moec::analyzeTensorParallel(func::FuncOp func,
                                                        int64_t n) {
  unshareInits(func);
  SmallVector<linalg::MatmulOp> seeds;
  for (auto m : func.getBody().front().getOps<linalg::MatmulOp>()) {
    auto b = cast<ShapedType>(m.getInputs()[1].getType());
    if (b.getRank() == 2 && b.hasStaticShape() && b.getDimSize(1) % n == 0 &&
        isWeight(m.getInputs()[1]))
      seeds.push_back(m);
  }
  // Values computed from constants alone, read by more than one op.
  DenseSet<Value> constantLike, shared;
  constantLikeValues(func, constantLike, shared);
  // A region is kept when it ends in partial sums (Megatron's column then
  // row split) or only at the results (the LM head's logits), with no more
  // row-parallel matmuls than column-parallel ones: a column split that
  // runs into the residual stream (an output projection seeded on its own)
  // would make every later layer's projections partial sums.
  auto keep = [](const TokenDimsAnalysis &a) {
    if (a.aborted)
      return false;
    bool atResults =
        !a.boundaries.empty() && llvm::all_of(a.boundaries, [](Operation *op) {
          return isa<func::ReturnOp>(op);
        });
    if (a.partials.empty() && !atResults)
      return false;
    return int64_t(a.partials.size()) <= a.columnSplits();
  };
  // Every seed's region on its own; the ones that split the most weight
  // bytes go first (DeepSeek's attention, seeded at q_b_proj or kv_b_proj,
  // before the q_a_proj -> q_b_proj pair, so that q_a_proj stays whole as
  // in vLLM), then each is grown again around the regions already taken
  // where it reached one of their values.
  struct Candidate {
    linalg::MatmulOp seed;
    int64_t weightBytes;
    std::unique_ptr<TokenDimsAnalysis> alone;
  };
  SmallVector<Candidate> candidates;
  DenseSet<Value> none;
  for (linalg::MatmulOp m : seeds) {
    auto a = std::make_unique<TokenDimsAnalysis>(n);
    a->grow(func, m.getResult(0), TokenDims{1, 1}, none, shared);
    if (keep(*a)) {
      int64_t bytes = a->splitWeightBytes();
      candidates.push_back({m, bytes, std::move(a)});
    }
  }
  llvm::stable_sort(candidates, [](const Candidate &x, const Candidate &y) {
    return x.weightBytes > y.weightBytes;
  });
  SmallVector<std::pair<Operation *, SplitRegion>, 0> taken;
  DenseSet<Value> claimed;
  for (Candidate &c : candidates) {
    linalg::MatmulOp m = c.seed;
    if (claimed.count(m.getResult(0)))
      continue;
    // Claims only stop set() on claimed values and partial sums whose
    // result is claimed: a region alone that touched neither grows the same.
    bool touches =
        llvm::any_of(c.alone->facts,
                     [&](auto &f) { return claimed.contains(f.first); }) ||
        llvm::any_of(c.alone->partials, [&](Operation *p) {
          return claimed.contains(p->getResult(0));
        });
    if (touches) {
      c.alone = std::make_unique<TokenDimsAnalysis>(n);
      c.alone->grow(func, m.getResult(0), TokenDims{1, 1}, claimed, shared);
      if (!keep(*c.alone))
        continue;
    }
    TokenDimsAnalysis &a = *c.alone;
    LLVM_DEBUG(llvm::dbgs()
               << "region at " << m.getLoc() << ": " << a.members.size()
               << " ops, " << a.partials.size() << " partial sums, "
               << a.boundaries.size() << " boundaries, " << c.weightBytes
               << " weight bytes split\n");
    // Constants (and values computed from them alone) are sliced per use:
    // other regions may split them too.
    for (auto &[v, d] : a.facts)
      if (!constantLike.contains(v))
        claimed.insert(v);
    for (Operation *p : a.partials)
      claimed.insert(p->getResult(0));
    taken.push_back({m,
                     {std::move(a.facts), std::move(a.boundaries),
                      std::move(a.partials), std::move(a.members)}});
  }
  // In program order, so that the rewrite does not depend on the sizes.
  DenseMap<Operation *, int64_t> index;
  for (Operation &op : func.getBody().front())
    index[&op] = int64_t(index.size());
  llvm::stable_sort(taken, [&](const auto &x, const auto &y) {
    return index.lookup(x.first) < index.lookup(y.first);
  });
  SmallVector<SplitRegion, 0> regions;
  for (auto &[seed, region] : taken)
    regions.push_back(std::move(region));
  return regions;
}
