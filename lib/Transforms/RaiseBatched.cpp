//===- RaiseBatched.cpp - batched experts for moe-raise-experts -----------===//
//
// The batched form of an MoE layer (transformers' batched_mm experts, as
// torch.onnx's dynamo exporter writes them).
//
//===----------------------------------------------------------------------===//

#include "RaiseExpertsInternal.h"

using namespace mlir;
using namespace moec;

namespace moec::raising {

/// transformers' batched_mm experts, as torch.onnx's dynamo exporter
/// writes them: every (token, choice) row a = t * k + j gathers its
/// expert's weights (GatherND by the flattened top-k ids) and multiplies
/// them with its copy of the token (batch_matmul); the rows are scaled by
/// the flattened routing weights and summed over the k choices:
///   out[t] = sum_j w[t, j] * FFN_{ids[t, j]}(x[t]).
/// `found` is set once such a layer reads this router; failures after
/// that say why it was not raised.
LogicalResult LayerRaiser::raiseBatched(Router &r, std::string &why,
                                        bool &found) {
  auto topk = dyn_cast<moe::TopKOp>(r.select);
  if (!topk && !r.generic)
    return failure();
  Value ids = r.generic ? skipViews(r.ids) : topk.getIndices();
  auto logitsT = cast<RankedTensorType>(r.logits.getType());
  int64_t e = logitsT.getDimSize(logitsT.getRank() - 1);
  SmallVector<linalg::ReduceOp> reds;
  func.walk([&](linalg::ReduceOp red) {
    if (red.getNumResults() == 1 &&
        matchReduce<arith::AddFOp>(red.getResult(0), 1))
      reds.push_back(red);
  });
  for (linalg::ReduceOp red : reds) {
    Value in = red.getInputs()[0];
    auto inT = cast<RankedTensorType>(in.getType());
    if (inT.getRank() != 3 || inT.getDimSize(1) != r.k)
      continue;
    auto mul = matchBinary<arith::MulFOp>(skipViews(in));
    if (!mul)
      continue;
    for (auto [y, w] : {std::pair(mul->first, mul->second),
                        std::pair(mul->second, mul->first)}) {
      // A router kept dense: the weights are whatever the rows are scaled
      // by, one per selected id.
      bool guess = r.generic && !r.weights;
      if (guess) {
        auto wT = cast<RankedTensorType>(w.getType());
        if (!wT.hasStaticShape() ||
            wT.getNumElements() != inT.getDimSize(0) * r.k)
          continue;
      } else if (skipViews(w) != skipViews(r.weights)) {
        continue;
      }
      std::string ffnWhy;
      FailureOr<ExpertFFN> f = matchFFN(y, ffnWhy);
      if (failed(f) || !f->gate.ids)
        continue;
      // Guessed weights: the experts must be another layer's unless they
      // gather by this router's ids, or by ids the router's own ops
      // computed from them (LongCat-Flash remaps its zero-computation
      // experts' ids): moe.experts then takes those.
      if (guess && skipViews(f->gate.ids) != ids) {
        auto gT = cast<RankedTensorType>(f->gate.ids.getType());
        if (!gT.hasStaticShape() ||
            gT.getNumElements() != inT.getDimSize(0) * r.k ||
            !sliceOf(f->gate.ids).contains(r.select))
          continue;
        ids = skipViews(f->gate.ids);
        r.ids = f->gate.ids;
      }
      found = true;
      if (guess)
        r.weights = w;
      // A router kept dense may pick from more ids than there are experts
      // (LongCat-Flash): the experts are the weights' slabs. (An id past
      // them stops the run with a message naming it.)
      if (r.generic)
        e = cast<RankedTensorType>(f->gate.src.getType()).getDimSize(0);
      for (WeightRef *ref : {&f->gate, &f->down, f->up ? &*f->up : &f->gate})
        if (!ref->ids || skipViews(ref->ids) != ids ||
            cast<RankedTensorType>(ref->src.getType()).getDimSize(0) != e) {
          why = "the batched experts' weights are not gathered by the "
                "router's top-k ids, or do not hold one slab per expert";
          return failure();
        }
      for (BiasRef *bias : {&f->bGate, &f->bUp, &f->bDown})
        if (*bias &&
            (!bias->ids || skipViews(bias->ids) != ids ||
             cast<RankedTensorType>(bias->src.getType()).getDimSize(0) != e)) {
          why = "the batched experts' biases are not gathered by the "
                "router's top-k ids";
          return failure();
        }
      // The FFN input: the tokens repeated k times ([T, 1, H] broadcast
      // to [T, k, H]).
      auto rep = skipViews(f->input).getDefiningOp<linalg::GenericOp>();
      auto repT = rep ? cast<RankedTensorType>(rep.getResult(0).getType())
                      : RankedTensorType();
      if (!rep || rep.getNumDpsInputs() != 1 || !bodyOps(rep).empty() ||
          rep.getBody()->getTerminator()->getOperand(0) !=
              rep.getBody()->getArgument(0) ||
          repT.getRank() != 3 || repT.getDimSize(1) != r.k ||
          cast<RankedTensorType>(rep.getDpsInputs()[0].getType())
                  .getDimSize(1) != 1) {
        why = "the batched experts' input is not the tokens repeated once "
              "per choice";
        return failure();
      }
      std::map<int64_t, ExpertFFN> experts;
      for (int64_t i = 0; i < e; ++i)
        experts[i] = *f;
      return emitLayer(r, red.getResult(0), skipViews(rep.getDpsInputs()[0]),
                       experts, why);
    }
  }
  return failure();
}

} // namespace moec::raising
