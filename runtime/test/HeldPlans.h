//===- HeldPlans.h - plans whose outputs feed their next call ---*- C++ -*-===//
//
// Test plans for Executor::holdOutputs (HeldValuesTest.cpp on the CPU
// backend, CudaBackendTest.cpp on the CUDA one): a plan with a length
// symbol whose output has its input's shape and split, so that a call's
// output can be the next call's input, and float references.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_HELDPLANS_H
#define MOERT_TEST_HELDPLANS_H

#include "TestPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <unistd.h>

namespace moert {
namespace testplans {

inline constexpr int64_t kStepMax = 8, kPrefillMax = 16, kWidth = 4;

/// A plan on ep=2 with a length symbol (maximum `max`): input `in` [2, L,
/// 4] split over ep along dim 0, outputs `out` = in + c (when `addC`; else
/// a copy of `in`) and `copy` = in, both split alike.
inline TestCase lengthPlan(const std::string &in, const std::string &out,
                           int64_t max, bool addC,
                           const std::vector<float> &c) {
  TestCase tc;
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.mesh = {{"ep", 2}};
  p.symbols = {{"len", max}};
  Builder b(p, tc.data);
  b.segments(2);
  std::vector<SymDim> dims = {{1, SymKind::T, 1, 0}};
  auto value = [&](const std::string &name, ValueKind kind) {
    int32_t id = b.value(name, DType::f32, {1, max, kWidth}, kind);
    p.values[size_t(id)].symDims = dims;
    return id;
  };
  int32_t vin = value(in, ValueKind::input);
  int32_t vout = value(out, ValueKind::output);
  int32_t vcopy = value("copy", ValueKind::output);
  if (addC) {
    int32_t vc = b.shared("c", {kWidth}, c);
    fb::BinaryT add;
    add.fn = fb::BinaryFn::add;
    b.step(add, {vin, vc}, {vout}, "/add");
  } else {
    b.step(fb::CopyT(), {vin}, {vout}, "/present");
  }
  b.step(fb::CopyT(), {vin}, {vcopy}, "/copy");
  p.inputs.push_back(splitIO(in, DType::f32, {2, max, kWidth}, vin, "ep"));
  p.outputs.push_back(splitIO(out, DType::f32, {2, max, kWidth}, vout, "ep"));
  p.outputs.push_back(
      splitIO("copy", DType::f32, {2, max, kWidth}, vcopy, "ep"));
  p.inputs[0].symDims = p.outputs[0].symDims = p.outputs[1].symDims = dims;
  return tc;
}

inline std::vector<float> randomValues(std::mt19937 &rng, size_t n) {
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

/// A global f32 input of `v` (exact: floats through doubles).
inline NpyArray floats(std::vector<int64_t> shape,
                       const std::vector<float> &v) {
  return f32Array(std::move(shape), std::vector<double>(v.begin(), v.end()));
}

inline std::vector<float> valuesOf(const NpyArray &a) {
  std::vector<float> v(a.data.size() / 4);
  std::memcpy(v.data(), a.data.data(), a.data.size());
  return v;
}

/// x + n * c (c broadcast along the last dim), added one c at a time in
/// float as the plan does.
inline std::vector<float> plusC(std::vector<float> x,
                                const std::vector<float> &c, int n) {
  for (int i = 0; i < n; ++i)
    for (size_t j = 0; j < x.size(); ++j)
      x[j] += c[j % c.size()];
  return x;
}

/// Writes the two plans, runs `body` on 2 thread ranks with an executor of
/// each on backends from `backend`, and removes the files.
inline void
onTwoRanks(TestCase &step, TestCase &prefill,
           const std::function<std::unique_ptr<Backend>()> &backend,
           const std::function<void(Comm &, Executor &, Executor &)> &body) {
  std::string base = ::testing::TempDir() + "/moert-held-" +
                     std::to_string(getpid()),
              sp = base + "-step.moeplan", pp = base + "-prefill.moeplan";
  std::string error;
  ASSERT_TRUE(writePlan(sp, step.plan, step.data, error)) << error;
  ASSERT_TRUE(writePlan(pp, prefill.plan, prefill.data, error)) << error;
  runThreadRanks(2, [&](Comm &world) {
    std::string err;
    auto ls = LoadedPlan::open(sp, world.rank(), err);
    auto lp = LoadedPlan::open(pp, world.rank(), err);
    if (!ls || !lp)
      throw RunError(err);
    Executor s(*ls, world, backend());
    Executor p(*lp, world, backend());
    body(world, s, p);
  });
  std::remove(sp.c_str());
  std::remove(pp.c_str());
}

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_HELDPLANS_H
