//===- GraphImporter.h - ONNX graph import state ----------------*- C++ -*-===//
//
// Internal to lib/Import. The state of one graph import and the helpers that
// the per-op handlers (Import*.cpp, one file per op family) build on.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_IMPORT_GRAPHIMPORTER_H
#define MOEC_LIB_IMPORT_GRAPHIMPORTER_H

#include "mlir/IR/AsmState.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Location.h"
#include "mlir/Support/LLVM.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/Twine.h"

#include "onnx/onnx_pb.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moec::onnximport {

/// A tensor whose value is known while importing: small initializers,
/// Constant nodes and folded shape arithmetic. Float element types keep their
/// values in `f`, integer and bool types in `i`.
/// `v` as an int64, saturating at the type's bounds (NaN is 0): a C++
/// conversion of a float outside the range is undefined behaviour, and
/// models may hold any float where an integer is expected.
int64_t saturatingInt(double v);

struct HostTensor {
  std::vector<int64_t> shape;
  int32_t dtype = onnx::TensorProto_DataType_INT64;
  std::vector<double> f;
  std::vector<int64_t> i;

  bool isFloat() const;
  int64_t size() const;
  double asDouble(size_t k) const { return isFloat() ? f[k] : double(i[k]); }
  int64_t asInt(size_t k) const {
    return isFloat() ? saturatingInt(f[k]) : i[k];
  }
  /// A 1-D int64 tensor.
  static HostTensor ints(std::vector<int64_t> values);
  /// A tensor of `dtype` and `shape`, every element `value`.
  static HostTensor splat(int32_t dtype, std::vector<int64_t> shape,
                          double value);
};

class GraphImporter;
using OpHandler = std::function<mlir::LogicalResult(GraphImporter &)>;
/// Handlers by op type; the key is "Type" for the default domain and
/// "domain::Type" for others (e.g. "com.microsoft::MoE").
using OpTable = llvm::StringMap<OpHandler>;

void addElementwiseOps(OpTable &table);
void addShapeOps(OpTable &table);
void addReshapeOps(OpTable &table);
void addSliceOps(OpTable &table);
void addGatherOps(OpTable &table);
void addExpandOps(OpTable &table);
void addReductionOps(OpTable &table);
void addIndexingOps(OpTable &table);
void addMicrosoftOps(OpTable &table);
void addConvOps(OpTable &table);
void addPadOps(OpTable &table);
void addAttentionOps(OpTable &table);
void addCausalConvOps(OpTable &table);
void addLinearAttentionOps(OpTable &table);
void addMRopeOps(OpTable &table);
void addContribOps(OpTable &table);
/// Registers ONNX schemas for onnxruntime's default-domain ops
/// (ImportContrib.cpp); idempotent.
void registerContribSchemas();

/// Builds the function body for one ONNX graph, node by node.
class GraphImporter {
public:
  GraphImporter(mlir::OpBuilder &builder, std::string fileName,
                const onnx::ModelProto &model, int64_t inlineConstantLimit);

  //===--------------------------------------------------------------------===//
  // For op handlers: the node being imported
  //===--------------------------------------------------------------------===//

  mlir::OpBuilder &builder() { return b; }
  mlir::Location loc() const { return curLoc; }
  mlir::MLIRContext *ctx() { return b.getContext(); }
  const onnx::NodeProto &node() const { return *curNode; }
  /// Opset version of the default domain.
  int64_t opset() const { return defaultOpset; }

  /// Number of inputs, trailing omitted (empty-named) ones not counted.
  unsigned numInputs() const;
  /// True when input `i` is given (present and not the empty name).
  bool hasInput(unsigned i) const;
  /// Whether inputs 0 .. n - 1 are all given (none of them the empty name
  /// of an omitted optional input). numInputs() counts up to the last
  /// given input: a required input left empty in the middle passes it.
  bool hasInputs(unsigned n) const;
  /// The SSA value of input `i`; known constants are materialized.
  mlir::Value input(unsigned i);
  mlir::RankedTensorType inputType(unsigned i);
  /// The value of input `i` when known at import time, else null.
  const HostTensor *inputConst(unsigned i);
  /// True when every given input is known and has at most `maxElements`.
  bool allInputsConst(int64_t maxElements = 1 << 16);
  /// Type of output `i` from ONNX shape inference (dims it could not infer
  /// are dynamic); null when inference gave nothing.
  mlir::RankedTensorType inferredOutputType(unsigned i);
  unsigned numOutputs() const { return curNode->output_size(); }
  bool hasOutput(unsigned i) const;

  /// Sets output `i`; when ONNX data propagation knows its value (a 1-D
  /// int64 shape tensor), the known value is used instead.
  void setOutput(unsigned i, mlir::Value v);
  /// Records a value found by ONNX's data propagation.
  void addKnownShapeValue(const std::string &name, std::vector<int64_t> v) {
    knownShapeValues[name] = std::move(v);
  }
  void setOutputConst(unsigned i, HostTensor t);

  /// Reports "FILE: node 'NAME' (OP): REASON" and returns failure.
  mlir::LogicalResult fail(const llvm::Twine &reason);

  const onnx::AttributeProto *attr(llvm::StringRef name) const;
  bool hasAttr(llvm::StringRef name) const { return attr(name) != nullptr; }
  int64_t intAttr(llvm::StringRef name, int64_t dflt) const;
  double floatAttr(llvm::StringRef name, double dflt) const;
  std::string strAttr(llvm::StringRef name, llvm::StringRef dflt) const;
  std::vector<int64_t> intsAttr(llvm::StringRef name) const;

  //===--------------------------------------------------------------------===//
  // Building helpers shared by handlers
  //===--------------------------------------------------------------------===//

  /// MLIR element type of an ONNX data type; null when unsupported.
  mlir::Type elementType(int32_t onnxType);
  /// ONNX data type of an MLIR element type (0 when there is none).
  static int32_t onnxType(mlir::Type t);
  /// Materializes a known tensor as arith.constant.
  mlir::Value constant(const HostTensor &t);
  /// Materializes a known tensor (float, or ui8 packed weight codes) as a
  /// constant named `name`: a dense_resource blob when it is larger than the
  /// inline limit (weights), else inline.
  mlir::Value weight(const HostTensor &t, llvm::StringRef name);
  /// Scalar constants of an element type.
  mlir::Value scalar(mlir::Type elt, double value);
  /// `index` value of dim `d` of a tensor (constant when static).
  mlir::Value dim(mlir::Value tensor, int64_t d);
  /// tensor.empty of `shape`; `dynSizes` holds one index per dynamic dim.
  mlir::Value emptyTensor(llvm::ArrayRef<int64_t> shape, mlir::Type elt,
                          mlir::ValueRange dynSizes);
  /// An empty tensor of `shape` whose dynamic dims are taken from `like`,
  /// matched by position from the right (numpy broadcasting rules).
  mlir::Value emptyLike(llvm::ArrayRef<int64_t> shape, mlir::Type elt,
                        mlir::ValueRange like);

  /// Numpy-style broadcast shape of the given types; failure (with a
  /// diagnostic naming the node) when they do not broadcast.
  mlir::FailureOr<llvm::SmallVector<int64_t>>
  broadcastShape(llvm::ArrayRef<mlir::RankedTensorType> types);

  using ScalarBody = llvm::function_ref<mlir::Value(
      mlir::OpBuilder &, mlir::Location, mlir::ValueRange)>;
  /// A linalg.generic applying `body` element by element to `inputs`
  /// broadcast numpy-style; the result has element type `resultElt`.
  mlir::FailureOr<mlir::Value>
  elementwise(mlir::ValueRange inputs, mlir::Type resultElt, ScalarBody body);
  /// Converts a scalar between element types with ONNX Cast semantics
  /// (float->int truncates toward zero, bool is value != 0).
  mlir::Value convertScalar(mlir::OpBuilder &bb, mlir::Location l,
                            mlir::Value v, mlir::Type to);
  /// Element-type conversion of a whole tensor.
  mlir::Value castTensor(mlir::Value v, mlir::Type to);
  /// tensor.reshape to a static or dynamic shape (`-1` entries not allowed:
  /// callers resolve them). Dynamic dims of `shape` take `dynSizes`.
  mlir::Value reshape(mlir::Value v, llvm::ArrayRef<int64_t> shape,
                      mlir::ValueRange dynSizes = {});

  //===--------------------------------------------------------------------===//
  // Driver
  //===--------------------------------------------------------------------===//

  /// Registers a graph input or initializer.
  void defineValue(const std::string &name, mlir::Value v);
  /// Registers a value known at import time (a constant of an expansion).
  void defineConst(const std::string &name, HostTensor t);
  /// The known value of `name`, else null.
  const HostTensor *knownValue(const std::string &name);
  /// Imports `sub`, a node an op handler builds to express its op in
  /// simpler ones (Expansion.h), with the table of the node being imported;
  /// the node being imported is current again afterwards. An error names
  /// the sub-node (its name starts with the node's).
  mlir::LogicalResult importSubNode(const onnx::NodeProto &sub);
  mlir::LogicalResult defineInitializer(const onnx::TensorProto &t);
  mlir::LogicalResult importNode(const onnx::NodeProto &node,
                                 const OpTable &table);
  /// The value of a graph output (materialized if constant).
  mlir::FailureOr<mlir::Value> lookupOutput(const std::string &name);
  /// The error message of the last failure.
  const std::string &error() const { return lastError; }
  void setError(std::string e) { lastError = std::move(e); }
  const std::string &fileName() const { return file; }
  /// Reads an ONNX tensor's bytes (raw, typed fields or external data).
  /// With `validateOnly`, checks sizes and external files and returns an
  /// empty vector.
  mlir::FailureOr<std::vector<char>> tensorBytes(const onnx::TensorProto &t,
                                                 bool validateOnly = false);
  /// Checks that a tensor's data is all there without reading it.
  mlir::LogicalResult checkTensorData(const onnx::TensorProto &t);
  /// An external-data initializer's bytes mapped from its file (nullopt:
  /// not external, or not mappable; `lastError` set on an I/O error).
  std::optional<mlir::AsmResourceBlob> mapExternal(const onnx::TensorProto &t);
  /// Decodes a tensor into a HostTensor.
  mlir::FailureOr<HostTensor> decodeTensor(const onnx::TensorProto &t);
  void setModelDir(std::string dir) { modelDir = std::move(dir); }
  /// Whether quantized weights stay packed (ImportOptions).
  void setKeepPackedWeights(bool keep) { keepPacked = keep; }
  bool keepPackedWeights() const { return keepPacked; }
  /// Initializers also listed as graph inputs: a runtime may override them
  /// (onnxruntime then does not prepack them); moec takes their values.
  void addOverridableInitializer(llvm::StringRef name) {
    overridable.insert(name);
  }
  bool isOverridableInitializer(llvm::StringRef name) const {
    return overridable.contains(name);
  }
  /// Whether accuracy_level 4 quantizes activations to int8 (ImportOptions).
  void setInt8Activations(bool on) { int8Act = on; }
  bool int8Activations() const { return int8Act; }

private:
  struct Entry {
    mlir::Value value;
    std::optional<HostTensor> host;
    /// Large initializers are materialized lazily from here.
    const onnx::TensorProto *initializer = nullptr;
    mlir::RankedTensorType type;
  };
  Entry *lookup(const std::string &name);
  mlir::FailureOr<mlir::Value> materialize(Entry &e, const std::string &name);
  std::string describeNode() const;

  mlir::OpBuilder &b;
  std::string file;
  std::string modelDir;
  const onnx::ModelProto &model;
  int64_t inlineLimit;
  bool keepPacked = true;
  bool int8Act = true;
  llvm::StringSet<> overridable;
  int64_t defaultOpset = 0;
  llvm::StringMap<Entry> values;
  llvm::StringMap<std::vector<int64_t>> knownShapeValues;
  llvm::StringMap<const onnx::ValueInfoProto *> valueInfos;
  const onnx::NodeProto *curNode = nullptr;
  const OpTable *curTable = nullptr;
  mlir::Location curLoc;
  std::string lastError;
  unsigned blobCounter = 0;
};

/// Name of an ONNX data type ("FLOAT", "INT64", ...).
std::string onnxTypeName(int32_t t);

/// The mean of `v` over `axes` (sorted, unique), the reduced dims kept with
/// size 1 (ImportReduction.cpp).
mlir::Value reduceMeanKeepDims(GraphImporter &gi, mlir::Value v,
                               llvm::ArrayRef<int64_t> axes);

/// Static or dynamic extract_slice of `v` along one axis (ImportSlice.cpp).
mlir::Value sliceAxis(GraphImporter &gi, mlir::Value v, int64_t axis,
                      mlir::OpFoldResult offset, mlir::OpFoldResult size,
                      int64_t step);

} // namespace moec::onnximport

#endif // MOEC_LIB_IMPORT_GRAPHIMPORTER_H
