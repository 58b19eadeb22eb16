//===- RowPlans.h - a hand-built plan with uneven row blocks -*- C++ -*-===//
//
// A dynamic plan whose input is not split along the count, on 4 ranks: its
// rows cut into blocks of ceil(T/4) by all_slice (and reduce_scatter) and
// joined by all_gather (moert::rowBlockStep). Shared by the CPU tests
// (RowBlocksTest.cpp) and the CUDA backend's (CudaBackendTest.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_ROWPLANS_H
#define MOERT_TEST_ROWPLANS_H

#include "TestPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <unistd.h>

namespace moert {
namespace testplans {
namespace rows {

constexpr int G = 4;
constexpr int64_t kMax = 8, K = 6;

/// x [T,K] replicated -> all_slice -> xs [t,K] -> silu -> u [t,K] ->
/// all_gather -> out [T,K]; x -> reduce_scatter (every rank's x summed:
/// G x) -> r [t,K] -> all_gather -> sum [T,K] (with `reduceScatter`). The
/// mesh: ep=4, or with `twoAxes` ep=2,tp=2 (the row steps over "ep,tp").
inline TestCase makeRowPlan(bool twoAxes = false, bool reduceScatter = true) {
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
  if (reduceScatter) {
    b.step(rs, {x}, {r}, "/reduce_scatter");
    b.step(gather, {r}, {sum}, "/gather_sum");
  }
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
  if (reduceScatter)
    p.outputs.push_back(io("sum", sum));
  return tc;
}

inline std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-rows-" + tag + "-" +
         std::to_string(getpid()) + ".moeplan";
}

/// Runs `tc` at every count of `counts` on the same executors; rank 0's
/// outputs per call.
inline std::vector<std::map<std::string, NpyArray>>
runAtCounts(TestCase &tc, const std::string &tag,
            const std::vector<int64_t> &counts, const std::vector<float> &x,
            const std::function<std::unique_ptr<Backend>()> &backend) {
  std::string path = tempPath(tag), error;
  EXPECT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  std::vector<std::map<std::string, NpyArray>> result(counts.size());
  runThreadRanks(G, [&](Comm &world) {
    std::string err;
    auto lp = LoadedPlan::open(path, world.rank(), err);
    if (!lp)
      throw RunError(err);
    Executor ex(*lp, world, backend());
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

/// The plan's outputs at T tokens of `x`: out = silu(x), sum = G x.
inline std::map<std::string, std::vector<double>>
rowReference(const std::vector<float> &x, int64_t T) {
  std::vector<double> silu(size_t(T * K)), sum(size_t(T * K));
  for (int64_t i = 0; i < T * K; ++i) {
    double v = x[size_t(i)];
    silu[size_t(i)] = v / (1 + std::exp(-v));
    sum[size_t(i)] = G * v;
  }
  return {{"out", silu}, {"sum", sum}};
}

} // namespace rows
} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_ROWPLANS_H
