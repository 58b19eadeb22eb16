//===- RoutingLoad.h - the expert load file (routing counts) ----*- C++ -*-===//
//
// Per MoE layer, how many token assignments the router made to each expert:
// `moe-run --record-routing FILE` writes it (summed over ranks), and the
// compiler's balanced and redundant placements read it (`moec
// --placement-load FILE`, moe-place-experts load=FILE). The one definition
// of the file, for both sides. It is JSON:
//
//   {"layers": [{"step": 2, "loc": "/moe/dispatch",
//                "tokens_per_expert": [120, 31, 0, 77],
//                "rows_sent": [[30, 24, ...], ...]}, ...]}
//
// one entry per MoE layer in plan order. "step" (the plan's dispatch step)
// and "loc" are optional: a hand-written file may give only the counts.
// Counts are numbers >= 0 (integers when moe-run writes them). "rows_sent"
// (optional; moe-run writes it) is the dispatch's token flow: row s, column
// d, the rows world rank s sent to world rank d (d == s: rows that stayed),
// a square matrix over the plan's ranks; `moec --emit=html --routing` draws
// it, the placements ignore it.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_ROUTINGLOAD_H
#define MOERT_ROUTINGLOAD_H

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moert {

/// One MoE layer of an expert load file.
struct RoutingLayer {
  std::optional<int64_t> step;    ///< the dispatch step's index in the plan
  std::optional<std::string> loc; ///< the dispatch step's location
  std::vector<double> tokensPerExpert; ///< by global expert id
  /// [source world rank][destination world rank]: dispatch rows; empty
  /// when the file has none.
  std::vector<std::vector<int64_t>> rowsSent = {};
};

struct RoutingLoad {
  std::vector<RoutingLayer> layers;

  /// The file's text (pretty-printed JSON, ending in a newline).
  std::string toJson() const;
  /// Parses `text`; `name` (the file) starts every error message, e.g.
  /// "expert load file 'x.json' is not valid JSON: ..." or "expert load
  /// file 'x.json': layer 1 has no "tokens_per_expert" array".
  static bool parse(const std::string &text, const std::string &name,
                    RoutingLoad &out, std::string &error);
};

/// Reads `path`. Returns false and sets `error` (naming the file and the
/// problem: unreadable, not JSON, a missing or malformed member) on failure.
bool readRoutingLoad(const std::string &path, RoutingLoad &out,
                     std::string &error);

/// Writes `load` to `path`. Returns false and sets `error` on failure.
bool writeRoutingLoad(const std::string &path, const RoutingLoad &load,
                      std::string &error);

} // namespace moert

#endif // MOERT_ROUTINGLOAD_H
