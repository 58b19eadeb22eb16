//===- BoxedCacheTest.cpp - a KV cache grown in place ---------------------===//
//
// A cache pair kept in place (Value::boxed, docs/plan-format.md): a decode
// step whose past_k_0 [2, 2, P, 4] and present_k_0 [2, 2, P + 1, 4] (split
// over 2 thread ranks along dim 0) share one buffer per rank at the strides
// of the box [1, 2, 9, 4]; its kernel (TestKernels.cpp's kernel_append)
// writes only row P of present and sums past. A prefill's packed present
// handed over into the box, then several steps fed the last one's cache,
// against a plain loop; host inputs and outputs copied at the box's
// strides; forEachBoxRun's runs; verifyPlan's rules and --describe.
//
//===----------------------------------------------------------------------===//

#include "HeldPlans.h"
#include "PlanTestUtil.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>
#include <tuple>

using namespace moert;
using namespace moert::testplans;

namespace {

constexpr int64_t H = kBoxHeads, W = kBoxWidth;

/// TestKernels.cpp's shared object, the boxed step's CPU code.
std::vector<char> testKernels() {
  std::ifstream so(MOERT_TEST_KERNELS, std::ios::binary);
  std::vector<char> code((std::istreambuf_iterator<char>(so)),
                         std::istreambuf_iterator<char>());
  EXPECT_FALSE(code.empty()) << MOERT_TEST_KERNELS;
  return code;
}

/// boxedStep with TestKernels.cpp's code.
TestCase boxedStep() { return testplans::boxedStep(testKernels()); }

/// The plain loop: the cache [2, H, P, W] and one step's sum of past and
/// new [2, H, 1, W] (in the kernel's order), then new appended.
struct Reference {
  std::vector<float> cache;
  int64_t P = 0;
  std::vector<float> step(const std::vector<float> &add) {
    std::vector<float> sum(add.size()), next;
    for (int64_t bh = 0; bh < 2 * H; ++bh) {
      for (int64_t w = 0; w < W; ++w) {
        float s = add[size_t(bh * W + w)];
        for (int64_t i = 0; i < P; ++i)
          s += cache[size_t((bh * P + i) * W + w)];
        sum[size_t(bh * W + w)] = s;
      }
      next.insert(next.end(), cache.begin() + bh * P * W,
                  cache.begin() + (bh + 1) * P * W);
      next.insert(next.end(), add.begin() + bh * W, add.begin() + (bh + 1) * W);
    }
    cache = std::move(next);
    ++P;
    return sum;
  }
};

/// What rank 0 saw of a decode loop.
struct Loop {
  std::vector<std::vector<float>> sums;
  NpyArray present;
  uint64_t handover = 0, steps = 0;
};

constexpr int64_t kPrompt = 3;
constexpr int kSteps = 5; // past lengths 3..7

/// The prefill of `x` [2, H, kPrompt, W] handed over to the step, then
/// kSteps steps adding `adds` (each [2, H, 1, W]), holdOutputs swapping as
/// `bind` says.
Loop decodeLoop(const std::vector<float> &x,
                const std::vector<std::vector<float>> &adds, bool bind) {
  TestCase step = boxedStep(), prefill = packedPrefill();
  Loop r;
  onTwoRanks(step, prefill, createCpuBackend,
             [&](Comm &world, Executor &s, Executor &p) {
               s.setBindHeld(bind);
               p.setInputs({{"x", floats({2, H, kPrompt, W}, x)}});
               p.run();
               s.holdOutputs(p, {{"present_k_0", "past_k_0"}});
               uint64_t handover = s.heldCopyBytes();
               for (int call = 0; call < kSteps; ++call) {
                 if (call)
                   s.holdOutputs(s, {{"present_k_0", "past_k_0"}});
                 s.setInputs({{"new", floats({2, H, 1, W}, adds[call])}});
                 s.run();
                 auto o = s.gatherOutputs({"sum"});
                 if (world.rank() == 0)
                   r.sums.push_back(valuesOf(o.at(0).second));
               }
               auto o = s.gatherOutputs({"present_k_0"});
               if (world.rank() == 0) {
                 r.present = std::move(o.at(0).second);
                 r.handover = handover;
                 r.steps = s.heldCopyBytes() - handover;
               }
             });
  return r;
}

} // namespace

/// The prefill's packed present lands in the box at its strides (rank 0's
/// block [1, 2, 3, 4]: 96 bytes copied once); each step then writes one
/// row in place and nothing is copied or swapped between steps, with
/// swapping on or off; the sums and the cache downloaded at the end (packed
/// again) match the plain loop.
TEST(BoxedCache, DecodeInPlace) {
  std::mt19937 rng(11);
  std::vector<float> x = randomValues(rng, size_t(2 * H * kPrompt * W));
  std::vector<std::vector<float>> adds;
  for (int i = 0; i < kSteps; ++i)
    adds.push_back(randomValues(rng, size_t(2 * H * W)));
  Reference ref{x, kPrompt};
  std::vector<std::vector<float>> sums;
  for (const std::vector<float> &a : adds)
    sums.push_back(ref.step(a));
  for (bool bind : {true, false}) {
    SCOPED_TRACE(bind ? "swapping on" : "swapping off");
    Loop r = decodeLoop(x, adds, bind);
    EXPECT_EQ(r.sums, sums);
    EXPECT_EQ(r.present.shape,
              (std::vector<int64_t>{2, H, kPrompt + kSteps, W}));
    EXPECT_EQ(valuesOf(r.present), ref.cache);
    EXPECT_EQ(r.handover, uint64_t(H * kPrompt * W * 4));
    EXPECT_EQ(r.steps, 0u);
  }
}

/// A past given from the host is scattered into the box, and the present
/// gathered out of it; the next step (held in place) reads it there.
TEST(BoxedCache, HostInputsAndOutputs) {
  std::mt19937 rng(12);
  const int64_t P = 4;
  std::vector<float> past = randomValues(rng, size_t(2 * H * P * W));
  std::vector<float> a0 = randomValues(rng, size_t(2 * H * W)),
                     a1 = randomValues(rng, size_t(2 * H * W));
  Reference ref{past, P};
  std::vector<float> s0 = ref.step(a0);
  std::vector<float> c0 = ref.cache;
  std::vector<float> s1 = ref.step(a1);
  TestCase step = boxedStep(), prefill = packedPrefill();
  std::vector<NpyArray> got;
  uint64_t copied = 1;
  onTwoRanks(step, prefill, createCpuBackend,
             [&](Comm &world, Executor &s, Executor &) {
               s.setInputs({{"past_k_0", floats({2, H, P, W}, past)},
                            {"new", floats({2, H, 1, W}, a0)}});
               s.run();
               auto first = s.gatherOutputs();
               s.holdOutputs(s, {{"present_k_0", "past_k_0"}});
               s.setInputs({{"new", floats({2, H, 1, W}, a1)}});
               s.run();
               auto second = s.gatherOutputs();
               if (world.rank() == 0) {
                 for (auto *o : {&first, &second})
                   for (auto &[name, a] : *o)
                     got.push_back(a);
                 copied = s.heldCopyBytes();
               }
             });
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].shape, (std::vector<int64_t>{2, H, P + 1, W}));
  EXPECT_EQ(valuesOf(got[0]), c0);
  EXPECT_EQ(valuesOf(got[1]), s0);
  EXPECT_EQ(got[2].shape, (std::vector<int64_t>{2, H, P + 2, W}));
  EXPECT_EQ(valuesOf(got[2]), ref.cache);
  EXPECT_EQ(valuesOf(got[3]), s1);
  EXPECT_EQ(copied, 0u);
}

/// The runs of contiguous bytes between a packed tensor and its box.
TEST(BoxedCache, BoxRuns) {
  using Run = std::tuple<uint64_t, uint64_t, uint64_t>;
  auto runs = [](std::vector<int64_t> shape, std::vector<int64_t> box) {
    std::vector<Run> r;
    forEachBoxRun(shape, box, 4, [&](uint64_t p, uint64_t b, uint64_t n) {
      r.push_back({p, b, n});
    });
    return r;
  };
  // Rows of 3 x 4 floats in boxes of 5 x 4.
  EXPECT_EQ(runs({2, 3, 4}, {2, 5, 4}),
            (std::vector<Run>{{0, 0, 48}, {48, 80, 48}}));
  EXPECT_EQ(runs({2, 5, 4}, {2, 5, 4}), (std::vector<Run>{{0, 0, 160}}));
  EXPECT_EQ(runs({1, 2, 3, 4}, {1, 2, 9, 4}),
            (std::vector<Run>{{0, 0, 48}, {48, 144, 48}}));
  // The last dim cut: one element per run, over two outer dims.
  EXPECT_EQ(runs({2, 2, 1}, {3, 2, 2}),
            (std::vector<Run>{{0, 0, 4}, {4, 8, 4}, {8, 16, 4}, {12, 24, 4}}));
  EXPECT_EQ(runs({2, 0, 4}, {2, 5, 4}), (std::vector<Run>{}));
}

/// Value::boxed survives the file; verifyPlan's rules for it.
TEST(BoxedCache, VerifyRules) {
  using test::verifyErrorAfter;
  const Plan q = boxedStep().plan;
  EXPECT_EQ(
      verifyErrorAfter(q, [](Plan &p) { p.values[2].boxed = true; }),
      "value 2 ('new') kept in place (boxed) is not outside the arena (only "
      "the two roots of a cache pair kept outside the arena are boxed)");
  EXPECT_EQ(verifyErrorAfter(q,
                             [](Plan &p) {
                               p.values[2].boxed = p.values[2].outside = true;
                               p.values[2].offset = 0;
                             }),
            "value 2 ('new') kept in place (boxed) is not a root of a cache "
            "pair (a past* input and its present* output)");
  EXPECT_EQ(
      verifyErrorAfter(q, [](Plan &p) { p.values[3].boxed = false; }),
      "value 0 ('past_k_0') kept in place (boxed): the other root of its "
      "cache pair, value 3 ('present_k_0'), is not boxed (both roots share "
      "one buffer)");
  EXPECT_EQ(
      verifyErrorAfter(q, [](Plan &p) { p.values[3].shape[2] = kBoxLen + 1; }),
      "value 0 ('past_k_0') kept in place (boxed) has shape [1,2,9,4]: the "
      "other root of its cache pair, value 3 ('present_k_0'), has "
      "[1,2,10,4] (one box for both)");
  EXPECT_EQ(
      verifyErrorAfter(q, [](Plan &p) { p.values[3].dtype = DType::f16; }),
      "value 0 ('past_k_0') kept in place (boxed) has dtype f32: the other "
      "root of its cache pair, value 3 ('present_k_0'), has f16");
  // Views follow their root.
  EXPECT_EQ(verifyErrorAfter(q,
                             [](Plan &p) {
                               p.values[1].boxed = false;
                               p.values[1].symDims[0].b = 1;
                             }),
            "value 1 ('past_rows') views value 0 ('past_k_0'), which is "
            "boxed, but is not boxed itself (a view is boxed with its root)");
  EXPECT_EQ(verifyErrorAfter(q,
                             [](Plan &p) {
                               Value v = p.values[2];
                               v.id = int32_t(p.values.size());
                               v.name = "new_rows";
                               v.shape = {H, 1, W};
                               v.kind = ValueKind::temp;
                               v.root = 2;
                               v.boxed = true;
                               p.values.push_back(v);
                             }),
            "value 5 ('new_rows') views value 2 ('new'), which is not boxed, "
            "but is boxed itself (a view is boxed with its root)");
  // Only kernels read or write a box.
  EXPECT_EQ(verifyErrorAfter(q,
                             [](Plan &p) {
                               Step s;
                               s.attrs.Set(fb::CopyT());
                               s.inputs = {0};
                               s.outputs = {4};
                               s.loc = "/peek";
                               p.steps.push_back(s);
                             }),
            "step 1 (copy at '/peek'): operand value 0 ('past_k_0') is kept "
            "in place (boxed); only kernel steps, compiled for the box's "
            "strides, read or write it (other steps may read it only when "
            "every dim before its dynamic one is 1, batch_matmul also [h, "
            "rows, d])");
  // The box may pass a * max + b only when boxed.
  EXPECT_EQ(verifyErrorAfter(q,
                             [](Plan &p) {
                               for (Value &v : p.values)
                                 v.boxed = false;
                             }),
            "value 0 ('past_k_0'): symbolic dim 2 has size 9, more than "
            "1*T+0 at the maximum (8)");
  // Only in plans with a symbol.
  Plan s = packedPrefill().plan;
  EXPECT_EQ(verifyErrorAfter(s,
                             [](Plan &p) {
                               p.symbols.clear();
                               for (Value &v : p.values)
                                 v.symDims.clear();
                               for (auto *ios : {&p.inputs, &p.outputs})
                                 for (ModelIO &m : *ios)
                                   m.symDims.clear();
                               p.values[0].boxed = true;
                             }),
            "value 0 ('x') kept in place (boxed) in a plan without a symbol");
}

/// A box whose dims before the dynamic one are 1 lies as packed: other
/// steps may read it.
TEST(BoxedCache, LiesPacked) {
  Value v;
  v.shape = {1, 1, 9, 4};
  v.symDims = {{2, SymKind::T, 1, 0}};
  EXPECT_TRUE(v.boxLiesPacked());
  v.shape = {1, 2, 9, 4};
  EXPECT_FALSE(v.boxLiesPacked());
  v.shape = {9, 4};
  v.symDims = {{0, SymKind::T, 1, 1}};
  EXPECT_TRUE(v.boxLiesPacked());
  v.symDims.push_back({1, SymKind::T, 1, 0});
  EXPECT_FALSE(v.boxLiesPacked());
  // A batch of matrices with boxed rows: batch_matmul's operand.
  v.shape = {2, 9, 4};
  v.symDims = {{1, SymKind::T, 1, 1}};
  EXPECT_TRUE(v.boxRowsOfBatches());
  EXPECT_FALSE(v.boxLiesPacked());
  v.symDims = {{2, SymKind::T, 1, 1}};
  EXPECT_FALSE(v.boxRowsOfBatches());
}

TEST(BoxedCache, FileAndDescribe) {
  TestCase tc = boxedStep();
  std::string path = ::testing::TempDir() + "/moert-boxed-" +
                     std::to_string(getpid()) + ".moeplan",
              error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, -1, error);
  std::remove(path.c_str());
  ASSERT_TRUE(lp) << error;
  std::vector<bool> boxed;
  for (const Value &v : lp->plan().values)
    boxed.push_back(v.boxed);
  EXPECT_EQ(boxed, (std::vector<bool>{true, true, false, true, false}));
  std::string d = describePlan(lp->plan());
  EXPECT_NE(d.find("v0 input f32[1x2x(T<=8)x4] outside the arena, in place "
                   "(box 1x2x9x4)  (past_k_0)"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("v1 temp f32[2x(T<=8)x4] @0 view of v0, in place (box "
                   "2x9x4)  (past_rows)"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("v3 output f32[1x2x(T+1<=9)x4] outside the arena, in "
                   "place (box 1x2x9x4)  (present_k_0)"),
            std::string::npos)
      << d;
}
