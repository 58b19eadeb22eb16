//===- GraphImporter.cpp - ONNX graph import state and helpers ------------===//

#include "GraphImporter.h"
#include "moec/Analysis/Weights.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <onnx/defs/schema.h>

#include <cstring>

using namespace mlir;
using namespace moec::onnximport;
using onnx::TensorProto_DataType;

//===----------------------------------------------------------------------===//
// HostTensor
//===----------------------------------------------------------------------===//

int64_t moec::onnximport::saturatingInt(double v) {
  if (v != v)
    return 0;
  // 2^63 is a double; every double below it converts.
  if (v >= 9223372036854775808.0)
    return INT64_MAX;
  if (v <= -9223372036854775808.0)
    return INT64_MIN;
  return int64_t(v);
}

bool HostTensor::isFloat() const {
  switch (dtype) {
  case onnx::TensorProto_DataType_FLOAT:
  case onnx::TensorProto_DataType_DOUBLE:
  case onnx::TensorProto_DataType_FLOAT16:
  case onnx::TensorProto_DataType_BFLOAT16:
    return true;
  default:
    return false;
  }
}

int64_t HostTensor::size() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

HostTensor HostTensor::ints(std::vector<int64_t> values) {
  HostTensor t;
  t.shape = {int64_t(values.size())};
  t.i = std::move(values);
  return t;
}

HostTensor HostTensor::splat(int32_t dtype, std::vector<int64_t> shape,
                             double value) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  if (t.isFloat())
    t.f.assign(t.size(), value);
  else
    t.i.assign(t.size(), saturatingInt(value));
  return t;
}

std::string moec::onnximport::onnxTypeName(int32_t t) {
  if (onnx::TensorProto_DataType_IsValid(t))
    return onnx::TensorProto_DataType_Name(TensorProto_DataType(t));
  return "type " + std::to_string(t);
}

//===----------------------------------------------------------------------===//
// GraphImporter: state
//===----------------------------------------------------------------------===//

GraphImporter::GraphImporter(OpBuilder &builder, std::string fileName,
                             const onnx::ModelProto &model,
                             int64_t inlineConstantLimit)
    : b(builder), file(std::move(fileName)), model(model),
      inlineLimit(inlineConstantLimit), curLoc(builder.getUnknownLoc()) {
  for (const auto &imp : model.opset_import())
    if (imp.domain().empty() || imp.domain() == "ai.onnx")
      defaultOpset = imp.version();
  const onnx::GraphProto &g = model.graph();
  for (const auto &vi : g.value_info())
    valueInfos[vi.name()] = &vi;
  for (const auto &vi : g.output())
    valueInfos[vi.name()] = &vi;
}

std::string GraphImporter::describeNode() const {
  std::string name = curNode->name();
  if (name.empty() && curNode->output_size() > 0)
    name = "<unnamed, output " + curNode->output(0) + ">";
  std::string s = file + ": node '" + name + "' (";
  if (!curNode->domain().empty() && curNode->domain() != "ai.onnx")
    s += curNode->domain() + ".";
  s += curNode->op_type() + ")";
  return s;
}

LogicalResult GraphImporter::fail(const Twine &reason) {
  lastError = describeNode() + ": " + reason.str();
  return failure();
}

GraphImporter::Entry *GraphImporter::lookup(const std::string &name) {
  auto it = values.find(name);
  return it == values.end() ? nullptr : &it->second;
}

unsigned GraphImporter::numInputs() const {
  unsigned n = curNode->input_size();
  while (n > 0 && curNode->input(n - 1).empty())
    --n;
  return n;
}

bool GraphImporter::hasInput(unsigned i) const {
  return i < unsigned(curNode->input_size()) && !curNode->input(i).empty();
}

bool GraphImporter::hasInputs(unsigned n) const {
  for (unsigned i = 0; i < n; ++i)
    if (!hasInput(i))
      return false;
  return true;
}

bool GraphImporter::hasOutput(unsigned i) const {
  return i < unsigned(curNode->output_size()) && !curNode->output(i).empty();
}

Value GraphImporter::input(unsigned i) {
  Entry *e = lookup(curNode->input(i));
  FailureOr<Value> v = materialize(*e, curNode->input(i));
  return succeeded(v) ? *v : Value();
}

RankedTensorType GraphImporter::inputType(unsigned i) {
  return lookup(curNode->input(i))->type;
}

const HostTensor *GraphImporter::inputConst(unsigned i) {
  if (!hasInput(i))
    return nullptr;
  Entry *e = lookup(curNode->input(i));
  if (!e->host && e->initializer) {
    // Decode lazily so that large weights are never held twice.
    FailureOr<HostTensor> t = decodeTensor(*e->initializer);
    if (failed(t))
      return nullptr;
    e->host = std::move(*t);
  }
  return e->host ? &*e->host : nullptr;
}

bool GraphImporter::allInputsConst(int64_t maxElements) {
  for (unsigned i = 0, n = numInputs(); i < n; ++i) {
    if (!hasInput(i))
      continue;
    Entry *e = lookup(curNode->input(i));
    if (!e->host && !e->initializer)
      return false;
    if (e->type.getNumElements() > maxElements || !inputConst(i))
      return false;
  }
  return true;
}

RankedTensorType GraphImporter::inferredOutputType(unsigned i) {
  auto it = valueInfos.find(curNode->output(i));
  if (it == valueInfos.end())
    return {};
  const onnx::TypeProto &tp = it->second->type();
  if (!tp.has_tensor_type() || !tp.tensor_type().has_shape())
    return {};
  Type elt = elementType(tp.tensor_type().elem_type());
  if (!elt)
    return {};
  SmallVector<int64_t> shape;
  for (const auto &d : tp.tensor_type().shape().dim()) {
    // A negative dim is no shape at all: unknown.
    if (d.has_dim_value() && d.dim_value() < 0)
      return {};
    shape.push_back(d.has_dim_value() ? d.dim_value() : ShapedType::kDynamic);
  }
  return RankedTensorType::get(shape, elt);
}

void GraphImporter::setOutput(unsigned i, Value v) {
  if (!hasOutput(i))
    return;
  auto known = knownShapeValues.find(curNode->output(i));
  auto t = cast<RankedTensorType>(v.getType());
  if (known != knownShapeValues.end() && t.getRank() == 1 &&
      t.getElementType().isInteger(64) &&
      (t.isDynamicDim(0) || t.getDimSize(0) == int64_t(known->second.size()))) {
    setOutputConst(i, HostTensor::ints(known->second));
    return;
  }
  Entry e;
  e.value = v;
  e.type = cast<RankedTensorType>(v.getType());
  values[curNode->output(i)] = std::move(e);
}

void GraphImporter::setOutputConst(unsigned i, HostTensor t) {
  if (!hasOutput(i))
    return;
  Entry e;
  e.type = RankedTensorType::get(t.shape, elementType(t.dtype));
  e.host = std::move(t);
  values[curNode->output(i)] = std::move(e);
}

void GraphImporter::defineConst(const std::string &name, HostTensor t) {
  Entry e;
  e.type = RankedTensorType::get(t.shape, elementType(t.dtype));
  e.host = std::move(t);
  values[name] = std::move(e);
}

const HostTensor *GraphImporter::knownValue(const std::string &name) {
  Entry *e = lookup(name);
  return e && e->host ? &*e->host : nullptr;
}

LogicalResult GraphImporter::importSubNode(const onnx::NodeProto &sub) {
  const onnx::NodeProto *node = curNode;
  const OpTable *table = curTable;
  Location loc = curLoc;
  LogicalResult r = importNode(sub, *table);
  curNode = node;
  curTable = table;
  curLoc = loc;
  return r;
}

void GraphImporter::defineValue(const std::string &name, Value v) {
  Entry e;
  e.value = v;
  e.type = cast<RankedTensorType>(v.getType());
  values[name] = std::move(e);
}

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

const onnx::AttributeProto *GraphImporter::attr(StringRef name) const {
  for (const auto &a : curNode->attribute())
    if (a.name() == name)
      return &a;
  return nullptr;
}

int64_t GraphImporter::intAttr(StringRef name, int64_t dflt) const {
  const onnx::AttributeProto *a = attr(name);
  return a ? a->i() : dflt;
}

double GraphImporter::floatAttr(StringRef name, double dflt) const {
  const onnx::AttributeProto *a = attr(name);
  return a ? a->f() : dflt;
}

std::string GraphImporter::strAttr(StringRef name, StringRef dflt) const {
  const onnx::AttributeProto *a = attr(name);
  return a ? a->s() : dflt.str();
}

std::vector<int64_t> GraphImporter::intsAttr(StringRef name) const {
  const onnx::AttributeProto *a = attr(name);
  if (!a)
    return {};
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

//===----------------------------------------------------------------------===//
// Types and constants
//===----------------------------------------------------------------------===//

Type GraphImporter::elementType(int32_t t) {
  switch (t) {
  case onnx::TensorProto_DataType_FLOAT:
    return b.getF32Type();
  case onnx::TensorProto_DataType_DOUBLE:
    return b.getF64Type();
  case onnx::TensorProto_DataType_FLOAT16:
    return b.getF16Type();
  case onnx::TensorProto_DataType_BFLOAT16:
    return b.getBF16Type();
  case onnx::TensorProto_DataType_INT64:
    return b.getI64Type();
  case onnx::TensorProto_DataType_INT32:
    return b.getI32Type();
  case onnx::TensorProto_DataType_INT8:
    return b.getI8Type();
  case onnx::TensorProto_DataType_UINT8:
    // Packed quantized weights (MatMulNBits, QMoE); no arith op takes it.
    return IntegerType::get(b.getContext(), 8, IntegerType::Unsigned);
  case onnx::TensorProto_DataType_BOOL:
    return b.getI1Type();
  default:
    return {};
  }
}

int32_t GraphImporter::onnxType(Type t) {
  if (t.isF32())
    return onnx::TensorProto_DataType_FLOAT;
  if (t.isF64())
    return onnx::TensorProto_DataType_DOUBLE;
  if (t.isF16())
    return onnx::TensorProto_DataType_FLOAT16;
  if (t.isBF16())
    return onnx::TensorProto_DataType_BFLOAT16;
  if (t.isInteger(64))
    return onnx::TensorProto_DataType_INT64;
  if (t.isInteger(32))
    return onnx::TensorProto_DataType_INT32;
  if (t.isUnsignedInteger(8))
    return onnx::TensorProto_DataType_UINT8;
  if (t.isInteger(8))
    return onnx::TensorProto_DataType_INT8;
  if (t.isInteger(1))
    return onnx::TensorProto_DataType_BOOL;
  return 0;
}

Value GraphImporter::constant(const HostTensor &t) {
  Type elt = elementType(t.dtype);
  auto type = RankedTensorType::get(t.shape, elt);
  DenseElementsAttr attr;
  if (auto ft = dyn_cast<FloatType>(elt)) {
    SmallVector<APFloat> vals;
    for (double d : t.f) {
      APFloat v(d);
      bool lost;
      v.convert(ft.getFloatSemantics(), APFloat::rmNearestTiesToEven, &lost);
      vals.push_back(v);
    }
    attr = DenseElementsAttr::get(type, vals);
  } else {
    unsigned w = elt.getIntOrFloatBitWidth();
    SmallVector<APInt> vals;
    for (int64_t v : t.i)
      vals.push_back(APInt(w, uint64_t(v), /*isSigned=*/true,
                           /*implicitTrunc=*/true));
    attr = DenseElementsAttr::get(type, vals);
  }
  return arith::ConstantOp::create(b, curLoc, attr);
}

Value GraphImporter::weight(const HostTensor &t, StringRef name) {
  Type elt = elementType(t.dtype);
  bool bytesOnly = elt && elt.isUnsignedInteger(8); // packed weight codes
  if (t.size() <= inlineLimit || (!isa<FloatType>(elt) && !bytesOnly))
    return constant(t);
  auto type = RankedTensorType::get(t.shape, elt);
  if (bytesOnly) {
    std::vector<char> data(t.i.begin(), t.i.end());
    AsmResourceBlob blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(
        ArrayRef<char>(data.data(), data.size()), alignof(uint64_t));
    auto attr = DenseResourceElementsAttr::get(type, name, std::move(blob));
    return arith::ConstantOp::create(b, curLoc, cast<TypedAttr>(attr));
  }
  auto ft = cast<FloatType>(elt);
  unsigned bytes = ft.getWidth() / 8;
  std::vector<char> data(size_t(t.size()) * bytes);
  for (int64_t k = 0; k < t.size(); ++k) {
    APFloat v(t.f[k]);
    bool lost;
    v.convert(ft.getFloatSemantics(), APFloat::rmNearestTiesToEven, &lost);
    uint64_t bits = v.bitcastToAPInt().getZExtValue();
    std::memcpy(data.data() + k * bytes, &bits, bytes); // little endian
  }
  AsmResourceBlob blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(
      ArrayRef<char>(data.data(), data.size()), alignof(uint64_t));
  auto attr = DenseResourceElementsAttr::get(type, name, std::move(blob));
  return arith::ConstantOp::create(b, curLoc, cast<TypedAttr>(attr));
}

Value GraphImporter::scalar(Type elt, double value) {
  if (auto ft = dyn_cast<FloatType>(elt))
    return arith::ConstantOp::create(b, curLoc, FloatAttr::get(ft, value));
  return arith::ConstantOp::create(b, curLoc,
                                   IntegerAttr::get(elt, int64_t(value)));
}

LogicalResult GraphImporter::checkTensorData(const onnx::TensorProto &t) {
  return success(succeeded(tensorBytes(t, /*validateOnly=*/true)));
}

FailureOr<std::vector<char>>
GraphImporter::tensorBytes(const onnx::TensorProto &t, bool validateOnly) {
  Type elt = elementType(t.data_type());
  if (!elt) {
    lastError = file + ": tensor '" + t.name() + "' has unsupported dtype " +
                onnxTypeName(t.data_type());
    return failure();
  }
  // Storage size per element: i1 is kept one byte per element.
  size_t eltBytes = elt.isInteger(1) ? 1 : elt.getIntOrFloatBitWidth() / 8;
  // The shape's size, checked: a negative dim or a product past 2^62 bytes
  // is a corrupt tensor, not an allocation to try.
  uint64_t want = eltBytes;
  std::string dims;
  for (int64_t d : t.dims())
    dims += (dims.empty() ? "" : ",") + std::to_string(d);
  for (int64_t d : t.dims()) {
    if (d < 0 || (d > 0 && want > (uint64_t(1) << 62) / uint64_t(d))) {
      lastError = file + ": tensor '" + t.name() + "' has shape [" + dims +
                  "]: " + (d < 0 ? "a negative dim" : "more than 2^62 bytes") +
                  " (a corrupt model?)";
      return failure();
    }
    want *= uint64_t(d);
  }
  std::vector<char> out;
  if (t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (const auto &kv : t.external_data()) {
      int64_t *field = kv.key() == "offset"   ? &offset
                       : kv.key() == "length" ? &length
                                              : nullptr;
      if (kv.key() == "location")
        location = kv.value();
      if (!field)
        continue;
      if (StringRef(kv.value()).getAsInteger(10, *field) || *field < 0) {
        lastError = file + ": tensor '" + t.name() + "': external data " +
                    kv.key() + " '" + kv.value() + "' is not a byte count >= 0";
        return failure();
      }
    }
    if (length >= 0 && uint64_t(length) != want) {
      lastError = file + ": tensor '" + t.name() + "': external data length " +
                  std::to_string(length) + " bytes, its shape [" + dims +
                  "] needs " + std::to_string(want);
      return failure();
    }
    SmallString<256> path(modelDir);
    llvm::sys::path::append(path, location);
    uint64_t fileSize = 0;
    if (std::error_code ec = llvm::sys::fs::file_size(path, fileSize)) {
      lastError = file + ": tensor '" + t.name() +
                  "': cannot read external "
                  "data file '" +
                  std::string(path) + "': " + ec.message();
      return failure();
    }
    if (uint64_t(offset) + want > fileSize) {
      lastError = file + ": tensor '" + t.name() + "': external data file '" +
                  std::string(path) + "' holds " + std::to_string(fileSize) +
                  " bytes, " + std::to_string(offset + want) +
                  " needed (offset " + std::to_string(offset) + " + " +
                  std::to_string(want) + ")";
      return failure();
    }
    if (validateOnly)
      return out;
    auto buf = llvm::MemoryBuffer::getFileSlice(
        path, length >= 0 ? length : int64_t(want), offset,
        /*IsVolatile=*/false);
    if (!buf) {
      lastError = file + ": tensor '" + t.name() +
                  "': cannot read external "
                  "data file '" +
                  std::string(path) + "' (offset " + std::to_string(offset) +
                  "): " + buf.getError().message();
      return failure();
    }
    if ((*buf)->getBufferSize() < want) {
      lastError = file + ": tensor '" + t.name() + "': external data file '" +
                  std::string(path) + "' holds " +
                  std::to_string((*buf)->getBufferSize()) + " bytes, " +
                  std::to_string(want) + " needed";
      return failure();
    }
    out.resize(want);
    std::memcpy(out.data(), (*buf)->getBufferStart(), want);
    return out;
  }
  int64_t n = int64_t(want / eltBytes);
  if (t.has_raw_data()) {
    if (t.raw_data().size() != want) {
      lastError = file + ": tensor '" + t.name() + "' has " +
                  std::to_string(t.raw_data().size()) + " bytes of data, " +
                  std::to_string(want) + " expected for its shape";
      return failure();
    }
    if (!validateOnly) {
      out.resize(want);
      std::memcpy(out.data(), t.raw_data().data(), want);
    }
    return out;
  }
  auto sizeError = [&](int64_t got) {
    lastError = file + ": tensor '" + t.name() + "' has " +
                std::to_string(got) + " elements, " + std::to_string(n) +
                " expected for its shape";
    return failure();
  };
  auto count = [&]() -> int64_t {
    switch (t.data_type()) {
    case onnx::TensorProto_DataType_FLOAT:
      return t.float_data_size();
    case onnx::TensorProto_DataType_DOUBLE:
      return t.double_data_size();
    case onnx::TensorProto_DataType_INT64:
      return t.int64_data_size();
    default:
      return t.int32_data_size();
    }
  };
  if (count() != n)
    return sizeError(count());
  if (validateOnly)
    return out;
  out.resize(want);
  switch (t.data_type()) {
  case onnx::TensorProto_DataType_FLOAT:
    if (t.float_data_size() != n)
      return sizeError(t.float_data_size());
    std::memcpy(out.data(), t.float_data().data(), want);
    break;
  case onnx::TensorProto_DataType_DOUBLE:
    if (t.double_data_size() != n)
      return sizeError(t.double_data_size());
    std::memcpy(out.data(), t.double_data().data(), want);
    break;
  case onnx::TensorProto_DataType_INT64:
    if (t.int64_data_size() != n)
      return sizeError(t.int64_data_size());
    std::memcpy(out.data(), t.int64_data().data(), want);
    break;
  default: {
    // int32, int8, bool, float16 and bfloat16 live in int32_data.
    if (t.int32_data_size() != n)
      return sizeError(t.int32_data_size());
    for (int64_t k = 0; k < n; ++k) {
      int32_t v = t.int32_data(k);
      std::memcpy(out.data() + k * eltBytes, &v, eltBytes);
    }
  }
  }
  return out;
}

static double halfToDouble(uint16_t h, bool bf16) {
  if (bf16) {
    uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  APFloat v(APFloat::IEEEhalf(), APInt(16, h));
  return v.convertToFloat();
}

FailureOr<HostTensor> GraphImporter::decodeTensor(const onnx::TensorProto &t) {
  FailureOr<std::vector<char>> bytes = tensorBytes(t);
  if (failed(bytes))
    return failure();
  HostTensor h;
  h.dtype = t.data_type();
  h.shape.assign(t.dims().begin(), t.dims().end());
  int64_t n = h.size();
  const char *p = bytes->data();
  auto load = [&](auto tag, int64_t k) {
    decltype(tag) v;
    std::memcpy(&v, p + k * sizeof(v), sizeof(v));
    return v;
  };
  for (int64_t k = 0; k < n; ++k) {
    switch (h.dtype) {
    case onnx::TensorProto_DataType_FLOAT:
      h.f.push_back(load(float(), k));
      break;
    case onnx::TensorProto_DataType_DOUBLE:
      h.f.push_back(load(double(), k));
      break;
    case onnx::TensorProto_DataType_FLOAT16:
      h.f.push_back(halfToDouble(load(uint16_t(), k), false));
      break;
    case onnx::TensorProto_DataType_BFLOAT16:
      h.f.push_back(halfToDouble(load(uint16_t(), k), true));
      break;
    case onnx::TensorProto_DataType_INT64:
      h.i.push_back(load(int64_t(), k));
      break;
    case onnx::TensorProto_DataType_INT32:
      h.i.push_back(load(int32_t(), k));
      break;
    case onnx::TensorProto_DataType_INT8:
      h.i.push_back(load(int8_t(), k));
      break;
    case onnx::TensorProto_DataType_UINT8:
      h.i.push_back(load(uint8_t(), k));
      break;
    case onnx::TensorProto_DataType_BOOL:
      h.i.push_back(load(uint8_t(), k) != 0);
      break;
    }
  }
  return h;
}

LogicalResult GraphImporter::defineInitializer(const onnx::TensorProto &t) {
  Type elt = elementType(t.data_type());
  if (!elt) {
    lastError = file + ": initializer '" + t.name() +
                "' has unsupported dtype " + onnxTypeName(t.data_type());
    return failure();
  }
  // Validate the data now (sizes, external files) so that materializing it
  // later cannot fail.
  if (failed(checkTensorData(t)))
    return failure();
  Entry e;
  e.type = RankedTensorType::get(
      SmallVector<int64_t>(t.dims().begin(), t.dims().end()), elt);
  e.initializer = &t;
  values[t.name()] = std::move(e);
  return success();
}

std::optional<AsmResourceBlob>
GraphImporter::mapExternal(const onnx::TensorProto &t) {
  lastError.clear();
  Type elt = elementType(t.data_type());
  if (t.data_location() != onnx::TensorProto_DataLocation_EXTERNAL || !elt ||
      elt.isInteger(1))
    return std::nullopt;
  // defineInitializer checked the location, offset and size.
  std::string location;
  uint64_t offset = 0;
  for (const auto &kv : t.external_data()) {
    if (kv.key() == "location")
      location = kv.value();
    else if (kv.key() == "offset")
      (void)StringRef(kv.value()).getAsInteger(10, offset);
  }
  SmallString<256> path(modelDir);
  llvm::sys::path::append(path, location);
  unsigned eltBytes = elt.getIntOrFloatBitWidth() / 8;
  uint64_t size = eltBytes;
  for (int64_t d : t.dims())
    size *= uint64_t(d);
  std::string err;
  std::optional<AsmResourceBlob> blob =
      mapFileBlob(path, offset, size, eltBytes, err);
  if (!err.empty())
    lastError = file + ": tensor '" + t.name() + "': external data: " + err;
  return blob;
}

FailureOr<Value> GraphImporter::materialize(Entry &e, const std::string &name) {
  if (e.value)
    return e.value;
  if (e.initializer && e.type.getNumElements() > inlineLimit) {
    // Weights go to a dense_resource blob: the printed IR names them only.
    // External data is mapped from its file, not read (moec/Analysis/
    // Weights.h): its pages are read when a pass or the plan writer needs
    // them.
    if (std::optional<AsmResourceBlob> mapped = mapExternal(*e.initializer)) {
      std::string blobName = name.empty() ? "weight" : name;
      auto attr =
          DenseResourceElementsAttr::get(e.type, blobName, std::move(*mapped));
      OpBuilder::InsertionGuard g(b);
      e.value = arith::ConstantOp::create(
          b, NameLoc::get(b.getStringAttr(name)), cast<TypedAttr>(attr));
      return e.value;
    }
    if (!lastError.empty())
      return failure();
    FailureOr<std::vector<char>> bytes = tensorBytes(*e.initializer);
    if (failed(bytes))
      return failure();
    if (e.type.getElementType().isInteger(1)) {
      // Resource blobs pack i1 as bytes too; keep bool weights inline.
      FailureOr<HostTensor> h = decodeTensor(*e.initializer);
      if (failed(h))
        return failure();
      e.host = std::move(*h);
    } else {
      std::string blobName = name.empty() ? "weight" : name;
      AsmResourceBlob blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(
          ArrayRef<char>(bytes->data(), bytes->size()), alignof(uint64_t));
      auto attr =
          DenseResourceElementsAttr::get(e.type, blobName, std::move(blob));
      OpBuilder::InsertionGuard g(b);
      e.value = arith::ConstantOp::create(
          b, NameLoc::get(b.getStringAttr(name)), cast<TypedAttr>(attr));
      return e.value;
    }
  }
  if (!e.host && e.initializer) {
    FailureOr<HostTensor> h = decodeTensor(*e.initializer);
    if (failed(h))
      return failure();
    e.host = std::move(*h);
  }
  assert(e.host && "value with neither SSA value nor known contents");
  // Folded results as large as weights are stored like weights.
  e.value =
      e.host->size() > inlineLimit ? weight(*e.host, name) : constant(*e.host);
  return e.value;
}

FailureOr<Value> GraphImporter::lookupOutput(const std::string &name) {
  Entry *e = lookup(name);
  if (!e) {
    lastError = file + ": graph output '" + name + "' is produced by no node";
    return failure();
  }
  return materialize(*e, name);
}

//===----------------------------------------------------------------------===//
// Node dispatch
//===----------------------------------------------------------------------===//

LogicalResult GraphImporter::importNode(const onnx::NodeProto &node,
                                        const OpTable &table) {
  curNode = &node;
  curTable = &table;
  std::string nodeName = node.name().empty() ? node.op_type() : node.name();
  curLoc = NameLoc::get(b.getStringAttr(nodeName),
                        FileLineColLoc::get(ctx(), file, 0, 0));
  for (unsigned i = 0, n = node.input_size(); i < n; ++i) {
    if (node.input(i).empty()) {
      // An empty name omits an optional input; a required one cannot be
      // left out (the op's schema says which are optional).
      const onnx::OpSchema *schema =
          node.domain().empty() || node.domain() == "ai.onnx"
              ? onnx::OpSchemaRegistry::Schema(node.op_type(), defaultOpset)
              : nullptr;
      if (schema && !schema->inputs().empty()) {
        const auto &formal =
            schema->inputs()[std::min<size_t>(i, schema->inputs().size() - 1)];
        if (formal.GetOption() != onnx::OpSchema::Optional)
          return fail("input " + std::to_string(i) + " ('" + formal.GetName() +
                      "') is required but its name is "
                      "empty");
      }
      continue;
    }
    if (!lookup(node.input(i)))
      return fail("input '" + node.input(i) + "' is not defined before use");
  }
  std::string key = node.op_type();
  if (!node.domain().empty() && node.domain() != "ai.onnx")
    key = node.domain() + "::" + key;
  auto it = table.find(key);
  if (it == table.end())
    return fail("unsupported op '" + key + "'");
  if (failed(it->second(*this))) {
    if (lastError.empty())
      return fail("could not be imported");
    return failure();
  }
  for (unsigned i = 0, n = node.output_size(); i < n; ++i)
    if (!node.output(i).empty() && !lookup(node.output(i)))
      return fail("output " + std::to_string(i) + " ('" + node.output(i) +
                  "') is not supported");
  return success();
}

//===----------------------------------------------------------------------===//
// Building helpers
//===----------------------------------------------------------------------===//

Value GraphImporter::dim(Value tensor, int64_t d) {
  auto t = cast<RankedTensorType>(tensor.getType());
  if (!t.isDynamicDim(d))
    return arith::ConstantIndexOp::create(b, curLoc, t.getDimSize(d));
  return tensor::DimOp::create(b, curLoc, tensor, d);
}

Value GraphImporter::emptyTensor(ArrayRef<int64_t> shape, Type elt,
                                 ValueRange dynSizes) {
  return tensor::EmptyOp::create(b, curLoc, shape, elt, dynSizes);
}

Value GraphImporter::emptyLike(ArrayRef<int64_t> shape, Type elt,
                               ValueRange like) {
  SmallVector<Value> dyn;
  int64_t rank = shape.size();
  for (int64_t d = 0; d < rank; ++d) {
    if (!ShapedType::isDynamic(shape[d]))
      continue;
    Value size;
    for (Value v : like) {
      auto t = cast<RankedTensorType>(v.getType());
      int64_t vd = d - (rank - t.getRank());
      if (vd < 0)
        continue;
      if (t.isDynamicDim(vd)) {
        size = tensor::DimOp::create(b, curLoc, v, vd);
        break;
      }
    }
    assert(size && "dynamic result dim with no dynamic source");
    dyn.push_back(size);
  }
  return emptyTensor(shape, elt, dyn);
}

FailureOr<SmallVector<int64_t>>
GraphImporter::broadcastShape(ArrayRef<RankedTensorType> types) {
  int64_t rank = 0;
  for (RankedTensorType t : types)
    rank = std::max<int64_t>(rank, t.getRank());
  SmallVector<int64_t> out(rank, 1);
  for (RankedTensorType t : types) {
    for (int64_t d = 0; d < t.getRank(); ++d) {
      int64_t od = d + rank - t.getRank();
      int64_t s = t.getDimSize(d);
      if (s == 1)
        continue;
      if (out[od] == 1) {
        out[od] = s;
      } else if (ShapedType::isDynamic(out[od])) {
        if (!ShapedType::isDynamic(s))
          out[od] = s;
      } else if (!ShapedType::isDynamic(s) && s != out[od]) {
        std::string msg = "operand shapes do not broadcast:";
        for (RankedTensorType tt : types) {
          msg += " [";
          for (int64_t k = 0; k < tt.getRank(); ++k)
            msg += (k ? "," : "") + (tt.isDynamicDim(k)
                                         ? std::string("?")
                                         : std::to_string(tt.getDimSize(k)));
          msg += "]";
        }
        (void)fail(msg);
        return failure();
      }
    }
  }
  return out;
}

FailureOr<Value> GraphImporter::elementwise(ValueRange inputs, Type resultElt,
                                            ScalarBody body) {
  SmallVector<RankedTensorType> types;
  for (Value v : inputs)
    types.push_back(cast<RankedTensorType>(v.getType()));
  FailureOr<SmallVector<int64_t>> shape = broadcastShape(types);
  if (failed(shape))
    return failure();
  int64_t rank = shape->size();
  SmallVector<AffineMap> maps;
  for (RankedTensorType t : types) {
    SmallVector<AffineExpr> exprs;
    for (int64_t d = 0; d < t.getRank(); ++d) {
      int64_t od = d + rank - t.getRank();
      // A size-1 dim broadcasts unless the result dim is also 1.
      if (t.getDimSize(d) == 1 && (*shape)[od] != 1)
        exprs.push_back(b.getAffineConstantExpr(0));
      else
        exprs.push_back(b.getAffineDimExpr(od));
    }
    maps.push_back(AffineMap::get(rank, 0, exprs, ctx()));
  }
  maps.push_back(b.getMultiDimIdentityMap(rank));
  Value init = emptyLike(*shape, resultElt, inputs);
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      b, curLoc, TypeRange{init.getType()}, inputs, ValueRange{init}, maps,
      iters, [&](OpBuilder &bb, Location l, ValueRange args) {
        Value r = body(bb, l, args.drop_back());
        linalg::YieldOp::create(bb, l, r);
      });
  return generic.getResult(0);
}

Value GraphImporter::convertScalar(OpBuilder &bb, Location l, Value v,
                                   Type to) {
  Type from = v.getType();
  if (from == to)
    return v;
  auto fromF = dyn_cast<FloatType>(from);
  auto toF = dyn_cast<FloatType>(to);
  if (to.isInteger(1)) {
    Value zero =
        fromF ? arith::ConstantOp::create(bb, l, FloatAttr::get(from, 0))
              : arith::ConstantOp::create(bb, l, IntegerAttr::get(from, 0));
    if (fromF)
      return arith::CmpFOp::create(bb, l, arith::CmpFPredicate::UNE, v, zero);
    return arith::CmpIOp::create(bb, l, arith::CmpIPredicate::ne, v, zero);
  }
  if (fromF && toF) {
    if (fromF.getWidth() < toF.getWidth())
      return arith::ExtFOp::create(bb, l, to, v);
    return arith::TruncFOp::create(bb, l, to, v);
  }
  if (fromF)
    return arith::FPToSIOp::create(bb, l, to, v);
  if (toF) {
    if (from.isInteger(1))
      return arith::UIToFPOp::create(bb, l, to, v);
    return arith::SIToFPOp::create(bb, l, to, v);
  }
  unsigned fw = from.getIntOrFloatBitWidth(), tw = to.getIntOrFloatBitWidth();
  if (fw < tw)
    return from.isInteger(1) ? Value(arith::ExtUIOp::create(bb, l, to, v))
                             : Value(arith::ExtSIOp::create(bb, l, to, v));
  return arith::TruncIOp::create(bb, l, to, v);
}

Value GraphImporter::castTensor(Value v, Type to) {
  auto t = cast<RankedTensorType>(v.getType());
  if (t.getElementType() == to)
    return v;
  return *elementwise(ValueRange{v}, to,
                      [&](OpBuilder &bb, Location l, ValueRange args) {
                        return convertScalar(bb, l, args[0], to);
                      });
}

Value GraphImporter::reshape(Value v, ArrayRef<int64_t> shape,
                             ValueRange dynSizes) {
  auto t = cast<RankedTensorType>(v.getType());
  auto resultType = RankedTensorType::get(shape, t.getElementType());
  if (resultType == t)
    return v;
  if (dynSizes.empty())
    return tensor::ReshapeOp::create(
        b, curLoc, resultType, v,
        constant(HostTensor::ints(
            std::vector<int64_t>(shape.begin(), shape.end()))));
  SmallVector<Value> dims;
  unsigned k = 0;
  for (int64_t s : shape) {
    Value d = ShapedType::isDynamic(s)
                  ? dynSizes[k++]
                  : arith::ConstantIndexOp::create(b, curLoc, s).getResult();
    dims.push_back(arith::IndexCastOp::create(b, curLoc, b.getI64Type(), d));
  }
  Value shapeTensor = tensor::FromElementsOp::create(
      b, curLoc, RankedTensorType::get({int64_t(shape.size())}, b.getI64Type()),
      dims);
  return tensor::ReshapeOp::create(b, curLoc, resultType, v, shapeTensor);
}
