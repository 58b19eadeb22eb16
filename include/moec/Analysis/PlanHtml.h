//===- PlanHtml.h - the plan as one self-contained HTML page ----*- C++ -*-===//
//
// `moec MODEL --mesh ... --emit=html -o plan.html`: the sharding report
// (ShardReport.h) drawn as the seed draws expert parallelism: ranks grouped
// by node with their mesh coordinates, what each rank holds (attention and
// dense weights, its experts per MoE layer, replicas marked), per-layer
// dispatch/combine bytes beside the seed's formulas, per-rank memory bars
// against --device-memory, and, given `moe-run --record-routing` output,
// the measured tokens per expert and the rank-to-rank token flow per layer.
//
// The page is drawn from the same ShardReport that `--report=json` prints,
// and carries that JSON (script#moec-report), so its figures and the
// report's are one computation. It loads nothing: CSS, SVG and script are
// inline.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_PLANHTML_H
#define MOEC_ANALYSIS_PLANHTML_H

#include "moec/Analysis/ShardReport.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace moert {
struct RoutingLoad;
} // namespace moert

namespace moec {

struct PlanHtmlOptions {
  std::string model;       ///< the model file, for the title
  std::string flags;       ///< the sharding flags as given ("--mesh ep=4")
  int64_t gpusPerNode = 0; ///< ranks per node box; 0: one node
  int64_t deviceMemory = 0;
  std::string deviceMemoryText; ///< as given ("80GiB")
  /// The measured routing (`--routing FILE`); null when not given. Must
  /// have passed checkRoutingFitsReport.
  const moert::RoutingLoad *routing = nullptr;
  std::string routingFile;
};

/// Checks that a routing file recorded from this plan's model fits the
/// report: one entry per MoE layer, one count per expert, a token flow
/// (when present) over the report's ranks. On a mismatch returns false and
/// sets `error`, naming `file`, the layer and both figures.
bool checkRoutingFitsReport(const ShardReport &report,
                            const moert::RoutingLoad &routing,
                            llvm::StringRef file, std::string &error);

/// Experts whose measured load is at least this many times the mean over
/// the layer's experts are marked hot.
constexpr double kHotExpertFactor = 1.5;

/// Writes the page.
void writePlanHtml(const ShardReport &report, const PlanHtmlOptions &opts,
                   llvm::raw_ostream &os);

/// `s` with & < > " ' replaced by character references.
std::string htmlEscape(llvm::StringRef s);

} // namespace moec

#endif // MOEC_ANALYSIS_PLANHTML_H
