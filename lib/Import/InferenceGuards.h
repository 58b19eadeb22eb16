//===- InferenceGuards.h - what ONNX shape inference cannot survive -*- C++
//-*-===//
//
// libonnx 1.12's shape inference trusts the model: some models make it
// allocate without bound or crash. These checks run before it and name the
// node instead (issue 17; each was found by the fuzz targets in fuzz/).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_IMPORT_INFERENCEGUARDS_H
#define MOEC_LIB_IMPORT_INFERENCEGUARDS_H

#include <string>

namespace onnx {
class GraphProto;
} // namespace onnx

namespace moec::onnximport {

/// The most entries a tensor used as a shape (a rank) may have.
constexpr long long kMaxShapeRank = 1024;

/// "" when `graph` is safe to give to ONNX shape inference, else an error
/// naming the value or node: a graph input declared with a negative
/// dimension (initializers' are named when decoded); a shape operand (of
/// Expand, Reshape, ConstantOfShape, Tile) made by a ConstantOfShape or Range
/// of constant inputs with more than kMaxShapeRank entries (inference would
/// build a shape of that rank: 5 * 10^13 dims ran out of memory).
std::string inferenceHazard(const onnx::GraphProto &graph);

/// True when every error in `msg` (strict inference lists one per line) is
/// an op without a schema (com.microsoft), not a fault of the model: then
/// the lenient retry may propagate data.
bool onlyMissingSchemas(const std::string &msg);

/// Makes the negative dims of the graph's output and value_info types
/// unknown (some exporters write -1 for a dynamic dim; inference would take
/// it as a size): inference then works them out.
void clearNegativeDims(onnx::GraphProto &graph);

/// True when ONNX data propagation may run on `graph` (after an inference
/// pass without it filled value_info): every Shape or Size node reads a
/// value with a known type. libonnx's Shape data propagator dereferences
/// the input's type unchecked, so a Shape of the output of an op without a
/// schema or an inference function (a com.microsoft op moec does not know,
/// an experimental op) crashed the importer (found by fuzz/onnx-text).
bool dataPropagationSafe(const onnx::GraphProto &graph);

} // namespace moec::onnximport

#endif // MOEC_LIB_IMPORT_INFERENCEGUARDS_H
