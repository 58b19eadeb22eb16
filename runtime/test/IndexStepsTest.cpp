//===- IndexStepsTest.cpp - topk and scatter_elements steps ---------------===//
//
// The plan of IndexPlans.h (a sparsemixer-style router left as dense ops, a
// topk over a 3-d view, an axis-0 scatter with i32 indices) written, loaded
// and run on 1 and 3 thread ranks with every reduction, against its plain
// loops (indices exactly, values to fp32 rounding); an index out of range
// ends the run with the step, the index and the shapes named. (verifyPlan
// and --describe on this plan: PlanTest.cpp.)
//
//===----------------------------------------------------------------------===//

#include "IndexPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

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
    const float *gp = reinterpret_cast<const float *>(g.data.data());
    const float *wp = reinterpret_cast<const float *>(w.data.data());
    size_t n = g.data.size() / 4;
    double scale = 1e-30;
    for (size_t i = 0; i < n; ++i)
      scale = std::max(scale, double(std::fabs(wp[i])));
    for (size_t i = 0; i < n; ++i)
      ASSERT_NEAR(gp[i], wp[i], 1e-6 * scale) << name << " element " << i;
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

} // namespace
