//===- ImportMoE.h - onnxruntime's fused MoE layers -------------*- C++ -*-===//
//
// Internal to lib/Import. com.microsoft.MoE (ImportMicrosoft.cpp) and
// com.microsoft.QMoE (ImportQuantized.cpp) share one layer importer: routing,
// activations (swiglu fusion, clamping) and the move into moec's expert
// layout. They differ only in where the expert weights come from.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_IMPORT_IMPORTMOE_H
#define MOEC_LIB_IMPORT_IMPORTMOE_H

#include "GraphImporter.h"

#include <functional>

namespace moec::onnximport {

/// The expert weights of a MoE node in onnxruntime's layout (float, fc1
/// [E, R, H], fc2 [E, H, F], fc3 [E, F, H] or null) and the node's input
/// indices of the biases. Inputs 0 and 1 are the tokens and router_probs.
struct MoELayerInputs {
  const HostTensor *fc1 = nullptr, *fc2 = nullptr, *fc3 = nullptr;
  unsigned b1 = 0, b2 = 0, b3 = 0;
  /// The top-k weights are renormalized whatever normalize_routing_weights
  /// says: onnxruntime 1.32's CPU QMoE does so (measured: k=1 and k=2 of 4
  /// experts, normalize_routing_weights 0 and 1 give the same output, equal
  /// to com.microsoft.MoE with 1).
  bool alwaysNormalize = false;
  /// Packed experts (QMoE on f32 activations): fc1..fc3 then hold only
  /// their shapes and dtype, no data, and `packed(fc, start, step, count,
  /// scale)` gives rows start, start + step, ... (count of them) of fc
  /// 0, 1 or 2 as a moe.dequantize [E, K, count], scaled by `scale`.
  std::function<mlir::Value(int fc, int64_t start, int64_t step, int64_t count,
                            double scale)>
      packed;
};

/// Imports the current node as moe.route + moe.experts. `load` fills the
/// expert weights once the node's attributes passed their checks.
mlir::LogicalResult
importMoELayer(GraphImporter &gi,
               llvm::function_ref<mlir::LogicalResult(MoELayerInputs &)> load);

/// com.microsoft.MatMulNBits and com.microsoft.QMoE (ImportQuantized.cpp).
void addQuantizedOps(OpTable &table);

} // namespace moec::onnximport

#endif // MOEC_LIB_IMPORT_IMPORTMOE_H
