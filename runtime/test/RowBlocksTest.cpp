//===- RowBlocksTest.cpp - uneven row blocks of a dynamic token count -----===//
//
// Sequence-parallel and folded MoE layers of a dynamic plan whose inputs
// are not split along the count: all_slice and reduce_scatter cut the T
// rows into blocks of tb = ceil(T / G) (the last short or empty) and
// all_gather joins them (moert::rowBlockStep, tokenSplitOf). A hand-built
// plan on 4 thread ranks runs at T = 0..8 in one executor against plain
// loops; verifyPlan refuses row steps that break the rules.
//
//===----------------------------------------------------------------------===//

#include "CpuTestUtil.h"
#include "TestPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

constexpr int G = 4;
constexpr int64_t kMax = 8, K = 6;

/// x [T,K] replicated -> all_slice -> xs [t,K] -> silu -> u [t,K] ->
/// all_gather -> out [T,K]; x -> reduce_scatter (every rank's x summed:
/// G x) -> r [t,K] -> all_gather -> sum [T,K]. `mesh`: ep=4, or ep=2,tp=2
/// (the row steps over "ep,tp").
TestCase makeRowPlan(bool twoAxes = false) {
  TestCase tc;
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.mesh = twoAxes ? MeshAxes{{"ep", 2}, {"tp", 2}} : MeshAxes{{"ep", G}};
  std::string axes = twoAxes ? "ep,tp" : "ep";
  p.symbols = {{"tokens", kMax}};
  Builder b(p, tc.data);
  b.segments(G);
  auto value = [&](const std::string &name, int64_t rows, SymKind kind,
                   ValueKind vk) {
    int32_t id = b.value(name, DType::f32, {rows, K}, vk);
    p.values[size_t(id)].symDims = {{0, kind, 1, 0}};
    return id;
  };
  int32_t x = value("x", kMax, SymKind::T, ValueKind::input);
  int32_t xs = value("xs", kMax / G, SymKind::t, ValueKind::temp);
  int32_t u = value("u", kMax / G, SymKind::t, ValueKind::temp);
  int32_t out = value("out", kMax, SymKind::T, ValueKind::output);
  int32_t r = value("r", kMax / G, SymKind::t, ValueKind::temp);
  int32_t sum = value("sum", kMax, SymKind::T, ValueKind::output);
  fb::AllSliceT slice;
  slice.axis = 0;
  slice.axes = axes;
  b.step(slice, {x}, {xs}, "/slice");
  fb::UnaryT silu;
  silu.fn = fb::UnaryFn::silu;
  b.step(silu, {xs}, {u}, "/silu");
  fb::AllGatherT gather;
  gather.axis = 0;
  gather.axes = axes;
  b.step(gather, {u}, {out}, "/gather");
  fb::ReduceScatterT rs;
  rs.axis = 0;
  rs.axes = axes;
  rs.reduction = fb::Reduction::sum;
  b.step(rs, {x}, {r}, "/reduce_scatter");
  b.step(gather, {r}, {sum}, "/gather_sum");
  auto io = [&](const std::string &name, int32_t v) {
    ModelIO m;
    m.name = name;
    m.dtype = DType::f32;
    m.shape = {kMax, K};
    m.value = v;
    m.symDims = {{0, SymKind::T, 1, 0}};
    return m;
  };
  p.inputs.push_back(io("x", x));
  p.outputs.push_back(io("out", out));
  p.outputs.push_back(io("sum", sum));
  return tc;
}

std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-rows-" + tag + "-" +
         std::to_string(getpid()) + ".moeplan";
}

/// Runs `tc` at every count of `counts` on the same executors; rank 0's
/// outputs per call.
std::vector<std::map<std::string, NpyArray>>
runAtCounts(TestCase &tc, const std::string &tag,
            const std::vector<int64_t> &counts, const std::vector<float> &x) {
  std::string path = tempPath(tag), error;
  EXPECT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  std::vector<std::map<std::string, NpyArray>> result(counts.size());
  runThreadRanks(G, [&](Comm &world) {
    std::string err;
    auto lp = LoadedPlan::open(path, world.rank(), err);
    if (!lp)
      throw RunError(err);
    Executor ex(*lp, world, createCpuBackend());
    for (size_t c = 0; c < counts.size(); ++c) {
      std::vector<double> rows(x.begin(), x.begin() + counts[c] * K);
      ex.setInputs({{"x", f32Array({counts[c], K}, rows)}});
      ex.run();
      auto outs = ex.gatherOutputs();
      if (world.rank() == 0)
        for (auto &[name, a] : outs)
          result[c][name] = std::move(a);
    }
  });
  std::remove(path.c_str());
  return result;
}

void expectRowsAtEveryCount(bool twoAxes) {
  TestCase tc = makeRowPlan(twoAxes);
  std::string error;
  ASSERT_TRUE(verifyPlan(tc.plan, error)) << error;
  Split split = tokenSplitOf(tc.plan);
  EXPECT_EQ(split.over, twoAxes ? (std::vector<std::string>{"ep", "tp"})
                                : (std::vector<std::string>{"ep"}));
  std::mt19937 rng(11);
  std::vector<float> x = randomFloats(rng, kMax * K, 2.0f);
  // Every block shape: empty blocks (T < 4), short last blocks (5, 7).
  const std::vector<int64_t> counts = {0, 1, 2, 3, 5, 7, 8, 6, 1};
  auto outs = runAtCounts(tc, twoAxes ? "2x2" : "4", counts, x);
  for (size_t c = 0; c < counts.size(); ++c) {
    int64_t T = counts[c];
    SCOPED_TRACE("T = " + std::to_string(T));
    std::vector<double> silu(size_t(T * K)), sum(size_t(T * K));
    for (int64_t i = 0; i < T * K; ++i) {
      double v = x[size_t(i)];
      silu[size_t(i)] = v / (1 + std::exp(-v));
      sum[size_t(i)] = G * v;
    }
    for (auto [name, ref] : {std::pair{"out", &silu}, std::pair{"sum", &sum}}) {
      ASSERT_TRUE(outs[c].count(name)) << name;
      const NpyArray &got = outs[c].at(name);
      EXPECT_EQ(got.shape, (std::vector<int64_t>{T, K})) << name;
      ASSERT_EQ(got.data.size(), ref->size() * 4) << name;
      NpyArray want = f32Array({T, K}, *ref);
      test::expectNearScaled(reinterpret_cast<const float *>(got.data.data()),
                             reinterpret_cast<const float *>(want.data.data()),
                             ref->size(), 1e-6, name);
    }
  }
}

} // namespace

TEST(RowBlocks, SliceGatherAndReduceScatterAtEveryCount) {
  expectRowsAtEveryCount(false);
}

TEST(RowBlocks, OverTwoMeshAxes) { expectRowsAtEveryCount(true); }

TEST(RowBlocks, StepsAreRecognised) {
  TestCase tc = makeRowPlan();
  std::string why;
  for (const Step &s : tc.plan.steps)
    EXPECT_EQ(rowBlockStep(tc.plan, s, why), s.kind() != StepKind::unary)
        << s.loc;
  EXPECT_TRUE(why.empty()) << why;
  // A static plan has no token split and no row steps.
  tc.plan.symbols.clear();
  for (Value &v : tc.plan.values)
    v.symDims.clear();
  EXPECT_TRUE(tokenSplitOf(tc.plan).over.empty());
  for (const Step &s : tc.plan.steps)
    EXPECT_FALSE(rowBlockStep(tc.plan, s, why)) << s.loc;
}

TEST(RowBlocks, EvenSplitIsNotARowStep) {
  // Whole sequences per rank: [G*T] rows into blocks of T (the same kind,
  // a times G) are G copies at every count, as in a static plan.
  TestCase tc = makeRowPlan();
  Plan &p = tc.plan;
  for (Value &v : p.values) {
    if (v.name == "x" || v.name == "out" || v.name == "sum") {
      v.shape[0] = kMax * G;
      v.symDims = {{0, SymKind::T, G, 0}};
    } else {
      v.shape[0] = kMax;
      v.symDims = {{0, SymKind::T, 1, 0}};
    }
  }
  std::string why;
  for (const Step &s : p.steps)
    EXPECT_FALSE(rowBlockStep(p, s, why)) << s.loc;
  EXPECT_TRUE(tokenSplitOf(p).over.empty());
}

namespace {
/// verifyPlan's message for the row plan after `edit`.
std::string verifyError(const std::function<void(Plan &)> &edit,
                        bool twoAxes = false) {
  TestCase tc = makeRowPlan(twoAxes);
  std::string error;
  EXPECT_TRUE(verifyPlan(tc.plan, error)) << error;
  edit(tc.plan);
  error.clear();
  EXPECT_FALSE(verifyPlan(tc.plan, error));
  return error;
}
Value &named(Plan &p, const std::string &name) {
  for (Value &v : p.values)
    if (v.name == name)
      return v;
  ADD_FAILURE() << "no value " << name;
  return p.values[0];
}
} // namespace

TEST(RowBlocksVerify, BlockMustFollowThisRanksRows) {
  std::string e = verifyError([](Plan &p) {
    named(p, "xs").symDims = {{0, SymKind::tb, 1, 0}};
  });
  EXPECT_NE(e.find("step 0 (all_slice at '/slice'): cuts or joins the token "
                   "count's rows, but dim 0 of the whole must be a*T and of "
                   "each block a*t"),
            std::string::npos)
      << e;
}

TEST(RowBlocksVerify, WholeMustFollowT) {
  std::string e = verifyError([](Plan &p) {
    named(p, "out").symDims = {{0, SymKind::T, 1, 1}};
    named(p, "out").shape[0] = kMax + 1;
  });
  EXPECT_NE(e.find("step 2 (all_gather at '/gather')"), std::string::npos) << e;
}

TEST(RowBlocksVerify, OtherMeshAxesThanTheTokenSplit) {
  std::string e = verifyError(
      [](Plan &p) {
        p.steps[2].attrs.Asall_gather()->axes = "ep";
        p.steps[4].attrs.Asall_gather()->axes = "ep";
      },
      true);
  EXPECT_NE(e.find("its mesh axes (ep) are not the token split's"),
            std::string::npos)
      << e;
}

TEST(RowBlocksVerify, DimsBeforeTheAxis) {
  std::string e = verifyError([](Plan &p) {
    for (const char *n : {"x", "xs"}) {
      Value &v = named(p, n);
      v.shape.insert(v.shape.begin(), 2);
      v.symDims[0].dim = 1;
    }
    p.inputs[0].shape.insert(p.inputs[0].shape.begin(), 2);
    p.inputs[0].symDims[0].dim = 1;
    p.steps[0].attrs.Asall_slice()->axis = 1;
  });
  EXPECT_NE(e.find("dim 1 has dim 0 of size 2 before it"), std::string::npos)
      << e;
}
