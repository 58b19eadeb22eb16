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

static cl::OptionCategory evalCat("moe-eval options");
static cl::opt<std::string> inputFile(cl::Positional, cl::Required,
                                      cl::desc("<input.mlir>"),
                                      cl::cat(evalCat));
static cl::list<std::string>
    inputs("input", cl::desc("An input: NAME=FILE.npy (or FILE.npy, in order)"),
           cl::value_desc("name=file.npy"), cl::cat(evalCat));
static cl::list<std::string> outputs("o", cl::desc("Output .npy, in order"),
                                     cl::value_desc("file"), cl::cat(evalCat));
static cl::opt<std::string>
    outputDir("output-dir", cl::desc("Write each result to DIR/<name>.npy"),
              cl::value_desc("dir"), cl::cat(evalCat));

static int fail(const llvm::Twine &msg) {
  llvm::errs() << "moe-eval: error: " << msg << "\n";
  return 1;
}

/// The .npy dtype that holds elements of `elt`, or "" when none does.
static std::string dtypeOf(Type elt) {
  if (elt.isF32())
    return "<f4";
  if (elt.isF64())
    return "<f8";
  if (elt.isF16())
    return "<f2";
  if (elt.isInteger(64) || elt.isIndex())
    return "<i8";
  if (elt.isInteger(32))
    return "<i4";
  if (elt.isInteger(8))
    return "|i1";
  if (elt.isInteger(1))
    return "|b1";
  return "";
}

static bool toTensor(const moert::NpyArray &a, Type elt, moec::eval::Tensor &t,
                     std::string &err) {
  std::string want = dtypeOf(elt);
  if (want.empty()) {
    std::string s;
    llvm::raw_string_ostream os(s);
    os << "the model takes " << elt
       << " elements, which moe-eval does not read";
    err = s;
    return false;
  }
  if (a.dtype != want) {
    err = "has dtype " + a.dtype + ", the model expects " + want;
    return false;
  }
  t = moec::eval::Tensor::zeros(a.shape, elt);
  int64_t n = a.numElements();
  if (int64_t(a.data.size()) < n * moert::NpyArray::elementSize(a.dtype)) {
    err = "has too little data for its shape";
    return false;
  }
  const char *p = a.data.data();
  for (int64_t k = 0; k < n; ++k) {
    if (elt.isF32()) {
      float v;
      std::memcpy(&v, p + 4 * k, 4);
      t.f[k] = v;
    } else if (elt.isF64()) {
      std::memcpy(&t.f[k], p + 8 * k, 8);
    } else if (elt.isF16()) {
      uint16_t v;
      std::memcpy(&v, p + 2 * k, 2);
      t.f[k] = APFloat(APFloat::IEEEhalf(), APInt(16, v)).convertToDouble();
    } else if (want == "<i8") {
      std::memcpy(&t.i[k], p + 8 * k, 8);
    } else if (want == "<i4") {
      int32_t v;
      std::memcpy(&v, p + 4 * k, 4);
      t.i[k] = v;
    } else if (want == "|i1") {
      t.i[k] = int8_t(p[k]);
    } else {
      t.i[k] = p[k] != 0;
    }
  }
  return true;
}

static bool toNpy(const moec::eval::Tensor &t, moert::NpyArray &a) {
  a.dtype = dtypeOf(t.elementType);
  if (a.dtype.empty())
    return false;
  a.shape = t.shape;
  int64_t n = t.numElements();
  auto put = [&](const void *p, size_t bytes) {
    const char *c = static_cast<const char *>(p);
    a.data.insert(a.data.end(), c, c + bytes);
  };
  for (int64_t k = 0; k < n; ++k) {
    if (a.dtype == "<f4") {
      float v = float(t.f[k]);
      put(&v, 4);
    } else if (a.dtype == "<f8") {
      put(&t.f[k], 8);
    } else if (a.dtype == "<f2") {
      bool lost;
      APFloat v(t.f[k]);
      v.convert(APFloat::IEEEhalf(), APFloat::rmNearestTiesToEven, &lost);
      uint16_t bits = uint16_t(v.bitcastToAPInt().getZExtValue());
      put(&bits, 2);
    } else if (a.dtype == "<i8") {
      put(&t.i[k], 8);
    } else if (a.dtype == "<i4") {
      int32_t v = int32_t(t.i[k]);
      put(&v, 4);
    } else {
      char v = char(a.dtype == "|b1" ? t.i[k] != 0 : t.i[k]);
      put(&v, 1);
    }
  }
  return true;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --help: moe-eval's options, not libLLVM's (kept under --help-hidden).
  moec::hideLibraryOptions({&evalCat});
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
    auto argType = dyn_cast<RankedTensorType>(func.getArgument(i).getType());
    if (!argType)
      return fail("input " + llvm::Twine(i) + " is not a ranked tensor");
    Type elt = argType.getElementType();
    if (given[i])
      return fail("--input " + spec + ": input " + llvm::Twine(i) +
                  " is given twice");
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
  FailureOr<std::vector<moec::eval::Tensor>> results =
      moec::eval::evaluate(func, args, err);
  if (failed(results))
    return fail(err);
  if (!outputs.empty() && outputs.size() != results->size())
    return fail("the model has " + llvm::Twine(results->size()) + " outputs, " +
                llvm::Twine(outputs.size()) + " -o given");
  for (unsigned r = 0; r < results->size(); ++r) {
    std::string path;
    if (!outputs.empty()) {
      path = outputs[r];
    } else if (!outputDir.empty()) {
      auto n = func.getResultAttrOfType<StringAttr>(r, "onnx.name");
      llvm::SmallString<256> p(outputDir.getValue());
      llvm::sys::path::append(
          p, (n ? n.getValue().str() : "result" + std::to_string(r)) + ".npy");
      path = std::string(p);
    } else {
      return fail("give -o for each output or --output-dir");
    }
    moert::NpyArray arr;
    if (!toNpy((*results)[r], arr))
      return fail("result " + llvm::Twine(r) +
                  " has an element type .npy files cannot hold");
    if (!moert::writeNpy(path, arr, err))
      return fail(err);
  }
  return 0;
}
