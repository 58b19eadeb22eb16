//===- RaiseShared.cpp - shared experts for moe-raise-experts -------------===//
//
// Shared experts (Qwen2-MoE, DeepSeek): dense FFNs of the same tokens added
// to the routed experts' output. They stay dense; moe-raise-experts marks
// their ops for the report.
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

#include "mlir/Analysis/SliceAnalysis.h"

using namespace mlir;
using namespace moec;

namespace moec::raising {

/// True when `v` is FFN(tokens) or sigmoid(tokens @ Wg) * FFN(tokens).
static bool isSharedExpert(Value v, Value tokens) {
  std::string why;
  auto ffnOf = [&](Value f) {
    FailureOr<ExpertFFN> ffn = matchFFN(f, why);
    return succeeded(ffn) && skipViews(ffn->input) == tokens;
  };
  if (ffnOf(v))
    return true;
  auto mul = matchBinary<arith::MulFOp>(skipViews(v));
  if (!mul)
    return false;
  for (auto [g, f] : {std::pair(mul->first, mul->second),
                      std::pair(mul->second, mul->first)}) {
    Value x = matchSigmoid(skipViews(g));
    if (!x)
      continue;
    auto lin = matchLinear(x);
    if (lin && skipViews(lin->first) == tokens && ffnOf(f))
      return true;
  }
  return false;
}

/// Marks the compute ops (MatMuls, element-wise generics) that compute
/// `v` from `tokens`.
static void markSlice(Value v, Value tokens, int64_t id) {
  SetVector<Operation *> shared = sliceOf(v);
  SetVector<Operation *> common = sliceOf(tokens);
  Builder b(v.getContext());
  for (Operation *op : shared)
    if (!common.contains(op) && isa<linalg::MatmulOp, linalg::GenericOp>(op))
      op->setAttr("moe.shared_expert", b.getI64IntegerAttr(id));
}

/// Shared experts (Qwen2-MoE, DeepSeek) are dense FFNs of the same tokens
/// added to the routed experts' output, Qwen2's scaled by a sigmoid gate.
/// They stay dense; their ops get `moe.shared_expert = i` (the i-th
/// shared expert added to this layer).
void markSharedExperts(moe::ExpertsOp ex, Value tokens) {
  // Follow the layer output through views to the adds that consume it.
  SmallVector<Value> outs{ex.getResult()};
  int64_t next = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    for (Operation *user : outs[i].getUsers()) {
      if (isa<tensor::ReshapeOp, tensor::CollapseShapeOp, tensor::ExpandShapeOp,
              tensor::CastOp>(user)) {
        outs.push_back(user->getResult(0));
        continue;
      }
      if (user->getNumResults() != 1)
        continue;
      auto add = matchBinary<arith::AddFOp>(user->getResult(0));
      if (!add)
        continue;
      Value other = add->first == outs[i] ? add->second : add->first;
      if (!isSharedExpert(other, tokens))
        continue;
      markSlice(other, tokens, next++);
      outs.push_back(user->getResult(0));
    }
  }
}

} // namespace moec::raising
