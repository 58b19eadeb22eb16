//===- Report.h - MoE layer report ------------------------------*- C++ -*-===//
//
// `moec --report`: what the compiler found in a model, per MoE layer.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_REPORT_H
#define MOEC_ANALYSIS_REPORT_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

namespace moec {

/// Writes, for each moe.experts op of `module` (with the moe.route feeding
/// it): experts, top-k, routing function and its options, the FFN form,
/// parameters per expert and in all experts, router parameters; then the
/// model's parameter totals. `json` selects a JSON object instead of text.
void writeMoEReport(mlir::ModuleOp module, llvm::raw_ostream &os, bool json);

/// The parameters constant `c` holds, for the reports: the elements of a
/// float constant; for the codes of a packed weight (ui8 read by
/// moe.dequantize, directly or through moe.local_weights) the weights they
/// encode (bytes * 8 / bits); 0 for its scales and zero points, which
/// belong to those weights, and for other constants.
int64_t parameterCount(mlir::Operation *constant);

} // namespace moec

#endif // MOEC_ANALYSIS_REPORT_H
