//===- CpuDispatchKernelsTest.cpp - dispatch, experts, combine ------------===//
//
// The dispatch, expert and combine kernels of moert/cpu/Kernels.h against
// plain-loop references, and the whole dispatch -> experts -> combine chain
// between three simulated ranks against a dense per-token MoE. Tolerances
// as in CpuKernelsTest.cpp.
//
//===----------------------------------------------------------------------===//

#include "CpuTestUtil.h"

#include "moert/cpu/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace moert;
using namespace moert::test;

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

namespace {

/// 7 experts on 3 ranks of 4 slots; expert 0 has 2 replicas, expert 3 has 3,
/// ranks 1 and 2 leave their last slot unused:
///   rank 0: e0 e1 e2 e3   rank 1: e3 e4 e5 -   rank 2: e6 e0 e3 -
Placement testPlacement() {
  Placement pl;
  pl.numExperts = 7;
  pl.groupSize = 3;
  pl.slotsPerRank = 4;
  pl.replicas = {{{0, 0}, {2, 1}}, {{0, 1}}, {{0, 2}}, {{0, 3}, {1, 0}, {2, 2}},
                 {{1, 1}},         {{1, 2}}, {{2, 0}}};
  return pl;
}

/// Which assignments are kept, and where they go (rank * slots + slot),
/// following the header literally; -1 for dropped.
std::vector<int64_t> destinationsRef(const std::vector<int64_t> &ids,
                                     const Placement &pl, int64_t capacity) {
  std::vector<std::vector<int64_t>> accepted(pl.numExperts);
  for (int64_t e = 0; e < pl.numExperts; ++e)
    accepted[e].assign(pl.replicas[e].size(), 0);
  std::vector<int64_t> dest(ids.size(), -1);
  for (size_t a = 0; a < ids.size(); ++a) {
    int64_t e = ids[a];
    size_t r = a % pl.replicas[e].size();
    if (capacity >= 0 && accepted[e][r] >= capacity)
      continue;
    ++accepted[e][r];
    dest[a] =
        pl.replicas[e][r].first * pl.slotsPerRank + pl.replicas[e][r].second;
  }
  return dest;
}

/// The layout the header describes, built destination by destination.
cpu::DispatchLayout layoutRef(const std::vector<int64_t> &ids, int64_t T,
                              int64_t k, const Placement &pl,
                              int64_t capacity) {
  std::vector<int64_t> dest = destinationsRef(ids, pl, capacity);
  cpu::DispatchLayout l;
  l.T = T;
  l.k = k;
  l.sendPos.assign(T * k, -1);
  l.sendCounts.assign(pl.groupSize * pl.slotsPerRank, 0);
  int64_t row = 0;
  for (int64_t d = 0; d < pl.groupSize * pl.slotsPerRank; ++d)
    for (int64_t a = 0; a < T * k; ++a)
      if (dest[a] == d) {
        l.sendPos[a] = row++;
        ++l.sendCounts[d];
      }
  l.sendRows = row;
  for (int64_t d : dest)
    l.dropped += d < 0;
  return l;
}

std::vector<int64_t> randomIds(std::mt19937 &rng, int64_t T, int64_t k,
                               int64_t E) {
  // k distinct experts per token, like a router.
  std::vector<int64_t> ids(T * k), all(E);
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < T; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    std::copy(all.begin(), all.begin() + k, ids.begin() + t * k);
  }
  return ids;
}

} // namespace

TEST(CpuKernels, PlanDispatch) {
  std::mt19937 rng(3);
  const int64_t T = 37, k = 3;
  Placement pl = testPlacement();
  std::vector<int64_t> ids = randomIds(rng, T, k, pl.numExperts);
  for (int64_t capacity : {-1, 0, 1, 2, 5, 1000}) {
    SCOPED_TRACE(testing::Message() << "capacity=" << capacity);
    cpu::DispatchLayout got, ref = layoutRef(ids, T, k, pl, capacity);
    std::string error;
    ASSERT_TRUE(cpu::planDispatch(ids.data(), T, k, pl, capacity, got, error))
        << error;
    EXPECT_EQ(got.T, T);
    EXPECT_EQ(got.k, k);
    EXPECT_EQ(got.sendPos, ref.sendPos);
    EXPECT_EQ(got.sendCounts, ref.sendCounts);
    EXPECT_EQ(got.sendRows, ref.sendRows);
    EXPECT_EQ(got.dropped, ref.dropped);
    EXPECT_EQ(got.sendRows + got.dropped, T * k);
    if (capacity < 0 || capacity >= T * k) {
      EXPECT_EQ(got.dropped, 0);
    }
    if (capacity == 0) {
      EXPECT_EQ(got.sendRows, 0);
    }
    // Unused slots receive nothing.
    EXPECT_EQ(got.sendCounts[1 * 4 + 3], 0);
    EXPECT_EQ(got.sendCounts[2 * 4 + 3], 0);
  }
  // Replicas take turns by assignment index: token 0 choice 0 (a = 0) goes
  // to expert 3's replica 0, a = 1 to replica 1, a = 2 to replica 2.
  std::vector<int64_t> three = {3, 3, 3};
  cpu::DispatchLayout l;
  std::string error;
  ASSERT_TRUE(cpu::planDispatch(three.data(), 1, 3, pl, -1, l, error));
  EXPECT_EQ(l.sendCounts[0 * 4 + 3], 1);
  EXPECT_EQ(l.sendCounts[1 * 4 + 0], 1);
  EXPECT_EQ(l.sendCounts[2 * 4 + 2], 1);
  EXPECT_EQ(l.sendPos, (std::vector<int64_t>{0, 1, 2}));
  // Capacity is per replica: with capacity 1 and 4 assignments to expert 3,
  // only the 4th (replica 0 again) is dropped.
  std::vector<int64_t> four = {3, 3, 3, 3};
  ASSERT_TRUE(cpu::planDispatch(four.data(), 2, 2, pl, 1, l, error));
  EXPECT_EQ(l.dropped, 1);
  EXPECT_EQ(l.sendPos, (std::vector<int64_t>{0, 1, 2, -1}));
}

TEST(CpuKernels, PlanDispatchErrors) {
  Placement pl = testPlacement();
  cpu::DispatchLayout l;
  for (int64_t bad : {int64_t(7), int64_t(-1)}) {
    std::vector<int64_t> ids = {0, 1, bad, 2};
    std::string error;
    EXPECT_FALSE(cpu::planDispatch(ids.data(), 2, 2, pl, -1, l, error));
    EXPECT_NE(error.find(std::to_string(bad)), std::string::npos) << error;
  }
}

TEST(CpuKernels, PackRows) {
  std::mt19937 rng(4);
  const int64_t T = 37, k = 3, H = 19;
  Placement pl = testPlacement();
  std::vector<int64_t> ids = randomIds(rng, T, k, pl.numExperts);
  std::vector<float> x = randomVec(rng, T * H);
  for (int64_t capacity : {-1, 2}) {
    cpu::DispatchLayout l = layoutRef(ids, T, k, pl, capacity);
    std::vector<float> send(l.sendRows * H, NAN);
    cpu::packRows(x.data(), H, l, send.data());
    std::vector<bool> seen(l.sendRows, false);
    for (int64_t a = 0; a < T * k; ++a) {
      if (l.sendPos[a] < 0)
        continue;
      seen[l.sendPos[a]] = true;
      for (int64_t h = 0; h < H; ++h)
        ASSERT_EQ(send[l.sendPos[a] * H + h], x[(a / k) * H + h]);
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), false), 0);
  }
}

TEST(CpuKernels, PackScaledRows) {
  std::mt19937 rng(5);
  const int64_t T = 37, k = 3, H = 19;
  Placement pl = testPlacement();
  std::vector<int64_t> ids = randomIds(rng, T, k, pl.numExperts);
  std::vector<float> x = randomVec(rng, T * H);
  std::vector<float> w = randomVec(rng, T * k, 0, 1);
  for (int64_t capacity : {-1, 2}) {
    cpu::DispatchLayout l = layoutRef(ids, T, k, pl, capacity);
    std::vector<float> send(l.sendRows * H, NAN);
    cpu::packScaledRows(x.data(), H, l, w.data(), send.data());
    for (int64_t a = 0; a < T * k; ++a) {
      if (l.sendPos[a] >= 0) {
        for (int64_t h = 0; h < H; ++h)
          ASSERT_EQ(send[l.sendPos[a] * H + h], w[a] * x[(a / k) * H + h]);
      }
    }
    EXPECT_EQ(std::count_if(send.begin(), send.end(),
                            [](float v) { return std::isnan(v); }),
              0);
  }
}

TEST(CpuKernels, ExpertMajorOrder) {
  std::mt19937 rng(5);
  const int64_t groupSize = 3, slots = 4;
  std::uniform_int_distribution<int64_t> count(0, 6);
  for (int iter = 0; iter < 5; ++iter) {
    std::vector<int64_t> counts(groupSize * slots);
    for (int64_t &c : counts)
      c = iter == 0 ? 0 : count(rng);
    // Reference: label each source-major row with its slot and sort stably
    // by slot (the source order and the row order within a block remain).
    std::vector<int64_t> slotOf;
    for (int64_t s = 0; s < groupSize; ++s)
      for (int64_t slot = 0; slot < slots; ++slot)
        slotOf.insert(slotOf.end(), counts[s * slots + slot], slot);
    std::vector<int64_t> permRef(slotOf.size());
    std::iota(permRef.begin(), permRef.end(), 0);
    std::stable_sort(permRef.begin(), permRef.end(), [&](int64_t a, int64_t b) {
      return slotOf[a] < slotOf[b];
    });
    std::vector<int64_t> offRef(slots + 1, 0);
    for (int64_t slot = 0; slot < slots; ++slot)
      offRef[slot + 1] =
          offRef[slot] + std::count(slotOf.begin(), slotOf.end(), slot);
    std::vector<int64_t> perm = {42}, off;
    cpu::expertMajorOrder(counts.data(), groupSize, slots, perm, off);
    EXPECT_EQ(perm, permRef);
    EXPECT_EQ(off, offRef);
  }
}

TEST(CpuKernels, GatherScatterRows) {
  std::mt19937 rng(6);
  const int64_t n = 37, H = 19;
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<float> src = randomVec(rng, n * H), g(n * H, NAN), s(n * H, NAN);
  cpu::gatherRowsByIndex(src.data(), H, perm.data(), n, g.data());
  cpu::scatterRowsByIndex(src.data(), H, perm.data(), n, s.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < H; ++h) {
      ASSERT_EQ(g[i * H + h], src[perm[i] * H + h]);
      ASSERT_EQ(s[perm[i] * H + h], src[i * H + h]);
    }
  // Scatter undoes gather.
  std::vector<float> back(n * H, NAN);
  cpu::scatterRowsByIndex(g.data(), H, perm.data(), n, back.data());
  EXPECT_EQ(back, src);
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

namespace {

/// One expert's weights: wGate, wUp [H,F]; wDown [F,H]; biases.
struct Expert {
  std::vector<float> wGate, wUp, wDown, bGate, bUp, bDown;
};

Expert randomExpert(std::mt19937 &rng, int64_t H, int64_t F) {
  // Scaled like an initialised layer so that activations see values ~1.
  float sh = 1.5f / std::sqrt(float(H)), sf = 1.5f / std::sqrt(float(F));
  return {randomVec(rng, H * F, -sh, sh), randomVec(rng, H * F, -sh, sh),
          randomVec(rng, F * H, -sf, sf), randomVec(rng, F, -0.5f, 0.5f),
          randomVec(rng, F, -0.5f, 0.5f), randomVec(rng, H, -0.5f, 0.5f)};
}

/// y = (act(x Wg + bg) [* (x Wu + bu)]) Wd + bd for one row, in double.
std::vector<double> ffnRef(const float *x, const Expert &e, int64_t H,
                           int64_t F, Activation act, bool withUp,
                           bool withBias) {
  std::vector<double> h(F);
  for (int64_t f = 0; f < F; ++f) {
    double g = withBias ? e.bGate[f] : 0, u = withBias ? e.bUp[f] : 0;
    for (int64_t i = 0; i < H; ++i) {
      g += double(x[i]) * e.wGate[i * F + f];
      u += double(x[i]) * e.wUp[i * F + f];
    }
    h[f] = activationRef(act, g) * (withUp ? u : 1.0);
  }
  std::vector<double> y(H);
  for (int64_t i = 0; i < H; ++i) {
    double acc = withBias ? e.bDown[i] : 0;
    for (int64_t f = 0; f < F; ++f)
      acc += h[f] * e.wDown[f * H + i];
    y[i] = acc;
  }
  return y;
}

/// Stacked weights of a rank's slots (unused slots stay zero).
struct Stacked {
  std::vector<float> wGate, wUp, wDown, bGate, bUp, bDown;

  Stacked(const std::vector<const Expert *> &slots, int64_t H, int64_t F) {
    int64_t S = slots.size();
    wGate.assign(S * H * F, 0);
    wUp.assign(S * H * F, 0);
    wDown.assign(S * F * H, 0);
    bGate.assign(S * F, 0);
    bUp.assign(S * F, 0);
    bDown.assign(S * H, 0);
    for (int64_t s = 0; s < S; ++s) {
      if (!slots[s])
        continue;
      std::copy(slots[s]->wGate.begin(), slots[s]->wGate.end(),
                wGate.begin() + s * H * F);
      std::copy(slots[s]->wUp.begin(), slots[s]->wUp.end(),
                wUp.begin() + s * H * F);
      std::copy(slots[s]->wDown.begin(), slots[s]->wDown.end(),
                wDown.begin() + s * F * H);
      std::copy(slots[s]->bGate.begin(), slots[s]->bGate.end(),
                bGate.begin() + s * F);
      std::copy(slots[s]->bUp.begin(), slots[s]->bUp.end(),
                bUp.begin() + s * F);
      std::copy(slots[s]->bDown.begin(), slots[s]->bDown.end(),
                bDown.begin() + s * H);
    }
  }

  cpu::ExpertWeights view(int64_t H, int64_t F, Activation act, bool withUp,
                          bool withBias) const {
    cpu::ExpertWeights w;
    w.wGate = wGate.data();
    w.wUp = withUp ? wUp.data() : nullptr;
    w.wDown = wDown.data();
    if (withBias) {
      w.bGate = bGate.data();
      w.bUp = withUp ? bUp.data() : nullptr;
      w.bDown = bDown.data();
    }
    w.H = H;
    w.F = F;
    w.act = act;
    return w;
  }
};

} // namespace

TEST(CpuKernels, GroupedFFN) {
  std::mt19937 rng(7);
  const int64_t H = 19, F = 23;
  // 4 slots with 5, 0, 17 and 15 rows (37 in all).
  const std::vector<int64_t> offsets = {0, 5, 5, 22, 37};
  const int64_t R = offsets.back();
  std::vector<Expert> experts;
  for (int s = 0; s < 4; ++s)
    experts.push_back(randomExpert(rng, H, F));
  Stacked stacked({&experts[0], &experts[1], &experts[2], &experts[3]}, H, F);
  std::vector<float> x = randomVec(rng, R * H, -2, 2);
  for (Activation act : kActivations)
    for (bool withUp : {true, false})
      for (bool withBias : {false, true}) {
        SCOPED_TRACE(testing::Message() << activationName(act) << " w_up="
                                        << withUp << " biases=" << withBias);
        cpu::ExpertWeights w = stacked.view(H, F, act, withUp, withBias);
        size_t bytes = cpu::groupedFFNScratch(R, w);
        EXPECT_GE(bytes, size_t(R * F * sizeof(float)));
        std::vector<float> scratch(bytes / sizeof(float) + 1, NAN);
        std::vector<float> y(R * H, NAN);
        cpu::groupedFFN(x.data(), offsets, w, y.data(), scratch.data());
        std::vector<double> ref;
        for (int64_t s = 0; s < 4; ++s)
          for (int64_t r = offsets[s]; r < offsets[s + 1]; ++r) {
            std::vector<double> row =
                ffnRef(&x[r * H], experts[s], H, F, act, withUp, withBias);
            ref.insert(ref.end(), row.begin(), row.end());
          }
        expectClose(y.data(), ref, 1e-5, "y");
      }
}

TEST(CpuKernels, GroupedFFNClampedSwiglu) {
  // GPT-OSS's activation: g' sigmoid(alpha g') (u' + beta), g' = min(g,
  // limit), u' = clamp(u, -limit, limit). Pre-activations reach ~+-20 so
  // that both clamps engage; with no limit (inf) nothing is clamped.
  std::mt19937 rng(11);
  const int64_t H = 19, F = 23;
  const std::vector<int64_t> offsets = {0, 9, 9, 30};
  const int64_t R = offsets.back();
  std::vector<Expert> experts;
  for (int s = 0; s < 3; ++s) {
    experts.push_back(randomExpert(rng, H, F));
    for (float &v : experts.back().wGate)
      v *= 8;
    for (float &v : experts.back().wUp)
      v *= 8;
  }
  Stacked stacked({&experts[0], &experts[1], &experts[2]}, H, F);
  std::vector<float> x = randomVec(rng, R * H, -2, 2);
  for (float limit : {7.0f, INFINITY})
    for (bool withBias : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << "limit=" << limit << " biases=" << withBias);
      cpu::ExpertWeights w =
          stacked.view(H, F, Activation::clamped_swiglu, true, withBias);
      w.alpha = 1.702f;
      w.beta = 1.0f;
      w.limit = limit;
      std::vector<float> scratch(cpu::groupedFFNScratch(R, w) / 4 + 1, NAN);
      std::vector<float> y(R * H, NAN);
      cpu::groupedFFN(x.data(), offsets, w, y.data(), scratch.data());
      std::vector<double> ref;
      int64_t clamped = 0;
      for (int64_t s = 0; s < 3; ++s)
        for (int64_t r = offsets[s]; r < offsets[s + 1]; ++r) {
          const Expert &e = experts[s];
          std::vector<double> h(F);
          for (int64_t f = 0; f < F; ++f) {
            double g = withBias ? e.bGate[f] : 0, u = withBias ? e.bUp[f] : 0;
            for (int64_t i = 0; i < H; ++i) {
              g += double(x[r * H + i]) * e.wGate[i * F + f];
              u += double(x[r * H + i]) * e.wUp[i * F + f];
            }
            clamped += g > limit || std::fabs(u) > limit;
            g = std::min<double>(g, limit);
            u = std::clamp<double>(u, -limit, limit);
            h[f] = g / (1 + std::exp(-1.702 * g)) * (u + 1.0);
          }
          for (int64_t i = 0; i < H; ++i) {
            double acc = withBias ? e.bDown[i] : 0;
            for (int64_t f = 0; f < F; ++f)
              acc += h[f] * e.wDown[f * H + i];
            ref.push_back(acc);
          }
        }
      if (std::isfinite(limit)) {
        EXPECT_GT(clamped, R * F / 10) << "the clamps must engage";
      }
      expectClose(y.data(), ref, 1e-5, "y");
    }
}

TEST(CpuKernels, GroupedFFNLargeInputs) {
  // Pre-activations far in the tails (|x| up to ~60): exp must neither
  // overflow nor lose the sign.
  std::mt19937 rng(8);
  const int64_t H = 19, F = 23, R = 11;
  Expert e = randomExpert(rng, H, F);
  for (float &v : e.wGate)
    v *= 20;
  Stacked stacked({&e}, H, F);
  std::vector<float> x = randomVec(rng, R * H, -2, 2);
  for (Activation act : kActivations) {
    SCOPED_TRACE(activationName(act));
    cpu::ExpertWeights w = stacked.view(H, F, act, true, true);
    std::vector<float> scratch(cpu::groupedFFNScratch(R, w) / 4 + 1);
    std::vector<float> y(R * H, NAN);
    cpu::groupedFFN(x.data(), {0, R}, w, y.data(), scratch.data());
    std::vector<double> ref;
    for (int64_t r = 0; r < R; ++r) {
      std::vector<double> row = ffnRef(&x[r * H], e, H, F, act, true, true);
      ref.insert(ref.end(), row.begin(), row.end());
    }
    expectClose(y.data(), ref, 1e-5, "y");
  }
}

TEST(CpuKernels, GroupedFFNNaNRow) {
  // A NaN token row (a NaN input, found by the plan fuzz target) gives a
  // NaN output row and leaves the others alone. exp's range reduction
  // converted NaN to int32 (undefined behaviour, which the UBSan build of
  // scripts/sanitize.sh reports).
  std::mt19937 rng(9);
  const int64_t H = 8, F = 16, R = 3;
  Expert e = randomExpert(rng, H, F);
  Stacked stacked({&e}, H, F);
  std::vector<float> x = randomVec(rng, R * H, -2, 2);
  x[H + 3] = NAN;
  for (Activation act : kActivations) {
    SCOPED_TRACE(activationName(act));
    cpu::ExpertWeights w = stacked.view(H, F, act, true, true);
    std::vector<float> scratch(cpu::groupedFFNScratch(R, w) / 4 + 1);
    std::vector<float> y(R * H, 0.0f);
    cpu::groupedFFN(x.data(), {0, R}, w, y.data(), scratch.data());
    for (int64_t r = 0; r < R; ++r) {
      std::vector<double> ref = ffnRef(&x[r * H], e, H, F, act, true, true);
      for (int64_t h = 0; h < H; ++h) {
        if (r == 1)
          EXPECT_TRUE(std::isnan(y[r * H + h])) << "row 1, column " << h;
        else
          EXPECT_NEAR(y[r * H + h], ref[h], 1e-4 * (1 + std::fabs(ref[h])));
      }
    }
  }
}

TEST(CpuKernels, CombineRows) {
  std::mt19937 rng(9);
  const int64_t T = 37, k = 3, H = 19;
  Placement pl = testPlacement();
  std::vector<int64_t> ids = randomIds(rng, T, k, pl.numExperts);
  std::vector<float> weights = randomVec(rng, T * k, 0, 1);
  for (int64_t capacity : {-1, 3, 0}) {
    SCOPED_TRACE(testing::Message() << "capacity=" << capacity);
    cpu::DispatchLayout l = layoutRef(ids, T, k, pl, capacity);
    std::vector<float> back =
        randomVec(rng, std::max<int64_t>(l.sendRows, 1) * H);
    std::vector<float> out(T * H, NAN);
    cpu::combineRows(back.data(), H, l, weights.data(), out.data());
    std::vector<double> ref(T * H, 0);
    int64_t allDropped = 0;
    for (int64_t t = 0; t < T; ++t) {
      bool any = false;
      for (int64_t j = 0; j < k; ++j) {
        int64_t row = l.sendPos[t * k + j];
        if (row < 0)
          continue;
        any = true;
        for (int64_t h = 0; h < H; ++h)
          ref[t * H + h] += double(weights[t * k + j]) * back[row * H + h];
      }
      if (!any) {
        ++allDropped;
        for (int64_t h = 0; h < H; ++h)
          EXPECT_EQ(out[t * H + h], 0.0f);
      }
    }
    if (capacity == 0) {
      EXPECT_EQ(allDropped, T);
    }
    if (capacity == 3) { // the later tokens lose all their choices
      EXPECT_GT(allDropped, 0);
    }
    expectClose(out.data(), ref, 1e-5, "out");
    // No weights (the dispatch scaled the rows): weight 1.
    cpu::combineRows(back.data(), H, l, nullptr, out.data());
    std::fill(ref.begin(), ref.end(), 0.0);
    for (int64_t a = 0; a < T * k; ++a)
      if (l.sendPos[a] >= 0)
        for (int64_t h = 0; h < H; ++h)
          ref[(a / k) * H + h] += back[l.sendPos[a] * H + h];
    expectClose(out.data(), ref, 1e-5, "unweighted out");
  }
}

//===----------------------------------------------------------------------===//
// The whole chain between 3 simulated ranks
//===----------------------------------------------------------------------===//

namespace {

struct ChainConfig {
  Activation act;
  bool withUp, withBias;
  int64_t capacity;
};

void runChain(const ChainConfig &cfg, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t H = 19, F = 23, k = 3;
  const Placement pl = testPlacement();
  const int64_t G = pl.groupSize, S = pl.slotsPerRank, E = pl.numExperts;
  const std::vector<int64_t> tokens = {37, 29, 11};

  std::vector<Expert> experts;
  for (int64_t e = 0; e < E; ++e)
    experts.push_back(randomExpert(rng, H, F));
  // Each rank's slots, from the placement.
  std::vector<std::vector<const Expert *>> slotExpert(
      G, std::vector<const Expert *>(S, nullptr));
  for (int64_t e = 0; e < E; ++e)
    for (auto [rank, slot] : pl.replicas[e])
      slotExpert[rank][slot] = &experts[e];
  std::vector<Stacked> stacked;
  for (int64_t r = 0; r < G; ++r)
    stacked.emplace_back(slotExpert[r], H, F);

  // Per source rank: tokens, routing, dispatch layout, send buffer.
  struct Rank {
    int64_t T;
    std::vector<float> x, w, send, back, out;
    std::vector<int64_t> ids;
    cpu::DispatchLayout layout;
    std::vector<int64_t> blockStart; // [G+1] rows of send per destination
  };
  std::vector<Rank> ranks(G);
  RouteParams rp;
  rp.topK = k;
  rp.renormalize = true;
  for (int64_t s = 0; s < G; ++s) {
    Rank &rk = ranks[s];
    rk.T = tokens[s];
    rk.x = randomVec(rng, rk.T * H, -2, 2);
    std::vector<float> logits = randomVec(rng, rk.T * E, -2, 2);
    rk.w.resize(rk.T * k);
    rk.ids.resize(rk.T * k);
    cpu::route(logits.data(), nullptr, rk.T, E, rp, rk.w.data(), rk.ids.data());
    std::string error;
    ASSERT_TRUE(cpu::planDispatch(rk.ids.data(), rk.T, k, pl, cfg.capacity,
                                  rk.layout, error))
        << error;
    rk.send.assign(rk.layout.sendRows * H, NAN);
    cpu::packRows(rk.x.data(), H, rk.layout, rk.send.data());
    rk.back.assign(rk.layout.sendRows * H, NAN);
    rk.blockStart.assign(G + 1, 0);
    for (int64_t d = 0; d < G; ++d) {
      int64_t n = 0;
      for (int64_t slot = 0; slot < S; ++slot)
        n += rk.layout.sendCounts[d * S + slot];
      rk.blockStart[d + 1] = rk.blockStart[d] + n;
    }
  }

  // Each destination rank: the all-to-all (counts, then rows, source-major),
  // slot-major reorder, experts, back to source-major, return to the sources.
  int64_t totalRecv = 0;
  for (int64_t r = 0; r < G; ++r) {
    std::vector<int64_t> recvCounts(G * S);
    std::vector<float> recv;
    for (int64_t s = 0; s < G; ++s) {
      for (int64_t slot = 0; slot < S; ++slot)
        recvCounts[s * S + slot] = ranks[s].layout.sendCounts[r * S + slot];
      recv.insert(recv.end(),
                  ranks[s].send.begin() + ranks[s].blockStart[r] * H,
                  ranks[s].send.begin() + ranks[s].blockStart[r + 1] * H);
    }
    const int64_t R = recv.size() / H;
    totalRecv += R;
    std::vector<int64_t> perm, offsets;
    cpu::expertMajorOrder(recvCounts.data(), G, S, perm, offsets);
    ASSERT_EQ(int64_t(perm.size()), R);
    ASSERT_EQ(offsets.back(), R);
    // Unused slots get no rows.
    for (int64_t slot = 0; slot < S; ++slot)
      if (!slotExpert[r][slot]) {
        EXPECT_EQ(offsets[slot + 1], offsets[slot]);
      }
    std::vector<float> xs(R * H), ys(R * H, NAN), back(R * H, NAN);
    cpu::gatherRowsByIndex(recv.data(), H, perm.data(), R, xs.data());
    cpu::ExpertWeights w =
        stacked[r].view(H, F, cfg.act, cfg.withUp, cfg.withBias);
    std::vector<float> scratch(cpu::groupedFFNScratch(R, w) / 4 + 1);
    cpu::groupedFFN(xs.data(), offsets, w, ys.data(), scratch.data());
    cpu::scatterRowsByIndex(ys.data(), H, perm.data(), R, back.data());
    int64_t row = 0;
    for (int64_t s = 0; s < G; ++s) {
      int64_t n = ranks[s].blockStart[r + 1] - ranks[s].blockStart[r];
      std::copy(back.begin() + row * H, back.begin() + (row + n) * H,
                ranks[s].back.begin() + ranks[s].blockStart[r] * H);
      row += n;
    }
  }

  int64_t totalSent = 0, totalDropped = 0;
  for (int64_t s = 0; s < G; ++s) {
    Rank &rk = ranks[s];
    totalSent += rk.layout.sendRows;
    totalDropped += rk.layout.dropped;
    rk.out.assign(rk.T * H, NAN);
    cpu::combineRows(rk.back.data(), H, rk.layout, rk.w.data(), rk.out.data());
    // Dense reference: every kept choice through its expert, weighted.
    std::vector<int64_t> dest = destinationsRef(rk.ids, pl, cfg.capacity);
    std::vector<double> ref(rk.T * H, 0);
    for (int64_t t = 0; t < rk.T; ++t)
      for (int64_t j = 0; j < k; ++j) {
        if (dest[t * k + j] < 0)
          continue;
        std::vector<double> y = ffnRef(&rk.x[t * H], experts[rk.ids[t * k + j]],
                                       H, F, cfg.act, cfg.withUp, cfg.withBias);
        for (int64_t h = 0; h < H; ++h)
          ref[t * H + h] += rk.w[t * k + j] * y[h];
      }
    expectClose(rk.out.data(), ref, 1e-5, "rank " + std::to_string(s));
  }
  EXPECT_EQ(totalRecv, totalSent);
  EXPECT_EQ(totalSent + totalDropped, (37 + 29 + 11) * k);
  if (cfg.capacity < 0) {
    EXPECT_EQ(totalDropped, 0);
  } else {
    EXPECT_GT(totalDropped, 0);
  }
}

} // namespace

TEST(CpuKernels, DispatchExpertsCombineChain) {
  uint32_t seed = 100;
  for (Activation act : kActivations)
    for (bool withUp : {true, false})
      for (bool withBias : {false, true})
        for (int64_t capacity : {int64_t(-1), int64_t(2)}) {
          SCOPED_TRACE(testing::Message()
                       << activationName(act) << " w_up=" << withUp
                       << " biases=" << withBias << " capacity=" << capacity);
          runChain({act, withUp, withBias, capacity}, seed++);
        }
}
