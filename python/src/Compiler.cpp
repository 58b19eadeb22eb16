//===- Compiler.cpp - moec.compile's C++ half -----------------------------===//
//
// _moec.compile(path, data, name, options, plan_path): the stages of
// moec/Driver/Compile.h with the GIL released, the plan written to
// plan_path; returns the --report=json text and the warnings. Diagnostics
// are collected as moec prints them ("FILE: node 'NAME': error: ...") and
// raised as moec.CompileError.
//
//===----------------------------------------------------------------------===//

#include "Bindings.h"

#include "moec/Analysis/PlanHtml.h"
#include "moec/Driver/Compile.h"
#include "moec/InitAll.h"
#include "moec/Pipelines/InternalErrors.h"

#include "moert/Plan.h"
#include "moert/RoutingLoad.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <mutex>
#include <optional>

namespace nb = nanobind;
using namespace mlir;

namespace moecpy {
namespace {

/// The plan page of one compile (moec --emit=html): the report and the
/// page's options, rendered on demand with or without a routing file.
struct PlanPage {
  moec::ShardReport report;
  moec::PlanHtmlOptions options;

  /// The page; with `routing`, a moe-run --record-routing file of this
  /// model and mesh (checked as moec --routing does). Throws PlanError.
  std::string render(const std::optional<std::string> &routing) const {
    moec::PlanHtmlOptions o = options;
    moert::RoutingLoad load;
    std::string err;
    if (routing) {
      if (!moert::readRoutingLoad(*routing, load, err))
        throw PlanError("routing: " + err);
      if (!moec::checkRoutingFitsReport(report, load, *routing, err))
        throw PlanError(err);
      o.routing = &load;
      o.routingFile = *routing;
    }
    std::string html;
    llvm::raw_string_ostream os(html);
    moec::writePlanHtml(report, o, os);
    return html;
  }
};

struct CompileOutput {
  std::string reportJson;
  std::string mesh, attentionMesh;
  std::vector<std::string> warnings;
  std::string meshLog; ///< --mesh auto's ranked candidates
  PlanPage page;
};

/// One compile; throws CompileError (or nb::type_error for an unknown
/// option). Runs without the GIL.
CompileOutput
compileModel(const std::optional<std::string> &path,
             const std::optional<nb::bytes> &data, const std::string &name,
             const std::vector<std::pair<std::string, std::string>> &options,
             const std::string &planPath) {
  moec::CompileOptions opts;
  for (const auto &[flag, value] : options) {
    std::string e = moec::setCompileOption(opts, flag, value);
    if (e.rfind("unknown option", 0) == 0)
      throw nb::type_error(e.c_str());
    if (!e.empty())
      throw CompileError(e);
  }
  if (std::string e = moec::checkCompileOptions(opts); !e.empty())
    throw CompileError(e);
  if (opts.mesh.empty())
    opts.mesh = "ep=1";
  std::string bytes;
  if (data)
    bytes.assign(data->c_str(), data->size());

  nb::gil_scoped_release release;
  static std::once_flag registered;
  std::call_once(registered, [] { moec::registerAllPasses(); });
  DialectRegistry registry;
  moec::registerAllDialects(registry);
  MLIRContext ctx(registry);
  CompileOutput out;
  std::vector<std::string> errors;
  moec::PassDiagnostics passDiags(
      [&](Location where, StringRef severity, StringRef message) {
        std::string line = moec::describeLocation(where) + ": " +
                           severity.str() + ": " + message.str();
        (severity == "warning" ? out.warnings : errors).push_back(line);
      });
  ScopedDiagnosticHandler diag(
      &ctx, [&](Diagnostic &d) { return passDiags.handle(d); });
  moec::Compilation c(ctx, opts, [&](PassManager &pm) -> LogicalResult {
    moec::addPassDiagnostics(pm, passDiags);
    return success();
  });
  // The diagnostics first (they name the ONNX node), then the stage.
  auto fail = [&](const std::string &what) {
    std::string msg;
    for (const std::string &e : errors)
      msg += e + "\n";
    throw CompileError(msg + what);
  };
  llvm::raw_string_ostream log(out.meshLog);
  if (failed(path ? c.importFile(*path) : c.importBuffer(bytes, name)) ||
      failed(c.cleanup()) || failed(c.resolveMesh(log)) || failed(c.shard()) ||
      failed(c.lower()))
    fail(c.error());
  // With a dynamic token count the plan comes before the report, which it
  // tells whose rows follow the count; else after the memory check.
  moert::Plan plan;
  moert::PlanData planData;
  bool dynamic = c.options().maxTokens > 0;
  if (dynamic && failed(c.buildPlan(plan, planData)))
    fail(c.error());
  moec::ShardReport rep = c.report();
  if (failed(c.checkDeviceMemory(rep)))
    fail(c.error());
  if (!dynamic && failed(c.buildPlan(plan, planData)))
    fail(c.error());
  llvm::raw_string_ostream json(out.reportJson);
  moec::printShardReport(rep, json, /*json=*/true);
  out.page.report = rep;
  out.page.options.model = path ? *path : name;
  for (const auto &[flag, value] : options)
    out.page.options.flags += (out.page.options.flags.empty() ? "" : " ") +
                              ("--" + flag + " " + value);
  out.page.options.gpusPerNode = opts.gpusPerNode;
  out.page.options.deviceMemory = c.memoryLimit();
  out.page.options.deviceMemoryText = opts.deviceMemory;
  std::string err;
  if (!moert::writePlan(planPath, plan, planData, err))
    fail(err);
  out.mesh = c.options().mesh;
  out.attentionMesh = c.options().attentionMesh;
  return out;
}

} // namespace

void bindCompiler(nb::module_ &m) {
  m.def(
      "compile",
      [](const std::optional<std::string> &path,
         const std::optional<nb::bytes> &data, const std::string &name,
         const std::vector<std::pair<std::string, std::string>> &options,
         const std::string &planPath) {
        CompileOutput o;
        try {
          o = compileModel(path, data, name, options, planPath);
        } catch (const std::bad_alloc &) {
          throw CompileError("out of memory (a tensor or constant too large "
                             "for this machine?)");
        } catch (const CompileError &) {
          throw;
        } catch (const nb::python_error &) {
          throw;
        } catch (const nb::builtin_exception &) {
          throw;
        } catch (const std::exception &e) {
          throw CompileError(std::string("internal error: ") + e.what() +
                             " (please report it with the model)");
        }
        return std::make_tuple(o.reportJson, o.warnings, o.mesh,
                               o.attentionMesh, o.meshLog, o.page);
      },
      nb::arg("path").none(), nb::arg("data").none(), nb::arg("name"),
      nb::arg("options"), nb::arg("plan_path"),
      "Compiles the model at `path` (or the serialized ONNX `data`, named "
      "`name`) with moec's (flag, value) options and writes the plan to "
      "`plan_path`. Returns (report_json, warnings, mesh, attention_mesh, "
      "mesh_log, page).");
  nb::class_<PlanPage>(m, "PlanPage",
                       "The plan page of a compile (moec --emit=html).")
      .def("render", &PlanPage::render, nb::arg("routing").none(),
           "The page as one self-contained HTML document; `routing`: a "
           "moe-run --record-routing file of this model and mesh.");
  m.def("compile_option_names", &moec::compileOptionNames,
        "The moec flags compile() accepts as options.");
}

} // namespace moecpy
