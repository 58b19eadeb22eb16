//===- SymbolCheck.h - a plan's dynamic token count -------------*- C++ -*-===//
//
// A plan with a dynamic token count (plan format version 8, docs/design/
// dynamic-tokens.md) is compiled at its maximum N like a static plan. moec
// then compiles the same model at two other counts and compares the three
// plans (the differential compile): their structure (values, steps, step
// attributes, inputs and outputs) must be the same and their constants
// byte-identical, so that nothing the plan computes was folded from the
// count; each size that differs must be an affine a*X+b of the count, which
// the two first plans give and the third checks. X is the global count T for
// the model's inputs and outputs, this rank's rows t for the values of the
// per-rank program, and the block bound tb for the rows a dispatch receives
// and what is computed from them until the combine.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_CONVERSION_SYMBOLCHECK_H
#define MOEC_CONVERSION_SYMBOLCHECK_H

#include "moert/Plan.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moec {

/// The same model compiled at another token count (no kernel code needed).
struct PlanSample {
  int64_t tokens = 0;
  moert::Plan plan;
  moert::PlanData data;
  /// What `data`'s deferred pieces read (the compile's MLIR context and
  /// module): kept alive as long as the sample.
  std::shared_ptr<void> owner;
};

/// The blocks a model input or output is cut into by `split`: the product
/// of the sizes of its mesh axes (1 for a replicated one).
int64_t splitBlockCount(const moert::Plan &plan, const moert::Split &split);

/// Gives `plan`, compiled at `max` tokens, the symbol `name` and the
/// symbolic dims of its values, inputs and outputs, fitted from `samples`
/// (exactly two: the same model at two other counts, each a multiple of
/// the ranks the tokens are split over). `roots[i]` is the value whose bytes
/// value i shares (PlanOptions::valueRoots). Fails with `error` naming the
/// value, input, output or step (and its ONNX node) when the plans differ other
/// than in sizes, a size is not affine in the count, or the plan needs what
/// dynamic plans do not support yet (collectives along a token dim).
/// Dispatches with a capacity get `capacityFactor` (--capacity-factor): the
/// runtime computes each call's capacity. The plan is not verified here: its
/// kernels are compiled afterwards, for the symbolic dims found here
/// (KernelSymbols.h).
bool inferPlanSymbols(moert::Plan &plan, moert::PlanData &data,
                      const std::string &name, int64_t max,
                      std::vector<PlanSample> &samples,
                      const std::vector<int32_t> &roots, double capacityFactor,
                      std::string &error);

/// "" when `probe`, the model compiled at `probe.tokens` (a multiple of the
/// token split's W blocks), is what `plan`'s symbolic dims predict there:
/// the same structure and constants (boxes of the maximum's), and every
/// value's, input's and output's shape resolved at that count (dims of the
/// block bound tb, which a dispatch's capacity shapes, are not compared).
/// Else what differs: the model takes another path at that count (a
/// sliding window not yet full), which three counts above it cannot show.
std::string probeDiff(const moert::Plan &plan, moert::PlanData &data,
                      PlanSample &probe, int64_t W);

} // namespace moec

#endif // MOEC_CONVERSION_SYMBOLCHECK_H
