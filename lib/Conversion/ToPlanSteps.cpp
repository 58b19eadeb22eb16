//===- ToPlanSteps.cpp - the plan steps of the per-rank program's ops -----===//
//
// PlanBuilder::lowerOp: one step per op of @main (docs/plan-format.md,
// "Steps"), with its attributes; views alias their operand, the zero inits
// of matmuls vanish, and an op without a lowering is an error naming it.
//
//===----------------------------------------------------------------------===//

#include "ToPlanBuilder.h"
#include "moert/Limits.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "moec/Transforms/Passes.h"

using namespace mlir;
using namespace moec;
using namespace moec::toplan;

namespace {

// The plan schema's routing, activation and scatter reduction enums share
// the dialect's values (runtime/schema/enums.fbs), so the lowering converts
// them by value.
#define MOEC_SAME_ENUM(A, B)                                                   \
  static_assert(uint32_t(A) == uint32_t(B), #A " and " #B " differ")
MOEC_SAME_ENUM(moe::ScoreFunc::softmax, moert::fb::ScoreFunc::softmax);
MOEC_SAME_ENUM(moe::ScoreFunc::sigmoid, moert::fb::ScoreFunc::sigmoid);
MOEC_SAME_ENUM(moe::GroupScore::max, moert::fb::GroupScore::max);
MOEC_SAME_ENUM(moe::GroupScore::top2_sum, moert::fb::GroupScore::top2_sum);
MOEC_SAME_ENUM(moe::Activation::identity, moert::fb::Activation::identity);
MOEC_SAME_ENUM(moe::Activation::relu, moert::fb::Activation::relu);
MOEC_SAME_ENUM(moe::Activation::gelu, moert::fb::Activation::gelu);
MOEC_SAME_ENUM(moe::Activation::gelu_tanh, moert::fb::Activation::gelu_tanh);
MOEC_SAME_ENUM(moe::Activation::clamped_swiglu,
               moert::fb::Activation::clamped_swiglu);
MOEC_SAME_ENUM(moe::Activation::silu, moert::fb::Activation::silu);
MOEC_SAME_ENUM(moe::Reduction::none, moert::fb::ScatterReduction::none);
MOEC_SAME_ENUM(moe::Reduction::add, moert::fb::ScatterReduction::add);
MOEC_SAME_ENUM(moe::Reduction::mul, moert::fb::ScatterReduction::mul);
MOEC_SAME_ENUM(moe::Reduction::max, moert::fb::ScatterReduction::max);
MOEC_SAME_ENUM(moe::Reduction::min, moert::fb::ScatterReduction::min);
#undef MOEC_SAME_ENUM
static_assert(moe::getMaxEnumValForScoreFunc() ==
                      uint32_t(moert::fb::ScoreFunc::MAX) &&
                  moe::getMaxEnumValForGroupScore() ==
                      uint32_t(moert::fb::GroupScore::MAX) &&
                  moe::getMaxEnumValForActivation() ==
                      uint32_t(moert::fb::Activation::MAX) &&
                  moe::getMaxEnumValForReduction() ==
                      uint32_t(moert::fb::ScatterReduction::MAX),
              "the dialect and the plan schema list the same enum values");

} // namespace

namespace moec::toplan {

std::string PlanBuilder::axesName(ArrayRef<int16_t> axes) {
  std::string s;
  for (int16_t a : axes)
    s += (s.empty() ? "" : ",") + spec.axes[a].name;
  return s;
}

LogicalResult PlanBuilder::lowerOp(Operation *op) {
  LogicalResult ok = success();
  auto in = [&](Value v) { return optional(v, op, ok); };
  auto out = [&](Value v) {
    return addValue(v, moert::ValueKind::temp, nodeName(op->getLoc()));
  };
  if (auto c = dyn_cast<arith::ConstantOp>(op))
    return addConstant(c);
  if (auto lw = dyn_cast<moe::LocalWeightsOp>(op))
    return addLocalWeights(lw);
  if (auto ts = dyn_cast<moe::TpSliceOp>(op))
    return addTpSlice(ts);
  if (isa<tensor::EmptyOp>(op))
    return success();
  if (auto f = dyn_cast<linalg::FillOp>(op)) {
    // Only as the zero init of a matmul (the plan's matmuls overwrite).
    auto cst = f.getInputs()[0].getDefiningOp<arith::ConstantOp>();
    auto zero = cst ? dyn_cast<FloatAttr>(cst.getValue()) : nullptr;
    bool initOnly = llvm::all_of(f->getUsers(), [](Operation *u) {
      return isa<linalg::MatmulOp, linalg::BatchMatmulOp>(u);
    });
    if (!zero || !zero.getValue().isZero() || !initOnly)
      return op->emitError("plan lowering: linalg.fill is supported only as "
                           "the zero init of a matmul");
    return success();
  }
  if (auto c = dyn_cast<tensor::CollapseShapeOp>(op))
    return alias(c.getResult(), c.getSrc(), op);
  if (auto e = dyn_cast<tensor::ExpandShapeOp>(op))
    return alias(e.getResult(), e.getSrc(), op);
  if (auto r = dyn_cast<tensor::ReshapeOp>(op))
    return alias(r.getResult(), r.getSource(), op);
  if (isa<linalg::MatmulOp, linalg::BatchMatmulOp>(op)) {
    // Dense layers (2-d, BLAS sgemm) and attention's activation x
    // activation products ([B,M,K] x [B,K,N], f32): each from a zero fill.
    auto m = cast<linalg::LinalgOp>(op);
    bool batched = isa<linalg::BatchMatmulOp>(op);
    bool userMaps = batched
                        ? cast<linalg::BatchMatmulOp>(op).hasUserDefinedMaps()
                        : cast<linalg::MatmulOp>(op).hasUserDefinedMaps();
    StringRef name = batched ? "linalg.batch_matmul" : "linalg.matmul";
    // moe-fold-kv-repeat's product with B transposed: [b, n, k].
    bool transB = isBatchMatmulTransB(op);
    userMaps = userMaps && !transB;
    if (m.getNumDpsInputs() != 2 || userMaps)
      return op->emitError(
          batched ? "plan lowering: only plain linalg.batch_matmul "
                    "(or with B transposed)"
                  : "plan lowering: only plain 2-d linalg.matmul");
    if (!m.getDpsInits()[0].getDefiningOp<linalg::FillOp>())
      return op->emitError("plan lowering: ")
             << name << " must start from a zero fill";
    if (batched && !llvm::all_of(op->getOperandTypes(), [](Type t) {
          return cast<ShapedType>(t).getElementType().isF32();
        }))
      return op->emitError("plan lowering: only an f32 linalg.batch_matmul");
    int32_t a = in(m.getDpsInputs()[0]), b = in(m.getDpsInputs()[1]);
    int32_t c = out(op->getResult(0));
    if (failed(ok))
      return failure();
    moert::fb::BatchMatmulT bmAttrs;
    bmAttrs.trans_b = transB;
    moert::Step &s = batched ? addStep(std::move(bmAttrs), op)
                             : addStep(moert::fb::MatmulT(), op);
    s.inputs = {a, b};
    s.outputs = {c};
    if (!batched)
      s.inputs.push_back(-1); // no bias
    return success();
  }
  if (auto sm = dyn_cast<linalg::SoftmaxOp>(op)) {
    // Attention's softmax (the router's is part of moe.route).
    auto t = cast<RankedTensorType>(sm.getInput().getType());
    if (int64_t(sm.getDimension()) != t.getRank() - 1 ||
        !t.getElementType().isF32())
      return op->emitError("plan lowering: only an f32 softmax over the "
                           "last dim");
    int32_t x = in(sm.getInput());
    int32_t y = out(sm.getResult()[0]);
    if (failed(ok))
      return failure();
    moert::Step &s = addStep(moert::fb::SoftmaxT(), op);
    s.inputs = {x};
    s.outputs = {y};
    return success();
  }
  if (auto r = dyn_cast<moe::RouteOp>(op)) {
    int32_t logits = in(r.getLogits()), bias = in(r.getBias());
    int32_t w = out(r.getWeights()), i = out(r.getIndices());
    if (failed(ok))
      return failure();
    moert::fb::RouteT a;
    a.top_k = r.getTopK();
    a.score_func = moert::fb::ScoreFunc(r.getScoreFunc());
    a.renormalize = r.getRenormalize();
    a.renorm_eps = r.getRenormEps().convertToDouble();
    a.scaling_factor = r.getScalingFactor().convertToDouble();
    a.num_groups = r.getNumGroups();
    a.topk_groups = r.getTopkGroups();
    a.group_score = moert::fb::GroupScore(r.getGroupScore());
    moert::Step &s = addStep(std::move(a), op);
    s.inputs = {logits, bias};
    s.outputs = {w, i};
    return success();
  }
  if (auto d = dyn_cast<moe::DispatchOp>(op)) {
    int32_t t = in(d.getTokens()), i = in(d.getIndices()),
            w = in(d.getWeights());
    // The receive buffer at its bound.
    auto recvT = cast<RankedTensorType>(d.getRecv().getType());
    int32_t recv = out(d.getRecv());
    plan.values[recv].shape = {int64_t(d.getMaxRows()), recvT.getDimSize(1)};
    if (failed(ok))
      return failure();
    stepOf[d.getHandle()] = plan.steps.size();
    moe::PlacementAttr p = d.getPlacement();
    moert::fb::DispatchT a;
    a.axes = axesName(d.getGridAxes());
    a.num_experts = p.getNumExperts();
    a.slots_per_rank = p.getSlotsPerRank();
    a.capacity = d.getCapacity();
    std::vector<int64_t> &reps = a.replicas;
    for (int64_t e = 0; e < p.getNumExperts(); ++e) {
      std::vector<int64_t> pairs;
      for (int64_t q = 0; q < p.getRanks(); ++q)
        for (int64_t sl = 0; sl < p.getSlotsPerRank(); ++sl)
          if (p.expertAt(q, sl) == e) {
            pairs.push_back(q);
            pairs.push_back(sl);
          }
      reps.push_back(pairs.size() / 2);
      reps.insert(reps.end(), pairs.begin(), pairs.end());
    }
    moert::Step &s = addStep(std::move(a), op);
    s.inputs = {t, i};
    if (w >= 0)
      s.inputs.push_back(w); // weight_input experts: rows sent scaled
    s.outputs = {recv};
    return success();
  }
  if (auto ec = dyn_cast<moe::ExpertComputeOp>(op)) {
    int32_t recv = in(ec.getRecv()), g = in(ec.getWGate()), u = in(ec.getWUp()),
            dn = in(ec.getWDown()), bg = in(ec.getBGate()),
            bu = in(ec.getBUp()), bd = in(ec.getBDown());
    int32_t y = out(ec.getResult());
    plan.values[y].shape = plan.values[recv].shape;
    if (failed(ok))
      return failure();
    auto it = stepOf.find(ec.getHandle());
    if (it == stepOf.end())
      return op->emitError("plan lowering: expert_compute without its "
                           "dispatch");
    moert::fb::ExpertsT a;
    a.activation = moert::fb::Activation(ec.getActivation());
    a.alpha = float(ec.getAlpha().convertToDouble());
    a.beta = float(ec.getBeta().convertToDouble());
    if (std::optional<APFloat> limit = ec.getLimit())
      a.limit = float(limit->convertToDouble());
    a.dispatch = int64_t(it->second);
    moert::Step &s = addStep(std::move(a), op);
    s.inputs = {recv, g, u, dn, bg, bu, bd};
    s.outputs = {y};
    return success();
  }
  if (auto c = dyn_cast<moe::CombineOp>(op)) {
    int32_t y = in(c.getY()), w = in(c.getWeights());
    int32_t o = out(c.getResult());
    if (failed(ok))
      return failure();
    auto it = stepOf.find(c.getHandle());
    if (it == stepOf.end())
      return op->emitError("plan lowering: combine without its dispatch");
    moert::fb::CombineT a;
    a.dispatch = int64_t(it->second);
    moert::Step &s = addStep(std::move(a), op);
    s.inputs = {y, w};
    s.outputs = {o};
    return success();
  }
  // The collectives: one operand, one result.
  auto collective = [&](Value x, Value y, auto attrs) -> LogicalResult {
    int32_t xi = in(x);
    int32_t yi = out(y);
    if (failed(ok))
      return failure();
    moert::Step &s = addStep(std::move(attrs), op);
    s.inputs = {xi};
    s.outputs = {yi};
    return success();
  };
  if (auto ar = dyn_cast<shard::AllReduceOp>(op)) {
    moert::fb::AllReduceT a;
    a.axes = axesName(ar.getGridAxes());
    a.reduction = moert::fb::Reduction::sum;
    return collective(ar.getInput(), ar.getResult(), std::move(a));
  }
  if (auto sl = dyn_cast<shard::AllSliceOp>(op)) {
    moert::fb::AllSliceT a;
    a.axes = axesName(sl.getGridAxes());
    a.axis = sl.getSliceAxis().getSExtValue();
    return collective(sl.getInput(), sl.getResult(), std::move(a));
  }
  if (auto rs = dyn_cast<shard::ReduceScatterOp>(op)) {
    if (rs.getReduction() != shard::ReductionKind::Sum)
      return op->emitError("plan lowering: reduce_scatter supports only the "
                           "sum reduction");
    moert::fb::ReduceScatterT a;
    a.axes = axesName(rs.getGridAxes());
    a.axis = rs.getScatterAxis().getSExtValue();
    a.reduction = moert::fb::Reduction::sum;
    return collective(rs.getInput(), rs.getResult(), std::move(a));
  }
  if (auto ag = dyn_cast<shard::AllGatherOp>(op)) {
    moert::fb::AllGatherT a;
    a.axes = axesName(ag.getGridAxes());
    a.axis = ag.getGatherAxis().getSExtValue();
    return collective(ag.getInput(), ag.getResult(), std::move(a));
  }
  if (auto call = dyn_cast<func::CallOp>(op)) {
    auto callee = module.lookupSymbol<func::FuncOp>(call.getCallee());
    if (!callee || !callee->hasAttr("moe.kernel"))
      return op->emitError("plan lowering: calls only to generated kernels "
                           "(moe-outline-kernels) are supported");
    // The runtime's limit (moert/Limits.h), checked before a plan is
    // written: moe-outline-kernels fuses no kernel past it, so only a
    // single op that reads this many tensors gets here.
    size_t pointers = call.getNumOperands() + call.getNumResults();
    if (pointers > size_t(moert::kMaxKernelOperands))
      return op->emitError("plan lowering: kernel '")
             << call.getCallee() << "' takes " << pointers
             << " operands and results, more than the runtime's limit of "
             << moert::kMaxKernelOperands << " (moert::kMaxKernelOperands)";
    std::vector<int32_t> ins, outs;
    for (Value v : call.getOperands())
      ins.push_back(in(v));
    for (Value v : call.getResults())
      outs.push_back(out(v));
    if (failed(ok))
      return failure();
    moert::fb::KernelT a;
    a.name = call.getCallee().str();
    moert::Step &s = addStep(std::move(a), op);
    s.inputs = ins;
    s.outputs = outs;
    return success();
  }
  if (auto t = dyn_cast<moe::TopKOp>(op))
    return lowerTopK(t);
  if (auto sc = dyn_cast<moe::ScatterElementsOp>(op))
    return lowerScatterElements(sc);
  if (auto dq = dyn_cast<moe::DequantizeOp>(op)) {
    // A packed weight: its codes and scales are constants of the plan, the
    // f32 weight a temp in the arena.
    int32_t codes = in(dq.getCodes()), scales = in(dq.getScales());
    int32_t zp = dq.getZeroPoints() ? in(dq.getZeroPoints()) : -1;
    int32_t result = out(dq.getResult());
    if (failed(ok))
      return failure();
    moert::fb::DequantizeT a;
    a.bits = dq.getBits();
    a.block_size = dq.getBlockSize();
    a.k = dq.getK();
    if (Value h = dq.getDispatch()) {
      // A rank's stacked experts: only the slots its dispatch gave rows.
      auto it = stepOf.find(h);
      if (it == stepOf.end())
        return op->emitError("plan lowering: dequantize after a dispatch "
                             "that is not lowered before it");
      a.dispatch = int64_t(it->second);
    }
    moert::Step &s = addStep(std::move(a), op);
    s.inputs = {codes, scales, zp};
    s.outputs = {result};
    return success();
  }
  if (isa<func::ReturnOp>(op))
    return success();
  return op->emitError("plan lowering: '")
         << op->getName() << "' has no lowering to plan steps yet";
}

LogicalResult PlanBuilder::lowerTopK(moe::TopKOp op) {
  // The runtime reads x as rows of its last dim, so leading dims (of any
  // rank, views included) flatten into rows.
  auto t = cast<RankedTensorType>(op.getInput().getType());
  if (int64_t(op.getAxis()) != t.getRank() - 1)
    return op.emitError("plan lowering: topk over axis ")
           << op.getAxis() << ", only the last axis is supported";
  if (!t.getElementType().isF32() && !t.getElementType().isInteger(64))
    return op.emitError("plan lowering: topk of ")
           << t.getElementType() << " values, only f32 and i64 are supported";
  LogicalResult ok = success();
  int32_t x = optional(op.getInput(), op, ok);
  std::string name = nodeName(op.getLoc());
  int32_t values = addValue(op.getValues(), moert::ValueKind::temp, name);
  int32_t indices = addValue(op.getIndices(), moert::ValueKind::temp, name);
  if (failed(ok))
    return failure();
  // Always sorted: an unsorted topk may return any order.
  moert::fb::TopKT a;
  a.k = op.getK();
  a.largest = op.getLargest();
  moert::Step &s = addStep(std::move(a), op);
  s.inputs = {x};
  s.outputs = {values, indices};
  return success();
}

LogicalResult PlanBuilder::lowerScatterElements(moe::ScatterElementsOp op) {
  Type et = cast<RankedTensorType>(op.getData().getType()).getElementType();
  bool none = op.getReduction() == moe::Reduction::none;
  if (!et.isF32() && !(none && (et.isInteger(64) || et.isInteger(32))))
    return op.emitError("plan lowering: scatter_elements of ")
           << et << " data with reduction "
           << moe::stringifyReduction(op.getReduction())
           << ", only f32 data (or i64 and i32 data without a reduction) is "
              "supported";
  LogicalResult ok = success();
  int32_t data = optional(op.getData(), op, ok);
  int32_t indices = optional(op.getIndices(), op, ok);
  int32_t updates = optional(op.getUpdates(), op, ok);
  int32_t result =
      addValue(op.getResult(), moert::ValueKind::temp, nodeName(op.getLoc()));
  if (failed(ok))
    return failure();
  moert::fb::ScatterElementsT a;
  a.axis = op.getAxis();
  a.reduction = moert::fb::ScatterReduction(op.getReduction());
  moert::Step &s = addStep(std::move(a), op);
  s.inputs = {data, indices, updates};
  s.outputs = {result};
  return success();
}

} // namespace moec::toplan
