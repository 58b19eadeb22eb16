//===- OnnxImporter.cpp - ONNX model to MLIR ------------------------------===//
//
// Loads an ONNX model (binary or text), checks it, runs shape inference with
// the user's fixed input shapes, and imports the graph into `func.func @main`.
//
//===----------------------------------------------------------------------===//

#include "moec/Import/OnnxImporter.h"
#include "GraphImporter.h"
#include "InferenceGuards.h"
#include "ShapeBounds.h"

#include "moec/Dialect/MoE/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <climits>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "onnx/checker.h"
#include "onnx/defs/parser.h"
#include "onnx/defs/schema.h"
#include "onnx/shape_inference/implementation.h"

using namespace mlir;
using namespace moec;
using namespace moec::onnximport;

/// Opsets imported directly, and the newer ones (torch.onnx's dynamo
/// exporter writes 18 and up) that adaptNewerOpset rewrites to opset 17
/// first: the ONNX library moec links (1.12) knows schemas up to opset 17.
static constexpr int64_t kMinOpset = 13, kMaxOpset = 17, kMaxAdapted = 22;

void moec::registerImportDialects(DialectRegistry &registry) {
  registry.insert<arith::ArithDialect, func::FuncDialect, linalg::LinalgDialect,
                  math::MathDialect, tensor::TensorDialect, moe::MoEDialect>();
}

/// Parses a symbolic dim `?`, `?+B`, `A*?` or `A*?+B`; false when `p` is
/// not of that form.
static bool parseSymbolicDim(StringRef p, int64_t &a, int64_t &b) {
  a = 1;
  b = 0;
  if (!p.contains('?'))
    return false;
  auto [lhs, rhs] = p.split('+');
  lhs = lhs.trim();
  if (p.contains('+') && (rhs.trim().getAsInteger(10, b) || b < 0))
    return false;
  if (lhs == "?")
    return true;
  if (!lhs.consume_back("?") || !lhs.consume_back("*"))
    return false;
  return !lhs.trim().getAsInteger(10, a) && a >= 1;
}

bool moec::parseInputShape(
    StringRef text,
    std::vector<std::pair<std::string, std::vector<int64_t>>> &out,
    std::string &error, std::vector<SymbolicInputDim> *symbolic) {
  SmallVector<StringRef> items;
  text.split(items, ';', -1, /*KeepEmpty=*/false);
  for (StringRef item : items) {
    auto [name, dims] = item.split('=');
    name = name.trim();
    if (name.empty() || dims.empty()) {
      error = "--input-shape '" + item.str() +
              "': expected NAME=D0,D1,... (e.g. x=2,16,64)";
      return false;
    }
    std::vector<int64_t> shape;
    SmallVector<StringRef> parts;
    dims.split(parts, ',');
    for (StringRef p : parts) {
      int64_t d, a, b;
      if (symbolic && parseSymbolicDim(p.trim(), a, b)) {
        symbolic->push_back({name.str(), int(shape.size()), a, b});
        shape.push_back(-1);
        continue;
      }
      if (p.trim().getAsInteger(10, d) || d < 0) {
        error = "--input-shape '" + item.str() + "': '" + p.str() +
                "' is not " +
                (symbolic ? "a non-negative integer or a token-count dim (?, "
                            "?+B, A*?, A*?+B)"
                          : "a non-negative integer");
        return false;
      }
      shape.push_back(d);
    }
    out.emplace_back(name.str(), std::move(shape));
  }
  return true;
}

void moec::substituteTokens(
    std::vector<std::pair<std::string, std::vector<int64_t>>> &shapes,
    const std::vector<SymbolicInputDim> &symbolic, int64_t tokens) {
  for (const SymbolicInputDim &s : symbolic)
    for (auto &[name, shape] : shapes)
      if (name == s.input && size_t(s.dim) < shape.size())
        shape[size_t(s.dim)] = s.a * tokens + s.b;
}

namespace {
/// Drives one import: model-level checks, then the graph.
class ModelImporter {
public:
  /// `contents`: the model's bytes when held in memory (importOnnxBuffer),
  /// else none and load() reads `path`.
  ModelImporter(MLIRContext &ctx, StringRef path, const ImportOptions &opts,
                std::optional<StringRef> contents = std::nullopt)
      : ctx(ctx), path(path.str()), opts(opts), contents(contents) {}

  OwningOpRef<ModuleOp> run(std::string &error);

private:
  LogicalResult load();
  LogicalResult checkOpsets();
  LogicalResult adaptNewerOpset();
  LogicalResult applyInputShapes();
  LogicalResult check();
  LogicalResult inferShapes();
  std::string describeInferenceError(const std::string &what);
  /// Marks a message as ONNX shape inference's. With --input-shape the
  /// likely cause is a shape that contradicts the model: say so.
  std::string inferenceSuffix() const {
    return opts.inputShapes.empty()
               ? " (ONNX shape inference)"
               : " (ONNX shape inference; does an --input-shape contradict "
                 "the model?)";
  }
  OwningOpRef<ModuleOp> build();
  LogicalResult err(const Twine &msg) {
    error = path + ": " + msg.str();
    return failure();
  }

  MLIRContext &ctx;
  std::string strictInferenceError;
  /// Values of shape tensors found by ONNX's data propagation.
  std::unordered_map<std::string, onnx::TensorShapeProto> shapeData;
  std::string path;
  const ImportOptions &opts;
  std::optional<StringRef> contents;
  onnx::ModelProto model;
  std::string error;
  int64_t sourceOpset = 0; ///< the model's default-domain opset
};
} // namespace

/// ONNX error texts span lines; ours are one line.
static std::string oneLine(std::string s) {
  for (char &c : s)
    if (c == '\n')
      c = ' ';
  while (!s.empty() && s.back() == ' ')
    s.pop_back();
  return s;
}

LogicalResult ModelImporter::load() {
  std::unique_ptr<llvm::MemoryBuffer> file;
  StringRef bytes;
  if (contents) {
    bytes = *contents;
  } else {
    auto buf = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                           /*RequiresNullTerminator=*/false);
    if (!buf)
      return err("cannot open: " + buf.getError().message());
    file = std::move(*buf);
    bytes = file->getBuffer();
  }
  StringRef ext = llvm::sys::path::extension(path);
  if (ext == ".onnxtxt" || ext == ".txt") {
    // libonnx's text parser converts numbers with std::stoll/stof, which
    // throw on a literal out of range (a 23-digit int, 1e99999). It reads
    // a C string: text after a NUL byte is not part of the model.
    std::string text = bytes.str();
    onnx::Status st;
    try {
      st = onnx::OnnxParser::Parse(model, text.c_str());
    } catch (const std::out_of_range &e) {
      return err(std::string("not a valid ONNX text model: a number literal "
                             "is out of range for its type (") +
                 e.what() + ")");
    } catch (const std::exception &e) {
      return err(std::string("not a valid ONNX text model: ") + e.what());
    }
    if (!st.IsOK())
      return err("not a valid ONNX text model: " + oneLine(st.ErrorMessage()));
  } else {
    if (bytes.empty())
      return err("file is empty, not an ONNX model");
    if (bytes.size() > size_t(INT_MAX) ||
        !model.ParseFromArray(bytes.data(), int(bytes.size())))
      return err("not a valid ONNX model (protobuf parsing failed: the file "
                 "is truncated or not ONNX)");
  }
  if (!model.has_graph() || model.graph().node_size() == 0)
    return err("not a valid ONNX model: it has no graph nodes");
  if (model.ir_version() == 0)
    return err("not a valid ONNX model: ir_version is missing");
  return success();
}

LogicalResult ModelImporter::checkOpsets() {
  bool haveDefault = false;
  for (const auto &imp : model.opset_import()) {
    if (imp.domain().empty() || imp.domain() == "ai.onnx") {
      haveDefault = true;
      if (imp.version() < kMinOpset || imp.version() > kMaxAdapted)
        return err("opset " + Twine(imp.version()) +
                   " of the default domain is not supported (moec supports "
                   "opsets " +
                   Twine(kMinOpset) + " to " + Twine(kMaxAdapted) +
                   "; re-export with an opset in that range)");
      sourceOpset = imp.version();
    }
  }
  if (!haveDefault)
    return err("the model imports no opset of the default ONNX domain");
  return success();
}

/// The node's name for messages, as GraphImporter::describeNode says it.
static std::string nodeText(const onnx::NodeProto &n) {
  std::string name = n.name();
  if (name.empty())
    name = n.output_size() > 0 ? "<unnamed, output " + n.output(0) + ">"
                               : "<unnamed>";
  return "node '" + name + "' (" + n.op_type() + ")";
}

/// Opsets 18 to 22 changed, for the ops moec imports, only where an
/// attribute became an input (Reduce* axes, 18), Split's `num_outputs` (18),
/// Pad's `axes` input (18; its pads are spread over all dims),
/// Cast's `saturate` (19, float8 only) and a new Gelu (20); the rest are new
/// element types and new ops. Rewrites
/// those forms into their opset-17 equivalents and imports the model as
/// opset 17; what has no opset-17 form is an error naming the node.
LogicalResult ModelImporter::adaptNewerOpset() {
  if (sourceOpset <= kMaxOpset)
    return success();
  onnx::GraphProto *g = model.mutable_graph();
  // Constant int64 lists by value name: initializers and Constant nodes.
  auto constInts = [&](const std::string &name,
                       std::vector<int64_t> &out) -> bool {
    const onnx::TensorProto *t = nullptr;
    for (const auto &init : g->initializer())
      if (init.name() == name)
        t = &init;
    for (const auto &n : g->node())
      if (n.op_type() == "Constant" && n.output_size() == 1 &&
          n.output(0) == name)
        for (const auto &a : n.attribute())
          if (a.name() == "value" && a.has_t())
            t = &a.t();
    if (!t || t->data_type() != onnx::TensorProto::INT64 ||
        t->has_data_location())
      return false;
    out.clear();
    if (t->has_raw_data()) {
      const std::string &raw = t->raw_data();
      out.resize(raw.size() / 8);
      std::memcpy(out.data(), raw.data(), out.size() * 8);
    } else {
      out.assign(t->int64_data().begin(), t->int64_data().end());
    }
    return true;
  };
  auto dropAttr = [](onnx::NodeProto &n, StringRef attr) {
    auto *attrs = n.mutable_attribute();
    for (int i = attrs->size() - 1; i >= 0; --i)
      if (attrs->Get(i).name() == attr)
        attrs->DeleteSubrange(i, 1);
  };
  auto findAttr = [](const onnx::NodeProto &n,
                     StringRef attr) -> const onnx::AttributeProto * {
    for (const auto &a : n.attribute())
      if (a.name() == attr)
        return &a;
    return nullptr;
  };
  // The element type of a value, where the model records it (Gelu's
  // constants must match it).
  auto elemType = [&](const std::string &name) -> int32_t {
    for (const auto *list : {&g->value_info(), &g->input(), &g->output()})
      for (const auto &vi : *list)
        if (vi.name() == name && vi.type().has_tensor_type())
          return vi.type().tensor_type().elem_type();
    for (const auto &init : g->initializer())
      if (init.name() == name)
        return init.data_type();
    return onnx::TensorProto::FLOAT;
  };
  // The rank of a value, where the model records it; -1 otherwise.
  auto rankOf = [&](const std::string &name) -> int64_t {
    for (const auto *list : {&g->value_info(), &g->input(), &g->output()})
      for (const auto &vi : *list)
        if (vi.name() == name && vi.type().has_tensor_type() &&
            vi.type().tensor_type().has_shape())
          return vi.type().tensor_type().shape().dim_size();
    for (const auto &init : g->initializer())
      if (init.name() == name)
        return init.dims_size();
    return -1;
  };
  static const llvm::StringSet<> reduceAxesInput = {
      "ReduceMax",    "ReduceMin",       "ReduceMean",
      "ReduceProd",   "ReduceL1",        "ReduceL2",
      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};
  std::vector<onnx::NodeProto> nodes;
  int fresh = 0;
  auto freshName = [&](const std::string &base) {
    return base + "__moec_opset17_" + std::to_string(fresh++);
  };
  // A new Constant node holding `t`, named after `base`; returns its output.
  auto constantNode = [&](const std::string &base, onnx::TensorProto t) {
    std::string name = freshName(base);
    onnx::NodeProto c;
    c.set_op_type("Constant");
    c.set_name(name);
    c.add_output(name);
    auto *a = c.add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    *a->mutable_t() = std::move(t);
    nodes.push_back(c);
    return name;
  };
  for (const onnx::NodeProto &orig : g->node()) {
    onnx::NodeProto n = orig;
    if (!n.domain().empty() && n.domain() != "ai.onnx") {
      nodes.push_back(std::move(n));
      continue;
    }
    const std::string &op = n.op_type();
    auto fail = [&](const Twine &why) {
      return err(nodeText(orig) + ": " + why + " (opset " + Twine(sourceOpset) +
                 ")");
    };
    if (reduceAxesInput.contains(op) && n.input_size() >= 2) {
      if (const auto *a = findAttr(n, "noop_with_empty_axes"); a && a->i())
        return fail("noop_with_empty_axes = 1 is not supported");
      dropAttr(n, "noop_with_empty_axes");
      if (!n.input(1).empty()) {
        std::vector<int64_t> axes;
        if (!constInts(n.input(1), axes))
          return fail("the axes input must be a constant int64 tensor");
        auto *a = n.add_attribute();
        a->set_name("axes");
        a->set_type(onnx::AttributeProto::INTS);
        for (int64_t x : axes)
          a->add_ints(x);
      }
      n.mutable_input()->DeleteSubrange(1, n.input_size() - 1);
    } else if (reduceAxesInput.contains(op)) {
      if (const auto *a = findAttr(n, "noop_with_empty_axes"); a && a->i())
        return fail("noop_with_empty_axes = 1 is not supported");
      dropAttr(n, "noop_with_empty_axes");
    } else if (op == "Split") {
      if (const auto *a = findAttr(n, "num_outputs")) {
        if (a->i() != n.output_size())
          return fail("num_outputs = " + Twine(a->i()) + " but " +
                      Twine(n.output_size()) + " outputs");
        // Split-13 without `split` cuts into equal parts; an uneven last
        // part (allowed since 18) then fails shape inference, naming the
        // node.
        dropAttr(n, "num_outputs");
      }
    } else if (op == "Pad" && n.input_size() >= 4 && !n.input(3).empty()) {
      // Pad-18's axes: the pads of the other dims are 0. Pad-13 has none.
      std::vector<int64_t> pads, axes;
      if (n.output_size() != 1) // the checker, which says so, runs later
        return fail("expects one output");
      int64_t rank = rankOf(n.input(0));
      if (!constInts(n.input(1), pads) || !constInts(n.input(3), axes))
        return fail("pads and axes must be constant int64 tensors");
      if (rank < 0)
        return fail("Pad with axes needs its input's rank (value_info)");
      if (pads.size() != 2 * axes.size())
        return fail("pads has " + Twine(pads.size()) + " entries for " +
                    Twine(axes.size()) + " axes");
      std::vector<int64_t> full(2 * rank, 0);
      for (size_t k = 0; k < axes.size(); ++k) {
        int64_t ax = axes[k] < 0 ? axes[k] + rank : axes[k];
        if (ax < 0 || ax >= rank)
          return fail("axis " + Twine(axes[k]) + " is out of range for rank " +
                      Twine(rank));
        full[ax] = pads[k];
        full[ax + rank] = pads[k + axes.size()];
      }
      onnx::TensorProto t;
      t.set_data_type(onnx::TensorProto::INT64);
      t.add_dims(int64_t(full.size()));
      for (int64_t x : full)
        t.add_int64_data(x);
      n.set_input(1, constantNode(n.output(0), std::move(t)));
      n.mutable_input()->DeleteSubrange(3, n.input_size() - 3);
    } else if (op == "Cast" || op == "CastLike") {
      dropAttr(n, "saturate"); // float8 targets only
    } else if (op == "Gelu") {
      // y = (x * (erf(x / sqrt(2)) + 1)) * 0.5, torch.onnx's own form (which
      // moe-raise-experts recognises); tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x +
      // 0.044715 x^3))).
      std::string approx = "none";
      if (const auto *a = findAttr(n, "approximate"))
        approx = a->s();
      if (approx != "none" && approx != "tanh")
        return fail("unknown approximate = '" + approx + "'");
      if (n.input_size() != 1 || n.output_size() != 1)
        return fail("expects one input and one output");
      int32_t et = elemType(n.input(0));
      auto scalar = [&](float v) {
        onnx::TensorProto t;
        t.set_data_type(onnx::TensorProto::FLOAT);
        t.add_float_data(v);
        std::string name = constantNode(n.output(0), std::move(t));
        if (et == onnx::TensorProto::FLOAT)
          return name;
        onnx::NodeProto cast;
        cast.set_op_type("Cast");
        std::string casted = freshName(n.output(0));
        cast.set_name(casted);
        cast.add_input(name);
        cast.add_output(casted);
        auto *to = cast.add_attribute();
        to->set_name("to");
        to->set_type(onnx::AttributeProto::INT);
        to->set_i(et);
        nodes.push_back(cast);
        return casted;
      };
      auto emit = [&](const char *type, std::vector<std::string> ins,
                      const std::string &out = "") {
        onnx::NodeProto m;
        m.set_op_type(type);
        std::string o = out.empty() ? freshName(n.output(0)) : out;
        m.set_name(out.empty() ? o : n.name());
        for (auto &i : ins)
          m.add_input(i);
        m.add_output(o);
        nodes.push_back(m);
        return o;
      };
      const std::string &x = n.input(0);
      if (approx == "none") {
        std::string d = emit("Div", {x, scalar(1.41421356237309504f)});
        std::string e = emit("Erf", {d});
        std::string p = emit("Add", {e, scalar(1.f)});
        std::string m = emit("Mul", {x, p});
        emit("Mul", {m, scalar(0.5f)}, n.output(0));
      } else {
        std::string x2 = emit("Mul", {x, x});
        std::string x3 = emit("Mul", {x2, x});
        std::string c = emit("Mul", {x3, scalar(0.044715f)});
        std::string in = emit("Add", {x, c});
        std::string sc = emit("Mul", {in, scalar(0.79788456080286536f)});
        std::string th = emit("Tanh", {sc});
        std::string p = emit("Add", {th, scalar(1.f)});
        std::string h = emit("Mul", {x, scalar(0.5f)});
        emit("Mul", {h, p}, n.output(0));
      }
      continue;
    }
    if (!onnx::OpSchemaRegistry::Schema(op, int(kMaxOpset), ""))
      return fail("unsupported op '" + op + "'");
    nodes.push_back(std::move(n));
  }
  g->clear_node();
  for (onnx::NodeProto &n : nodes)
    *g->add_node() = std::move(n);
  for (auto &imp : *model.mutable_opset_import())
    if (imp.domain().empty() || imp.domain() == "ai.onnx")
      imp.set_version(kMaxOpset);
  return success();
}

LogicalResult ModelImporter::applyInputShapes() {
  onnx::GraphProto *g = model.mutable_graph();
  for (const auto &[name, shape] : opts.inputShapes) {
    onnx::ValueInfoProto *vi = nullptr;
    for (auto &in : *g->mutable_input())
      if (in.name() == name)
        vi = &in;
    if (!vi) {
      std::string names;
      for (const auto &in : g->input())
        names += (names.empty() ? "" : ", ") + in.name();
      return err("--input-shape names '" + name +
                 "', which is not a graph input (inputs: " + names + ")");
    }
    auto *tshape = vi->mutable_type()->mutable_tensor_type()->mutable_shape();
    if (vi->type().tensor_type().has_shape()) {
      if (tshape->dim_size() != int(shape.size()))
        return err("--input-shape " + name + " has rank " +
                   Twine(shape.size()) + " but the model's input '" + name +
                   "' has rank " + Twine(tshape->dim_size()));
      for (int d = 0; d < tshape->dim_size(); ++d) {
        const auto &dim = tshape->dim(d);
        if (dim.has_dim_value() && dim.dim_value() != shape[d])
          return err("--input-shape " + name + " contradicts the model: dim " +
                     Twine(d) + " is " + Twine(dim.dim_value()) +
                     " in the model, " + Twine(shape[d]) + " given");
      }
    }
    tshape->clear_dim();
    for (int64_t d : shape)
      tshape->add_dim()->set_dim_value(d);
  }
  return success();
}

LogicalResult ModelImporter::check() {
  if (!opts.runChecker)
    return success();
  // check_model(ModelProto) would look for external data relative to the
  // working directory; the graph checker with the model's directory does not.
  onnx::checker::CheckerContext ctx;
  // The checker of ONNX 1.12 knows IR versions up to 8; newer exporters
  // write 9 or 10 for the same opsets, which changes nothing we read.
  ctx.set_ir_version(
      int(std::min<int64_t>(model.ir_version(), onnx::IR_VERSION)));
  std::unordered_map<std::string, int> opsets;
  for (const auto &imp : model.opset_import())
    opsets[imp.domain()] = int(imp.version());
  ctx.set_opset_imports(opsets);
  ctx.set_schema_registry(onnx::OpSchemaRegistry::Instance());
  std::string dir = llvm::sys::path::parent_path(path).str();
  ctx.set_model_dir(dir.empty() ? "." : dir);
  onnx::checker::LexicalScopeContext lex;
  try {
    onnx::checker::check_graph(model.graph(), ctx, lex);
  } catch (const std::exception &e) {
    return err("the ONNX checker rejects the model: " + oneLine(e.what()));
  }
  return success();
}

/// Drops ONNX's "[ShapeInferenceError] " style tags from the front of `s`.
static StringRef dropOnnxTags(StringRef s) {
  while (true) {
    s = s.ltrim();
    if (s.consume_front("Inference error(s):") ||
        s.consume_front("Shape inference error(s):"))
      continue;
    if (!s.starts_with("["))
      return s;
    size_t close = s.find("] ");
    if (close == StringRef::npos || !s.substr(1, close - 1).ends_with("Error"))
      return s;
    s = s.drop_front(close + 2);
  }
}

std::string ModelImporter::describeInferenceError(const std::string &what) {
  // ONNX 1.12 writes "[ShapeInferenceError] (op_type:Op, node name: N):
  // [ShapeInferenceError] reason"; the node name part is absent when the node
  // has none.
  // Strict inference lists one error per line: report the first.
  StringRef first = dropOnnxTags(what);
  first = first.take_until([](char c) { return c == '\n'; });
  std::string flat = oneLine(first.str());
  StringRef s = dropOnnxTags(flat);
  if (!s.consume_front("(op_type:"))
    return s.str();
  size_t close = s.find("): ");
  if (close == StringRef::npos)
    return s.str();
  StringRef head = s.take_front(close),
            reason = dropOnnxTags(s.drop_front(close + 3));
  auto [opType, nodeName] = head.split(", node name: ");
  std::string name = nodeName.str();
  if (name.empty()) {
    // Name an unnamed node by its first output, as the importer does, when
    // the op type identifies it.
    const onnx::NodeProto *only = nullptr;
    int count = 0;
    for (const auto &n : model.graph().node())
      if (n.op_type() == opType && n.name().empty()) {
        only = &n;
        ++count;
      }
    if (count == 1 && only->output_size() > 0)
      name = "<unnamed, output " + only->output(0) + ">";
    else
      name = "<unnamed>";
  }
  return "node '" + name + "' (" + opType.str() + "): " + reason.str();
}

/// Drops the value_info entries that contradict the tensor of the Constant
/// node making the value (onnxruntime-genai's builder declares its shared
/// 1-D constants as scalars). onnxruntime runs such models; libonnx's
/// inference refuses to merge the ranks. Returns how many were dropped.
static int dropContradictedValueInfo(onnx::GraphProto &g) {
  std::unordered_map<std::string, const onnx::TensorProto *> constants;
  for (const onnx::NodeProto &n : g.node())
    if (n.op_type() == "Constant" && n.domain().empty() && n.output_size() == 1)
      for (const onnx::AttributeProto &a : n.attribute())
        if (a.name() == "value" && a.has_t())
          constants[n.output(0)] = &a.t();
  int dropped = 0;
  auto *vis = g.mutable_value_info();
  for (int i = vis->size() - 1; i >= 0; --i) {
    const onnx::ValueInfoProto &vi = vis->Get(i);
    auto it = constants.find(vi.name());
    if (it == constants.end() || !vi.type().has_tensor_type() ||
        !vi.type().tensor_type().has_shape())
      continue;
    const onnx::TensorShapeProto &shape = vi.type().tensor_type().shape();
    const onnx::TensorProto &t = *it->second;
    bool agree = shape.dim_size() == t.dims_size();
    for (int d = 0; agree && d < shape.dim_size(); ++d)
      agree = !shape.dim(d).has_dim_value() ||
              shape.dim(d).dim_value() == t.dims(d);
    if (!agree) {
      vis->DeleteSubrange(i, 1);
      ++dropped;
    }
  }
  return dropped;
}

LogicalResult ModelImporter::inferShapes() {
  dropContradictedValueInfo(*model.mutable_graph());
  clearNegativeDims(*model.mutable_graph());
  // libonnx 1.12's data propagation dereferences null when a value upstream
  // failed inference (a Reshape to a shape that does not divide its input,
  // then a Shape of a product of it: found by fuzzing, issue 17). So
  // inference runs without it first, and with it only on a model that
  // passed (or failed only at ops without a schema: com.microsoft).
  if (std::string hazard = inferenceHazard(model.graph()); !hazard.empty())
    return err(hazard);
  std::string strictMsg;
  try {
    onnx::ShapeInferenceOptions checkOnly(/*check_type=*/true, /*strict=*/1,
                                          /*data_prop=*/false);
    onnx::shape_inference::InferShapes(
        model, onnx::OpSchemaRegistry::Instance(), checkOnly, nullptr);
    // Data propagation only where its Shape propagator cannot crash (a
    // Shape of an untyped value); otherwise the shapes found so far stand.
    if (dataPropagationSafe(model.graph())) {
      onnx::ShapeInferenceOptions options(/*check_type=*/true, /*strict=*/1,
                                          /*data_prop=*/true);
      onnx::shape_inference::InferShapes(
          model, onnx::OpSchemaRegistry::Instance(), options, &shapeData);
    }
  } catch (const std::exception &e) {
    strictMsg = e.what();
  }
  if (strictMsg.empty())
    return success();
  // Strict inference also stops at ops without a schema (com.microsoft).
  // Either way, import with lenient inference: the importer's own checks
  // name the node; the strict error is reported if they find nothing.
  bool missingSchemasOnly = onlyMissingSchemas(strictMsg);
  if (!missingSchemasOnly)
    strictInferenceError = describeInferenceError(strictMsg);
  else
    strictInferenceError.clear();
  try {
    onnx::ShapeInferenceOptions lenient(false, 0, /*data_prop=*/false);
    shapeData.clear();
    onnx::shape_inference::InferShapes(
        model, onnx::OpSchemaRegistry::Instance(), lenient, &shapeData);
    if (missingSchemasOnly && dataPropagationSafe(model.graph())) {
      onnx::ShapeInferenceOptions withData(false, 0, /*data_prop=*/true);
      shapeData.clear();
      onnx::shape_inference::InferShapes(
          model, onnx::OpSchemaRegistry::Instance(), withData, &shapeData);
    }
  } catch (const std::exception &e2) {
    strictInferenceError.clear(); // this error says it all
    return err(describeInferenceError(e2.what()) + inferenceSuffix());
  }
  return success();
}

static OpTable &opTable() {
  static OpTable table = [] {
    OpTable t;
    addElementwiseOps(t);
    addShapeOps(t);
    addReshapeOps(t);
    addSliceOps(t);
    addGatherOps(t);
    addExpandOps(t);
    addReductionOps(t);
    addIndexingOps(t);
    addMicrosoftOps(t);
    addContribOps(t);
    addConvOps(t);
    addPadOps(t);
    addAttentionOps(t);
    addCausalConvOps(t);
    addLinearAttentionOps(t);
    addMRopeOps(t);
    return t;
  }();
  return table;
}

OwningOpRef<ModuleOp> ModelImporter::build() {
  const onnx::GraphProto &g = model.graph();
  OpBuilder b(&ctx);
  Location fileLoc = FileLineColLoc::get(&ctx, path, 0, 0);
  OwningOpRef<ModuleOp> module = ModuleOp::create(fileLoc);
  module->getOperation()->setAttr(
      "moe.source", b.getStringAttr(llvm::sys::path::filename(path)));
  b.setInsertionPointToEnd(module->getBody());

  GraphImporter gi(b, path, model, opts.inlineConstantLimit);
  gi.setModelDir(llvm::sys::path::parent_path(path).str());
  gi.setKeepPackedWeights(opts.keepPackedWeights);
  gi.setInt8Activations(opts.int8Activations);
  // Shape tensors whose every entry data propagation knows are constants,
  // even when computed from tensors with dynamic dims.
  for (const auto &[name, shape] : shapeData) {
    std::vector<int64_t> vals;
    for (const auto &d : shape.dim())
      if (d.has_dim_value())
        vals.push_back(d.dim_value());
    if (int(vals.size()) == shape.dim_size())
      gi.addKnownShapeValue(name, std::move(vals));
  }

  llvm::StringSet<> initNames;
  for (const auto &t : g.initializer())
    initNames.insert(t.name());

  SmallVector<Type> argTypes;
  SmallVector<std::string> argNames;
  for (const auto &in : g.input()) {
    if (initNames.contains(in.name())) {
      gi.addOverridableInitializer(in.name());
      continue;
    }
    const onnx::TypeProto &tp = in.type();
    if (!tp.has_tensor_type()) {
      (void)err("graph input '" + in.name() + "' is not a tensor");
      return nullptr;
    }
    Type elt = gi.elementType(tp.tensor_type().elem_type());
    // uint8 is the storage of packed quantized weights only.
    if (!elt || elt.isUnsignedInteger()) {
      (void)err("graph input '" + in.name() + "' has unsupported dtype " +
                onnxTypeName(tp.tensor_type().elem_type()));
      return nullptr;
    }
    if (!tp.tensor_type().has_shape()) {
      (void)err("graph input '" + in.name() +
                "' has no shape; give one with --input-shape " + in.name() +
                "=D0,D1,...");
      return nullptr;
    }
    SmallVector<int64_t> shape;
    for (int d = 0; d < tp.tensor_type().shape().dim_size(); ++d) {
      const auto &dim = tp.tensor_type().shape().dim(d);
      if (!dim.has_dim_value()) {
        (void)err(
            "graph input '" + in.name() + "' has symbolic dim " + Twine(d) +
            (dim.dim_param().empty() ? "" : " ('" + dim.dim_param() + "')") +
            "; fix it with --input-shape " + in.name() + "=D0,D1,...");
        return nullptr;
      }
      if (dim.dim_value() < 0) {
        (void)err("graph input '" + in.name() + "' has dim " + Twine(d) +
                  " of " + Twine(dim.dim_value()) +
                  " (dims are 0 or more); fix it with --input-shape " +
                  in.name() + "=D0,D1,...");
        return nullptr;
      }
      shape.push_back(dim.dim_value());
    }
    argTypes.push_back(RankedTensorType::get(shape, elt));
    argNames.push_back(in.name());
  }

  auto func =
      func::FuncOp::create(b, fileLoc, "main", b.getFunctionType(argTypes, {}));
  Block *entry = func.addEntryBlock();
  for (unsigned i = 0; i < argNames.size(); ++i) {
    func.setArgAttr(i, "onnx.name", b.getStringAttr(argNames[i]));
    gi.defineValue(argNames[i], entry->getArgument(i));
  }
  b.setInsertionPointToStart(entry);
  for (const auto &t : g.initializer())
    if (failed(gi.defineInitializer(t))) {
      error = gi.error();
      return nullptr;
    }
  const OpTable &table = opTable();
  for (const auto &node : g.node())
    if (failed(gi.importNode(node, table))) {
      error = gi.error();
      return nullptr;
    }
  SmallVector<Value> results;
  SmallVector<Type> resultTypes;
  for (const auto &out : g.output()) {
    FailureOr<Value> v = gi.lookupOutput(out.name());
    if (failed(v)) {
      error = gi.error();
      return nullptr;
    }
    results.push_back(*v);
    resultTypes.push_back(v->getType());
  }
  func::ReturnOp::create(b, fileLoc, results);
  func.setFunctionType(b.getFunctionType(argTypes, resultTypes));
  for (unsigned i = 0; i < resultTypes.size(); ++i)
    func.setResultAttr(i, "onnx.name", b.getStringAttr(g.output(i).name()));
  return module;
}

OwningOpRef<ModuleOp> ModelImporter::run(std::string &errorOut) {
  registerContribSchemas();
  OwningOpRef<ModuleOp> module;
  if (succeeded(load()) && succeeded(checkOpsets()) &&
      succeeded(adaptNewerOpset()) && succeeded(applyInputShapes()) &&
      succeeded(check()) && succeeded(inferShapes()))
    module = build();
  if (module && !strictInferenceError.empty()) {
    error = path + ": " + strictInferenceError + inferenceSuffix();
    module = nullptr;
  } else if (!module && !strictInferenceError.empty() &&
             !opts.inputShapes.empty()) {
    // The importer's error names the node; ONNX's may say more about why
    // the given shapes do not fit.
    error += "; with the given --input-shape, ONNX shape inference also "
             "fails: " +
             strictInferenceError;
  }
  if (!module) {
    errorOut = error;
    return nullptr;
  }
  // The importer must produce valid IR; a failure here is a moec bug.
  std::string diags;
  {
    ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
      llvm::raw_string_ostream os(diags);
      os << d.getLocation() << ": " << d << "\n";
      return success();
    });
    if (failed(verify(*module))) {
      errorOut =
          path + ": internal error: imported IR does not verify:\n" + diags;
      return nullptr;
    }
  }
  // A run-time dim that must equal a larger static one: the model's error,
  // named here before canonicalization turns it into invalid IR.
  std::string unsat = onnximport::unsatisfiableShapes(*module);
  if (!unsat.empty()) {
    errorOut = unsat;
    return nullptr;
  }
  return module;
}

OwningOpRef<ModuleOp> moec::importOnnxFile(MLIRContext &context, StringRef path,
                                           const ImportOptions &options,
                                           std::string &error) {
  context.loadDialect<arith::ArithDialect, func::FuncDialect,
                      linalg::LinalgDialect, math::MathDialect,
                      tensor::TensorDialect, moe::MoEDialect>();
  ModelImporter importer(context, path, options);
  return importer.run(error);
}

OwningOpRef<ModuleOp> moec::importOnnxBuffer(MLIRContext &context,
                                             StringRef bytes, StringRef name,
                                             const ImportOptions &options,
                                             std::string &error) {
  context.loadDialect<arith::ArithDialect, func::FuncDialect,
                      linalg::LinalgDialect, math::MathDialect,
                      tensor::TensorDialect, moe::MoEDialect>();
  ModelImporter importer(context, name, options, bytes);
  return importer.run(error);
}
