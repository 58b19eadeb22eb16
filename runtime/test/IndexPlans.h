//===- IndexPlans.h - a hand-built plan of topk and scatters ----*- C++ -*-===//
//
// A router left as dense ops (PhiMoE's sparsemixer: top-2 of the scores, the
// chosen ones masked with -inf by a scatter, the best of the rest), plus a
// topk over a 3-d view and a scatter along axis 0 with i32 indices
// (negative ones, duplicates, a reduction), on `ranks` ranks of an `ep`
// mesh with the rows of x split over them; its inputs and plain-loop
// reference (moe-eval's semantics) for IndexStepsTest.cpp and
// CudaBackendTest.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_INDEXPLANS_H
#define MOERT_TEST_INDEXPLANS_H

#include "TestPlans.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moert {
namespace testplans {

struct IndexSpec {
  int ranks = 1;
  int64_t T = 8, E = 6; ///< rows per rank, experts (even)
  fb::ScatterReduction reduction = fb::ScatterReduction::add;
  /// Makes the first index of the axis-0 scatter `T` (out of range).
  bool badIndex = false;
  unsigned seed = 3;
};

/// Row-major stable order of a row, NaN largest (moe-eval's evalTopK).
inline std::vector<int64_t> topkOrder(const float *x, int64_t n, bool largest) {
  std::vector<int64_t> o(static_cast<size_t>(n));
  std::iota(o.begin(), o.end(), int64_t(0));
  std::stable_sort(o.begin(), o.end(), [&](int64_t a, int64_t b) {
    double p = x[a], q = x[b];
    if (largest)
      return (std::isnan(p) && !std::isnan(q)) || p > q;
    return (!std::isnan(p) && std::isnan(q)) || p < q;
  });
  return o;
}

inline NpyArray i32Array(std::vector<int64_t> shape,
                         const std::vector<int32_t> &v) {
  NpyArray a;
  a.dtype = "<i4";
  a.shape = std::move(shape);
  a.data.resize(v.size() * 4);
  std::memcpy(a.data.data(), v.data(), a.data.size());
  return a;
}

inline TestCase makeIndexSteps(const IndexSpec &spec) {
  TestCase tc;
  const int64_t T = spec.T, E = spec.E, R = spec.ranks, G = T * R;
  std::mt19937 rng(spec.seed);
  // Values from a small pool: many ties.
  std::vector<float> x(size_t(G * E));
  for (float &v : x)
    v = float(int(rng() % 7) - 3) * 0.5f;
  std::vector<int32_t> rows(size_t(2 * E));
  for (int32_t &i : rows)
    i = int32_t(int64_t(rng() % uint32_t(2 * T)) - T); // [-T, T)
  if (spec.badIndex)
    rows[0] = int32_t(T);
  std::vector<float> upd = randomFloats(rng, size_t(2 * E), 2.0f);

  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "IndexPlans.h";
  p.mesh = {{"ep", R}};
  Builder b(p, tc.data);
  b.segments(spec.ranks);
  int32_t vx = b.value("x", DType::f32, {T, E}, ValueKind::input);
  int32_t vrows = b.value("rows", DType::i32, {2, E}, ValueKind::input);
  int32_t vninf =
      b.shared("ninf", {T, 2}, std::vector<float>(size_t(T * 2), -INFINITY));
  int32_t vupd = b.shared("upd", {2, E}, upd);
  int32_t vtop = b.value("top", DType::f32, {T, 2}, ValueKind::output);
  int32_t vids = b.value("ids", DType::i64, {T, 2}, ValueKind::output);
  int32_t vmask = b.value("masked", DType::f32, {T, E}, ValueKind::temp);
  int32_t vsec = b.value("second", DType::f32, {T, 1}, ValueKind::output);
  int32_t vsecIds =
      b.value("second_ids", DType::i64, {T, 1}, ValueKind::output);
  // x as [T, 2, E/2]: a view (the same arena bytes).
  Value view = p.values[size_t(vx)];
  view.id = int32_t(p.values.size());
  view.name = "x3";
  view.kind = ValueKind::temp;
  view.shape = {T, 2, E / 2};
  p.values.push_back(view);
  int32_t vx3 = view.id;
  int32_t vlow = b.value("low", DType::f32, {T, 2, 2}, ValueKind::output);
  int32_t vlowIds =
      b.value("low_ids", DType::i64, {T, 2, 2}, ValueKind::output);
  int32_t vacc = b.value("acc", DType::f32, {T, E}, ValueKind::output);

  fb::TopKT top2;
  top2.k = 2;
  b.step(top2, {vx}, {vtop, vids}, "/router/topk");
  fb::ScatterElementsT mask;
  mask.axis = 1;
  b.step(mask, {vx, vids, vninf}, {vmask}, "/router/mask");
  fb::TopKT top1;
  top1.k = 1;
  b.step(top1, {vmask}, {vsec, vsecIds}, "/router/topk2");
  fb::TopKT low;
  low.k = 2;
  low.largest = false;
  b.step(low, {vx3}, {vlow, vlowIds}, "/low/topk");
  fb::ScatterElementsT acc;
  acc.axis = 0;
  acc.reduction = spec.reduction;
  b.step(acc, {vx, vrows, vupd}, {vacc}, "/acc/scatter");

  auto io = [&](const std::string &name, DType dt, std::vector<int64_t> shape,
                int32_t value) {
    shape[0] *= R;
    return splitIO(name, dt, shape, value, "ep");
  };
  p.inputs.push_back(io("x", DType::f32, {T, E}, vx));
  ModelIO ri;
  ri.name = "rows";
  ri.dtype = DType::i32;
  ri.shape = {2, E};
  ri.value = vrows;
  p.inputs.push_back(ri);
  p.outputs.push_back(io("top", DType::f32, {T, 2}, vtop));
  p.outputs.push_back(io("ids", DType::i64, {T, 2}, vids));
  p.outputs.push_back(io("second", DType::f32, {T, 1}, vsec));
  p.outputs.push_back(io("second_ids", DType::i64, {T, 1}, vsecIds));
  p.outputs.push_back(io("low", DType::f32, {T, 2, 2}, vlow));
  p.outputs.push_back(io("low_ids", DType::i64, {T, 2, 2}, vlowIds));
  p.outputs.push_back(io("acc", DType::f32, {T, E}, vacc));

  // The reference, block by block (each rank scatters into its own rows).
  std::vector<double> top, second, lowV, accV;
  std::vector<int64_t> ids, secondIds, lowIds;
  for (int64_t r = 0; r < R; ++r) {
    const float *xb = x.data() + r * T * E;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int64_t> o = topkOrder(xb + t * E, E, true);
      std::vector<float> masked(xb + t * E, xb + (t + 1) * E);
      for (int j = 0; j < 2; ++j) {
        top.push_back(xb[t * E + o[size_t(j)]]);
        ids.push_back(o[size_t(j)]);
        masked[size_t(o[size_t(j)])] = -INFINITY;
      }
      std::vector<int64_t> o2 = topkOrder(masked.data(), E, true);
      second.push_back(masked[size_t(o2[0])]);
      secondIds.push_back(o2[0]);
      for (int64_t h = 0; h < 2; ++h) {
        std::vector<int64_t> o3 =
            topkOrder(xb + t * E + h * (E / 2), E / 2, false);
        for (int j = 0; j < 2; ++j) {
          lowV.push_back(xb[t * E + h * (E / 2) + o3[size_t(j)]]);
          lowIds.push_back(o3[size_t(j)]);
        }
      }
    }
    std::vector<double> a(xb, xb + T * E);
    for (int64_t q = 0; q < 2 * E; ++q) {
      int64_t i = rows[size_t(q)] < 0 ? rows[size_t(q)] + T : rows[size_t(q)];
      if (i < 0 || i >= T)
        break; // the run stops (badIndex)
      double &d = a[size_t(i * E + q % E)];
      double u = upd[size_t(q)];
      switch (spec.reduction) {
      case fb::ScatterReduction::none:
        d = u;
        break;
      case fb::ScatterReduction::add:
        d = float(d + u);
        break;
      case fb::ScatterReduction::mul:
        d = float(d * u);
        break;
      case fb::ScatterReduction::max:
        d = std::max(d, u);
        break;
      case fb::ScatterReduction::min:
        d = std::min(d, u);
        break;
      }
    }
    accV.insert(accV.end(), a.begin(), a.end());
  }
  tc.inputs["x"] = f32Array({G, E}, std::vector<double>(x.begin(), x.end()));
  tc.inputs["rows"] = i32Array({2, E}, rows);
  tc.expected["top"] = f32Array({G, 2}, top);
  tc.expected["ids"] = i64Array({G, 2}, ids);
  tc.expected["second"] = f32Array({G, 1}, second);
  tc.expected["second_ids"] = i64Array({G, 1}, secondIds);
  tc.expected["low"] = f32Array({G, 2, 2}, lowV);
  tc.expected["low_ids"] = i64Array({G, 2, 2}, lowIds);
  tc.expected["acc"] = f32Array({G, E}, accV);
  return tc;
}

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_INDEXPLANS_H
