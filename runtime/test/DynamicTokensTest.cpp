//===- DynamicTokensTest.cpp - plans with a dynamic token count -----------===//
//
// Format version 8 (docs/plan-format.md, "Dynamic token counts"): the MoE
// plan of DynamicPlans.h, compiled at 32 tokens, run on 1, 2 and 4 thread
// ranks at T = 0..32 tokens (uneven and empty blocks) against the plain-loop
// reference; verifyPlan's rules for symbols and symbolic dims; the file
// round trip (version 8 only with a symbol, static plans unchanged); the
// run-time errors for counts the plan cannot take.
//
//===----------------------------------------------------------------------===//

#include "CpuTestUtil.h"
#include "DynamicPlans.h"
#include "PlanTestUtil.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

constexpr int64_t kMax = 32;

std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-dyn-" + tag + "-" +
         std::to_string(getpid()) + ".moeplan";
}

MoESpec spec(int ranks) {
  MoESpec s;
  s.ranks = ranks;
  s.tokensPerRank = kMax / ranks;
  return s;
}

std::string readFile(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

/// Writes the plan and runs it with each of `inputsPerCall` in turn on the
/// same executors (one per thread rank); rank 0's outputs of every call
/// (and every rank's report of each call in `reports`).
std::vector<std::vector<std::pair<std::string, NpyArray>>>
runCalls(TestCase &tc, const std::string &tag,
         const std::vector<std::map<std::string, NpyArray>> &inputsPerCall,
         std::vector<std::vector<RunReport>> *reports = nullptr) {
  std::string path = tempPath(tag), error;
  EXPECT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  std::vector<std::vector<std::pair<std::string, NpyArray>>> result(
      inputsPerCall.size());
  if (reports)
    reports->assign(inputsPerCall.size(), {});
  runThreadRanks(int(tc.plan.worldSize()), [&](Comm &world) {
    std::string err;
    auto lp = LoadedPlan::open(path, world.rank(), err);
    if (!lp)
      throw RunError(err);
    Executor ex(*lp, world, createCpuBackend());
    for (size_t c = 0; c < inputsPerCall.size(); ++c) {
      ex.setInputs(inputsPerCall[c]);
      ex.run();
      auto outs = ex.gatherOutputs();
      auto reps = ex.gatherReports();
      if (world.rank() == 0) {
        result[c] = std::move(outs);
        if (reports)
          (*reports)[c] = std::move(reps);
      }
    }
  });
  std::remove(path.c_str());
  return result;
}

void expectMatches(const std::vector<std::pair<std::string, NpyArray>> &outs,
                   const TestCase &tc, int64_t T) {
  ASSERT_EQ(outs.size(), 1u);
  const NpyArray &got = outs[0].second, &want = tc.expected.at("out");
  EXPECT_EQ(outs[0].first, "out");
  EXPECT_EQ(got.shape, (std::vector<int64_t>{T, want.shape[1]}));
  ASSERT_EQ(got.data.size(), want.data.size()) << "at T = " << T;
  test::expectNearScaled(reinterpret_cast<const float *>(got.data.data()),
                         reinterpret_cast<const float *>(want.data.data()),
                         got.data.size() / 4, tc.tolerance,
                         "out at T = " + std::to_string(T));
}

/// `tc`'s inputs and expected outputs cut to each count of `counts`.
struct AtCounts {
  std::vector<std::map<std::string, NpyArray>> inputs;
  std::vector<TestCase> refs;
};
AtCounts atCounts(const TestCase &tc, const std::vector<int64_t> &counts) {
  AtCounts r;
  for (int64_t T : counts) {
    TestCase at;
    at.inputs = tc.inputs;
    at.expected = tc.expected;
    atTokens(at, T);
    r.inputs.push_back(at.inputs);
    r.refs.push_back(std::move(at));
  }
  return r;
}

/// Runs the dynamic MoE on `ranks` thread ranks at every count of `counts`
/// (one executor per rank for all of them: the shapes are resolved again
/// whenever T changes).
void runCounts(int ranks, const std::vector<int64_t> &counts) {
  TestCase tc = makeDynamicMoE(spec(ranks));
  auto [inputs, refs] = atCounts(tc, counts);
  std::vector<std::vector<RunReport>> reports;
  auto outs = runCalls(tc, "run" + std::to_string(ranks), inputs, &reports);
  MoESpec s = spec(ranks);
  for (size_t c = 0; c < counts.size(); ++c) {
    SCOPED_TRACE("T = " + std::to_string(counts[c]) + " on " +
                 std::to_string(ranks) + " ranks");
    expectMatches(outs[c], refs[c], counts[c]);
    // The steps ran at the actual count: T * k assignments routed and
    // computed (at the maximum's shapes they would be 32 * k).
    int64_t routed = 0, computed = 0;
    ASSERT_EQ(int(reports[c].size()), ranks);
    for (const RunReport &r : reports[c]) {
      ASSERT_EQ(r.layers.size(), 1u);
      for (int64_t n : r.layers[0].tokensPerExpert)
        routed += n;
      computed += r.layers[0].rowsReceived;
    }
    EXPECT_EQ(routed, counts[c] * s.k);
    EXPECT_EQ(computed, counts[c] * s.k);
  }
}

const std::vector<int64_t> kCounts = {0, 1, 5, 8, 31, 32, 5, 1};

TEST(DynamicTokens, MoEOneRank) { runCounts(1, kCounts); }
TEST(DynamicTokens, MoETwoRanks) { runCounts(2, kCounts); }
TEST(DynamicTokens, MoEFourRanks) { runCounts(4, kCounts); }

TEST(DynamicTokens, MoEFourRanksIdsAsInputs) {
  MoESpec s = spec(4);
  s.idsAsInputs = true;
  TestCase tc = makeDynamicMoE(s);
  for (int64_t T : {3, 13}) {
    TestCase at;
    at.inputs = tc.inputs;
    at.expected = tc.expected;
    atTokens(at, T);
    auto outs = runCalls(tc, "ids", {at.inputs});
    expectMatches(outs[0], at, T);
  }
}

/// GShard capacity per call (Dispatch.capacity_factor): ceil(C * tb * k /
/// E) at each count, against makeMoE's reference with that capacity over
/// the same uneven source blocks (same weights and tokens: the same seed).
void runCapacityFactor(int ranks, double C) {
  MoESpec s = spec(ranks);
  auto capAt = [&](int64_t tb) {
    return int64_t(std::ceil(C * double(tb) * double(s.k) / double(s.E)));
  };
  s.capacity = capAt(s.tokensPerRank);
  TestCase tc = makeDynamicMoE(s);
  for (Step &st : tc.plan.steps)
    if (fb::DispatchT *d = st.attrs.Asdispatch())
      d->capacity_factor = C;
  std::vector<std::map<std::string, NpyArray>> inputs;
  std::vector<TestCase> refs;
  for (int64_t T : kCounts) {
    MoESpec r = s;
    r.capacity = capAt((T + ranks - 1) / ranks);
    r.refBlocks = tokenBlocks(T, ranks);
    TestCase at = makeMoE(r);
    at.inputs = tc.inputs;
    atTokens(at, T);
    inputs.push_back(at.inputs);
    refs.push_back(std::move(at));
  }
  std::vector<std::vector<RunReport>> reports;
  auto outs = runCalls(tc, "cf" + std::to_string(ranks), inputs, &reports);
  int64_t dropped = 0;
  for (size_t c = 0; c < kCounts.size(); ++c) {
    SCOPED_TRACE("T = " + std::to_string(kCounts[c]) + " on " +
                 std::to_string(ranks) + " ranks");
    expectMatches(outs[c], refs[c], kCounts[c]);
    for (const RunReport &r : reports[c])
      dropped += r.layers.at(0).dropped;
  }
  EXPECT_GT(dropped, 0); // the capacity did drop assignments
}

TEST(DynamicTokens, CapacityFactorTwoRanks) { runCapacityFactor(2, 0.5); }
TEST(DynamicTokens, CapacityFactorFourRanks) { runCapacityFactor(4, 1.0); }

/// Dense steps at every count on 2 ranks: x [t,8] -> matmul (+ bias) -> h
/// -> silu -> softmax -> add h -> add a broadcast constant -> copy -> out,
/// against plain loops in double.
TEST(DynamicTokens, DenseStepsAtEveryCount) {
  const int G = 2;
  const int64_t K = 8, N = 6, Tl = kMax / G;
  std::mt19937 rng(7);
  std::vector<float> x = randomFloats(rng, kMax * K, 1.0f);
  std::vector<float> w = randomFloats(rng, K * N, 0.5f);
  std::vector<float> bias = randomFloats(rng, N, 0.5f);
  std::vector<float> c = randomFloats(rng, N, 0.5f);
  TestCase tc;
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.mesh = {{"ep", G}};
  p.symbols = {{"tokens", kMax}};
  Builder b(p, tc.data);
  b.segments(G);
  auto temp = [&](const std::string &name, int64_t cols, ValueKind kind) {
    int32_t id = b.value(name, DType::f32, {Tl, cols}, kind);
    p.values[size_t(id)].symDims = {{0, SymKind::t, 1, 0}};
    return id;
  };
  int32_t vx = temp("x", K, ValueKind::input);
  int32_t vw = b.shared("w", {K, N}, w), vb = b.shared("bias", {N}, bias);
  int32_t vc = b.shared("c", {N}, c);
  int32_t vh = temp("h", N, ValueKind::temp);
  int32_t vu = temp("u", N, ValueKind::temp);
  int32_t vs = temp("s", N, ValueKind::temp);
  int32_t va = temp("a", N, ValueKind::temp);
  int32_t vd = temp("d", N, ValueKind::temp);
  int32_t vo = temp("out", N, ValueKind::output);
  b.step(fb::MatmulT(), {vx, vw, vb}, {vh}, "/mm");
  fb::UnaryT silu;
  silu.fn = fb::UnaryFn::silu;
  b.step(silu, {vh}, {vu}, "/silu");
  b.step(fb::SoftmaxT(), {vu}, {vs}, "/softmax");
  fb::BinaryT add;
  add.fn = fb::BinaryFn::add;
  b.step(add, {vs, vh}, {va}, "/add");
  b.step(add, {va, vc}, {vd}, "/add_c");
  b.step(fb::CopyT(), {vd}, {vo}, "/copy");
  p.inputs.push_back(splitIO("x", DType::f32, {kMax, K}, vx, "ep"));
  p.outputs.push_back(splitIO("out", DType::f32, {kMax, N}, vo, "ep"));
  p.inputs[0].symDims = p.outputs[0].symDims = {{0, SymKind::T, 1, 0}};
  std::vector<double> ref(kMax * N);
  for (int64_t t = 0; t < kMax; ++t) {
    std::vector<double> h(N), u(N);
    double mx = -1e300, sum = 0;
    for (int64_t n = 0; n < N; ++n) {
      h[n] = bias[n];
      for (int64_t k = 0; k < K; ++k)
        h[n] += double(x[t * K + k]) * w[k * N + n];
      u[n] = h[n] / (1 + std::exp(-h[n]));
      mx = std::max(mx, u[n]);
    }
    for (double &v : u)
      sum += (v = std::exp(v - mx));
    for (int64_t n = 0; n < N; ++n)
      ref[t * N + n] = u[n] / sum + h[n] + c[n];
  }
  tc.inputs["x"] = f32Array({kMax, K}, std::vector<double>(x.begin(), x.end()));
  tc.expected["out"] = f32Array({kMax, N}, ref);
  auto [inputs, refs] = atCounts(tc, kCounts);
  auto outs = runCalls(tc, "dense", inputs);
  for (size_t i = 0; i < kCounts.size(); ++i)
    expectMatches(outs[i], refs[i], kCounts[i]);
}

/// The RunError of the first call with `inputs` (empty when none).
std::string runError(TestCase &tc, const std::map<std::string, NpyArray> &in) {
  std::string what;
  try {
    runCalls(tc, "err", {in});
  } catch (const RunError &e) {
    what = e.what();
  }
  return what;
}

TEST(DynamicTokens, MoreTokensThanTheMaximum) {
  TestCase tc = makeDynamicMoE(spec(2));
  std::map<std::string, NpyArray> in = tc.inputs;
  NpyArray &x = in["x"];
  x.shape[0] = kMax + 1;
  x.data.resize(x.data.size() / kMax * (kMax + 1));
  std::string e = runError(tc, in);
  EXPECT_NE(e.find("input 'x': dim 0 has size 33: tokens = 33, more than "
                   "the plan's maximum of 32"),
            std::string::npos)
      << e;
}

/// A plan whose minimum is 5 (moec: an index computed as count - 5)
/// refuses 4 tokens, and runs 5.
TEST(DynamicTokens, FewerTokensThanTheMinimum) {
  TestCase tc = makeDynamicMoE(spec(2));
  tc.plan.symbols[0].min = 5;
  AtCounts at = atCounts(tc, {4, 5});
  std::string e = runError(tc, at.inputs[0]);
  EXPECT_NE(e.find("input 'x' gives tokens = 4, less than the plan's "
                   "minimum of 5"),
            std::string::npos)
      << e;
  auto outs = runCalls(tc, "min", {at.inputs[1]});
  expectMatches(outs[0], at.refs[1], 5);
}

TEST(DynamicTokens, InconsistentInputs) {
  MoESpec s = spec(2);
  s.idsAsInputs = true;
  TestCase tc = makeDynamicMoE(s);
  atTokens(tc, 6);
  tc.inputs["ids"] = firstRows(tc.inputs["ids"], 5);
  std::string e = runError(tc, tc.inputs);
  EXPECT_NE(e.find("input 'ids': dim 0 has size 5, which gives tokens = 5, "
                   "but input 'x' gives tokens = 6"),
            std::string::npos)
      << e;
}

//===----------------------------------------------------------------------===//
// Format: verifyPlan, describe, round trip
//===----------------------------------------------------------------------===//

using test::valueNamed;

/// verifyPlan's message for the dynamic MoE plan after `edit`.
std::string verifyError(const std::function<void(Plan &)> &edit) {
  return test::verifyErrorAfter(makeDynamicMoE(spec(2)).plan, edit);
}

/// verifyPlan refuses the plan after `edit` with a message containing
/// `text`.
void expectVerifyError(const std::function<void(Plan &)> &edit,
                       const std::string &text) {
  std::string e = verifyError(edit);
  EXPECT_NE(e.find(text), std::string::npos) << e;
}

TEST(DynamicTokensVerify, DimOutOfRange) {
  expectVerifyError([](Plan &p) { valueNamed(p, "x").symDims[0].dim = 2; },
                    "value 0 ('x'): symbolic dim 2 is out of range for "
                    "shape [16,16]");
  expectVerifyError([](Plan &p) { p.inputs[0].symDims[0].dim = -1; },
                    "input 'x': symbolic dim -1 is out of range");
}

TEST(DynamicTokensVerify, DimListedTwice) {
  expectVerifyError(
      [](Plan &p) {
        Value &v = valueNamed(p, "x");
        v.symDims.push_back(v.symDims[0]);
      },
      "symbolic dim 0 is listed twice");
}

TEST(DynamicTokensVerify, NegativeCoefficients) {
  expectVerifyError([](Plan &p) { valueNamed(p, "logits").symDims[0].a = -1; },
                    "('logits'): symbolic dim 0 has a negative coefficient "
                    "(a=-1, b=0)");
  expectVerifyError([](Plan &p) { valueNamed(p, "out").symDims[0].b = -2; },
                    "negative coefficient (a=1, b=-2)");
}

TEST(DynamicTokensVerify, UnknownQuantity) {
  expectVerifyError(
      [](Plan &p) { valueNamed(p, "x").symDims[0].sym = SymKind(7); },
      "follows unknown quantity 7");
}

TEST(DynamicTokensVerify, ShapeAboveTheMaximum) {
  expectVerifyError([](Plan &p) { p.symbols[0].max = 8; },
                    "value 0 ('x'): symbolic dim 0 has size 16, more than "
                    "1*t+0 at the maximum (8)");
  expectVerifyError([](Plan &p) { p.symbols[0].max = -1; },
                    "symbol 'tokens' has maximum -1");
  expectVerifyError([](Plan &p) { p.symbols[0].min = 33; },
                    "symbol 'tokens' has minimum 33 outside 0..32");
}

TEST(DynamicTokensVerify, CoefficientOverflow) {
  expectVerifyError(
      [](Plan &p) { valueNamed(p, "y").symDims[0].a = INT64_MAX / 4; },
      "overflows at the maximum");
}

TEST(DynamicTokensVerify, AtMostOneSymbol) {
  expectVerifyError(
      [](Plan &p) {
        p.symbols.push_back({"batch", 4});
      },
      "the plan has 2 symbols, at most 1 is supported");
  expectVerifyError([](Plan &p) { p.symbols[0].name.clear(); },
                    "the plan's symbol has no name");
}

TEST(DynamicTokensVerify, SymbolicDimsNeedASymbol) {
  expectVerifyError([](Plan &p) { p.symbols.clear(); },
                    "value 0 ('x') has symbolic dims, but the plan has no "
                    "symbol");
}

TEST(DynamicTokensVerify, ConstantsCutAtTheCount) {
  // Read by steps only as their first bytes: one symbolic dim, only 1s
  // before it (other boxes: kernels compiled for the count).
  expectVerifyError(
      [](Plan &p) {
        valueNamed(p, "router.weight").symDims = {{1, SymKind::t, 1, 0}};
      },
      "('router.weight') is a constant cut at the count other than as its "
      "first bytes (symbolic dim 1 of 1, after dims of size > 1 or with "
      "others), read by step 0, which is not a kernel compiled for the "
      "count");
  expectVerifyError(
      [](Plan &p) {
        valueNamed(p, "router.weight").symDims = {{0, SymKind::t, 1, 0},
                                                  {1, SymKind::t, 1, 0}};
      },
      "('router.weight') is a constant cut at the count other than as its "
      "first bytes (symbolic dim 0 of 2");
  TestCase tc = makeDynamicMoE(spec(2));
  valueNamed(tc.plan, "router.weight").symDims = {{0, SymKind::t, 1, 0}};
  std::string error;
  EXPECT_TRUE(verifyPlan(tc.plan, error)) << error;
}

/// Adds a kernel step on x -> out calling kernel_0 (`symbolic`: compiled
/// for the token count).
void addKernelStep(Plan &p, bool symbolic) {
  KernelCode k;
  k.name = "kernel_0";
  k.numArgs = 2;
  k.symbolic = symbolic;
  p.kernels.push_back(k);
  Step s;
  fb::KernelT kt;
  kt.name = "kernel_0";
  s.attrs.Set(kt);
  s.inputs = {valueNamed(p, "x").id};
  s.outputs = {valueNamed(p, "out").id};
  s.loc = "/fused";
  p.steps.push_back(std::move(s));
}

TEST(DynamicTokensVerify, SymbolicOperandsNeedASymbolicKernel) {
  expectVerifyError([](Plan &p) { addKernelStep(p, false); },
                    "(kernel at '/fused'): operand value 0 ('x') has "
                    "symbolic dims, but kernel 'kernel_0' was compiled for "
                    "static shapes");
  // Compiled for them (KernelCode::symbolic): valid.
  TestCase tc = makeDynamicMoE(spec(2));
  addKernelStep(tc.plan, true);
  std::string error;
  EXPECT_TRUE(verifyPlan(tc.plan, error)) << error;
}

TEST(DynamicTokensVerify, SymbolicKernelsAreCpuCode) {
  expectVerifyError(
      [](Plan &p) {
        addKernelStep(p, true);
        GpuLaunchCode l;
        l.function = "kernel_0_k";
        p.kernels[0].launches.push_back(l);
      },
      "kernel 'kernel_0' takes token counts and has GPU launches; symbolic "
      "kernels are CPU code only");
}

TEST(DynamicTokensVerify, ModelIODims) {
  expectVerifyError(
      [](Plan &p) { p.outputs[0].symDims[0].sym = SymKind::t; },
      "output 'out': symbolic dim 0 follows t; a model input or output's "
      "dims follow the global count T");
  expectVerifyError([](Plan &p) { p.outputs[0].symDims[0].dim = 1; },
                    "output 'out': symbolic dim 1 is not among the leading "
                    "dims 0..0 that its split cuts, but input 'x' is split "
                    "along the count");
  expectVerifyError([](Plan &p) { p.inputs[0].symDims[0].b = 1; },
                    "input 'x': symbolic dim 0 is 1*T+1; a split dim must "
                    "be a*T with a >= 1");
  expectVerifyError(
      [](Plan &p) {
        ModelIO &m = p.inputs[0];
        m.shape = {2, 16, 16};
        m.split.axis = 1;
        m.symDims[0].dim = 1;
      },
      "input 'x': symbolic dim 1 follows dim 0 of size 2 inside the split");
}

TEST(DynamicTokensVerify, CapacityFactor) {
  auto set = [](double c) {
    return [c](Plan &p) {
      for (Step &s : p.steps)
        if (fb::DispatchT *d = s.attrs.Asdispatch())
          d->capacity_factor = c;
    };
  };
  expectVerifyError(set(-1.0), "(dispatch at '/moe/dispatch'): "
                               "capacity_factor -1.000000 is not a finite "
                               "number >= 0");
  expectVerifyError(set(NAN), "is not a finite number >= 0");
  expectVerifyError(
      [&](Plan &p) {
        set(1.0)(p);
        p.symbols.clear();
        for (Value &v : p.values)
          v.symDims.clear();
        for (ModelIO &m : p.inputs)
          m.symDims.clear();
        for (ModelIO &m : p.outputs)
          m.symDims.clear();
      },
      "capacity_factor 1.000000 needs a dynamic token count");
}

TEST(DynamicTokensFormat, DescribeShowsSymbolicDims) {
  TestCase tc = makeDynamicMoE(spec(4));
  tc.plan.version = kPlanVersionSymbols;
  std::string d = describePlan(tc.plan);
  EXPECT_NE(d.find("moe plan v8"), std::string::npos) << d;
  EXPECT_NE(d.find("symbol tokens <= 32"), std::string::npos) << d;
  EXPECT_NE(d.find("input  x: f32[(T<=32)x16]"), std::string::npos) << d;
  EXPECT_NE(d.find("f32[(t<=8)x16]"), std::string::npos) << d;
  // recv: 4 ranks * min(k=2, S=1) rows per token of a block.
  EXPECT_NE(d.find("f32[(4*tb<=32)x16]"), std::string::npos) << d;
}

TEST(DynamicTokensFormat, RoundTripVersion8) {
  TestCase tc = makeDynamicMoE(spec(2));
  tc.plan.symbols[0].min = 3;
  std::string path = tempPath("rt"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  std::string bytes = readFile(path);
  uint32_t version = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  EXPECT_EQ(version, kPlanVersionSymbols);
  auto lp = LoadedPlan::open(path, 0, error);
  ASSERT_TRUE(lp) << error;
  const Plan &p = lp->plan();
  EXPECT_EQ(p.version, kPlanVersionSymbols);
  ASSERT_EQ(p.symbols.size(), 1u);
  EXPECT_EQ(p.symbols[0].name, "tokens");
  EXPECT_EQ(p.symbols[0].max, kMax);
  EXPECT_EQ(p.symbols[0].min, 3);
  ASSERT_EQ(p.values.size(), tc.plan.values.size());
  for (size_t i = 0; i < p.values.size(); ++i) {
    const std::vector<SymDim> &a = p.values[i].symDims,
                              &b = tc.plan.values[i].symDims;
    ASSERT_EQ(a.size(), b.size()) << p.values[i].name;
    for (size_t j = 0; j < a.size(); ++j) {
      EXPECT_EQ(a[j].dim, b[j].dim);
      EXPECT_EQ(a[j].sym, b[j].sym);
      EXPECT_EQ(a[j].a, b[j].a);
      EXPECT_EQ(a[j].b, b[j].b);
    }
  }
  ASSERT_EQ(p.inputs.size(), 1u);
  ASSERT_EQ(p.inputs[0].symDims.size(), 1u);
  EXPECT_EQ(p.inputs[0].symDims[0].sym, SymKind::T);
  ASSERT_EQ(p.outputs[0].symDims.size(), 1u);
  std::remove(path.c_str());
}

TEST(DynamicTokensFormat, StaticPlanStaysVersion7) {
  // The same plan without its symbol: version 7, and a manifest with none
  // of version 8's fields (absent fields take no bytes in a FlatBuffer, so
  // the file is the one version 7 wrote).
  TestCase tc = makeMoE(spec(2));
  std::string path = tempPath("v7"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  std::string bytes = readFile(path);
  uint32_t version = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  EXPECT_EQ(version, 7u);
  const fb::Plan *f = fb::GetPlan(bytes.data() + 64);
  EXPECT_EQ(f->version(), 7u);
  EXPECT_EQ(f->symbols(), nullptr);
  for (const fb::Value *v : *f->values())
    EXPECT_EQ(v->sym_dims(), nullptr);
  for (const fb::ModelIO *m : *f->inputs())
    EXPECT_EQ(m->sym_dims(), nullptr);
  // Written twice: the same bytes (nothing depends on the new code paths).
  TestCase again = makeMoE(spec(2));
  std::string path2 = tempPath("v7b");
  ASSERT_TRUE(writePlan(path2, again.plan, again.data, error)) << error;
  EXPECT_EQ(readFile(path2), bytes);
  std::remove(path.c_str());
  std::remove(path2.c_str());
}

/// The dynamic MoE plan written, its manifest changed by `edit` (header
/// version `version`, manifest checksum recomputed), and the loader's
/// error.
std::string loadEdited(uint32_t version,
                       const std::function<void(fb::Plan &)> &edit) {
  TestCase tc = makeDynamicMoE(spec(2));
  std::string path = tempPath("edit"), error;
  EXPECT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  std::string bytes = readFile(path);
  uint64_t size = 0;
  std::memcpy(&size, bytes.data() + 24, 8);
  std::string m = bytes.substr(64, size);
  edit(*fb::GetMutablePlan(reinterpret_cast<uint8_t *>(m.data())));
  bytes.replace(64, size, m);
  uint64_t h = 1469598103934665603ull; // FNV-1a 64, the header's checksum
  for (unsigned char c : m) {
    h ^= c;
    h *= 1099511628211ull;
  }
  std::memcpy(bytes.data() + 48, &h, 8);
  std::memcpy(bytes.data() + 8, &version, 4);
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
  }
  error.clear();
  EXPECT_EQ(LoadedPlan::open(path, 0, error), nullptr);
  std::remove(path.c_str());
  return error;
}

TEST(DynamicTokensFormat, Version7WithSymbolsIsRefused) {
  std::string e = loadEdited(7, [](fb::Plan &p) { p.mutate_version(7); });
  EXPECT_NE(e.find("plan format version 7 has no symbols (a dynamic token "
                   "count needs version 8)"),
            std::string::npos)
      << e;
}

TEST(DynamicTokensFormat, FileDimOutOfRangeIsRefused) {
  // What the fuzzer would find: an index read from the file is checked
  // before any use.
  std::string e = loadEdited(8, [](fb::Plan &p) {
    p.mutable_values()
        ->GetMutableObject(0)
        ->mutable_sym_dims()
        ->GetMutableObject(0)
        ->mutate_dim(9);
  });
  EXPECT_NE(e.find("invalid plan: value 0 ('x'): symbolic dim 9 is out of "
                   "range for shape [16,16]"),
            std::string::npos)
      << e;
  e = loadEdited(8, [](fb::Plan &p) {
    p.mutable_inputs()
        ->GetMutableObject(0)
        ->mutable_sym_dims()
        ->GetMutableObject(0)
        ->mutate_dim(-3);
  });
  EXPECT_NE(e.find("input 'x': symbolic dim -3 is out of range"),
            std::string::npos)
      << e;
}

} // namespace
