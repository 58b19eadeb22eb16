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
#include "PlanTestUtil.h"
#include "RowPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;
using namespace moert::testplans::rows;

namespace {

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
  auto outs = runAtCounts(tc, twoAxes ? "2x2" : "4", counts, x,
                          [] { return createCpuBackend(); });
  for (size_t c = 0; c < counts.size(); ++c) {
    int64_t T = counts[c];
    SCOPED_TRACE("T = " + std::to_string(T));
    for (auto &[name, ref] : rowReference(x, T)) {
      ASSERT_TRUE(outs[c].count(name)) << name;
      const NpyArray &got = outs[c].at(name);
      EXPECT_EQ(got.shape, (std::vector<int64_t>{T, K})) << name;
      ASSERT_EQ(got.data.size(), ref.size() * 4) << name;
      NpyArray want = f32Array({T, K}, ref);
      test::expectNearScaled(reinterpret_cast<const float *>(got.data.data()),
                             reinterpret_cast<const float *>(want.data.data()),
                             ref.size(), 1e-6, name);
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
    EXPECT_EQ(rowBlockStep(tc.plan, s, &why), s.kind() != StepKind::unary)
        << s.loc;
  EXPECT_TRUE(why.empty()) << why;
  // A static plan has no token split and no row steps.
  tc.plan.symbols.clear();
  for (Value &v : tc.plan.values)
    v.symDims.clear();
  EXPECT_TRUE(tokenSplitOf(tc.plan).over.empty());
  for (const Step &s : tc.plan.steps)
    EXPECT_FALSE(rowBlockStep(tc.plan, s, &why)) << s.loc;
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
    EXPECT_FALSE(rowBlockStep(p, s, &why)) << s.loc;
  EXPECT_TRUE(tokenSplitOf(p).over.empty());
}

namespace {
/// verifyPlan's message for the row plan after `edit`.
std::string verifyError(const std::function<void(Plan &)> &edit,
                        bool twoAxes = false) {
  return test::verifyErrorAfter(makeRowPlan(twoAxes).plan, edit);
}
Value &named(Plan &p, const std::string &name) {
  return test::valueNamed(p, name);
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
