//===- CpuKernelsTest.cpp - CPU kernels against plain-loop references -----===//
//
// Every kernel of moert/cpu/Kernels.h against a reference written here with
// plain loops (in double where it computes), on random data of odd sizes.
// Names, routing, GEMM and elementwise here; dispatch, the experts and the
// whole dispatch -> experts -> combine chain in CpuDispatchKernelsTest.cpp.
//
// Tolerances: the kernels compute in fp32 (BLAS sgemm, float loops); a dot
// product of n terms has a rounding error of at most about n * 6e-8 times
// the sum of the magnitudes of its terms. With n <= 23 here that is < 1.5e-6
// relative to the values' scale, so results are checked against the double
// references to 1e-5 of the largest magnitude of the reference tensor.
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

namespace {

//===----------------------------------------------------------------------===//
// Routing reference: full stable sorts, as written in docs/routing.md.
//===----------------------------------------------------------------------===//

/// Indices of v sorted by decreasing value; ties keep index order.
std::vector<int64_t> sortedDesc(const std::vector<double> &v) {
  std::vector<int64_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  return order;
}

void routeRef(const std::vector<float> &logits, const float *bias, int64_t T,
              int64_t E, const RouteParams &p, std::vector<float> &weights,
              std::vector<int64_t> &ids) {
  int64_t k = p.topK;
  weights.assign(T * k, 0);
  ids.assign(T * k, -1);
  for (int64_t t = 0; t < T; ++t) {
    // Scores are fp32 values (computed in double, rounded once).
    std::vector<float> s(E);
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; ++e)
      mx = std::max(mx, double(logits[t * E + e]));
    for (int64_t e = 0; e < E; ++e)
      sum += std::exp(logits[t * E + e] - mx);
    for (int64_t e = 0; e < E; ++e) {
      double x = logits[t * E + e];
      s[e] = p.score == ScoreFunc::softmax ? float(std::exp(x - mx) / sum)
                                           : float(1 / (1 + std::exp(-x)));
    }
    std::vector<double> sel(E);
    for (int64_t e = 0; e < E; ++e)
      sel[e] = bias ? double(s[e] + bias[e]) : double(s[e]);
    std::vector<bool> allowed(E, true);
    if (p.numGroups > 1) {
      int64_t per = E / p.numGroups;
      std::vector<double> gs(p.numGroups);
      for (int64_t g = 0; g < p.numGroups; ++g) {
        std::vector<double> members(sel.begin() + g * per,
                                    sel.begin() + (g + 1) * per);
        std::vector<int64_t> o = sortedDesc(members);
        gs[g] = members[o[0]];
        if (p.groupScore == GroupScore::top2_sum)
          gs[g] += members[o[1]];
      }
      std::vector<int64_t> go = sortedDesc(gs);
      allowed.assign(E, false);
      for (int64_t i = 0; i < p.topkGroups; ++i)
        for (int64_t e = go[i] * per; e < (go[i] + 1) * per; ++e)
          allowed[e] = true;
    }
    std::vector<double> masked(E);
    for (int64_t e = 0; e < E; ++e)
      masked[e] = allowed[e] ? sel[e] : -INFINITY;
    std::vector<int64_t> o = sortedDesc(masked);
    double wsum = 0;
    for (int64_t j = 0; j < k; ++j)
      wsum += s[o[j]];
    for (int64_t j = 0; j < k; ++j) {
      double w = s[o[j]];
      if (p.renormalize)
        w /= wsum + p.renormEps;
      weights[t * k + j] = float(w * p.scalingFactor);
      ids[t * k + j] = o[j];
    }
  }
}

struct RouteResult {
  std::vector<float> w;
  std::vector<int64_t> ids;
};

RouteResult runRoute(const std::vector<float> &logits, const float *bias,
                     int64_t T, int64_t E, const RouteParams &p) {
  RouteResult r;
  r.w.assign(T * p.topK, NAN);
  r.ids.assign(T * p.topK, -7);
  cpu::route(logits.data(), bias, T, E, p, r.w.data(), r.ids.data());
  return r;
}

} // namespace

//===----------------------------------------------------------------------===//
// Names
//===----------------------------------------------------------------------===//

TEST(CpuKernels, ParseNames) {
  ScoreFunc sf;
  EXPECT_TRUE(parseScoreFunc("softmax", sf) && sf == ScoreFunc::softmax);
  EXPECT_TRUE(parseScoreFunc("sigmoid", sf) && sf == ScoreFunc::sigmoid);
  EXPECT_FALSE(parseScoreFunc("softplus", sf));
  GroupScore gs;
  EXPECT_TRUE(parseGroupScore("max", gs) && gs == GroupScore::max);
  EXPECT_TRUE(parseGroupScore("top2_sum", gs) && gs == GroupScore::top2_sum);
  EXPECT_FALSE(parseGroupScore("sum", gs));
  Activation a;
  for (Activation want : kActivations) {
    EXPECT_TRUE(parseActivation(activationName(want), a));
    EXPECT_EQ(a, want);
  }
  EXPECT_FALSE(parseActivation("swish", a));
  EXPECT_FALSE(parseActivation("", a));

  const std::pair<const char *, cpu::Unary> unaries[] = {
      {"neg", cpu::Unary::neg},         {"exp", cpu::Unary::exp},
      {"sigmoid", cpu::Unary::sigmoid}, {"silu", cpu::Unary::silu},
      {"gelu", cpu::Unary::gelu},       {"gelu_tanh", cpu::Unary::gelu_tanh},
      {"relu", cpu::Unary::relu},       {"tanh", cpu::Unary::tanh},
      {"sqrt", cpu::Unary::sqrt},       {"rsqrt", cpu::Unary::rsqrt},
      {"copy", cpu::Unary::copy}};
  for (auto [name, want] : unaries) {
    cpu::Unary u;
    EXPECT_TRUE(cpu::parseUnary(name, u)) << name;
    EXPECT_EQ(u, want) << name;
  }
  cpu::Unary u;
  EXPECT_FALSE(cpu::parseUnary("log", u));
  const std::pair<const char *, cpu::Binary> binaries[] = {
      {"add", cpu::Binary::add}, {"sub", cpu::Binary::sub},
      {"mul", cpu::Binary::mul}, {"div", cpu::Binary::div},
      {"max", cpu::Binary::max}, {"min", cpu::Binary::min}};
  for (auto [name, want] : binaries) {
    cpu::Binary b;
    EXPECT_TRUE(cpu::parseBinary(name, b)) << name;
    EXPECT_EQ(b, want) << name;
  }
  cpu::Binary b;
  EXPECT_FALSE(cpu::parseBinary("pow", b));
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

TEST(CpuKernels, RouteHandWritten) {
  RouteParams p;
  // Ties go to the lower expert id: equal logits pick 0, 1, 2.
  p.topK = 3;
  std::vector<float> zeros(7, 0.0f);
  RouteResult r = runRoute(zeros, nullptr, 1, 7, p);
  EXPECT_EQ(r.ids, (std::vector<int64_t>{0, 1, 2}));
  for (float w : r.w)
    EXPECT_FLOAT_EQ(w, 1.0f / 7);
  p.renormalize = true;
  r = runRoute(zeros, nullptr, 1, 7, p);
  for (float w : r.w)
    EXPECT_FLOAT_EQ(w, 1.0f / 3);

  // Descending order, tie between experts 1 and 2.
  p = RouteParams();
  p.topK = 3;
  r = runRoute({1, 3, 3, 2}, nullptr, 1, 4, p);
  EXPECT_EQ(r.ids, (std::vector<int64_t>{1, 2, 3}));

  // The bias changes the winner, not the weights.
  p = RouteParams();
  p.score = ScoreFunc::sigmoid;
  std::vector<float> bias = {0, 0, 1, 0};
  r = runRoute({2, 1, 0, -1}, bias.data(), 1, 4, p);
  EXPECT_EQ(r.ids, (std::vector<int64_t>{2}));
  EXPECT_FLOAT_EQ(r.w[0], 0.5f);
  p.scalingFactor = 2.5;
  r = runRoute({2, 1, 0, -1}, bias.data(), 1, 4, p);
  EXPECT_FLOAT_EQ(r.w[0], 1.25f);
  p.renormalize = true;
  r = runRoute({2, 1, 0, -1}, bias.data(), 1, 4, p);
  EXPECT_FLOAT_EQ(r.w[0], 2.5f);

  // Groups of 2: group scores with max are {s(5), s(3), s(4), s(-5)} -> keep
  // groups 0 and 2; with top2_sum {s(5)+s(-5), 2 s(3), s(4)+s(-5), ...} ->
  // keep groups 1 and 0, and expert 2 beats its tie with 3.
  std::vector<float> logits = {5, -5, 3, 3, 4, -5, -5, -5};
  p = RouteParams();
  p.score = ScoreFunc::sigmoid;
  p.topK = 2;
  p.numGroups = 4;
  p.topkGroups = 2;
  p.groupScore = GroupScore::max;
  r = runRoute(logits, nullptr, 1, 8, p);
  EXPECT_EQ(r.ids, (std::vector<int64_t>{0, 4}));
  p.groupScore = GroupScore::top2_sum;
  r = runRoute(logits, nullptr, 1, 8, p);
  EXPECT_EQ(r.ids, (std::vector<int64_t>{0, 2}));
  EXPECT_FLOAT_EQ(r.w[0], float(1 / (1 + std::exp(-5.0))));
  EXPECT_FLOAT_EQ(r.w[1], float(1 / (1 + std::exp(-3.0))));

  // A NaN selection score ranks first (as in moe-eval).
  p = RouteParams();
  p.score = ScoreFunc::sigmoid;
  p.topK = 2;
  r = runRoute({0, NAN, 1}, nullptr, 1, 3, p);
  EXPECT_EQ(r.ids, (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(std::isnan(r.w[0]));

  // Group ties go to the lower group: groups 1, 2, 3 tie, 1 and 2 are kept.
  logits = {-1, -1, 0, 0, 0, 0, 0, 0};
  p.topK = 3;
  p.numGroups = 4;
  p.topkGroups = 2;
  for (GroupScore g : {GroupScore::max, GroupScore::top2_sum}) {
    p.groupScore = g;
    r = runRoute(logits, nullptr, 1, 8, p);
    EXPECT_EQ(r.ids, (std::vector<int64_t>{2, 3, 4}));
  }
}

TEST(CpuKernels, RouteMatchesReference) {
  std::mt19937 rng(1);
  const int64_t T = 37, k = 3;
  struct Grouping {
    int64_t E, groups, keep;
    GroupScore gs;
  };
  const Grouping groupings[] = {{7, 1, 1, GroupScore::max},
                                {12, 1, 1, GroupScore::max},
                                {12, 4, 2, GroupScore::max},
                                {12, 4, 2, GroupScore::top2_sum},
                                {12, 3, 1, GroupScore::top2_sum}};
  int64_t cases = 0;
  for (const Grouping &g : groupings)
    for (ScoreFunc sf : {ScoreFunc::softmax, ScoreFunc::sigmoid})
      for (bool withBias : {false, true})
        for (bool renorm : {false, true})
          for (double scaling : {1.0, 2.5})
            for (bool tieHeavy : {false, true}) {
              SCOPED_TRACE(testing::Message()
                           << "E=" << g.E << " groups=" << g.groups
                           << " keep=" << g.keep
                           << " top2_sum=" << (g.gs == GroupScore::top2_sum)
                           << " sigmoid=" << (sf == ScoreFunc::sigmoid)
                           << " bias=" << withBias << " renorm=" << renorm
                           << " scaling=" << scaling << " ties=" << tieHeavy);
              std::vector<float> logits = randomVec(rng, T * g.E, -3, 3);
              if (tieHeavy) // many equal logits: the tie rules decide
                for (float &x : logits)
                  x = std::round(x / 2);
              std::vector<float> bias = randomVec(rng, g.E, -0.2f, 0.2f);
              if (tieHeavy)
                std::fill(bias.begin(), bias.end(), 0.125f);
              RouteParams p;
              p.topK = k;
              p.score = sf;
              p.renormalize = renorm;
              // LFM2's epsilon on the sum, exaggerated to matter.
              p.renormEps = renorm && scaling != 1.0 ? 0.25 : 0.0;
              p.scalingFactor = scaling;
              p.numGroups = g.groups;
              p.topkGroups = g.keep;
              p.groupScore = g.gs;
              const float *b = withBias ? bias.data() : nullptr;
              std::vector<float> wRef;
              std::vector<int64_t> idsRef;
              routeRef(logits, b, T, g.E, p, wRef, idsRef);
              RouteResult r = runRoute(logits, b, T, g.E, p);
              EXPECT_EQ(r.ids, idsRef);
              for (int64_t i = 0; i < T * k; ++i)
                EXPECT_FLOAT_EQ(r.w[i], wRef[i]) << "weight " << i;
              ++cases;
            }
  EXPECT_EQ(cases, 5 * 2 * 2 * 2 * 2 * 2);
}

//===----------------------------------------------------------------------===//
// GEMM
//===----------------------------------------------------------------------===//

TEST(CpuKernels, Matmul) {
  std::mt19937 rng(2);
  const int64_t K = 19, N = 23;
  // M = 1 takes a GEMV (a decode step's rows), more rows sgemm.
  for (int64_t M : {37, 1})
    for (bool transB : {false, true})
      for (bool withBias : {false, true}) {
        SCOPED_TRACE(testing::Message() << "M=" << M << " transB=" << transB
                                        << " bias=" << withBias);
        std::vector<float> A = randomVec(rng, M * K), B = randomVec(rng, K * N),
                           bias = randomVec(rng, N);
        std::vector<double> ref(M * N);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double acc = withBias ? bias[n] : 0;
            for (int64_t kk = 0; kk < K; ++kk)
              acc += double(A[m * K + kk]) *
                     (transB ? B[n * K + kk] : B[kk * N + n]);
            ref[m * N + n] = acc;
          }
        std::vector<float> C(M * N, NAN);
        cpu::matmul(A.data(), B.data(), withBias ? bias.data() : nullptr,
                    C.data(), M, K, N, transB);
        expectClose(C.data(), ref, 1e-5, "C");
      }
  // K = 0: C is the bias (or 0).
  std::vector<float> bias = randomVec(rng, 5), C(3 * 5, NAN);
  cpu::matmul(nullptr, nullptr, bias.data(), C.data(), 3, 0, 5, false);
  for (int64_t i = 0; i < 15; ++i)
    EXPECT_EQ(C[i], bias[i % 5]);
  cpu::matmul(nullptr, nullptr, nullptr, C.data(), 3, 0, 5, false);
  for (float c : C)
    EXPECT_EQ(c, 0.0f);
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

TEST(CpuKernels, Unary) {
  std::mt19937 rng(10);
  const int64_t n = 37 * 19;
  struct Case {
    cpu::Unary op;
    const char *name;
    double (*ref)(double);
    float lo, hi;
  };
  const Case cases[] = {
      {cpu::Unary::neg, "neg", [](double x) { return -x; }, -4, 4},
      {cpu::Unary::exp, "exp", [](double x) { return std::exp(x); }, -4, 4},
      {cpu::Unary::sigmoid, "sigmoid",
       [](double x) { return 1 / (1 + std::exp(-x)); }, -8, 8},
      {cpu::Unary::silu, "silu",
       [](double x) { return activationRef(Activation::silu, x); }, -8, 8},
      {cpu::Unary::gelu, "gelu",
       [](double x) { return activationRef(Activation::gelu, x); }, -4, 4},
      {cpu::Unary::gelu_tanh, "gelu_tanh",
       [](double x) { return activationRef(Activation::gelu_tanh, x); }, -4, 4},
      {cpu::Unary::relu, "relu", [](double x) { return x > 0 ? x : 0; }, -4, 4},
      {cpu::Unary::tanh, "tanh", [](double x) { return std::tanh(x); }, -4, 4},
      {cpu::Unary::sqrt, "sqrt", [](double x) { return std::sqrt(x); }, 0.01f,
       9},
      {cpu::Unary::rsqrt, "rsqrt", [](double x) { return 1 / std::sqrt(x); },
       0.01f, 9},
      {cpu::Unary::copy, "copy", [](double x) { return x; }, -4, 4}};
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<float> x = randomVec(rng, n, c.lo, c.hi), y(n, NAN);
    cpu::unary(c.op, x.data(), y.data(), n);
    // libm float functions are within a few ulp (1e-6 relative); 1 + erf
    // and 1 + tanh cancel for negative x, which costs up to |x| * 6e-8
    // absolute (<= 1e-6 here).
    for (int64_t i = 0; i < n; ++i) {
      double ref = c.ref(x[i]);
      ASSERT_NEAR(y[i], ref, 1e-6 * std::fabs(ref) + 1e-6) << "x=" << x[i];
    }
  }
  // In place works (the executor may alias).
  std::vector<float> v = {1, 4, 9};
  cpu::unary(cpu::Unary::sqrt, v.data(), v.data(), 3);
  EXPECT_EQ(v, (std::vector<float>{1, 2, 3}));
}

namespace {

float binaryRef(cpu::Binary op, float a, float b) {
  switch (op) {
  case cpu::Binary::add:
    return a + b;
  case cpu::Binary::sub:
    return a - b;
  case cpu::Binary::mul:
    return a * b;
  case cpu::Binary::div:
    return a / b;
  case cpu::Binary::max:
    return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
  case cpu::Binary::min:
    return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b);
  }
  return NAN;
}

int64_t numel(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

/// Flat index into an operand of `shape` (right-aligned, broadcast) of the
/// output element at multi-index `idx`.
int64_t operandIndex(const std::vector<int64_t> &shape,
                     const std::vector<int64_t> &idx) {
  int64_t off = idx.size() - shape.size(), flat = 0;
  for (size_t d = 0; d < shape.size(); ++d)
    flat = flat * shape[d] + (shape[d] == 1 ? 0 : idx[d + off]);
  return flat;
}

} // namespace

TEST(CpuKernels, BinaryBroadcasting) {
  std::mt19937 rng(11);
  using Shape = std::vector<int64_t>;
  struct Case {
    Shape a, b, out;
  };
  const Case cases[] = {{{3, 4, 5}, {3, 4, 5}, {3, 4, 5}},
                        {{4, 1}, {3, 1, 5}, {3, 4, 5}},
                        {{5}, {3, 4, 1}, {3, 4, 5}},
                        {{}, {3, 4, 5}, {3, 4, 5}},
                        {{3, 4, 5}, {1}, {3, 4, 5}},
                        {{1, 1, 1}, {3, 4, 5}, {3, 4, 5}},
                        {{3, 1, 5}, {1, 4, 1}, {3, 4, 5}},
                        {{37, 19}, {19}, {37, 19}},
                        {{37, 1}, {37, 19}, {37, 19}},
                        {{2, 1, 3, 1}, {7, 1, 2}, {2, 7, 3, 2}},
                        {{}, {}, {}}};
  const cpu::Binary ops[] = {cpu::Binary::add, cpu::Binary::sub,
                             cpu::Binary::mul, cpu::Binary::div,
                             cpu::Binary::max, cpu::Binary::min};
  for (const Case &c : cases)
    for (cpu::Binary op : ops) {
      SCOPED_TRACE(testing::Message()
                   << "op " << int(op) << " a rank " << c.a.size() << " b rank "
                   << c.b.size() << " out rank " << c.out.size());
      std::vector<float> a = randomVec(rng, numel(c.a), 0.5f, 2),
                         b = randomVec(rng, numel(c.b), -2, 2);
      int64_t n = numel(c.out);
      std::vector<float> out(n, NAN);
      cpu::binary(op, a.data(), c.a, b.data(), c.b, out.data(), c.out);
      std::vector<int64_t> idx(c.out.size(), 0);
      for (int64_t i = 0; i < n; ++i) {
        float ref =
            binaryRef(op, a[operandIndex(c.a, idx)], b[operandIndex(c.b, idx)]);
        ASSERT_EQ(out[i], ref) << "element " << i;
        for (int64_t d = int64_t(idx.size()) - 1; d >= 0; --d) {
          if (++idx[d] < c.out[d])
            break;
          idx[d] = 0;
        }
      }
    }
  // max and min propagate NaN from either side.
  std::vector<float> a = {NAN, 1, 2}, b = {1, NAN, 3}, out(3);
  for (cpu::Binary op : {cpu::Binary::max, cpu::Binary::min}) {
    cpu::binary(op, a.data(), {3}, b.data(), {3}, out.data(), {3});
    EXPECT_TRUE(std::isnan(out[0]));
    EXPECT_TRUE(std::isnan(out[1]));
    EXPECT_EQ(out[2], op == cpu::Binary::max ? 3.0f : 2.0f);
  }
}

TEST(CpuKernels, Softmax) {
  std::mt19937 rng(12);
  const int64_t rows = 37, n = 19;
  for (float shift : {0.0f, 1000.0f, -1000.0f}) {
    SCOPED_TRACE(testing::Message() << "shift " << shift);
    std::vector<float> x = randomVec(rng, rows * n, -5, 5), y(rows * n, NAN);
    for (float &v : x)
      v += shift;
    cpu::softmax(x.data(), y.data(), rows, n);
    for (int64_t r = 0; r < rows; ++r) {
      double mx = -INFINITY, sum = 0;
      for (int64_t i = 0; i < n; ++i)
        mx = std::max(mx, double(x[r * n + i]));
      for (int64_t i = 0; i < n; ++i)
        sum += std::exp(x[r * n + i] - mx);
      for (int64_t i = 0; i < n; ++i) {
        double ref = std::exp(x[r * n + i] - mx) / sum;
        ASSERT_NEAR(y[r * n + i], ref, 1e-6 * ref + 1e-9);
      }
    }
  }
}
