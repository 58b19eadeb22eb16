//===- Bindings.h - the moec Python extension's parts ------------*- C++
//-*-===//
//
// The extension `moec._moec` (nanobind): the compiler (Compiler.cpp, over
// moec/Driver/Compile.h) and the runtime (Runtime.cpp, over moert's public
// headers). The typed Python API is python/moec/__init__.py; these are its
// private building blocks.
//
// Every C++ error is caught at this boundary and raised as one of the
// exception classes below (or ValueError / TypeError for bad arguments):
// bad input never ends the interpreter.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_PYTHON_BINDINGS_H
#define MOEC_PYTHON_BINDINGS_H

#include <nanobind/nanobind.h>

#include <stdexcept>

namespace moecpy {

/// moec.Error: the base of the three below (a RuntimeError).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// moec.CompileError: a model moec cannot compile, or a bad option value.
struct CompileError : Error {
  using Error::Error;
};
/// moec.PlanError: a plan file that cannot be opened or fails its checks.
struct PlanError : Error {
  using Error::Error;
};
/// moec.RunError: a run that fails (a step, a collective, the inputs'
/// values).
struct RunError : Error {
  using Error::Error;
};

void bindCompiler(nanobind::module_ &m);
void bindRuntime(nanobind::module_ &m);

} // namespace moecpy

#endif // MOEC_PYTHON_BINDINGS_H
