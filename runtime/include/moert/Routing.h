//===- Routing.h - routing parameters and their rules -----------*- C++ -*-===//
//
// The one definition of a `route` step's parameters and of the rules they
// obey, shared by the plan executor (both backends), the CUDA routing kernel
// and the compiler's evaluator (moe-eval). The kinds are the plan schema's
// (runtime/schema/enums.fbs), static-asserted in lib/Conversion/ToPlan.cpp
// against the moe dialect's TableGen enums; the dialect's own verifier
// (MoEOps.cpp) checks the same rules on the op's attributes, where E may be
// dynamic.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_ROUTING_H
#define MOERT_ROUTING_H

#include "moert/enums_generated.h"

#include <cstdint>
#include <string>

namespace moert {

using ScoreFunc = fb::ScoreFunc;
using GroupScore = fb::GroupScore;

/// Routing semantics, identical to the `moe.route` op (docs/routing.md):
/// scores = softmax(logits) or sigmoid(logits); selection uses
/// scores + bias; with num_groups > 1 the experts are split into groups,
/// each group scored by its max (or sum of its top-2) selection score, and
/// only the best topk_groups groups compete; the top_k experts are chosen
/// (ties: lower expert id first), their weights are the unbiased scores,
/// renormalised when `renormalize` (divided by their sum plus renormEps),
/// then multiplied by scaling_factor.
struct RouteParams {
  int64_t topK = 1;
  ScoreFunc score = ScoreFunc::softmax;
  bool renormalize = false;
  double renormEps = 0.0;
  double scalingFactor = 1.0;
  int64_t numGroups = 1;
  int64_t topkGroups = 1;
  GroupScore groupScore = GroupScore::max;
};

/// "" when `p` is valid for `E` experts, else why not: 1 <= top_k <= E,
/// num_groups >= 1 divides E, 1 <= topk_groups <= num_groups, the kept
/// groups hold >= top_k experts, top2_sum needs two experts per group.
inline std::string routeParamsError(int64_t E, const RouteParams &p) {
  if (E < 1)
    return "no experts";
  if (!(p.renormEps >= 0.0 && p.renormEps < 1e300))
    return "renorm_eps " + std::to_string(p.renormEps) +
           " is not finite and >= 0";
  if (p.topK < 1 || p.topK > E)
    return "top_k " + std::to_string(p.topK) + " with " + std::to_string(E) +
           " experts";
  if (p.numGroups < 1 || E % p.numGroups != 0 || p.topkGroups < 1 ||
      p.topkGroups > p.numGroups)
    return "bad grouping: " + std::to_string(p.numGroups) + " groups of " +
           std::to_string(E) + " experts, " + std::to_string(p.topkGroups) +
           " kept";
  int64_t per = E / p.numGroups;
  if (p.numGroups > 1 && p.topkGroups * per < p.topK)
    return "the kept groups hold fewer than top_k experts";
  if (p.numGroups > 1 && p.groupScore == GroupScore::top2_sum && per < 2)
    return "top2_sum needs at least two experts per group";
  return "";
}

} // namespace moert

#endif // MOERT_ROUTING_H
