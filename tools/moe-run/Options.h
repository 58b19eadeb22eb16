//===- Options.h - moe-run's command line --------------------*- C++ -*-===//
//
// moe-run's options and their parsing (CLI11): running a plan, --describe,
// and `moe-run generate` (moert/Generate.h).
//
//===----------------------------------------------------------------------===//

#ifndef MOERUN_OPTIONS_H
#define MOERUN_OPTIONS_H

#include "moert/Generate.h"

#include <string>
#include <utility>
#include <vector>

namespace moerun {

struct Options {
  int n = 1;
  bool nGiven = false;
  std::string plan, output, routing;
  std::vector<std::pair<std::string, std::string>> inputs;
  bool describe = false, json = false, threads = false;
  std::string device = "cpu"; ///< --device: cpu or cuda
  int iters = 1;              ///< --iters: runs; the last one is reported
  double timeout = 600;       ///< --timeout: seconds without progress
  bool verifyWeights = true;  ///< off with --no-verify-weights
  bool quiet = false;         ///< --quiet: no progress meter
  /// `moe-run generate`: the prompt ids (--ids) and moert::GenerateOptions.
  bool generate = false;
  std::string ids;
  std::string decodePlan; ///< --decode-plan: generation with a KV cache
  moert::GenerateOptions gen;
};

/// An error to report once (on rank 0, or by the failing rank) and exit 1.
struct Fatal {
  std::string message;
};

/// Prints "moe-run: error: MESSAGE" and returns 1.
int fail(const std::string &message);

/// Parses the command line into `o`. Returns -1 to go on, else the exit
/// status (0 after --help; 1 after an error, printed).
int parseArgs(int argc, char **argv, Options &o);

} // namespace moerun

#endif // MOERUN_OPTIONS_H
