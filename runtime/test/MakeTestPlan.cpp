//===- MakeTestPlan.cpp - writes the hand-built test plans for lit --------===//
//
// moert-make-test-plan KIND -n N -o DIR [--capacity C]
//                      [--placement contiguous|round-robin|replicated]
//                      [--bad-rank R] [--tokens-per-rank T] [--hidden H]
//                      [--ffn F] [--no-reference] [--packed-gate]
//                      [--max-tokens M [--at-tokens T]]
//
// KIND is `moe` (router -> route -> dispatch -> experts -> combine), `moe-ids`
// (routing ids and weights are inputs; --bad-rank gives that rank an invalid
// expert id), `tp` (tensor-parallel MLP with all_reduce and all_gather) or
// `reduce-scatter` (each rank's x reduce-scattered over ep=N along axis 1,
// then all-gathered, and all-reduced; outputs y, gathered, reduced).
// Writes DIR/plan.moeplan, DIR/NAME.npy per input, DIR/ref_NAME.npy per
// output, and, for the input error tests, DIR/x_f64.npy (wrong dtype) and
// DIR/x_badshape.npy (wrong shape). --tokens-per-rank, --hidden and --ffn
// size the moe plans (defaults 8, 16, 24); --no-reference writes the plan
// and its inputs only (large plans for bench/transport_bench.py);
// --packed-gate keeps the moe plan's w_gate as 4-bit codes expanded by a
// dequantize step after the dispatch (a plan fuzz seed). --max-tokens M
// (moe, moe-ids; M a multiple of N) writes the plan with a dynamic token
// count (format version 8, runtime/test/DynamicPlans.h) compiled at M
// tokens, and its inputs and reference at T tokens (--at-tokens, default
// M).
//
//===----------------------------------------------------------------------===//

#include "DensePlans.h"
#include "DynamicPlans.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace moert;
using namespace moert::testplans;

static int usage() {
  std::fprintf(stderr, "usage: moert-make-test-plan "
                       "moe|moe-ids|tp|reduce-scatter -n N -o DIR "
                       "[--capacity C] [--placement contiguous|round-robin|"
                       "replicated] [--bad-rank R] [--tokens-per-rank T] "
                       "[--hidden H] [--ffn F] [--no-reference] "
                       "[--packed-gate] [--max-tokens M [--at-tokens T]]\n");
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return usage();
  std::string kind = argv[1], dir, placement = "contiguous";
  int n = 1, badRank = -1;
  int64_t capacity = -1, tokens = 8, hidden = 16, ffn = 24, maxTokens = -1,
          atTokens = -1;
  bool reference = true, packedGate = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--no-reference") {
      reference = false;
      continue;
    }
    if (a == "--packed-gate") {
      packedGate = true;
      continue;
    }
    if (i + 1 >= argc)
      return usage();
    if (a == "-n")
      n = std::atoi(argv[++i]);
    else if (a == "-o")
      dir = argv[++i];
    else if (a == "--capacity")
      capacity = std::atoll(argv[++i]);
    else if (a == "--placement")
      placement = argv[++i];
    else if (a == "--bad-rank")
      badRank = std::atoi(argv[++i]);
    else if (a == "--tokens-per-rank")
      tokens = std::atoll(argv[++i]);
    else if (a == "--hidden")
      hidden = std::atoll(argv[++i]);
    else if (a == "--ffn")
      ffn = std::atoll(argv[++i]);
    else if (a == "--max-tokens")
      maxTokens = std::atoll(argv[++i]);
    else if (a == "--at-tokens")
      atTokens = std::atoll(argv[++i]);
    else
      return usage();
  }
  if (dir.empty() || n < 1 || tokens < 1 || hidden < 1 || ffn < 1)
    return usage();
  bool dynamic = maxTokens >= 0;
  if (dynamic) {
    // Dropless MoE only: the reference at T tokens is the first T rows of
    // the one at the maximum.
    if (maxTokens < n || maxTokens % n || capacity >= 0 ||
        (kind != "moe" && kind != "moe-ids"))
      return usage();
    tokens = maxTokens / n;
    if (atTokens < 0)
      atTokens = maxTokens;
    if (atTokens > maxTokens)
      return usage();
  } else if (atTokens >= 0) {
    return usage();
  }
  TestCase tc;
  if (kind == "moe" || kind == "moe-ids") {
    MoESpec s;
    s.ranks = n;
    s.E = 2 * n;
    s.capacity = capacity;
    s.idsAsInputs = kind == "moe-ids";
    s.badRank = badRank;
    s.tokensPerRank = tokens;
    s.H = hidden;
    s.F = ffn;
    s.reference = reference;
    s.packedGate = packedGate;
    if (packedGate && hidden % 2)
      return usage(); // two 4-bit codes per byte along H
    if (placement == "round-robin") {
      s.S = 2;
      for (int r = 0; r < n; ++r)
        for (int sl = 0; sl < 2; ++sl)
          s.slots.push_back(sl * n + r);
    } else if (placement == "replicated") {
      // Every expert on two ranks (r and r+1).
      s.S = 4;
      s.slots.assign(n * 4, -1);
      for (int64_t e = 0; e < s.E; ++e) {
        s.slots[(e / 2) * 4 + e % 2] = int32_t(e);
        s.slots[((e / 2 + 1) % n) * 4 + 2 + e % 2] = int32_t(e);
      }
      if (n == 1)
        s.slots = {0, 1, -1, -1};
    } else if (placement != "contiguous") {
      return usage();
    }
    if (dynamic) {
      tc = makeDynamicMoE(s);
      testplans::atTokens(tc, atTokens);
    } else {
      tc = makeMoE(s);
    }
  } else if (kind == "tp") {
    tc = makeTP(n);
  } else if (kind == "reduce-scatter") {
    ReduceScatterSpec s;
    s.ep = n;
    s.axis = 1;
    tc = makeReduceScatter(s);
  } else {
    return usage();
  }
  std::string error;
  if (!writePlan(dir + "/plan.moeplan", tc.plan, tc.data, error)) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  auto write = [&](const std::string &path, const NpyArray &a) {
    if (!writeNpy(path, a, error)) {
      std::fprintf(stderr, "error: %s\n", error.c_str());
      std::exit(1);
    }
  };
  for (auto &[name, a] : tc.inputs)
    write(dir + "/" + name + ".npy", a);
  for (auto &[name, a] : tc.expected)
    write(dir + "/ref_" + name + ".npy", a);
  if (!reference)
    return 0;
  const NpyArray &x = tc.inputs.at("x");
  NpyArray f64;
  f64.dtype = "<f8";
  f64.shape = x.shape;
  f64.data.resize(x.data.size() * 2, 0);
  write(dir + "/x_f64.npy", f64);
  NpyArray bad = x;
  bad.shape.back() += 1;
  bad.data.resize(x.data.size() / x.shape.back() * bad.shape.back(), 0);
  write(dir + "/x_badshape.npy", bad);
  return 0;
}
