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
#include <functional>
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

/// Imports the model again into `context` with `options` (the shapes at
/// another count): from its file, or the bytes it was imported from.
using TokenSymbolImport = std::function<mlir::OwningOpRef<mlir::ModuleOp>(
    mlir::MLIRContext &context, const ImportOptions &options,
    std::string &error)>;

/// Makes `plan` (compiled with `importOptions`, whose shapes hold the dims
/// `symbolic` at `max` tokens, for the mesh of `pipelineOptions`; `roots`
/// from PlanOptions::valueRoots) a plan with the dynamic token count
/// `tokens <= max`: compiles the model again at the two sampleCounts
/// (`importAt`, moec's pipeline, the plan without kernel code; each in a
/// context of its own, with the dialects of `registry`; where the model
/// compiles differently there, at max + ranks and max + 2 ranks) and infers
/// the
/// symbolic dims (inferPlanSymbols); the generated kernels of `maxModule`
/// (the model at `max`) must hold the same constants at every count
/// (checkKernelConstants). False with `error` naming the problem. The plan
/// is left without kernel code and unverified: the caller compiles its
/// kernels for the symbolic dims (KernelSymbols.h). `rowSliceRanks`: the
/// ranks the MoE layers slice the rows over inside the model (sequence-
/// parallel MoE layers of a replicated model; 1 when none): with no input
/// split along the count, the counts compared are multiples of it, so that
/// the model compiles the same at each (no padding), and the rows follow
/// each rank's block t of the count (moert::tokenSplitOf).
bool addTokenSymbol(const mlir::DialectRegistry &registry,
                    const TokenSymbolImport &importAt,
                    ImportOptions importOptions,
                    const std::vector<SymbolicInputDim> &symbolic, int64_t max,
                    const MoecPipelineOptions &pipelineOptions,
                    mlir::ModuleOp maxModule, moert::Plan &plan,
                    moert::PlanData &data, const std::vector<int32_t> &roots,
                    int64_t rowSliceRanks, std::string &error);

} // namespace moec

#endif // MOEC_PIPELINES_TOKENSYMBOL_H
