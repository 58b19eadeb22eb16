//===- DynamicPlans.h - hand-built plans with a dynamic token count -*- C++
//-*-===//
//
// The one-layer MoE of TestPlans.h (makeMoE) as a plan with a symbol
// (format version 8): compiled at `maxTokens` tokens, run at any count
// 0..maxTokens. Its symbolic dims are those moec's inference would give:
// x, logits, weights, ids and out follow this rank's rows t, recv and y the
// block bound tb (G * min(k, S) rows per token of a block), the model
// inputs and output the global count T.
//
// The reference at T tokens is the first T rows of makeMoE's plain-loop
// reference at the maximum: without capacity every token's output depends
// on its own row and the weights only.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_DYNAMICPLANS_H
#define MOERT_TEST_DYNAMICPLANS_H

#include "TestPlans.h"

namespace moert {
namespace testplans {

/// The MoE plan of `spec` (spec.tokensPerRank * spec.ranks = the maximum)
/// with a symbol `tokens` and its symbolic dims; inputs and reference at
/// the maximum (cut them with atTokens).
inline TestCase makeDynamicMoE(MoESpec spec) {
  TestCase tc = makeMoE(spec);
  Plan &p = tc.plan;
  const int64_t Tl = spec.tokensPerRank, T = Tl * spec.ranks;
  p.symbols = {{"tokens", T}};
  // A rank receives at most min(k, S) rows per token of each block; with
  // a capacity the maximum's shape is lower and clamps it.
  int64_t S = 1;
  for (const Step &s : p.steps)
    if (const fb::DispatchT *d = s.attrs.Asdispatch())
      S = d->slots_per_rank;
  int64_t perToken = spec.ranks * std::min(spec.k, S);
  for (Value &v : p.values) {
    if (v.kind == ValueKind::constant)
      continue;
    if (v.name == "recv" || v.name == "y")
      v.symDims = {{0, SymKind::tb, perToken, 0}};
    else if (v.name != "experts.w_gate")
      v.symDims = {{0, SymKind::t, 1, 0}};
  }
  for (std::vector<ModelIO> *ios : {&p.inputs, &p.outputs})
    for (ModelIO &m : *ios)
      m.symDims = {{0, SymKind::T, 1, 0}};
  return tc;
}

/// The blocks of T tokens over `ranks` ranks: {first token, rows} per rank,
/// tb = ceil(T / ranks) rows each, the last ones short or empty.
inline std::vector<std::pair<int64_t, int64_t>> tokenBlocks(int64_t T,
                                                            int ranks) {
  int64_t tb = (T + ranks - 1) / ranks;
  std::vector<std::pair<int64_t, int64_t>> b;
  for (int r = 0; r < ranks; ++r)
    b.push_back({std::min(T, r * tb), std::clamp<int64_t>(T - r * tb, 0, tb)});
  return b;
}

/// The first `n` rows (dim 0) of a global array.
inline NpyArray firstRows(const NpyArray &a, int64_t n) {
  NpyArray r = a;
  uint64_t row = a.shape[0] ? a.data.size() / uint64_t(a.shape[0]) : 0;
  r.shape[0] = n;
  r.data.resize(row * uint64_t(n));
  return r;
}

/// The inputs and reference of `tc` (made by makeDynamicMoE) at `T` tokens.
inline void atTokens(TestCase &tc, int64_t T) {
  for (auto &[name, a] : tc.inputs)
    a = firstRows(a, T);
  for (auto &[name, a] : tc.expected)
    a = firstRows(a, T);
}

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_DYNAMICPLANS_H
