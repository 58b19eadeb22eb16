//===- TokenDims.cpp - which dims of each tensor carry tokens -------------===//

#include "TokenDimsAnalysis.h"
#include "moec/Analysis/ConstantBytes.h"
#include "moec/Dialect/MoE/MoEDialect.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/STLExtras.h"

#include <cstring>

using namespace mlir;
using namespace moec;
using namespace moec::detail;

//===----------------------------------------------------------------------===//
// Token dims
//===----------------------------------------------------------------------===//

static ArrayRef<int64_t> shapeOf(Value v) {
  return cast<ShapedType>(v.getType()).getShape();
}

LogicalResult TokenDimsAnalysis::set(Value v, TokenDims dims, Operation *at) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  if (!type)
    return at->emitError("token dims reach a non-tensor value");
  ArrayRef<int64_t> shape = type.getShape();
  if (tp && (claimed->count(v) || partialResults.count(v)))
    return at->emitError("the value is split by another region or is a "
                         "partial sum");
  // Unit dims next to the token dims carry no data: the canonical form
  // folds the leading ones in and leaves the trailing ones out, so that
  // [1, 16, H] split at dim 1 and at dims 0-1 agree.
  while (dims.start > 0 && shape[dims.start - 1] == 1) {
    --dims.start;
    ++dims.count;
  }
  // Trailing unit dims are not token dims ([T, 1] is split like [T]).
  while (dims.count > 1 && shape[dims.start + dims.count - 1] == 1)
    --dims.count;
  // An outer part made of whole leading dims: the split starts later.
  while (dims.outer > 1 && dims.count > 1 && shape[dims.start] > 0 &&
         dims.outer % shape[dims.start] == 0) {
    dims.outer /= shape[dims.start];
    ++dims.start;
    --dims.count;
  }
  if (dims.outer > 1) {
    int64_t size = shape[dims.start];
    if (dims.count != 1 || ShapedType::isDynamic(size) ||
        size % dims.outer != 0 || (size / dims.outer) % n != 0)
      return at->emitError("cannot split a merged dim evenly");
  }
  // Only the leading dims the split cuts: [B, S] split n ways with n | B
  // keeps B (localShape would leave S whole anyway). A split that does not
  // come out even keeps every dim, and localShape reports it.
  int64_t rem = n, keep = 0;
  for (int64_t d = dims.start; d < dims.start + dims.count && rem > 1; ++d) {
    ++keep;
    if (ShapedType::isDynamic(shape[d])) {
      rem = 0;
      break;
    }
    if (shape[d] % rem == 0)
      rem = 1;
    else if (rem % shape[d] == 0)
      rem /= shape[d];
    else
      break;
  }
  if (dims.outer > 1) {
    rem = 1;
    keep = 1;
  }
  if (rem == 1)
    dims.count = std::max<int64_t>(1, keep);
  else if (tp || rows)
    return at->emitError("the split does not come out even");
  auto it = facts.find(v);
  if (it != facts.end()) {
    if (it->second != dims)
      return at->emitError("the token dimension reaches a value by two "
                           "paths that disagree (dims ")
             << it->second.start << ".."
             << it->second.start + it->second.count - 1 << " vs " << dims.start
             << ".." << dims.start + dims.count - 1 << ")";
    return success();
  }
  facts[v] = dims;
  worklist.push_back(v);
  journal.push_back(v);
  return success();
}

LogicalResult TokenDimsAnalysis::checkBody(linalg::LinalgOp op,
                                           ArrayRef<unsigned> loops) {
  WalkResult r = op->getRegion(0).walk([&](Operation *inner) {
    if (auto idx = dyn_cast<linalg::IndexOp>(inner))
      if (llvm::is_contained(loops, unsigned(idx.getDim())))
        return WalkResult::interrupt();
    for (Value v : inner->getOperands())
      if (facts.count(v) && !op->isAncestor(v.getParentRegion()->getParentOp()))
        return WalkResult::interrupt();
    return WalkResult::advance();
  });
  if (r.wasInterrupted())
    return op->emitError("cannot split: the body reads a split value or "
                         "the index of a split loop");
  return success();
}

LogicalResult TokenDimsAnalysis::visitLinalg(linalg::LinalgOp op) {
  // Map the known token dims of any operand to loop dims.
  SmallVector<unsigned> loops;
  int64_t outer = 1;
  auto iters = op.getIteratorTypesArray();
  bool reduces = false;
  for (OpOperand &operand : op->getOpOperands()) {
    auto it = facts.find(operand.get());
    if (it == facts.end())
      continue;
    AffineMap map = op.getMatchingIndexingMap(&operand);
    outer = it->second.outer;
    for (int64_t d = it->second.start; d < it->second.start + it->second.count;
         ++d) {
      auto dim = dyn_cast<AffineDimExpr>(map.getResult(d));
      if (!dim) {
        if (shapeOf(operand.get())[d] == 1)
          continue;
        return op->emitError("cannot split along tokens: operand ")
               << operand.getOperandNumber()
               << " is indexed by an expression on its token dim " << d;
      }
      // A unit dim the canonical form folded in carries no data; leaving
      // it out lets a transpose move it ([1, h, s, d] -> [d, h, s, 1]).
      if (tp && shapeOf(operand.get())[d] == 1 && it->second.count > 1)
        continue;
      if (iters[dim.getPosition()] != utils::IteratorType::parallel) {
        if (!tp)
          return op->emitError("cannot split along tokens: the op reduces "
                               "over the token dimension")
                 << hint();
        reduces = true;
      }
      loops.push_back(dim.getPosition());
    }
    break;
  }
  // Tensor parallelism: a matmul over a split K (from a zero init) is
  // row-parallel; each rank's result is a partial sum.
  if (reduces) {
    auto fill = op.getDpsInits()[0].getDefiningOp<linalg::FillOp>();
    auto zero =
        fill ? fill.getInputs()[0].getDefiningOp<arith::ConstantOp>() : nullptr;
    bool isZero = false;
    if (zero)
      if (auto f = dyn_cast<FloatAttr>(zero.getValue()))
        isZero = f.getValue().isZero();
    bool allReduce = llvm::all_of(loops, [&](unsigned l) {
      return iters[l] == utils::IteratorType::reduction;
    });
    if (!isa<linalg::MatmulOp, linalg::BatchMatmulOp>(op) || !isZero ||
        !allReduce || op->getNumResults() != 1 ||
        facts.count(op->getResult(0)) || facts.count(op.getDpsInits()[0]) ||
        (claimed && claimed->count(op->getResult(0))))
      return op->emitError("cannot split: the op reduces over the split "
                           "dimension");
    pendingPartial = op;
  }
  if ((tp || rows) && failed(checkBody(op, loops)))
    return failure();
  for (OpResult res : op->getResults()) {
    auto it = facts.find(res);
    if (it == facts.end() || !loops.empty())
      continue;
    OpOperand *init = op.getDpsInitOperand(res.getResultNumber());
    if (failed(set(init->get(), it->second, op)))
      return failure();
    return visitLinalg(op);
  }
  return applyLoops(op, loops, outer, reduces);
}

LogicalResult TokenDimsAnalysis::applyLoops(linalg::LinalgOp op,
                                            ArrayRef<unsigned> loops,
                                            int64_t outer, bool reduces) {
  if (loops.empty())
    return success();
  for (OpOperand &operand : op->getOpOperands()) {
    AffineMap map = op.getMatchingIndexingMap(&operand);
    SmallVector<int64_t> pos;
    for (unsigned l : loops)
      for (auto [i, e] : llvm::enumerate(map.getResults()))
        if (auto dim = dyn_cast<AffineDimExpr>(e);
            dim && dim.getPosition() == l)
          pos.push_back(i);
    bool isInit = op.isDpsInit(&operand);
    if (pos.empty()) {
      if (isInit && !reduces)
        return op->emitError("cannot split along tokens: result ")
               << operand.getOperandNumber()
               << " does not carry the token dimension";
      continue; // a replicated operand (weights, broadcast bias)
    }
    bool consecutive = pos.size() == loops.size();
    for (size_t i = 1; consecutive && i < pos.size(); ++i)
      consecutive = pos[i] == pos[i - 1] + 1;
    if (!consecutive)
      return op->emitError("cannot split along tokens: operand ")
             << operand.getOperandNumber()
             << " holds the token dims out of order or in part" << hint();
    TokenDims dims{pos.front(), int64_t(pos.size()), outer};
    if (failed(set(operand.get(), dims, op)))
      return failure();
    if (isInit && failed(set(op.getTiedOpResult(&operand), dims, op)))
      return failure();
  }
  return success();
}

LogicalResult TokenDimsAnalysis::visitGather(tensor::ExtractOp ex) {
  auto g = ex->getParentOfType<linalg::GenericOp>();
  auto it = facts.find(ex.getTensor());
  if (!g || it == facts.end() ||
      g->isAncestor(ex.getTensor().getParentRegion()->getParentOp()))
    return ex.emitError("cannot split 'tensor.extract' along the token "
                        "dimension");
  // Each token dim of the source must be read at the index of a parallel
  // loop: the gather then stays within each rank's block of tokens.
  TokenDims d = it->second;
  SmallVector<unsigned> loops;
  auto iters = g.getIteratorTypesArray();
  for (int64_t k = d.start; k < d.start + d.count; ++k) {
    auto idx = ex.getIndices()[k].getDefiningOp<linalg::IndexOp>();
    if (!idx || iters[idx.getDim()] != utils::IteratorType::parallel)
      return ex.emitError("cannot split along tokens: a gather reads the "
                          "token dim ")
             << k << " at a computed position";
    loops.push_back(idx.getDim());
  }
  return applyLoops(g, loops, d.outer, /*reduces=*/false);
}

/// Groups of `big` dims whose products are the dims of `small` (both
/// static); empty when the shapes do not line up that way.
static SmallVector<SmallVector<int64_t>>
reassociation(ArrayRef<int64_t> big, ArrayRef<int64_t> small) {
  SmallVector<SmallVector<int64_t>> groups;
  size_t b = 0;
  for (int64_t target : small) {
    SmallVector<int64_t> g;
    int64_t prod = 1;
    while (b < big.size() && (g.empty() || prod < target)) {
      prod *= big[b];
      g.push_back(b++);
    }
    if (prod != target)
      return {};
    groups.push_back(g);
  }
  while (b < big.size() && big[b] == 1 && !groups.empty())
    groups.back().push_back(b++);
  if (b != big.size())
    return {};
  return groups;
}

LogicalResult TokenDimsAnalysis::visitReshape(Operation *op, Value src,
                                              Value res) {
  ArrayRef<int64_t> a = shapeOf(src), b = shapeOf(res);
  if (ShapedType::isDynamicShape(a) || ShapedType::isDynamicShape(b))
    return op->emitError("cannot split along tokens: a reshape of dynamic "
                         "shape (give static input shapes with "
                         "--input-shape)");
  bool collapse = a.size() >= b.size();
  ArrayRef<int64_t> big = collapse ? a : b, small = collapse ? b : a;
  Value bigV = collapse ? src : res, smallV = collapse ? res : src;
  auto groups = reassociation(big, small);
  if (groups.empty())
    return op->emitError("cannot split along tokens: the reshape is not a "
                         "merge or split of dims");
  auto it = facts.find(bigV);
  if (it != facts.end()) {
    TokenDims f = it->second;
    // A merge keeps the split when the split dims lead their groups: no
    // non-unit dim before them (which would interleave blocks); inner dims
    // after them may join the last group ([B, S] -> [B * S] with B split).
    // Tensor parallelism may merge unsplit dims before a split one into a
    // dim with an outer part ([B, H] -> [B * H] with H split).
    int64_t first = -1, last = -1;
    for (auto [gi, g] : llvm::enumerate(groups))
      for (int64_t d : g)
        if (d >= f.start && d < f.start + f.count) {
          if (first < 0)
            first = gi;
          last = gi;
        }
    int64_t prefix = 1;
    for (int64_t d : groups[first])
      if (d < f.start)
        prefix *= big[d];
    if (tp && first == last && (prefix > 1 || f.outer > 1)) {
      if (failed(set(smallV, TokenDims{first, 1, prefix * f.outer}, op)))
        return failure();
    } else {
      if (f.outer > 1)
        return op->emitError("cannot split: the reshape merges a split dim "
                             "that has an outer part with other dims");
      for (int64_t gi = first; gi <= last; ++gi)
        for (int64_t d : groups[gi])
          if (big[d] != 1 &&
              (d < f.start || (d >= f.start + f.count && gi != last)))
            return op->emitError("cannot split along tokens: the reshape "
                                 "merges token and non-token dims");
      if (failed(set(smallV, TokenDims{first, last - first + 1}, op)))
        return failure();
    }
  }
  it = facts.find(smallV);
  if (it != facts.end()) {
    TokenDims f = it->second;
    int64_t start = groups[f.start].front();
    int64_t end = groups[f.start + f.count - 1].back();
    if (f.outer > 1) {
      // The outer part is whole leading dims of the group.
      int64_t prod = 1;
      while (start <= end && prod < f.outer)
        prod *= big[start++];
      if (prod != f.outer || start > end)
        return op->emitError("cannot split: the reshape cuts the outer part "
                             "of a split dim");
    }
    if (failed(set(bigV, TokenDims{start, end - start + 1}, op)))
      return failure();
  }
  return success();
}

LogicalResult TokenDimsAnalysis::visit(Operation *op) {
  auto all = [&](ValueRange vs, TokenDims d) -> LogicalResult {
    for (Value v : vs)
      if (v && failed(set(v, d, op)))
        return failure();
    return success();
  };
  auto known = [&](ValueRange vs) {
    return llvm::any_of(vs, [&](Value v) { return v && facts.count(v); });
  };
  if (rows) {
    LogicalResult edge = success();
    if (visitRowsEdge(op, edge))
      return edge;
  }
  // A packed dense weight: computed from constants only, it carries no
  // tokens; inside a tensor-parallel region it is a weight like a constant
  // (every rank dequantizes it whole, the region slices it).
  if (isa<moe::DequantizeOp>(op))
    return success();
  // Tensor parallelism stops at the MoE ops (the experts have their own
  // split), collectives, the function's results and ops it does not know.
  if (tp && (isa<moe::MoEDialect, shard::ShardDialect>(op->getDialect()) ||
             isa<func::ReturnOp>(op)))
    return known(op->getOperands()) || known(op->getResults())
               ? op->emitError("a boundary of the tensor-parallel region")
               : success();
  TokenDims rowDims{0, 1};
  if (auto r = dyn_cast<moe::RouteOp>(op))
    return all({r.getLogits(), r.getWeights(), r.getIndices()}, rowDims);
  if (auto e = dyn_cast<moe::ExpertsOp>(op))
    return all({e.getTokens(), e.getIndices(), e.getWeights(), e.getResult()},
               rowDims);
  if (auto d = dyn_cast<moe::DispatchOp>(op))
    return all({d.getTokens(), d.getIndices(), d.getWeights()}, rowDims);
  if (auto c = dyn_cast<moe::CombineOp>(op))
    return all({c.getWeights(), c.getResult()}, rowDims);
  if (isa<moe::ExpertComputeOp, moe::LocalWeightsOp, moe::TpSliceOp,
          func::ReturnOp>(op))
    return success();
  if (auto l = dyn_cast<linalg::LinalgOp>(op))
    return visitLinalg(l);
  if (auto ex = dyn_cast<tensor::ExtractOp>(op); ex && !tp && !rows)
    return visitGather(ex);
  if (isa<tensor::EmptyOp>(op)) {
    if (op->getNumOperands())
      return op->emitError("cannot split along tokens: tensor.empty with "
                           "dynamic sizes");
    return success();
  }
  // Ops whose operands and result share the token dims, as long as the dim
  // `along` they work on is not one of them.
  auto sameDims = [&](ArrayRef<Value> vs, int64_t along,
                      const char *what) -> LogicalResult {
    for (Value v : vs) {
      auto it = facts.find(v);
      if (it == facts.end())
        continue;
      TokenDims d = it->second;
      if (along >= d.start && along < d.start + d.count)
        return op->emitError("cannot split along tokens: ")
               << what << " the token dim";
      return all(vs, d);
    }
    return success();
  };
  if (auto sm = dyn_cast<linalg::SoftmaxOp>(op))
    return sameDims({sm.getInput(), sm.getOutput(), sm.getResult()[0]},
                    int64_t(sm.getDimension()), "the softmax normalises over");
  // A router kept as the model's own ops (moe-raise-experts): a top-k and
  // scatters along the experts, per token.
  if (auto t = dyn_cast<moe::TopKOp>(op)) {
    int64_t rank = t.getInput().getType().getRank();
    return sameDims({t.getInput(), t.getValues(), t.getIndices()},
                    t.getAxis() < 0 ? t.getAxis() + rank : t.getAxis(),
                    "the top-k selects along");
  }
  if (auto s = dyn_cast<moe::ScatterElementsOp>(op)) {
    ArrayRef<int64_t> data = shapeOf(s.getData()),
                      idx = shapeOf(s.getIndices());
    int64_t axis =
        s.getAxis() < 0 ? s.getAxis() + int64_t(data.size()) : s.getAxis();
    for (Value v :
         {s.getData(), s.getIndices(), s.getUpdates(), s.getResult()}) {
      auto it = facts.find(v);
      if (it == facts.end())
        continue;
      TokenDims d = it->second;
      for (int64_t k = d.start; k < d.start + d.count; ++k)
        if (k != axis && (k >= int64_t(idx.size()) || idx[k] != data[k]))
          return op->emitError("cannot split along tokens: the scatter "
                               "writes to part of the token dim ")
                 << k;
      break;
    }
    return sameDims(
        {s.getData(), s.getIndices(), s.getUpdates(), s.getResult()}, axis,
        "the scatter writes along");
  }
  if (auto s = dyn_cast<tensor::ExtractSliceOp>(op)) {
    // A slice that keeps the split dims whole (rotary's halves of the head
    // dim): the same dims on both sides.
    for (Value v : {s.getSource(), s.getResult()}) {
      auto it = facts.find(v);
      if (it == facts.end())
        continue;
      TokenDims d = it->second;
      ArrayRef<int64_t> src = shapeOf(s.getSource());
      if (s.getSourceType().getRank() != s.getResultType().getRank())
        return op->emitError("cannot split along tokens: a rank-reducing "
                             "slice of a value carrying tokens");
      for (int64_t k = d.start; k < d.start + d.count; ++k)
        if (s.getStaticOffsets()[k] != 0 || s.getStaticStrides()[k] != 1 ||
            s.getStaticSizes()[k] != src[k])
          return op->emitError("cannot split along tokens: the slice cuts "
                               "the token dim ")
                 << k;
      return all({s.getSource(), s.getResult()}, d);
    }
    return success();
  }
  if (auto c = dyn_cast<tensor::ConcatOp>(op)) {
    SmallVector<Value> vs(c.getInputs());
    vs.push_back(c.getResult());
    return sameDims(vs, int64_t(c.getDim()), "a concatenation along");
  }
  if (auto c = dyn_cast<tensor::CollapseShapeOp>(op))
    return visitReshape(op, c.getSrc(), c.getResult());
  if (auto e = dyn_cast<tensor::ExpandShapeOp>(op))
    return visitReshape(op, e.getSrc(), e.getResult());
  if (auto r = dyn_cast<tensor::ReshapeOp>(op))
    return visitReshape(op, r.getSource(), r.getResult());
  if (auto s = dyn_cast<shard::ShardOp>(op)) {
    for (Value v : {s.getSrc(), s.getResult()})
      if (auto it = facts.find(v); it != facts.end())
        return all({s.getSrc(), s.getResult()}, it->second);
    return success();
  }
  if (auto a = dyn_cast<shard::AllReduceOp>(op)) {
    for (Value v : {a.getInput(), a.getResult()})
      if (auto it = facts.find(v); it != facts.end())
        return all({a.getInput(), a.getResult()}, it->second);
    return success();
  }
  if ((tp || rows) && isa<arith::ConstantOp>(op))
    return success(); // sliced per rank
  if (auto c = dyn_cast<arith::ConstantOp>(op); c && known(c->getResults())) {
    // A constant the same for every token block (the causal mask an
    // exporter materialised per sequence, [B, 1, S, S]) is split like the
    // tokens: every rank gets the same block.
    if (!isUniformAlong(c, facts.lookup(c.getResult())))
      return op->emitError("cannot split along tokens: a constant has the "
                           "token dimension and differs along it");
    return success();
  }
  if (known(op->getOperands()) || known(op->getResults()))
    return op->emitError("cannot split '")
           << op->getName() << "' along the token dimension";
  return success();
}

LogicalResult TokenDimsAnalysis::run(func::FuncOp func) {
  WalkResult seeded = func.walk([&](Operation *op) {
    if (isa<moe::RouteOp, moe::ExpertsOp, moe::DispatchOp, moe::CombineOp>(op))
      if (failed(visit(op)))
        return WalkResult::interrupt();
    return WalkResult::advance();
  });
  if (seeded.wasInterrupted())
    return failure();
  while (!worklist.empty()) {
    Value v = worklist.pop_back_val();
    SmallVector<Operation *> ops;
    if (Operation *def = v.getDefiningOp())
      ops.push_back(def);
    for (Operation *user : v.getUsers())
      ops.push_back(user);
    for (Operation *op : ops)
      if (failed(visit(op)))
        return failure();
  }
  return success();
}

bool moec::isUniformAlong(arith::ConstantOp c, TokenDims dims) {
  auto t = cast<RankedTensorType>(c.getType());
  if (!t.hasStaticShape())
    return false;
  if (auto d = dyn_cast<DenseElementsAttr>(c.getValue()); d && d.isSplat())
    return true;
  FailureOr<std::vector<char>> bytes = constantBytes(c);
  if (failed(bytes))
    return false;
  ArrayRef<int64_t> shape = t.getShape();
  int64_t outer = 1, mid = 1, inner = int64_t(bytes->size());
  for (int64_t d = 0; d < dims.start; ++d)
    outer *= shape[d];
  for (int64_t d = dims.start; d < dims.start + dims.count; ++d)
    mid *= shape[d];
  if (outer * mid == 0)
    return true;
  inner /= outer * mid;
  const char *p = bytes->data();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t m = 1; m < mid; ++m)
      if (std::memcmp(p + (o * mid + m) * inner, p + o * mid * inner,
                      size_t(inner)) != 0)
        return false;
  return true;
}

/// Gives every use of a tensor.empty (or of a constant fill of one) its own
/// op. CSE merges those of equal shape, and a shared init would tie the
/// token dims of unrelated values together (a [T, H] activation and a
/// [F, H] transposed weight when T = F).
void moec::detail::unshareInits(func::FuncOp func) {
  SmallVector<Operation *> shared;
  func.walk([&](Operation *op) {
    bool init = isa<tensor::EmptyOp>(op) && op->getNumOperands() == 0;
    if (auto f = dyn_cast<linalg::FillOp>(op))
      init = f.getInputs()[0].getDefiningOp<arith::ConstantOp>() &&
             f.getOutputs()[0].getDefiningOp<tensor::EmptyOp>();
    if (init && !op->hasOneUse() && !op->use_empty())
      shared.push_back(op);
  });
  for (Operation *op : shared) {
    SmallVector<OpOperand *> uses;
    for (OpOperand &u : op->getResult(0).getUses())
      uses.push_back(&u);
    for (OpOperand *u : llvm::drop_begin(uses)) {
      OpBuilder b(u->getOwner());
      IRMapping map;
      if (auto f = dyn_cast<linalg::FillOp>(op)) {
        Operation *e = f.getOutputs()[0].getDefiningOp();
        map.map(e->getResult(0), b.clone(*e)->getResult(0));
      }
      u->set(b.clone(*op, map)->getResult(0));
    }
  }
}

FailureOr<DenseMap<Value, TokenDims>> moec::analyzeTokenDims(func::FuncOp func,
                                                             int64_t n) {
  unshareInits(func);
  TokenDimsAnalysis a(n);
  if (failed(a.run(func)))
    return failure();
  return std::move(a.facts);
}

FailureOr<SmallVector<int64_t>> moec::localShape(ArrayRef<int64_t> shape,
                                                 TokenDims dims, int64_t n,
                                                 std::string &why) {
  SmallVector<int64_t> local(shape);
  if (dims.outer > 1) {
    int64_t size = shape[dims.start];
    if (dims.count != 1 || ShapedType::isDynamic(size) ||
        size % (dims.outer * n) != 0) {
      why = "a merged dim does not split evenly";
      return failure();
    }
    local[dims.start] = size / n;
    return local;
  }
  int64_t rem = n;
  for (int64_t d = dims.start; d < dims.start + dims.count && rem > 1; ++d) {
    if (ShapedType::isDynamic(local[d])) {
      why = "the token dimension is dynamic (give static input shapes with "
            "--input-shape)";
      return failure();
    }
    if (local[d] % rem == 0) {
      local[d] /= rem;
      rem = 1;
    } else if (rem % local[d] == 0) {
      rem /= local[d];
      local[d] = 1;
    } else {
      break;
    }
  }
  if (rem != 1) {
    int64_t tokens = 1;
    for (int64_t d = dims.start; d < dims.start + dims.count; ++d)
      tokens *= shape[d];
    why = std::to_string(tokens) + " tokens (dims " +
          std::to_string(dims.start) + ".." +
          std::to_string(dims.start + dims.count - 1) +
          ") cannot be split into " + std::to_string(n) +
          " equal contiguous blocks";
    return failure();
  }
  return local;
}
