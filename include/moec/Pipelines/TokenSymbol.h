//===- TokenSymbol.h - compiling a plan with a dynamic token count -*- C++
//-*-===//
//
// `moec --input-shape x=1,?,64 --max-tokens N`: the plan is compiled at N
// like a static plan, then the same model twice more at other counts, and
// SymbolCheck.h infers the plan's symbolic dims from the three plans
// (docs/design/dynamic-tokens.md).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_PIPELINES_TOKENSYMBOL_H
#define MOEC_PIPELINES_TOKENSYMBOL_H

#include "moec/Import/OnnxImporter.h"
#include "moec/Pipelines/Pipelines.h"
#include "moert/Plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace moec {

/// The two other counts the differential compile uses for a plan compiled
/// at `max` tokens split over `ranks` (both multiples of it): max - ranks
/// and max - 2 ranks, or max + ranks and max + 2 ranks when those would be
/// below 1.
std::pair<int64_t, int64_t> sampleCounts(int64_t max, int64_t ranks);

/// Makes `plan` (compiled from `file` with `importOptions`, whose shapes
/// hold the dims `symbolic` at `max` tokens, for the mesh of
/// `pipelineOptions`; `roots` from PlanOptions::valueRoots) a plan with the
/// dynamic token count `tokens <= max`: compiles the model again at the two
/// sampleCounts (import, moec's pipeline, the plan without kernel code;
/// each in a context of its own, with the dialects of `registry`) and
/// infers the symbolic dims (inferPlanSymbols). False with `error` naming
/// the problem.
bool addTokenSymbol(mlir::DialectRegistry &registry, const std::string &file,
                    ImportOptions importOptions,
                    const std::vector<SymbolicInputDim> &symbolic, int64_t max,
                    const MoecPipelineOptions &pipelineOptions,
                    moert::Plan &plan, moert::PlanData &data,
                    const std::vector<int32_t> &roots, std::string &error);

} // namespace moec

#endif // MOEC_PIPELINES_TOKENSYMBOL_H
