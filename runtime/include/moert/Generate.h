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
  /// The positions input, when a plan has one: int64 [B, n], or [3, B, n]
  /// (multimodal rotary sections, each the text position, as
  /// onnxruntime-genai feeds Qwen3.5's). A run from the first token gets
  /// 0 .. n - 1, a decode step the new token's position.
  std::string positionInput = "position_ids";
  /// The attention mask input, when a plan has one (onnxruntime-genai's
  /// builder models): fed ones [B, length so far]. Such plans' other inputs
  /// may be caches and states of fixed shape (past*: an empty cache [B, H,
  /// 0, D], a sliding window's ring, a conv state), which start as zeros.
  std::string maskInput = "attention_mask";
  /// generateWithCache: keep the cache on the ranks when the plans allow
  /// (false: through rank 0 every step, for comparison).
  bool holdCache = true;
  /// With the cache kept on the ranks: swap the decode plan's past and
  /// present buffers between steps when the plan keeps them outside the
  /// arena (Executor::setBindHeld), so that no step copies the cache;
  /// false: copy each present onto the next past (for comparison).
  bool bindCache = true;
};

struct GenerateResult {
  NpyArray ids; ///< int64 [B, prompt + new] (rank 0; empty elsewhere)
  int64_t batch = 0, prompt = 0, newTokens = 0;
  double prefillSeconds = 0; ///< the first run (gives the first new token)
  double decodeSeconds = 0;  ///< the other runs
  /// generateWithCache: why the KV cache went through rank 0 between steps
  /// (the holdError of a cache pair); empty: it stayed on the ranks.
  std::string cacheThroughHost;
  /// With the cache on the ranks: the bytes of it that rank 0 copied on
  /// its device during the decode steps (after the prefill handed it over;
  /// Executor::heldCopyBytes). 0 when it is bound in place.
  uint64_t cacheCopyBytes = 0;
};

/// Why `plan` cannot generate from `prompt` with `options` ("" when it
/// can): the plan needs a token-count symbol, an int64 ids input [B, T]
/// (T its symbolic dim; other inputs only the positions, the attention
/// mask and caches of fixed shape, GenerateOptions::maskInput) and an f32
/// logits output [B, T, V]; prompt + new tokens - 1 must fit the plan's
/// maximum. With one new token (generateWithCache's prefill) a plan of a
/// fixed count also serves, for prompts of exactly its length.
std::string generateError(const Plan &plan, const NpyArray &prompt,
                          const GenerateOptions &options);

/// Collective over `world` (every rank of `executor`'s plan): generates
/// `options.maxNewTokens` tokens after `prompt` (checked with
/// generateError first). Rank 0 picks each token and sends it to the
/// others; rank 0's result holds the ids.
GenerateResult generate(Executor &executor, Comm &world, const Plan &plan,
                        const NpyArray &prompt, const GenerateOptions &options);

/// Why `prefill` and `decode` cannot generate together from `prompt` (""
/// when they can): `prefill` as generateError asks, with an output per
/// cache input of `decode`; `decode` with a dynamic count (the cache
/// length), the ids input [B, 1], optionally the positions input [B, 1],
/// cache inputs `past*` whose outputs `present*` both plans have, and
/// logits [B, 1, V]. The prompt must fit the prefill's maximum and
/// prompt + new tokens - 2 the decode's.
std::string generateWithCacheError(const Plan &prefill, const Plan &decode,
                                   const NpyArray &prompt,
                                   const GenerateOptions &options);

/// Collective: generation with a KV cache. The prefill plan runs the
/// prompt once; each later token runs the decode plan on that token with
/// the cache the previous step returned. Each rank keeps its block of the
/// cache on its device between steps (Executor::holdOutputs; only the
/// logits go to rank 0) when both plans split every cache array alike;
/// otherwise the cache is gathered on rank 0 and sent to every rank, and
/// the result says why. Rank 0's result holds the ids.
GenerateResult generateWithCache(Executor &prefill, Executor &decode,
                                 Comm &world, const Plan &prefillPlan,
                                 const Plan &decodePlan, const NpyArray &prompt,
                                 const GenerateOptions &options);

} // namespace moert

#endif // MOERT_GENERATE_H
