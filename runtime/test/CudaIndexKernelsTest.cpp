//===- CudaIndexKernelsTest.cpp - topk, scatter_elements on the device ----===//
//
// cuda::topk and cuda::scatterElements (moert/cuda/Kernels.h) against the CPU
// kernels, which runtime/test/CpuIndexKernelsTest.cpp checks against plain
// loops: topk bit for bit (ties, NaN, signed zeros), scatters bit for bit
// where the device promises it (none without duplicates, max, min, integer
// words) and to rounding where duplicates meet in another order (add, mul);
// duplicates with `none` leave one of their writers' values; an index out
// of range is counted, its least position reported, nothing written outside
// the result. Tests skip with "no CUDA device: ..." where there is none.
//
//===----------------------------------------------------------------------===//

#include "CudaTestSupport.h"
#include "moert/cuda/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace moert;
using namespace moert::cudatest;

namespace {

std::mt19937 &rng() {
  static std::mt19937 g(20250113);
  return g;
}

int64_t randomInt(int64_t lo, int64_t hi) { // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng());
}

/// Standard normal floats; with `ties`, a few distinct values, NaN and
/// signed zeros instead.
std::vector<float> randomFloats(size_t n, bool ties) {
  const float pool[] = {-1.5f, -0.0f, 0.0f, 0.25f, 2.0f, NAN, 7.0f};
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float &x : v)
    x = ties ? pool[randomInt(0, 6)] : d(rng());
  return v;
}

bool sameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

TEST(CudaIndex, TopKMatchesTheCpuBitForBit) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {7, 5}, {33, 8}, {5, 64}, {3, 257}, {2, 1000}, {70000, 6}})
    for (bool largest : {true, false})
      for (bool ties : {true, false})
        for (int64_t k : {int64_t(1), std::min<int64_t>(2, n), n}) {
          SCOPED_TRACE("rows=" + std::to_string(rows) +
                       " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                       (largest ? " largest" : " smallest") +
                       (ties ? " ties" : ""));
          std::vector<float> x = randomFloats(size_t(rows * n), ties);
          std::vector<float> want(size_t(rows * k));
          std::vector<int64_t> wantIds(size_t(rows * k));
          cpu::topk(x.data(), rows, n, k, largest, want.data(), wantIds.data());
          Dev<float> dx(x), dv(want.size());
          Dev<int64_t> di(wantIds.size());
          cuda::topk(dx.p, rows, n, k, largest, dv.p, di.p, s);
          s.sync();
          std::vector<float> got = dv.download();
          std::vector<int64_t> ids = di.download();
          int bad = 0;
          for (size_t i = 0; i < got.size(); ++i)
            if ((ids[i] != wantIds[i] || !sameBits(got[i], want[i])) &&
                bad++ < 5)
              ADD_FAILURE()
                  << "[" << i / size_t(k) << "," << i % size_t(k) << "]: ("
                  << got[i] << ", " << ids[i] << "), the CPU (" << want[i]
                  << ", " << wantIds[i] << ")";
        }
}

TEST(CudaIndex, TopKInt64MatchesTheCpu) {
  // Sorting expert ids (JetMoE's grouped experts): many ties, values past
  // 2^53.
  REQUIRE_CUDA_DEVICE();
  Stream s;
  for (auto [rows, n] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 32}, {3, 300}, {2, 4096}})
    for (bool largest : {true, false})
      for (int64_t k : {int64_t(1), n}) {
        SCOPED_TRACE("rows=" + std::to_string(rows) +
                     " n=" + std::to_string(n) + " k=" + std::to_string(k));
        std::vector<int64_t> x(size_t(rows * n));
        for (int64_t &v : x)
          v = randomInt(0, 7) + (randomInt(0, 3) == 0 ? int64_t(1) << 60 : 0);
        std::vector<int64_t> want(size_t(rows * k)), wantIds(want.size());
        cpu::topk(x.data(), rows, n, k, largest, want.data(), wantIds.data());
        Dev<int64_t> dx(x), dv(want.size()), di(wantIds.size());
        cuda::topk(dx.p, rows, n, k, largest, dv.p, di.p, s);
        s.sync();
        EXPECT_EQ(dv.download(), want);
        EXPECT_EQ(di.download(), wantIds);
      }
}

/// A random scatter: data rank 1..4, indices <= data off the axis, indices
/// in [-size, size); with `unique`, no two positions hit one element.
struct Problem {
  std::vector<int64_t> dataShape, idxShape;
  int64_t axis = 0, dataN = 1;
  std::vector<int64_t> ix;
};

Problem randomProblem(bool unique) {
  Problem pr;
  int64_t rank = randomInt(1, 4);
  pr.axis = randomInt(0, rank - 1);
  for (int64_t d = 0; d < rank; ++d) {
    int64_t D = randomInt(1, 9);
    pr.dataShape.push_back(D);
    pr.dataN *= D;
    pr.idxShape.push_back(d == pr.axis
                              ? (unique ? randomInt(1, D) : randomInt(1, 12))
                          : randomInt(0, 2) ? D
                                            : randomInt(1, D));
  }
  int64_t n = 1;
  for (int64_t d : pr.idxShape)
    n *= d;
  int64_t size = pr.dataShape[size_t(pr.axis)];
  pr.ix.resize(size_t(n));
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
            (unique ? perm[size_t(j)] : randomInt(0, size - 1)) -
            (randomInt(0, 1) ? size : 0);
    }
  return pr;
}

/// The device scatter of `upd` into a copy of `data` (T words), with a
/// guard of sentinel words after the result that must stay untouched;
/// returns the result and sets the status.
template <typename T>
std::vector<T> deviceScatter(const Problem &pr, const std::vector<T> &data,
                             const std::vector<T> &upd, bool i64,
                             cpu::ScatterReduction r, int64_t status[2]) {
  Stream s;
  const size_t guard = 64;
  std::vector<T> init = data;
  T sentinel;
  std::memset(&sentinel, 0x5a, sizeof(T));
  init.insert(init.end(), guard, sentinel);
  Dev<T> out(init), du(upd);
  std::vector<int32_t> ix32(pr.ix.begin(), pr.ix.end());
  Dev<int64_t> d64(pr.ix);
  Dev<int32_t> d32(ix32);
  Dev<int64_t> st(2);
  cpu::ScatterShape g = cpu::scatterShape(pr.dataShape, pr.idxShape, pr.axis);
  cuda::scatterElements(g, i64 ? static_cast<void *>(d64.p) : d32.p, i64, du.p,
                        sizeof(T), r, out.p, st.p, s);
  s.sync();
  std::vector<int64_t> sv = st.download();
  status[0] = sv[0];
  status[1] = sv[1];
  std::vector<T> got = out.download();
  for (size_t i = data.size(); i < got.size(); ++i)
    EXPECT_EQ(std::memcmp(&got[i], &sentinel, sizeof(T)), 0)
        << "the scatter wrote past the result";
  got.resize(data.size());
  return got;
}

const cpu::ScatterReduction kReductions[] = {
    cpu::ScatterReduction::none, cpu::ScatterReduction::add,
    cpu::ScatterReduction::mul, cpu::ScatterReduction::max,
    cpu::ScatterReduction::min};

TEST(CudaIndex, ScatterF32MatchesTheCpu) {
  REQUIRE_CUDA_DEVICE();
  for (int iter = 0; iter < 120; ++iter)
    for (cpu::ScatterReduction r : kReductions) {
      // `none` without duplicates (the device keeps any writer's value).
      bool unique = r == cpu::ScatterReduction::none || iter % 2 == 0;
      Problem pr = randomProblem(unique);
      SCOPED_TRACE(std::string("reduction ") + fb::EnumNameScatterReduction(r) +
                   " iteration " + std::to_string(iter));
      std::vector<float> data = randomFloats(size_t(pr.dataN), iter % 3 == 0);
      std::vector<float> upd = randomFloats(pr.ix.size(), iter % 5 == 0);
      if (r == cpu::ScatterReduction::mul || r == cpu::ScatterReduction::add)
        for (float &u : upd) // finite: sums of infinities and NaN have no order
          if (!std::isfinite(u))
            u = 0.5f;
      std::vector<float> want = data;
      cpu::ScatterShape g =
          cpu::scatterShape(pr.dataShape, pr.idxShape, pr.axis);
      ASSERT_EQ(cpu::scatterElements(g, pr.ix.data(), true, upd.data(), 4, r,
                                     want.data()),
                -1);
      int64_t status[2];
      std::vector<float> got =
          deviceScatter(pr, data, upd, iter % 2, r, status);
      EXPECT_EQ(status[0], 0);
      bool exact = unique || r == cpu::ScatterReduction::max ||
                   r == cpu::ScatterReduction::min;
      for (size_t i = 0; i < got.size(); ++i) {
        bool ok = sameBits(got[i], want[i]) ||
                  (std::isnan(got[i]) && std::isnan(want[i])) ||
                  (!exact && std::fabs(got[i] - want[i]) <=
                                 1e-5f * std::max(1.f, std::fabs(want[i])));
        if (!ok) {
          ADD_FAILURE() << "out[" << i << "] = " << got[i] << ", the CPU "
                        << want[i];
          break;
        }
      }
    }
}

TEST(CudaIndex, ScatterDuplicatesWithoutReductionKeepOneWriter) {
  REQUIRE_CUDA_DEVICE();
  // [3, 4] along axis 1; every row writes column 2 four times.
  Problem pr;
  pr.dataShape = {3, 4};
  pr.idxShape = {3, 4};
  pr.axis = 1;
  pr.dataN = 12;
  pr.ix.assign(12, 2);
  pr.ix[3] = -2; // column 2 as well
  std::vector<float> data(12, -1.f), upd(12);
  std::iota(upd.begin(), upd.end(), 100.f);
  int64_t status[2];
  std::vector<float> got =
      deviceScatter(pr, data, upd, true, cpu::ScatterReduction::none, status);
  EXPECT_EQ(status[0], 0);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 4; ++c) {
      float v = got[size_t(r * 4 + c)];
      if (c != 2)
        EXPECT_EQ(v, -1.f);
      else
        EXPECT_TRUE(v >= 100.f + 4 * r && v < 104.f + 4 * r)
            << "row " << r << ": " << v << " is no writer's value";
    }
}

TEST(CudaIndex, ScatterIntegerWords) {
  REQUIRE_CUDA_DEVICE();
  for (int iter = 0; iter < 40; ++iter) {
    Problem pr = randomProblem(true);
    std::vector<int64_t> data(size_t(pr.dataN)), upd(pr.ix.size());
    for (int64_t &x : data)
      x = randomInt(LLONG_MIN / 2, LLONG_MAX / 2);
    for (int64_t &x : upd)
      x = randomInt(LLONG_MIN / 2, LLONG_MAX / 2);
    std::vector<int64_t> want = data;
    cpu::ScatterShape g = cpu::scatterShape(pr.dataShape, pr.idxShape, pr.axis);
    cpu::scatterElements(g, pr.ix.data(), true, upd.data(), 8,
                         cpu::ScatterReduction::none, want.data());
    int64_t status[2];
    EXPECT_EQ(deviceScatter(pr, data, upd, iter % 2,
                            cpu::ScatterReduction::none, status),
              want);
    EXPECT_EQ(status[0], 0);
    std::vector<int32_t> d32(data.begin(), data.end()),
        u32(upd.begin(), upd.end()), w32(d32);
    cpu::scatterElements(g, pr.ix.data(), true, u32.data(), 4,
                         cpu::ScatterReduction::none, w32.data());
    EXPECT_EQ(deviceScatter(pr, d32, u32, iter % 2, cpu::ScatterReduction::none,
                            status),
              w32);
  }
}

TEST(CudaIndex, ScatterIndexOutOfRangeIsReportedNotWritten) {
  REQUIRE_CUDA_DEVICE();
  for (int iter = 0; iter < 30; ++iter)
    for (cpu::ScatterReduction r :
         {cpu::ScatterReduction::none, cpu::ScatterReduction::add,
          cpu::ScatterReduction::max}) {
      Problem pr = randomProblem(true);
      int64_t size = pr.dataShape[size_t(pr.axis)];
      // Two bad indices; the least position is reported.
      size_t a = size_t(randomInt(0, int64_t(pr.ix.size()) - 1));
      size_t b = size_t(randomInt(0, int64_t(pr.ix.size()) - 1));
      pr.ix[a] = size + randomInt(0, 1000);
      pr.ix[b] = -size - 1 - randomInt(0, 1000);
      std::vector<float> data = randomFloats(size_t(pr.dataN), false);
      std::vector<float> upd = randomFloats(pr.ix.size(), false);
      std::vector<float> cpuOut = data;
      cpu::ScatterShape g =
          cpu::scatterShape(pr.dataShape, pr.idxShape, pr.axis);
      int64_t first = cpu::scatterElements(g, pr.ix.data(), true, upd.data(), 4,
                                           r, cpuOut.data());
      int64_t status[2];
      deviceScatter(pr, data, upd, iter % 2, r, status);
      EXPECT_EQ(status[0], a == b ? 1 : 2);
      EXPECT_EQ(status[1], first);
      EXPECT_EQ(first, int64_t(std::min(a, b)));
    }
}

} // namespace
