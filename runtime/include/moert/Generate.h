//===- Generate.h - text generation with a causal LM plan -------*- C++ -*-===//
//
// `moe-run generate`: greedy or sampled generation with a plan whose token
// ids input and logits output follow a dynamic token count (moec
// --input-shape input_ids=B,? --max-tokens N). Each step runs the plan on
// the whole sequence so far and appends the next token of every sequence:
// the plan has no KV cache yet, so a decode step recomputes the prefix
// (O(L) work per token instead of O(1) layers of attention over a cache).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_GENERATE_H
#define MOERT_GENERATE_H

#include "moert/Comm.h"
#include "moert/Executor.h"
#include "moert/Npy.h"
#include "moert/Plan.h"

#include <cstdint>
#include <string>

namespace moert {

struct GenerateOptions {
  std::string idsInput = "input_ids";  ///< the plan input fed the ids
  std::string logitsOutput = "logits"; ///< the plan output read
  int64_t maxNewTokens = 16;
  /// 0: greedy (the first of equal maxima, as torch.argmax); > 0: sample
  /// from softmax(logits / temperature) with a generator seeded by `seed`
  /// on rank 0 (reproducible with itself, not with torch's generator).
  double temperature = 0;
  uint64_t seed = 0;
};

struct GenerateResult {
  NpyArray ids; ///< int64 [B, prompt + new] (rank 0; empty elsewhere)
  int64_t batch = 0, prompt = 0, newTokens = 0;
  double prefillSeconds = 0; ///< the first run (gives the first new token)
  double decodeSeconds = 0;  ///< the other runs
};

/// Why `plan` cannot generate from `prompt` with `options` ("" when it
/// can): the plan needs a token-count symbol, an int64 ids input [B, T]
/// (T its symbolic dim, nothing else to feed) and an f32 logits output
/// [B, T, V]; prompt + new tokens - 1 must fit the plan's maximum.
std::string generateError(const Plan &plan, const NpyArray &prompt,
                          const GenerateOptions &options);

/// Collective over `world` (every rank of `executor`'s plan): generates
/// `options.maxNewTokens` tokens after `prompt` (checked with
/// generateError first). Rank 0 picks each token and sends it to the
/// others; rank 0's result holds the ids.
GenerateResult generate(Executor &executor, Comm &world, const Plan &plan,
                        const NpyArray &prompt, const GenerateOptions &options);

} // namespace moert

#endif // MOERT_GENERATE_H
