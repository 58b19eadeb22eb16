//===- TokenSymbol.cpp - compiling a plan with a dynamic token count ------===//
//
// The differential compile of TokenSymbol.h.
//
//===----------------------------------------------------------------------===//

#include "moec/Pipelines/TokenSymbol.h"

#include "moec/Conversion/KernelSymbols.h"
#include "moec/Conversion/SymbolCheck.h"
#include "moec/Conversion/ToPlan.h"
#include "moec/Pipelines/InternalErrors.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

using namespace mlir;

std::pair<int64_t, int64_t> moec::sampleCounts(int64_t max, int64_t ranks) {
  if (max - 2 * ranks >= 1)
    return {max - ranks, max - 2 * ranks};
  return {max + ranks, max + 2 * ranks};
}

namespace {
/// The plan of the model (imported by `importAt`) at `tokens` tokens;
/// false with `error`.
bool compileAt(const DialectRegistry &registry,
               const moec::TokenSymbolImport &importAt,
               moec::ImportOptions opts,
               const std::vector<moec::SymbolicInputDim> &symbolic,
               int64_t tokens, const moec::MoecPipelineOptions &pipelineOptions,
               moec::PlanSample &out, ModuleOp &compiled, std::string &error) {
  moec::substituteTokens(opts.inputShapes, symbolic, tokens);
  // The plan's deferred weights read the module's constants when compared:
  // the context and module live as long as the sample.
  struct Owner {
    std::unique_ptr<MLIRContext> ctx;
    OwningOpRef<ModuleOp> module; // destroyed before ctx
  };
  auto owner = std::make_shared<Owner>();
  owner->ctx = std::make_unique<MLIRContext>(registry);
  out.owner = owner;
  MLIRContext &ctx = *owner->ctx;
  std::string first;
  ScopedDiagnosticHandler diag(&ctx, [&](Diagnostic &d) {
    if (d.getSeverity() == DiagnosticSeverity::Error && first.empty())
      first = moec::describeLocation(d.getLocation()) + ": " + d.str();
    return success();
  });
  std::string at = "at " + std::to_string(tokens) + " tokens: ";
  OwningOpRef<ModuleOp> &module = owner->module;
  module = importAt(ctx, opts, error);
  if (!module) {
    error = at + error;
    return false;
  }
  PassManager pm(&ctx);
  moec::buildMoecPipeline(pm, pipelineOptions);
  if (failed(pm.run(*module))) {
    error = at + (first.empty() ? "the compilation pipeline failed" : first);
    return false;
  }
  moec::PlanOptions popts;
  popts.cpuCode = false;
  popts.verify = false; // no kernel code: compared with the verified plan
  out.tokens = tokens;
  if (failed(moec::buildPlan(*module, "", popts, out.plan, out.data))) {
    error = at + (first.empty() ? "plan lowering failed" : first);
    return false;
  }
  compiled = *module;
  return true;
}
} // namespace

bool moec::addTokenSymbol(
    const DialectRegistry &registry, const TokenSymbolImport &importAt,
    ImportOptions importOptions, const std::vector<SymbolicInputDim> &symbolic,
    int64_t max, const MoecPipelineOptions &pipelineOptions, ModuleOp maxModule,
    moert::Plan &plan, moert::PlanData &data, const std::vector<int32_t> &roots,
    int64_t rowSliceRanks, std::string &error) {
  // The ranks the tokens are split over: the blocks of the split of the
  // first symbolic input whose symbolic dim it cuts (as the runtime finds
  // them).
  int64_t ranks = 1;
  bool found = false;
  for (const SymbolicInputDim &s : symbolic)
    for (const moert::ModelIO &m : plan.inputs)
      if (!found && m.name == s.input && m.split.axis >= s.dim) {
        found = true;
        ranks = splitBlockCount(plan, m.split);
      }
  if (max % ranks != 0) {
    error = "--max-tokens " + std::to_string(max) +
            " is not a multiple of the " + std::to_string(ranks) +
            " ranks the tokens are split over";
    return false;
  }
  // MoE layers that slice rows inside the model (sequence-parallel or
  // folded): compared at multiples of their ranks, where no padding rows
  // change the plan, when the maximum is one. Whether the rows follow the
  // count (a prompt) or not (a decode step's one token per sequence, whose
  // count is the cache length) only the comparison tells.
  std::string rowHint;
  if (ranks == 1 && rowSliceRanks > 1) {
    if (max % rowSliceRanks == 0)
      ranks = rowSliceRanks;
    else
      rowHint = " (the MoE layers slice the rows over " +
                std::to_string(rowSliceRanks) +
                " ranks inside the model; if they follow the count, a "
                "--max-tokens that " +
                std::to_string(rowSliceRanks) + " divides avoids padding)";
  }
  // Compiles at n1 and n2 and infers the symbolic dims of a copy of the
  // plan; false with `why`.
  std::vector<PlanSample> samples;
  ModuleOp modules[2];
  int64_t minCount = 0, splitRanks = ranks;
  moert::Plan inferred;
  auto compare = [&](int64_t n1, int64_t n2, std::string &why) {
    samples.assign(2, PlanSample());
    if (!compileAt(registry, importAt, importOptions, symbolic, n1,
                   pipelineOptions, samples[0], modules[0], why) ||
        !compileAt(registry, importAt, importOptions, symbolic, n2,
                   pipelineOptions, samples[1], modules[1], why))
      return false;
    inferred = plan;
    // The kernels' code is not in the plans: their constants are compared
    // after the plans' structure.
    const moert::Plan *plans[2] = {&samples[0].plan, &samples[1].plan};
    minCount = 0;
    if (!inferPlanSymbols(inferred, data, "tokens", max, samples, roots,
                          pipelineOptions.capacityFactor, why)) {
      why += rowHint;
      return false;
    }
    // The token split the plan has (the rows a rank holds follow its
    // block): the probe below counts in its blocks.
    splitRanks = splitBlockCount(inferred, moert::tokenSplitOf(inferred));
    return checkKernelConstants(maxModule, inferred, max, modules, plans,
                                {n1, n2}, minCount, why);
  };
  auto [n1, n2] = sampleCounts(max, ranks);
  if (!compare(n1, n2, error)) {
    // Counts below the maximum may reach a path the model takes only for
    // short sequences (a sliding window not yet full): counts above it,
    // if the model compiles there, show the maximum's path; the probe
    // below then finds where the other path starts.
    std::string above;
    if (n1 > max || !compare(max + ranks, max + 2 * ranks, above))
      return false;
    n1 = max + ranks;
    n2 = max + 2 * ranks;
    error.clear();
  }
  plan = std::move(inferred);
  ranks = splitRanks;
  int64_t low = std::min(n1, n2);
  if (minCount > low) {
    // The counts compared do not show what the model does below minCount.
    error = "the model computes an index as the token count - " +
            std::to_string(minCount) +
            " (e.g. a sliding window's start), "
            "and the counts compared (" +
            std::to_string(low) +
            " and up) do not reach it; a larger --max-tokens does";
    return false;
  }
  // Three counts near the maximum cannot show a path the model takes only
  // below some count (a sliding window's cache not yet full). A compile at
  // the least count must be what the symbolic dims predict there; where it
  // is not, the plan's minimum is the least count (a multiple of the token
  // ranks, found by bisection) whose compile is.
  auto agrees = [&](int64_t n) {
    PlanSample probe;
    ModuleOp m;
    std::string ignored;
    return compileAt(registry, importAt, importOptions, symbolic, n,
                     pipelineOptions, probe, m, ignored) &&
           probeDiff(plan, data, probe, ranks).empty();
  };
  // From 2 rows per rank: with 1, kernels and masks fold into a path of
  // their own (a causal mask over one token is all zeros) that computes
  // the same, so the least count compared is 2 (a model whose path
  // changes between 1 and 2 rows per rank is not caught).
  int64_t lo = std::max<int64_t>(
      (std::max<int64_t>(minCount, 1) + ranks - 1) / ranks * ranks, 2 * ranks);
  if (lo < low && !agrees(lo)) {
    int64_t hi = std::min(low, max); // agrees: a compared count, or the plan
    while (hi - lo > ranks) {
      int64_t mid = (lo + hi) / 2 / ranks * ranks;
      if (mid <= lo)
        mid = lo + ranks;
      (agrees(mid) ? hi : lo) = mid;
    }
    minCount = hi;
  }
  plan.symbols[0].min = minCount;
  return true;
}
