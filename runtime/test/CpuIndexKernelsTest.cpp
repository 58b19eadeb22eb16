//===- CpuIndexKernelsTest.cpp - topk and scatter_elements on the CPU -----===//
//
// cpu::topk and cpu::scatterElements (moert/cpu/Kernels.h) against plain
// loops that follow moe-eval's evalTopK and evalScatterElements
// (lib/Eval/EvalMoE.cpp) step by step: a stable sort in double, and a
// scatter over full-rank coordinates in double rounded to f32. Both kernels
// must give the same bits. Random inputs with ties, NaN, signed zeros,
// negative and duplicate indices, every reduction, i32 and i64 indices.
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <type_traits>

using namespace moert;

namespace {

std::mt19937 &rng() {
  static std::mt19937 g(20250112);
  return g;
}

int64_t randomInt(int64_t lo, int64_t hi) { // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng());
}

/// Floats with many ties (a few distinct values), NaN and signed zeros.
std::vector<float> tieFloats(size_t n) {
  const float pool[] = {-1.5f, -0.0f, 0.0f, 0.25f, 2.0f, NAN, 7.0f};
  std::vector<float> v(n);
  for (float &x : v)
    x = pool[randomInt(0, 6)];
  return v;
}

std::vector<float> normalFloats(size_t n) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng());
  return v;
}

/// evalTopK on one row: a stable sort in double, NaN the largest.
void topkRef(const float *x, int64_t rows, int64_t n, int64_t k, bool largest,
             std::vector<float> &values, std::vector<int64_t> &indices) {
  values.assign(size_t(rows * k), 0.f);
  indices.assign(size_t(rows * k), -1);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    std::iota(order.begin(), order.end(), int64_t(0));
    auto before = [&](int64_t a, int64_t b) {
      double p = x[r * n + a], q = x[r * n + b];
      if (largest)
        return (std::isnan(p) && !std::isnan(q)) || p > q;
      return (!std::isnan(p) && std::isnan(q)) || p < q;
    };
    std::stable_sort(order.begin(), order.end(), before);
    for (int64_t j = 0; j < k; ++j) {
      values[size_t(r * k + j)] = x[r * n + order[size_t(j)]];
      indices[size_t(r * k + j)] = order[size_t(j)];
    }
  }
}

bool sameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

void checkTopK(const std::vector<float> &x, int64_t rows, int64_t n, int64_t k,
               bool largest) {
  SCOPED_TRACE("rows=" + std::to_string(rows) + " n=" + std::to_string(n) +
               " k=" + std::to_string(k) +
               (largest ? " largest" : " smallest"));
  std::vector<float> vals(size_t(rows * k), -99.f), rv;
  std::vector<int64_t> ids(size_t(rows * k), -99), ri;
  cpu::topk(x.data(), rows, n, k, largest, vals.data(), ids.data());
  topkRef(x.data(), rows, n, k, largest, rv, ri);
  int bad = 0;
  for (size_t i = 0; i < vals.size(); ++i)
    if ((ids[i] != ri[i] || !sameBits(vals[i], rv[i])) && bad++ < 5)
      ADD_FAILURE() << "[" << i / size_t(k) << "," << i % size_t(k)
                    << "]: got (" << vals[i] << ", " << ids[i]
                    << "), expected (" << rv[i] << ", " << ri[i] << ")";
}

TEST(CpuIndexKernels, TopKHandWritten) {
  // Ties to the lower index, NaN the largest (first for largest, last for
  // smallest), -0 and +0 tie.
  std::vector<float> x = {1.f, NAN, 3.f, 3.f, -0.f, 0.f};
  std::vector<float> v(4);
  std::vector<int64_t> i(4);
  cpu::topk(x.data(), 1, 6, 4, true, v.data(), i.data());
  EXPECT_EQ(i, (std::vector<int64_t>{1, 2, 3, 0}));
  EXPECT_TRUE(std::isnan(v[0]));
  EXPECT_EQ(v[1], 3.f);
  cpu::topk(x.data(), 1, 6, 4, false, v.data(), i.data());
  EXPECT_EQ(i, (std::vector<int64_t>{4, 5, 0, 2}));
  EXPECT_TRUE(std::signbit(v[0]));
  EXPECT_FALSE(std::signbit(v[1]));
}

TEST(CpuIndexKernels, TopKMatchesReference) {
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {7, 5}, {33, 8}, {5, 64}, {3, 257}, {0, 4}})
    for (bool largest : {true, false})
      for (int64_t k : {int64_t(1), std::min<int64_t>(2, n), (n + 1) / 2, n}) {
        checkTopK(tieFloats(size_t(rows * n)), rows, n, k, largest);
        checkTopK(normalFloats(size_t(rows * n)), rows, n, k, largest);
      }
  // All NaN, all equal, infinities.
  std::vector<float> nan(24, NAN), eq(24, 0.5f), inf(24);
  for (size_t j = 0; j < inf.size(); ++j)
    inf[j] = j % 3 == 0 ? INFINITY : j % 3 == 1 ? -INFINITY : 1.f;
  for (bool largest : {true, false}) {
    checkTopK(nan, 3, 8, 8, largest);
    checkTopK(eq, 4, 6, 3, largest);
    checkTopK(inf, 2, 12, 7, largest);
  }
}

TEST(CpuIndexKernels, TopKInt64SortsIds) {
  // JetMoE's sort of the flattened expert ids: ascending, ties by index
  // (a plain stable sort is the reference), and the largest too; values
  // past 2^53 stay exact.
  std::mt19937_64 rng(7);
  for (auto [rows, n] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {3, 17}, {2, 1}})
    for (bool largest : {false, true})
      for (int64_t k : {int64_t(1), (n + 1) / 2, n}) {
        std::vector<int64_t> x(size_t(rows * n));
        for (int64_t &v : x)
          v = int64_t(rng() % 8) + (rng() % 4 == 0 ? (int64_t(1) << 60) : 0);
        std::vector<int64_t> v(size_t(rows * k)), i(size_t(rows * k));
        cpu::topk(x.data(), rows, n, k, largest, v.data(), i.data());
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<int64_t> order(static_cast<size_t>(n));
          std::iota(order.begin(), order.end(), int64_t(0));
          std::stable_sort(
              order.begin(), order.end(), [&](int64_t a, int64_t b) {
                int64_t va = x[size_t(r * n + a)], vb = x[size_t(r * n + b)];
                return largest ? va > vb : va < vb;
              });
          for (int64_t j = 0; j < k; ++j) {
            EXPECT_EQ(i[size_t(r * k + j)], order[size_t(j)]);
            EXPECT_EQ(v[size_t(r * k + j)],
                      x[size_t(r * n + order[size_t(j)])]);
          }
        }
      }
}

//===----------------------------------------------------------------------===//
// scatter_elements
//===----------------------------------------------------------------------===//

TEST(CpuIndexKernels, ScatterShapeMerges) {
  cpu::ScatterShape g = cpu::scatterShape({2, 3, 8}, {2, 3, 2}, 2);
  EXPECT_EQ(g.data, (std::vector<int64_t>{6, 8}));
  EXPECT_EQ(g.index, (std::vector<int64_t>{6, 2}));
  EXPECT_EQ(g.axis, 1);
  g = cpu::scatterShape({4, 5}, {3, 5}, 0);
  EXPECT_EQ(g.data, (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(g.axis, 0);
  g = cpu::scatterShape({2, 3, 4}, {2, 2, 4}, 0);
  EXPECT_EQ(g.data, (std::vector<int64_t>{2, 12}));
  EXPECT_EQ(g.index, (std::vector<int64_t>{2, 8}));
  // Dims of 1 go, the axis stays even when it is 1.
  g = cpu::scatterShape({1, 5, 1, 1}, {1, 3, 1, 1}, 2);
  EXPECT_EQ(g.data, (std::vector<int64_t>{5, 1}));
  EXPECT_EQ(g.index, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(g.axis, 1);
  // An off-axis dim that indices cover only in part stays apart from the
  // dim outside it, but takes in the full dim inside it.
  g = cpu::scatterShape({3, 4, 5}, {3, 2, 5}, 0);
  EXPECT_EQ(g.data, (std::vector<int64_t>{3, 20}));
  EXPECT_EQ(g.index, (std::vector<int64_t>{3, 10}));
  g = cpu::scatterShape({4, 3, 5}, {2, 3, 2}, 2);
  EXPECT_EQ(g.data, (std::vector<int64_t>{12, 5}));
  EXPECT_EQ(g.index, (std::vector<int64_t>{6, 2}));
  EXPECT_EQ(g.axis, 1);
  g = cpu::scatterShape({4, 3, 5}, {4, 2, 5}, 0);
  EXPECT_EQ(g.data, (std::vector<int64_t>{4, 15}));
  EXPECT_EQ(g.index, (std::vector<int64_t>{4, 10}));
  g = cpu::scatterShape({4, 3, 5}, {4, 2, 4}, 0);
  EXPECT_EQ(g.data, (std::vector<int64_t>{4, 3, 5}));
  EXPECT_EQ(g.numIndices(), 32);
}

/// evalScatterElements over full-rank coordinates: f32 data combined in
/// double and rounded, or (none) elements moved as raw words of T.
/// Returns the first bad index position or -1.
template <typename T>
int64_t scatterRef(const std::vector<int64_t> &dataShape,
                   const std::vector<int64_t> &idxShape, int64_t axis,
                   const std::vector<int64_t> &ix, const std::vector<T> &upd,
                   cpu::ScatterReduction r, std::vector<T> &out) {
  int64_t rank = int64_t(dataShape.size()), n = int64_t(ix.size());
  std::vector<int64_t> st(size_t(rank), 1), ist(size_t(rank), 1);
  for (int64_t d = rank - 2; d >= 0; --d) {
    st[size_t(d)] = st[size_t(d + 1)] * dataShape[size_t(d + 1)];
    ist[size_t(d)] = ist[size_t(d + 1)] * idxShape[size_t(d + 1)];
  }
  for (int64_t p = 0; p < n; ++p) {
    int64_t flat = 0;
    for (int64_t d = 0; d < rank; ++d) {
      int64_t c = (p / ist[size_t(d)]) % idxShape[size_t(d)];
      if (d == axis) {
        c = ix[size_t(p)] < 0 ? ix[size_t(p)] + dataShape[size_t(d)]
                              : ix[size_t(p)];
        if (c < 0 || c >= dataShape[size_t(d)])
          return p;
      }
      flat += c * st[size_t(d)];
    }
    if constexpr (std::is_same_v<T, float>) {
      double a = out[size_t(flat)], b = upd[size_t(p)];
      double v = r == cpu::ScatterReduction::add   ? a + b
                 : r == cpu::ScatterReduction::mul ? a * b
                 : r == cpu::ScatterReduction::max ? std::max(a, b)
                 : r == cpu::ScatterReduction::min ? std::min(a, b)
                                                   : b;
      out[size_t(flat)] = float(v);
    } else {
      out[size_t(flat)] = upd[size_t(p)];
    }
  }
  return -1;
}

/// A random scatter problem: data rank 1..4, indices dims <= data's off the
/// axis (often equal, so that dims merge), indices in [-size, size) with
/// duplicates (unique per target when `unique`, for `none`).
struct Problem {
  std::vector<int64_t> dataShape, idxShape;
  int64_t axis = 0;
  std::vector<int64_t> ix;
};

Problem randomProblem(bool unique) {
  Problem pr;
  int64_t rank = randomInt(1, 4);
  pr.axis = randomInt(0, rank - 1);
  for (int64_t d = 0; d < rank; ++d) {
    int64_t D = randomInt(1, 6);
    pr.dataShape.push_back(D);
    int64_t I = d == pr.axis      ? (unique ? randomInt(1, D) : randomInt(1, 8))
                : randomInt(0, 2) ? D
                                  : randomInt(1, D);
    pr.idxShape.push_back(I);
  }
  int64_t n = 1;
  for (int64_t d : pr.idxShape)
    n *= d;
  int64_t size = pr.dataShape[size_t(pr.axis)];
  pr.ix.resize(size_t(n));
  if (!unique) {
    for (int64_t &i : pr.ix)
      i = randomInt(-size, size - 1);
    return pr;
  }
  // Along the axis, each line of indices is a prefix of a permutation.
  int64_t inner = 1, len = pr.idxShape[size_t(pr.axis)];
  for (size_t d = size_t(pr.axis) + 1; d < pr.idxShape.size(); ++d)
    inner *= pr.idxShape[d];
  std::vector<int64_t> perm(static_cast<size_t>(size));
  for (int64_t o = 0; o < n / (len * inner); ++o)
    for (int64_t i = 0; i < inner; ++i) {
      std::iota(perm.begin(), perm.end(), int64_t(0));
      std::shuffle(perm.begin(), perm.end(), rng());
      for (int64_t j = 0; j < len; ++j)
        pr.ix[size_t((o * len + j) * inner + i)] =
            perm[size_t(j)] - (randomInt(0, 1) ? size : 0);
    }
  return pr;
}

const cpu::ScatterReduction kReductions[] = {
    cpu::ScatterReduction::none, cpu::ScatterReduction::add,
    cpu::ScatterReduction::mul, cpu::ScatterReduction::max,
    cpu::ScatterReduction::min};

std::string describe(const Problem &pr, cpu::ScatterReduction r) {
  std::string s = "data [";
  for (int64_t d : pr.dataShape)
    s += std::to_string(d) + " ";
  s += "] indices [";
  for (int64_t d : pr.idxShape)
    s += std::to_string(d) + " ";
  return s + "] axis " + std::to_string(pr.axis) + " reduction " +
         fb::EnumNameScatterReduction(r);
}

TEST(CpuIndexKernels, ScatterF32EveryReduction) {
  for (int iter = 0; iter < 300; ++iter)
    for (cpu::ScatterReduction r : kReductions) {
      // Duplicates only where they are defined (the reductions; `none`
      // takes the last, which the reference does too).
      Problem pr = randomProblem(iter % 2 == 0);
      SCOPED_TRACE(describe(pr, r));
      int64_t dataN = 1;
      for (int64_t d : pr.dataShape)
        dataN *= d;
      std::vector<float> data = iter % 3
                                    ? normalFloats(static_cast<size_t>(dataN))
                                    : tieFloats(static_cast<size_t>(dataN));
      std::vector<float> upd =
          iter % 5 ? normalFloats(pr.ix.size()) : tieFloats(pr.ix.size());
      std::vector<float> ref = data, got = data;
      ASSERT_EQ(
          scatterRef(pr.dataShape, pr.idxShape, pr.axis, pr.ix, upd, r, ref),
          -1);
      cpu::ScatterShape g =
          cpu::scatterShape(pr.dataShape, pr.idxShape, pr.axis);
      bool i64 = iter % 2;
      std::vector<int32_t> ix32(pr.ix.begin(), pr.ix.end());
      const void *ix = i64 ? static_cast<const void *>(pr.ix.data())
                           : static_cast<const void *>(ix32.data());
      EXPECT_EQ(cpu::scatterElements(g, ix, i64, upd.data(), 4, r, got.data()),
                -1);
      for (size_t i = 0; i < got.size(); ++i)
        if (!sameBits(got[i], ref[i]) &&
            !(std::isnan(got[i]) && std::isnan(ref[i]))) {
          ADD_FAILURE() << "out[" << i << "] = " << got[i] << ", expected "
                        << ref[i];
          break;
        }
    }
}

TEST(CpuIndexKernels, ScatterIntegersWithoutReduction) {
  for (int iter = 0; iter < 100; ++iter) {
    Problem pr = randomProblem(true);
    SCOPED_TRACE(describe(pr, cpu::ScatterReduction::none));
    int64_t dataN = 1;
    for (int64_t d : pr.dataShape)
      dataN *= d;
    std::vector<int64_t> data(static_cast<size_t>(dataN)), upd(pr.ix.size());
    for (int64_t &x : data)
      x = randomInt(-(int64_t(1) << 40), int64_t(1) << 40);
    for (int64_t &x : upd)
      x = randomInt(-(int64_t(1) << 40), int64_t(1) << 40);
    std::vector<int64_t> ref = data, got = data;
    ASSERT_EQ(scatterRef(pr.dataShape, pr.idxShape, pr.axis, pr.ix, upd,
                         cpu::ScatterReduction::none, ref),
              -1);
    cpu::ScatterShape g = cpu::scatterShape(pr.dataShape, pr.idxShape, pr.axis);
    EXPECT_EQ(cpu::scatterElements(g, pr.ix.data(), true, upd.data(), 8,
                                   cpu::ScatterReduction::none, got.data()),
              -1);
    EXPECT_EQ(got, ref);
    // i32 data (4-byte words).
    std::vector<int32_t> d32(data.begin(), data.end()),
        u32(upd.begin(), upd.end()), r32(d32);
    scatterRef(pr.dataShape, pr.idxShape, pr.axis, pr.ix, u32,
               cpu::ScatterReduction::none, r32);
    EXPECT_EQ(cpu::scatterElements(g, pr.ix.data(), true, u32.data(), 4,
                                   cpu::ScatterReduction::none, d32.data()),
              -1);
    EXPECT_EQ(d32, r32);
  }
}

TEST(CpuIndexKernels, ScatterDuplicatesLastWinsAndNegativeIndices) {
  // [2,4] along axis 1: row 0 writes column 1 three times (last wins),
  // row 1 uses -1 (column 3) and -4 (column 0).
  std::vector<float> out(8, 0.f), upd = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  std::vector<int64_t> ix = {1, -3, 1, -1, -4, 2};
  cpu::ScatterShape g = cpu::scatterShape({2, 4}, {2, 3}, 1);
  EXPECT_EQ(cpu::scatterElements(g, ix.data(), true, upd.data(), 4,
                                 cpu::ScatterReduction::none, out.data()),
            -1);
  EXPECT_EQ(out, (std::vector<float>{0, 3, 0, 0, 5, 0, 6, 4}));
  std::fill(out.begin(), out.end(), 1.f);
  cpu::scatterElements(g, ix.data(), true, upd.data(), 4,
                       cpu::ScatterReduction::add, out.data());
  EXPECT_EQ(out, (std::vector<float>{1, 7, 1, 1, 6, 1, 7, 5}));
  // max / min as std::max / std::min: NaN in data stays, NaN in updates
  // is ignored.
  std::vector<float> d = {NAN, 1.f}, u = {5.f, NAN};
  std::vector<int64_t> i2 = {0, 1};
  cpu::ScatterShape g1 = cpu::scatterShape({2}, {2}, 0);
  cpu::scatterElements(g1, i2.data(), true, u.data(), 4,
                       cpu::ScatterReduction::max, d.data());
  EXPECT_TRUE(std::isnan(d[0]));
  EXPECT_EQ(d[1], 1.f);
}

TEST(CpuIndexKernels, ScatterStopsAtTheFirstIndexOutOfRange) {
  for (int64_t bad : {int64_t(4), int64_t(-5), int64_t(100)}) {
    std::vector<float> out(8, 0.f), upd(6, 1.f);
    std::vector<int64_t> ix = {0, 1, 2, 3, bad, bad};
    cpu::ScatterShape g = cpu::scatterShape({2, 4}, {2, 3}, 1);
    EXPECT_EQ(cpu::scatterElements(g, ix.data(), true, upd.data(), 4,
                                   cpu::ScatterReduction::add, out.data()),
              4)
        << "index " << bad;
    std::vector<int32_t> ix32(ix.begin(), ix.end());
    EXPECT_EQ(cpu::scatterElements(g, ix32.data(), false, upd.data(), 4,
                                   cpu::ScatterReduction::none, out.data()),
              4);
  }
  // Random problems with one bad index: the reference stops there too.
  for (int iter = 0; iter < 50; ++iter) {
    Problem pr = randomProblem(false);
    size_t at = size_t(randomInt(0, int64_t(pr.ix.size()) - 1));
    int64_t size = pr.dataShape[size_t(pr.axis)];
    pr.ix[at] =
        randomInt(0, 1) ? size + randomInt(0, 3) : -size - 1 - randomInt(0, 3);
    int64_t dataN = 1;
    for (int64_t d : pr.dataShape)
      dataN *= d;
    std::vector<float> upd = normalFloats(pr.ix.size()),
                       ref(static_cast<size_t>(dataN)),
                       got(static_cast<size_t>(dataN));
    int64_t want = scatterRef(pr.dataShape, pr.idxShape, pr.axis, pr.ix, upd,
                              cpu::ScatterReduction::add, ref);
    cpu::ScatterShape g = cpu::scatterShape(pr.dataShape, pr.idxShape, pr.axis);
    EXPECT_EQ(cpu::scatterElements(g, pr.ix.data(), true, upd.data(), 4,
                                   cpu::ScatterReduction::add, got.data()),
              want);
    EXPECT_LE(want, int64_t(at));
  }
}

} // namespace
