//===- moe-eval.cpp - run moec's IR with the reference interpreter --------===//
//
// moe-eval IN.mlir --input NAME=FILE.npy ... (-o OUT.npy ... | --output-dir D)
//
// Evaluates `func.func @main` of IN.mlir (written by `moec --emit-weights`)
// on .npy inputs. Arguments are matched by their `onnx.name` attribute;
// outputs go to the -o files in result order, or to D/<onnx.name>.npy.
//
//===----------------------------------------------------------------------===//

#include "moec/Eval/Evaluator.h"
#include "moec/InitAll.h"
#include "moert/Npy.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"

#include <cstring>

using namespace mlir;
namespace cl = llvm::cl;

static cl::opt<std::string> inputFile(cl::Positional, cl::Required,
                                      cl::desc("<input.mlir>"));
static cl::list<std::string>
    inputs("input", cl::desc("An input: NAME=FILE.npy (or FILE.npy, in order)"),
           cl::value_desc("name=file.npy"));
static cl::list<std::string> outputs("o", cl::desc("Output .npy, in order"),
                                     cl::value_desc("file"));
static cl::opt<std::string>
    outputDir("output-dir", cl::desc("Write each result to DIR/<name>.npy"),
              cl::value_desc("dir"));

static int fail(const llvm::Twine &msg) {
  llvm::errs() << "moe-eval: error: " << msg << "\n";
  return 1;
}

static bool toTensor(const moert::NpyArray &a, Type elt, moec::eval::Tensor &t,
                     std::string &err) {
  t.shape = a.shape;
  t.elementType = elt;
  int64_t n = a.numElements();
  auto want = [&](const char *d) {
    if (a.dtype != d) {
      err = "has dtype " + a.dtype + ", the model expects " + d;
      return false;
    }
    return true;
  };
  if (elt.isF32()) {
    if (!want("<f4"))
      return false;
    for (int64_t k = 0; k < n; ++k) {
      float v;
      std::memcpy(&v, a.data.data() + 4 * k, 4);
      t.f.push_back(v);
    }
  } else if (elt.isF64()) {
    if (!want("<f8"))
      return false;
    for (int64_t k = 0; k < n; ++k) {
      double v;
      std::memcpy(&v, a.data.data() + 8 * k, 8);
      t.f.push_back(v);
    }
  } else if (elt.isInteger(64)) {
    if (!want("<i8"))
      return false;
    for (int64_t k = 0; k < n; ++k) {
      int64_t v;
      std::memcpy(&v, a.data.data() + 8 * k, 8);
      t.i.push_back(v);
    }
  } else if (elt.isInteger(32)) {
    if (!want("<i4"))
      return false;
    for (int64_t k = 0; k < n; ++k) {
      int32_t v;
      std::memcpy(&v, a.data.data() + 4 * k, 4);
      t.i.push_back(v);
    }
  } else if (elt.isInteger(1)) {
    if (!want("|b1"))
      return false;
    for (int64_t k = 0; k < n; ++k)
      t.i.push_back(a.data[k] != 0);
  } else {
    err = "has an element type moe-eval does not read";
    return false;
  }
  return true;
}

static bool toNpy(const moec::eval::Tensor &t, moert::NpyArray &a) {
  a.shape = t.shape;
  Type elt = t.elementType;
  int64_t n = t.numElements();
  auto put = [&](const void *p, size_t bytes) {
    const char *c = static_cast<const char *>(p);
    a.data.insert(a.data.end(), c, c + bytes);
  };
  if (elt.isF32()) {
    a.dtype = "<f4";
    for (int64_t k = 0; k < n; ++k) {
      float v = float(t.f[k]);
      put(&v, 4);
    }
  } else if (elt.isF64()) {
    a.dtype = "<f8";
    for (int64_t k = 0; k < n; ++k)
      put(&t.f[k], 8);
  } else if (elt.isInteger(64) || elt.isIndex()) {
    a.dtype = "<i8";
    for (int64_t k = 0; k < n; ++k)
      put(&t.i[k], 8);
  } else if (elt.isInteger(32)) {
    a.dtype = "<i4";
    for (int64_t k = 0; k < n; ++k) {
      int32_t v = int32_t(t.i[k]);
      put(&v, 4);
    }
  } else if (elt.isInteger(1)) {
    a.dtype = "|b1";
    for (int64_t k = 0; k < n; ++k) {
      char v = t.i[k] ? 1 : 0;
      put(&v, 1);
    }
  } else {
    return false;
  }
  return true;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(argc, argv,
                              "moe-eval: reference interpreter for moec IR\n");
  DialectRegistry registry;
  moec::registerAllDialects(registry);
  MLIRContext ctx(registry);
  llvm::SourceMgr sm;
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(inputFile, sm, &ctx);
  if (!module)
    return fail(inputFile + ": cannot parse");
  auto func = module->lookupSymbol<func::FuncOp>("main");
  if (!func)
    return fail(inputFile + ": no func.func @main");

  unsigned nargs = func.getNumArguments();
  std::vector<moec::eval::Tensor> args(nargs);
  std::vector<bool> given(nargs, false);
  unsigned positional = 0;
  for (const std::string &spec : inputs) {
    auto [name, file] = llvm::StringRef(spec).split('=');
    unsigned i = nargs;
    if (file.empty()) {
      file = name;
      i = positional++;
    } else {
      for (unsigned a = 0; a < nargs; ++a)
        if (auto n = func.getArgAttrOfType<StringAttr>(a, "onnx.name"))
          if (n.getValue() == name)
            i = a;
      if (i == nargs)
        return fail("--input " + spec + ": the model has no input named '" +
                    name + "'");
    }
    if (i >= nargs)
      return fail("more inputs than the model takes (" + llvm::Twine(nargs) +
                  ")");
    moert::NpyArray arr;
    std::string err;
    if (!moert::readNpy(file.str(), arr, err))
      return fail(err);
    Type elt = cast<RankedTensorType>(func.getArgument(i).getType())
                   .getElementType();
    if (!toTensor(arr, elt, args[i], err))
      return fail(file + ": " + err);
    given[i] = true;
  }
  for (unsigned a = 0; a < nargs; ++a)
    if (!given[a]) {
      auto n = func.getArgAttrOfType<StringAttr>(a, "onnx.name");
      return fail("missing input " + llvm::Twine(a) +
                  (n ? " ('" + n.getValue().str() + "')" : std::string()));
    }
  std::string err;
  auto results = moec::eval::evaluate(func, args, err);
  if (!results)
    return fail(err);
  if (!outputs.empty() && outputs.size() != results->size())
    return fail("the model has " + llvm::Twine(results->size()) +
                " outputs, " + llvm::Twine(outputs.size()) + " -o given");
  for (unsigned r = 0; r < results->size(); ++r) {
    std::string path;
    if (!outputs.empty()) {
      path = outputs[r];
    } else if (!outputDir.empty()) {
      auto n = func.getResultAttrOfType<StringAttr>(r, "onnx.name");
      llvm::SmallString<256> p(outputDir.getValue());
      llvm::sys::path::append(p, (n ? n.getValue().str()
                                    : "result" + std::to_string(r)) +
                                     ".npy");
      path = std::string(p);
    } else {
      return fail("give -o for each output or --output-dir");
    }
    moert::NpyArray arr;
    if (!toNpy((*results)[r], arr))
      return fail("result " + llvm::Twine(r) + " has an unsupported type");
    if (!moert::writeNpy(path, arr, err))
      return fail(err);
  }
  return 0;
}
