//===- HeldPlans.h - plans whose outputs feed their next call ---*- C++ -*-===//
//
// Test plans for Executor::holdOutputs (HeldValuesTest.cpp on the CPU
// backend, CudaBackendTest.cpp on the CUDA one): a plan with a length
// symbol whose output has its input's shape and split, so that a call's
// output can be the next call's input, and float references; and a decode
// step whose cache pair is kept in place (Value::boxed) with its prefill
// (BoxedCacheTest.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_HELDPLANS_H
#define MOERT_TEST_HELDPLANS_H

#include "TestKernels.h"
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

/// The mesh (ep=2) and length symbol (maximum `max`) of the plans below.
inline void lengthMesh(Plan &p, int64_t max) {
  p.producer = "moert-test";
  p.mesh = {{"ep", 2}};
  p.symbols = {{"len", max}};
}

/// A plan on ep=2 with a length symbol (maximum `max`): input `in` [2, L,
/// 4] split over ep along dim 0, outputs `out` = in + c (when `addC`; else
/// a copy of `in`) and `copy` = in, both split alike.
inline TestCase lengthPlan(const std::string &in, const std::string &out,
                           int64_t max, bool addC,
                           const std::vector<float> &c) {
  TestCase tc;
  Plan &p = tc.plan;
  lengthMesh(p, max);
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

/// lengthPlan's step (out = in + c) through views, as moec lowers a decode
/// step: the add reads a reshape of the input ([1, L, 4] as [L, 4]) and the
/// output is a reshape of the add's result, each at the offset of the
/// value it views. With `roots` the views record them (Value::root), and
/// with `outside` the roots of the cache pair (past, and present's root)
/// also lie outside the arena (Value::outside), as in moec's plans with a
/// symbol; the executor then swaps them between steps. Without (a plan
/// from an older moec) it copies the cache.
inline TestCase viewPlan(const std::string &in, const std::string &out,
                         int64_t max, const std::vector<float> &c, bool roots,
                         bool outside) {
  TestCase tc;
  Plan &p = tc.plan;
  lengthMesh(p, max);
  Builder b(p, tc.data);
  b.segments(2);
  std::vector<SymDim> dims = {{1, SymKind::T, 1, 0}},
                      rows = {{0, SymKind::T, 1, 0}};
  auto value = [&](const std::string &name, std::vector<int64_t> shape,
                   ValueKind kind, const std::vector<SymDim> &sym, int32_t of) {
    int32_t id = b.value(name, DType::f32, std::move(shape), kind);
    Value &v = p.values[size_t(id)];
    v.symDims = sym;
    if (of >= 0) {
      v.offset = p.values[size_t(of)].offset;
      v.root = roots ? of : -1;
    }
    return id;
  };
  int32_t vin = value(in, {1, max, kWidth}, ValueKind::input, dims, -1);
  int32_t vrows =
      value(in + "_rows", {max, kWidth}, ValueKind::temp, rows, vin);
  int32_t vsum = value("sum", {max, kWidth}, ValueKind::temp, rows, -1);
  int32_t vout = value(out, {1, max, kWidth}, ValueKind::output, dims, vsum);
  if (outside)
    for (int32_t id : {vin, vrows, vsum, vout}) {
      p.values[size_t(id)].offset = 0;
      p.values[size_t(id)].outside = id == vin || id == vsum;
    }
  int32_t vc = b.shared("c", {kWidth}, c);
  fb::BinaryT add;
  add.fn = fb::BinaryFn::add;
  b.step(add, {vrows, vc}, {vsum}, "/add");
  p.inputs.push_back(splitIO(in, DType::f32, {2, max, kWidth}, vin, "ep"));
  p.outputs.push_back(splitIO(out, DType::f32, {2, max, kWidth}, vout, "ep"));
  p.inputs[0].symDims = p.outputs[0].symDims = dims;
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

/// A decode loop on 2 thread ranks: lengthPlan's prefill (a copy of x, [2,
/// 3, 4]) handed over to viewPlan's step (`outside`: roots recorded and
/// the cache outside the arena; else neither), with holdOutputs swapping
/// as `bind` says, then 4 steps each fed the last one's output: the last
/// output (x + 4c) and rank 0's bytes copied for the cache at the hand-over
/// and in the steps after it.
struct HeldLoop {
  NpyArray present;
  uint64_t handover = 0, steps = 0;
};
inline HeldLoop
heldLoop(const std::function<std::unique_ptr<Backend>()> &backend,
         const std::vector<float> &c, const std::vector<float> &x, bool outside,
         bool bind) {
  TestCase step = viewPlan("past", "present", kStepMax, c, outside, outside);
  TestCase prefill = lengthPlan("x", "present", kPrefillMax, false, c);
  HeldLoop r;
  onTwoRanks(step, prefill, backend,
             [&](Comm &world, Executor &s, Executor &p) {
               s.setBindHeld(bind);
               p.setInputs({{"x", floats({2, 3, kWidth}, x)}});
               p.run();
               s.holdOutputs(p, {{"present", "past"}});
               uint64_t handover = s.heldCopyBytes();
               for (int call = 0; call < 4; ++call) {
                 if (call)
                   s.holdOutputs(s, {{"present", "past"}});
                 s.setInputs({});
                 s.run();
               }
               auto o = s.gatherOutputs({"present"});
               if (world.rank() == 0) {
                 r.present = std::move(o.at(0).second);
                 r.handover = handover;
                 r.steps = s.heldCopyBytes() - handover;
               }
             });
  return r;
}

// A cache pair kept in place (Value::boxed; BoxedCacheTest.cpp): past and
// present of a decode step share one buffer per rank at the strides of
// the box [1, kBoxHeads, kBoxLen, kBoxWidth] (TestKernels.h).

inline constexpr int64_t kBoxPrefill = 16;

/// The decode step on ep=2 (symbol len <= kBoxMax, the past's length;
/// with H = kBoxHeads, W = kBoxWidth): values past_k_0 [1, H, kBoxLen, W]
/// (a root outside the arena, boxed), its view past_rows [H, kBoxLen, W],
/// new [1, H, 1, W], present_k_0 [1, H, kBoxLen, W] (the other boxed root)
/// and sum [1, H, 1, W]; one kernel_append step (past_rows, new) ->
/// (present_k_0, sum). `code`: the plan's CPU code (TestKernels.cpp's
/// shared object; empty: none). Model inputs past_k_0 [2, H, P, W] and new
/// [2, H, 1, W], outputs present_k_0 [2, H, P + 1, W] and sum [2, H, 1,
/// W], all split over ep along dim 0.
inline TestCase boxedStep(const std::vector<char> &code) {
  const int64_t H = kBoxHeads, W = kBoxWidth;
  TestCase tc;
  Plan &p = tc.plan;
  lengthMesh(p, kBoxMax);
  Builder b(p, tc.data);
  b.segments(2);
  auto value = [&](const std::string &name, std::vector<int64_t> shape,
                   ValueKind kind, std::vector<SymDim> sym, int32_t root,
                   bool outside) {
    int32_t id = b.value(name, DType::f32, std::move(shape), kind);
    Value &v = p.values[size_t(id)];
    v.symDims = std::move(sym);
    v.root = root;
    v.outside = outside;
    v.boxed = outside || root >= 0;
    if (v.boxed)
      v.offset = 0;
    return id;
  };
  int32_t past = value("past_k_0", {1, H, kBoxLen, W}, ValueKind::input,
                       {{2, SymKind::T, 1, 0}}, -1, true);
  int32_t rows = value("past_rows", {H, kBoxLen, W}, ValueKind::temp,
                       {{1, SymKind::T, 1, 0}}, past, false);
  int32_t add = value("new", {1, H, 1, W}, ValueKind::input, {}, -1, false);
  int32_t present = value("present_k_0", {1, H, kBoxLen, W}, ValueKind::output,
                          {{2, SymKind::T, 1, 1}}, -1, true);
  int32_t sum = value("sum", {1, H, 1, W}, ValueKind::output, {}, -1, false);
  fb::KernelT kt;
  kt.name = "kernel_append";
  b.step(kt, {rows, add}, {present, sum}, "/append");
  KernelCode k;
  k.name = "kernel_append";
  k.numArgs = 4;
  k.symbolic = true;
  p.kernels.push_back(k);
  if (!code.empty())
    embedCode(tc, p.cpuCode, code.data(), code.size());
  p.inputs.push_back(
      splitIO("past_k_0", DType::f32, {2, H, kBoxMax, W}, past, "ep"));
  p.inputs.back().symDims = {{2, SymKind::T, 1, 0}};
  p.inputs.push_back(splitIO("new", DType::f32, {2, H, 1, W}, add, "ep"));
  p.outputs.push_back(splitIO("present_k_0", DType::f32, {2, H, kBoxMax + 1, W},
                              present, "ep"));
  p.outputs.back().symDims = {{2, SymKind::T, 1, 1}};
  p.outputs.push_back(splitIO("sum", DType::f32, {2, H, 1, W}, sum, "ep"));
  return tc;
}

/// The prefill: x [2, H, L, W] (L <= kBoxPrefill) copied
/// to present_k_0, packed in its arena.
inline TestCase packedPrefill() {
  const int64_t H = kBoxHeads, W = kBoxWidth;
  TestCase tc;
  Plan &p = tc.plan;
  lengthMesh(p, kBoxPrefill);
  Builder b(p, tc.data);
  b.segments(2);
  std::vector<SymDim> dims = {{2, SymKind::T, 1, 0}};
  int32_t x =
      b.value("x", DType::f32, {1, H, kBoxPrefill, W}, ValueKind::input);
  int32_t y = b.value("present_k_0", DType::f32, {1, H, kBoxPrefill, W},
                      ValueKind::output);
  p.values[size_t(x)].symDims = p.values[size_t(y)].symDims = dims;
  b.step(fb::CopyT(), {x}, {y}, "/present");
  p.inputs.push_back(splitIO("x", DType::f32, {2, H, kBoxPrefill, W}, x, "ep"));
  p.outputs.push_back(
      splitIO("present_k_0", DType::f32, {2, H, kBoxPrefill, W}, y, "ep"));
  p.inputs[0].symDims = p.outputs[0].symDims = dims;
  return tc;
}

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_HELDPLANS_H
