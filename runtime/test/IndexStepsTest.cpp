//===- IndexStepsTest.cpp - topk and scatter_elements steps ---------------===//
//
// The plan of IndexPlans.h (a sparsemixer-style router left as dense ops, a
// topk over a 3-d view, an axis-0 scatter with i32 indices) written, loaded
// and run on 1 and 3 thread ranks with every reduction, against its plain
// loops (indices exactly, values to fp32 rounding); an index out of range
// ends the run with the step, the index and the shapes named; verifyPlan's
// rules for both steps and their --describe.
//
//===----------------------------------------------------------------------===//

#include "CpuTestUtil.h"
#include "IndexPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

#define EXPECT_CONTAINS(s, sub)                                                \
  EXPECT_NE(std::string(s).find(sub), std::string::npos) << (s)

std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-index-" + tag + "-" +
         std::to_string(getpid()) + ".moeplan";
}

/// Writes the plan and runs it on its world size of thread ranks (CPU);
/// rank 0's gathered outputs.
std::vector<std::pair<std::string, NpyArray>> runIndexPlan(TestCase &tc,
                                                           const char *tag) {
  std::string path = tempPath(tag), error;
  EXPECT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  std::vector<std::pair<std::string, NpyArray>> out;
  try {
    runThreadRanks(int(tc.plan.worldSize()), [&](Comm &world) {
      std::string err;
      auto lp = LoadedPlan::open(path, world.rank(), err);
      if (!lp)
        throw RunError(err);
      Executor ex(*lp, world, createCpuBackend());
      ex.setInputs(tc.inputs);
      ex.run();
      auto o = ex.gatherOutputs();
      if (world.rank() == 0)
        out = std::move(o);
    });
  } catch (...) {
    std::remove(path.c_str());
    throw;
  }
  std::remove(path.c_str());
  return out;
}

/// Integer outputs exactly, f32 ones to 1e-6 of their largest magnitude.
void expectOutputs(const std::vector<std::pair<std::string, NpyArray>> &got,
                   const TestCase &tc) {
  ASSERT_EQ(got.size(), tc.expected.size());
  for (auto &[name, g] : got) {
    const NpyArray &w = tc.expected.at(name);
    EXPECT_EQ(g.shape, w.shape) << name;
    ASSERT_EQ(g.dtype, w.dtype) << name;
    ASSERT_EQ(g.data.size(), w.data.size()) << name;
    if (g.dtype != "<f4") {
      EXPECT_EQ(g.data, w.data) << name;
      continue;
    }
    test::expectNearScaled(reinterpret_cast<const float *>(g.data.data()),
                           reinterpret_cast<const float *>(w.data.data()),
                           g.data.size() / 4, 1e-6, name);
  }
}

TEST(IndexSteps, RouterLeftAsDenseOpsOnOneAndThreeRanks) {
  for (int ranks : {1, 3})
    for (fb::ScatterReduction r :
         {fb::ScatterReduction::none, fb::ScatterReduction::add,
          fb::ScatterReduction::mul, fb::ScatterReduction::max,
          fb::ScatterReduction::min}) {
      SCOPED_TRACE(std::to_string(ranks) + " ranks, reduction " +
                   fb::EnumNameScatterReduction(r));
      IndexSpec spec;
      spec.ranks = ranks;
      spec.reduction = r;
      spec.seed = unsigned(10 + ranks + int(r));
      TestCase tc = makeIndexSteps(spec);
      expectOutputs(runIndexPlan(tc, "ok"), tc);
    }
}

TEST(IndexSteps, IndexOutOfRangeStopsTheRun) {
  IndexSpec spec;
  spec.ranks = 3;
  spec.badIndex = true;
  TestCase tc = makeIndexSteps(spec);
  try {
    runIndexPlan(tc, "bad");
    FAIL() << "expected a RunError";
  } catch (const RunError &e) {
    std::string m = e.what();
    EXPECT_NE(m.find("step 4 (scatter_elements at '/acc/scatter'): index 8 "
                     "at position 0 of indices [2,6] is out of range for "
                     "axis 0 of data [8,6]"),
              std::string::npos)
        << m;
  }
}

/// verifyPlan on the topk / scatter_elements plan changed by `edit`.
class IndexVerify : public ::testing::Test {
protected:
  TestCase tc = makeIndexSteps(IndexSpec());
  std::string verifyError(const std::function<void(Plan &)> &edit) {
    Plan p = tc.plan;
    edit(p);
    std::string error;
    EXPECT_FALSE(verifyPlan(p, error));
    return error;
  }
};

TEST_F(IndexVerify, ValidPlan) {
  std::string error;
  EXPECT_TRUE(verifyPlan(tc.plan, error)) << error;
}

TEST_F(IndexVerify, TopKRules) {
  auto topk = [](Plan &p) { return p.steps[0].attrs.Astopk(); };
  EXPECT_CONTAINS(verifyError([&](Plan &p) { topk(p)->k = 7; }),
                  "step 0 (topk at '/router/topk'): k=7 outside [1, 6] for "
                  "x f32[8,6]");
  EXPECT_CONTAINS(verifyError([&](Plan &p) { topk(p)->k = 0; }),
                  "k=0 outside [1, 6]");
  // k must agree with the results' last dim.
  EXPECT_CONTAINS(verifyError([&](Plan &p) { topk(p)->k = 3; }),
                  "values f32[8,2] is not f32[8,3]");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[5].dtype = DType::i32; }),
                  "indices i32[8,2] is not i64[8,2]");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[0].dtype = DType::bf16; }),
                  "x bf16[8,6] is not f32");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[0].outputs.pop_back(); }),
                  "1 results, expected 2");
}

TEST_F(IndexVerify, ScatterRules) {
  auto mask = [](Plan &p) { return p.steps[1].attrs.Asscatter_elements(); };
  EXPECT_CONTAINS(verifyError([&](Plan &p) { mask(p)->axis = 2; }),
                  "step 1 (scatter_elements at '/router/mask'): axis 2 "
                  "outside [0, 2)");
  // Updates of another shape than the indices.
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].inputs[2] = 3; }),
                  "indices i64[8,2] and updates f32[2,6] must have one shape");
  // Indices past data off the axis.
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    Value small = p.values[6]; // f32 [8,6]
                    small.id = int32_t(p.values.size());
                    small.shape = {1, 6};
                    p.values.push_back(small);
                    Step &s = p.steps[4];
                    s.attrs.Asscatter_elements()->axis = 1;
                    s.inputs[0] = s.outputs[0] = small.id;
                  }),
                  "indices i32[2,6] exceed data f32[1,6] in dim 0 (off the "
                  "axis 1)");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.values[6].shape = {8, 5};
                  }),
                  "must have the dtype of data f32[8,6], the result its shape");
  EXPECT_CONTAINS(verifyError([&](Plan &p) {
                    mask(p)->reduction = fb::ScatterReduction(9);
                  }),
                  "an attribute has an unknown enum value");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].inputs[1] = 3; }),
                  "indices f32[2,6] is not i64 or i32");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].inputs[0] = -1; }),
                  "operand 0 is required, but absent (-1)");
}

TEST_F(IndexVerify, Describe) {
  std::string d = describePlan(tc.plan);
  EXPECT_CONTAINS(d, "0: topk(v0) -> v4, v5 k=2 largest=1  @ /router/topk");
  EXPECT_CONTAINS(d, "1: scatter_elements(v0, v5, v2) -> v6 axis=1 "
                     "reduction=none  @ /router/mask");
  EXPECT_CONTAINS(d, "3: topk(v9) -> v10, v11 k=2 largest=0  @ /low/topk");
  EXPECT_CONTAINS(d, "4: scatter_elements(v0, v1, v3) -> v12 axis=0 "
                     "reduction=add  @ /acc/scatter");
}

} // namespace
