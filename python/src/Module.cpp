//===- Module.cpp - the moec._moec extension module -----------------------===//

#include "Bindings.h"

namespace nb = nanobind;

NB_MODULE(_moec, m) {
  m.doc() = "moec's compiler and runtime (private: use the moec package)";
  nb::object error =
      nb::exception<moecpy::Error>(m, "Error", PyExc_RuntimeError);
  nb::exception<moecpy::CompileError>(m, "CompileError", error);
  nb::exception<moecpy::PlanError>(m, "PlanError", error);
  nb::exception<moecpy::RunError>(m, "RunError", error);
  moecpy::bindCompiler(m);
  moecpy::bindRuntime(m);
}
