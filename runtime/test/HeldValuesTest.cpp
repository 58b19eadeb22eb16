//===- HeldValuesTest.cpp - outputs kept on the ranks as later inputs -----===//
//
// Executor::holdOutputs (moert/Executor.h), the decode loop's KV cache: a
// "step" plan with a dynamic length (past [2, P, 4] split over 2 ranks ->
// present = past + c) fed its own output on 2 thread ranks for several
// calls, a "prefill" plan's output held into it, the errors (a block past
// the input's maximum, a held input replaced by a given one), and
// holdError's rules on plan pairs that cannot hold. References are plain
// float loops.
//
//===----------------------------------------------------------------------===//

#include "HeldPlans.h"
#include "PlanTestUtil.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <tuple>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

/// onTwoRanks on the CPU backend.
void onTwoRanks(
    TestCase &step, TestCase &prefill,
    const std::function<void(Comm &, Executor &, Executor &)> &body) {
  testplans::onTwoRanks(step, prefill, createCpuBackend, body);
}

const std::pair<std::string, std::string> kPair = {"present", "past"};

} // namespace

/// The step fed its own output three times: past + 3c, at the held length,
/// with only the named output gathered.
TEST(HeldValues, OwnOutputsAcrossCalls) {
  std::mt19937 rng(3);
  std::vector<float> c = randomValues(rng, kWidth);
  std::vector<float> past = randomValues(rng, 2 * 3 * kWidth);
  TestCase step = lengthPlan("past", "present", kStepMax, true, c);
  TestCase prefill = lengthPlan("x", "present", kPrefillMax, false, c);
  std::vector<std::vector<std::pair<std::string, NpyArray>>> outs;
  onTwoRanks(step, prefill, [&](Comm &world, Executor &s, Executor &) {
    s.setInputs({{"past", floats({2, 3, kWidth}, past)}});
    s.run();
    for (int call = 0; call < 2; ++call) {
      s.holdOutputs(s, {kPair});
      s.setInputs({});
      s.run();
    }
    auto o = s.gatherOutputs({"present"});
    if (world.rank() == 0)
      outs.push_back(std::move(o));
  });
  ASSERT_EQ(outs.size(), 1u);
  ASSERT_EQ(outs[0].size(), 1u);
  EXPECT_EQ(outs[0][0].first, "present");
  EXPECT_EQ(outs[0][0].second.shape, (std::vector<int64_t>{2, 3, kWidth}));
  EXPECT_EQ(valuesOf(outs[0][0].second), plusC(past, c, 3));
}

/// The prefill's output held into the step (another executor), then a
/// given input replacing the held one, after which the held one is gone.
TEST(HeldValues, FromAnotherPlanAndReplaced) {
  std::mt19937 rng(4);
  std::vector<float> c = randomValues(rng, kWidth);
  std::vector<float> x = randomValues(rng, 2 * 5 * kWidth);
  std::vector<float> other = randomValues(rng, 2 * 2 * kWidth);
  TestCase step = lengthPlan("past", "present", kStepMax, true, c);
  TestCase prefill = lengthPlan("x", "present", kPrefillMax, false, c);
  std::vector<NpyArray> got;
  std::string missing;
  onTwoRanks(step, prefill, [&](Comm &world, Executor &s, Executor &p) {
    p.setInputs({{"x", floats({2, 5, kWidth}, x)}});
    p.run();
    s.holdOutputs(p, {kPair});
    s.setInputs({});
    s.run();
    auto a = s.gatherOutputs();
    s.holdOutputs(s, {kPair});
    s.setInputs({{"past", floats({2, 2, kWidth}, other)}});
    s.run();
    auto b = s.gatherOutputs({"present"});
    try {
      s.setInputs({});
    } catch (const RunError &e) {
      missing = e.what();
    }
    if (world.rank() == 0) {
      ASSERT_EQ(a.size(), 2u);
      got = {a[0].second, a[1].second, b[0].second};
    }
  });
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].shape, (std::vector<int64_t>{2, 5, kWidth}));
  EXPECT_EQ(valuesOf(got[0]), plusC(x, c, 1));
  EXPECT_EQ(valuesOf(got[1]), x); // the `copy` output: the held input
  EXPECT_EQ(got[2].shape, (std::vector<int64_t>{2, 2, kWidth}));
  EXPECT_EQ(valuesOf(got[2]), plusC(other, c, 1));
  EXPECT_NE(missing.find("missing input 'past'"), std::string::npos) << missing;
}

/// A prefill longer than the step's maximum does not fit the held memory.
TEST(HeldValues, BlockPastTheMaximum) {
  std::mt19937 rng(5);
  std::vector<float> c = randomValues(rng, kWidth);
  TestCase step = lengthPlan("past", "present", kStepMax, true, c);
  TestCase prefill = lengthPlan("x", "present", kPrefillMax, false, c);
  std::string what;
  onTwoRanks(step, prefill, [&](Comm &world, Executor &s, Executor &p) {
    p.setInputs(
        {{"x", floats({2, 12, kWidth}, randomValues(rng, 2 * 12 * kWidth))}});
    p.run();
    try {
      s.holdOutputs(p, {kPair});
    } catch (const RunError &e) {
      if (world.rank() == 0)
        what = e.what();
    }
  });
  EXPECT_NE(what.find("rank 0: output 'present' [2,12,4]: this rank's "
                      "block of 192 bytes exceeds the 128 bytes of input "
                      "'past' at the plan's maximum [2,8,4]"),
            std::string::npos)
      << what;
}

TEST(HeldValues, HoldErrors) {
  std::vector<float> c(kWidth, 1.0f);
  Plan to = lengthPlan("past", "present", kStepMax, true, c).plan;
  Plan from = lengthPlan("x", "present", kPrefillMax, false, c).plan;
  EXPECT_EQ(holdError(from, "present", to, "past"), "");
  EXPECT_EQ(holdError(from, "nope", to, "past"),
            "the plan has no output 'nope'");
  EXPECT_EQ(holdError(from, "present", to, "nope"),
            "the plan has no input 'nope'");
  auto withOutput = [&](const std::function<void(Plan &, ModelIO &)> &edit) {
    Plan f = from;
    edit(f, f.outputs[0]);
    return holdError(f, "present", to, "past");
  };
  const std::string pair = "output 'present' as input 'past': ";
  EXPECT_EQ(withOutput([](Plan &, ModelIO &m) { m.dtype = DType::bf16; }),
            pair + "dtype bf16 is not f32");
  EXPECT_EQ(withOutput([](Plan &, ModelIO &m) { m.shape.push_back(1); }),
            pair + "rank 4 is not 3");
  EXPECT_EQ(withOutput([](Plan &p, ModelIO &) {
              p.mesh = {{"ep", 4}};
            }),
            pair + "the plans are for 4 and 2 ranks");
  EXPECT_EQ(withOutput([](Plan &, ModelIO &m) { m.split.axis = 1; }),
            pair + "a split cuts the dynamic dim (each rank's block follows "
                   "the count)");
  EXPECT_EQ(withOutput([](Plan &, ModelIO &m) {
              m.split.axis = -1;
              m.split.over.clear();
            }),
            pair + "split along dim -1 and dim 0 (-1: not split)");
  // The same dim over different axes of a 2x2 mesh: rank 1 is block 1 of
  // ep but block 0 of dp.
  Plan t4 = to, f4 = from;
  t4.mesh = f4.mesh = {{"dp", 2}, {"ep", 2}};
  f4.outputs[0].split.over = {"dp"};
  EXPECT_EQ(holdError(f4, "present", t4, "past"),
            pair + "rank 1 holds block 0 of 2 of the one and block 1 of 2 "
                   "of the other");
  f4.outputs[0].split.over = {"ep"};
  EXPECT_EQ(holdError(f4, "present", t4, "past"), "");
}

/// The cache outside the arena, swapped in place (Executor::setBindHeld):
/// only the hand-over from the prefill copies (rank 0's block [1, 3, 4]:
/// 48 bytes); the steps read and write the two buffers through the views'
/// roots. With binding off each of the 3 holds after the steps copies the
/// present onto the past (3 x 48 bytes); a plan whose cache lies in the
/// arena (an older moec: no roots) copies 48 bytes into the arena at each
/// of the 4 steps too. Every way gives x + 4c.
TEST(HeldValues, CacheOutsideTheArena) {
  std::mt19937 rng(7);
  std::vector<float> c = randomValues(rng, kWidth);
  std::vector<float> x = randomValues(rng, 2 * 3 * kWidth);
  for (auto [outside, bind, copied] :
       {std::tuple{true, true, 0u}, std::tuple{true, false, 3 * 48u},
        std::tuple{false, true, 7 * 48u}}) {
    SCOPED_TRACE(std::string(outside ? "outside" : "in the arena") +
                 (bind ? ", swapped" : ", copied"));
    HeldLoop r = heldLoop(createCpuBackend, c, x, outside, bind);
    EXPECT_EQ(r.present.shape, (std::vector<int64_t>{2, 3, kWidth}));
    EXPECT_EQ(valuesOf(r.present), plusC(x, c, 4));
    EXPECT_EQ(r.handover, 48u);
    EXPECT_EQ(r.steps, copied);
  }
}

/// Value::root and Value::outside survive the file, and verifyPlan's rules
/// for them: a view is another arena value's reshape (same offset and
/// size), of a root, in a plan with a symbol; only such roots lie outside
/// the arena, at offset 0.
TEST(HeldValues, ViewRoots) {
  std::vector<float> c(kWidth, 1.0f);
  TestCase tc = viewPlan("past", "present", kStepMax, c, true, true);
  std::string path = ::testing::TempDir() + "/moert-roots-" +
                     std::to_string(getpid()) + ".moeplan",
              error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, 0, error);
  std::remove(path.c_str());
  ASSERT_TRUE(lp) << error;
  std::vector<int32_t> roots;
  std::vector<bool> outside;
  for (const Value &v : lp->plan().values) {
    roots.push_back(v.root);
    outside.push_back(v.outside);
  }
  EXPECT_EQ(roots, (std::vector<int32_t>{-1, 0, -1, 2, -1}));
  EXPECT_EQ(outside, (std::vector<bool>{true, false, true, false, false}));
  using test::verifyErrorAfter;
  const Plan &q = tc.plan;
  EXPECT_EQ(verifyErrorAfter(q, [](Plan &p) { p.values[1].outside = true; }),
            "value 1 ('past_rows') outside the arena is a view (only roots "
            "of arena values are)");
  EXPECT_EQ(verifyErrorAfter(q, [](Plan &p) { p.values[4].outside = true; }),
            "value 4 ('c') outside the arena is a constant (only roots of "
            "arena values are)");
  EXPECT_EQ(verifyErrorAfter(q, [](Plan &p) { p.values[2].offset = 64; }),
            "value 2 ('sum') lies outside the arena at offset 64 (0 "
            "expected)");
  EXPECT_EQ(verifyErrorAfter(q, [](Plan &p) { p.symbols.clear(); }),
            "value 0 ('past') outside the arena in a plan without a symbol");

  const Plan &p = viewPlan("past", "present", kStepMax, c, true, false).plan;
  const std::string view = "value 3 ('present') views value ";
  EXPECT_EQ(verifyErrorAfter(p, [](Plan &q) { q.symbols.clear(); }),
            "value 1 ('past_rows') views value 0 in a plan without a symbol "
            "(roots are recorded only in version 8)");
  EXPECT_EQ(verifyErrorAfter(p, [](Plan &q) { q.values[3].root = 3; }),
            view + "3, which is not another value of the plan");
  EXPECT_EQ(verifyErrorAfter(p, [](Plan &q) { q.values[3].root = 9; }),
            view + "9, which is not another value of the plan");
  EXPECT_EQ(verifyErrorAfter(p, [](Plan &q) { q.values[3].root = 1; }),
            view + "1, which is itself a view");
  EXPECT_EQ(verifyErrorAfter(p, [](Plan &q) { q.values[3].root = 4; }),
            view + "4: constants have no views");
  EXPECT_EQ(verifyErrorAfter(p, [](Plan &q) { q.values[3].root = 0; }),
            view + "0 at offset " + std::to_string(p.values[3].offset) +
                ", 128 bytes; the root has 0, 128");
}

TEST(HeldValues, GatherUnknownOutput) {
  std::vector<float> c(kWidth, 1.0f);
  TestCase step = lengthPlan("past", "present", kStepMax, true, c);
  TestCase prefill = lengthPlan("x", "present", kPrefillMax, false, c);
  std::string what;
  onTwoRanks(step, prefill, [&](Comm &world, Executor &s, Executor &) {
    s.setInputs({{"past", floats({2, 1, kWidth}, std::vector<float>(8))}});
    s.run();
    try {
      s.gatherOutputs({"logits"});
    } catch (const RunError &e) {
      if (world.rank() == 0)
        what = e.what();
    }
  });
  EXPECT_EQ(what, "the plan has no output 'logits'");
}
