//===- EvaluatorTest.cpp - the reference interpreter against plain loops --===//
//
// Each test parses a small function, evaluates it on random inputs (odd
// sizes, dynamic dims where it matters) and compares with a direct C++
// computation of the same thing.
//
//===----------------------------------------------------------------------===//

#include "moec/Eval/Evaluator.h"
#include "moec/InitAll.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace mlir;
using moec::eval::Tensor;

namespace {

class EvaluatorTest : public ::testing::Test {
protected:
  EvaluatorTest() {
    DialectRegistry registry;
    moec::registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
  }

  /// Parses `src`, evaluates @main on `inputs`; `error` gets the message.
  FailureOr<std::vector<Tensor>>
  eval(StringRef src, const std::vector<Tensor> &inputs, std::string &error) {
    module = parseSourceString<ModuleOp>(src, &ctx);
    if (!module) {
      error = "parse error";
      return failure();
    }
    auto func = module->lookupSymbol<func::FuncOp>("main");
    if (!func) {
      error = "no @main";
      return failure();
    }
    return moec::eval::evaluate(func, inputs, error);
  }

  /// Like eval, expecting success.
  std::vector<Tensor> run(StringRef src, const std::vector<Tensor> &inputs) {
    std::string error;
    auto r = eval(src, inputs, error);
    EXPECT_TRUE(succeeded(r)) << error;
    return succeeded(r) ? *r : std::vector<Tensor>();
  }

  /// Like eval, expecting failure; returns the message.
  std::string runError(StringRef src, const std::vector<Tensor> &inputs) {
    std::string error;
    auto r = eval(src, inputs, error);
    EXPECT_TRUE(failed(r));
    return error;
  }

  Tensor randomF32(std::vector<int64_t> shape) {
    Tensor t = Tensor::zeros(shape, Builder(&ctx).getF32Type());
    std::normal_distribution<float> dist;
    for (double &v : t.f)
      v = dist(rng);
    return t;
  }
  Tensor intTensor(std::vector<int64_t> shape, std::vector<int64_t> data,
                   unsigned width = 64) {
    Tensor t = Tensor::zeros(shape, Builder(&ctx).getIntegerType(width));
    t.i = std::move(data);
    return t;
  }
  Tensor f32Tensor(std::vector<int64_t> shape, std::vector<double> data) {
    Tensor t = Tensor::zeros(shape, Builder(&ctx).getF32Type());
    t.f = std::move(data);
    return t;
  }

  MLIRContext ctx;
  OwningOpRef<ModuleOp> module;
  std::mt19937 rng{42};
};

/// max |a - b| <= tol * max(1, max |b|), shapes equal.
void expectClose(const Tensor &got, const std::vector<double> &want,
                 std::vector<int64_t> shape, double tol = 1e-5) {
  ASSERT_EQ(got.shape, shape);
  ASSERT_EQ(got.f.size(), want.size());
  double scale = 1;
  for (double w : want)
    scale = std::max(scale, std::fabs(w));
  for (size_t k = 0; k < want.size(); ++k)
    EXPECT_NEAR(got.f[k], want[k], tol * scale) << "at " << k;
}

TEST_F(EvaluatorTest, GenericBroadcastWithIndex) {
  // out[i, j] = a[i, j] * b[j] + exp(a[i, j]) - i, with a dynamic row count.
  const char *src = R"mlir(
    #id = affine_map<(d0, d1) -> (d0, d1)>
    #row = affine_map<(d0, d1) -> (d1)>
    func.func @main(%a: tensor<?x5xf32>, %b: tensor<5xf32>) -> tensor<?x5xf32> {
      %c0 = arith.constant 0 : index
      %n = tensor.dim %a, %c0 : tensor<?x5xf32>
      %e = tensor.empty(%n) : tensor<?x5xf32>
      %r = linalg.generic {indexing_maps = [#id, #row, #id],
                           iterator_types = ["parallel", "parallel"]}
          ins(%a, %b : tensor<?x5xf32>, tensor<5xf32>) outs(%e : tensor<?x5xf32>) {
      ^bb0(%x: f32, %y: f32, %o: f32):
        %m = arith.mulf %x, %y : f32
        %ex = math.exp %x : f32
        %s = arith.addf %m, %ex : f32
        %i = linalg.index 0 : index
        %ii = arith.index_cast %i : index to i32
        %fi = arith.sitofp %ii : i32 to f32
        %d = arith.subf %s, %fi : f32
        linalg.yield %d : f32
      } -> tensor<?x5xf32>
      return %r : tensor<?x5xf32>
    })mlir";
  Tensor a = randomF32({3, 5}), b = randomF32({5});
  auto out = run(src, {a, b});
  ASSERT_EQ(out.size(), 1u);
  std::vector<double> want;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j) {
      float x = a.f[i * 5 + j], y = b.f[j];
      want.push_back(x * y + std::exp(x) - float(i));
    }
  expectClose(out[0], want, {3, 5});
}

TEST_F(EvaluatorTest, MatmulAndBatchMatmul) {
  const char *src = R"mlir(
    func.func @main(%a: tensor<7x13xf32>, %b: tensor<13x5xf32>,
                    %p: tensor<2x3x4xf32>, %q: tensor<2x4x3xf32>)
        -> (tensor<7x5xf32>, tensor<2x3x3xf32>) {
      %z = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<7x5xf32>
      %f = linalg.fill ins(%z : f32) outs(%e : tensor<7x5xf32>) -> tensor<7x5xf32>
      %m = linalg.matmul ins(%a, %b : tensor<7x13xf32>, tensor<13x5xf32>)
                         outs(%f : tensor<7x5xf32>) -> tensor<7x5xf32>
      %e2 = tensor.empty() : tensor<2x3x3xf32>
      %f2 = linalg.fill ins(%z : f32) outs(%e2 : tensor<2x3x3xf32>) -> tensor<2x3x3xf32>
      %bm = linalg.batch_matmul ins(%p, %q : tensor<2x3x4xf32>, tensor<2x4x3xf32>)
                                outs(%f2 : tensor<2x3x3xf32>) -> tensor<2x3x3xf32>
      return %m, %bm : tensor<7x5xf32>, tensor<2x3x3xf32>
    })mlir";
  Tensor a = randomF32({7, 13}), b = randomF32({13, 5});
  Tensor p = randomF32({2, 3, 4}), q = randomF32({2, 4, 3});
  auto out = run(src, {a, b, p, q});
  ASSERT_EQ(out.size(), 2u);
  std::vector<double> want(35, 0.0), want2(18, 0.0);
  for (int i = 0; i < 7; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 13; ++k)
        want[i * 5 + j] += a.f[i * 13 + k] * b.f[k * 5 + j];
  for (int x = 0; x < 2; ++x)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 4; ++k)
          want2[(x * 3 + i) * 3 + j] +=
              p.f[(x * 3 + i) * 4 + k] * q.f[(x * 4 + k) * 3 + j];
  expectClose(out[0], want, {7, 5});
  expectClose(out[1], want2, {2, 3, 3});
}

TEST_F(EvaluatorTest, ReduceTransposeBroadcast) {
  const char *src = R"mlir(
    func.func @main(%a: tensor<3x7xf32>) -> (tensor<3xf32>, tensor<7xf32>, tensor<7x3xf32>, tensor<2x7xf32>) {
      %ninf = arith.constant 0xFF800000 : f32
      %z = arith.constant 0.0 : f32
      %e3 = tensor.empty() : tensor<3xf32>
      %i3 = linalg.fill ins(%ninf : f32) outs(%e3 : tensor<3xf32>) -> tensor<3xf32>
      %mx = linalg.reduce ins(%a : tensor<3x7xf32>) outs(%i3 : tensor<3xf32>) dimensions = [1]
        (%in: f32, %acc: f32) {
          %m = arith.maximumf %in, %acc : f32
          linalg.yield %m : f32
        }
      %e7 = tensor.empty() : tensor<7xf32>
      %i7 = linalg.fill ins(%z : f32) outs(%e7 : tensor<7xf32>) -> tensor<7xf32>
      %sum = linalg.reduce ins(%a : tensor<3x7xf32>) outs(%i7 : tensor<7xf32>) dimensions = [0]
        (%in: f32, %acc: f32) {
          %s = arith.addf %in, %acc : f32
          linalg.yield %s : f32
        }
      %et = tensor.empty() : tensor<7x3xf32>
      %t = linalg.transpose ins(%a : tensor<3x7xf32>) outs(%et : tensor<7x3xf32>) permutation = [1, 0]
      %eb = tensor.empty() : tensor<2x7xf32>
      %b = linalg.broadcast ins(%sum : tensor<7xf32>) outs(%eb : tensor<2x7xf32>) dimensions = [0]
      return %mx, %sum, %t, %b : tensor<3xf32>, tensor<7xf32>, tensor<7x3xf32>, tensor<2x7xf32>
    })mlir";
  Tensor a = randomF32({3, 7});
  auto out = run(src, {a});
  ASSERT_EQ(out.size(), 4u);
  std::vector<double> mx(3, -INFINITY), sum(7, 0.0), t(21), b(14);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 7; ++j) {
      mx[i] = std::max(mx[i], a.f[i * 7 + j]);
      sum[j] += a.f[i * 7 + j];
      t[j * 3 + i] = a.f[i * 7 + j];
    }
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 7; ++j)
      b[r * 7 + j] = sum[j];
  expectClose(out[0], mx, {3}, 0);
  expectClose(out[1], sum, {7});
  expectClose(out[2], t, {7, 3}, 0);
  expectClose(out[3], b, {2, 7});
}

TEST_F(EvaluatorTest, Softmax) {
  const char *src = R"mlir(
    func.func @main(%a: tensor<3x7xf32>) -> tensor<3x7xf32> {
      %e = tensor.empty() : tensor<3x7xf32>
      %s = linalg.softmax dimension(1) ins(%a : tensor<3x7xf32>)
                                       outs(%e : tensor<3x7xf32>) -> tensor<3x7xf32>
      return %s : tensor<3x7xf32>
    })mlir";
  Tensor a = randomF32({3, 7});
  auto out = run(src, {a});
  ASSERT_EQ(out.size(), 1u);
  std::vector<double> want(21);
  for (int i = 0; i < 3; ++i) {
    double sum = 0;
    for (int j = 0; j < 7; ++j)
      sum += std::exp(a.f[i * 7 + j]);
    for (int j = 0; j < 7; ++j)
      want[i * 7 + j] = std::exp(a.f[i * 7 + j]) / sum;
  }
  expectClose(out[0], want, {3, 7});
}

TEST_F(EvaluatorTest, TopKTiesGoToLowerIndex) {
  const char *src = R"mlir(
    func.func @main(%x: tensor<2x5xf32>) -> (tensor<2x3xf32>, tensor<2x3xi64>, tensor<2x2xi64>) {
      %v, %i = moe.topk %x k 3 axis 1 : tensor<2x5xf32> -> tensor<2x3xf32>, tensor<2x3xi64>
      %v2, %i2 = moe.topk %x k 2 axis 1 {largest = false} : tensor<2x5xf32> -> tensor<2x2xf32>, tensor<2x2xi64>
      return %v, %i, %i2 : tensor<2x3xf32>, tensor<2x3xi64>, tensor<2x2xi64>
    })mlir";
  Tensor x = f32Tensor({2, 5}, {1, 3, 3, 2, 3, /**/ 0, -1, 5, -1, 0});
  auto out = run(src, {x});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].f, (std::vector<double>{3, 3, 3, 5, 0, 0}));
  EXPECT_EQ(out[1].i, (std::vector<int64_t>{1, 2, 4, 2, 0, 4}));
  EXPECT_EQ(out[2].i, (std::vector<int64_t>{0, 3, 1, 3}));
}

TEST_F(EvaluatorTest, NonZeroDynamic) {
  const char *src = R"mlir(
    func.func @main(%m: tensor<3x4xf32>) -> tensor<2x?xi64> {
      %nz = moe.nonzero %m : tensor<3x4xf32> -> tensor<2x?xi64>
      return %nz : tensor<2x?xi64>
    })mlir";
  Tensor m = f32Tensor({3, 4}, {0, 1, 0, 0, /**/ 2, 0, 0, 3, /**/ 0, 0, 0, -1});
  auto out = run(src, {m});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{0, 1, 1, 2, 1, 0, 3, 3}));
}

TEST_F(EvaluatorTest, ScatterNDAdd) {
  const char *src = R"mlir(
    func.func @main(%d: tensor<5x3xf32>, %idx: tensor<?x1xi64>, %u: tensor<?x3xf32>) -> tensor<5x3xf32> {
      %r = moe.scatter_nd %d, %idx, %u {reduction = #moe<reduction add>}
          : (tensor<5x3xf32>, tensor<?x1xi64>, tensor<?x3xf32>) -> tensor<5x3xf32>
      return %r : tensor<5x3xf32>
    })mlir";
  Tensor d = randomF32({5, 3}), u = randomF32({4, 3});
  Tensor idx = intTensor({4, 1}, {1, 3, 1, -1});
  auto out = run(src, {d, idx, u});
  ASSERT_EQ(out.size(), 1u);
  std::vector<double> want = d.f;
  int64_t rows[] = {1, 3, 1, 4};
  for (int t = 0; t < 4; ++t)
    for (int j = 0; j < 3; ++j)
      want[rows[t] * 3 + j] =
          float(float(want[rows[t] * 3 + j]) + float(u.f[t * 3 + j]));
  expectClose(out[0], want, {5, 3}, 0);

  Tensor bad = intTensor({4, 1}, {1, 3, 5, 0});
  EXPECT_NE(runError(src, {d, bad, u}).find("index 5 out of range"),
            std::string::npos);
}

/// Routing reference: repeated arg-max (ties: lower id).
struct RouteRef {
  std::vector<double> w;
  std::vector<int64_t> ids;
};
RouteRef routeRef(const Tensor &logits, const Tensor *bias, int64_t k,
                  bool sigmoid, bool renorm, double scale, int64_t groups,
                  int64_t keepGroups) {
  int64_t tokens = logits.shape[0], e = logits.shape[1], per = e / groups;
  RouteRef r;
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<float> s(e), sel(e);
    float mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < e; ++j)
      mx = std::max(mx, float(logits.f[t * e + j]));
    for (int64_t j = 0; j < e; ++j)
      sum += std::exp(float(logits.f[t * e + j]) - mx);
    for (int64_t j = 0; j < e; ++j) {
      float x = logits.f[t * e + j];
      s[j] = sigmoid ? 1 / (1 + std::exp(-x)) : std::exp(x - mx) / sum;
      sel[j] = s[j] + (bias ? float(bias->f[j]) : 0.f);
    }
    std::vector<bool> allowed(e, true);
    if (groups > 1) {
      std::vector<float> gs(groups);
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<float> m(sel.begin() + g * per,
                             sel.begin() + (g + 1) * per);
        std::sort(m.rbegin(), m.rend());
        gs[g] = m[0] + m[1]; // top2_sum
      }
      std::vector<bool> keep(groups, false);
      for (int64_t n = 0; n < keepGroups; ++n) {
        int64_t best = -1;
        for (int64_t g = 0; g < groups; ++g)
          if (!keep[g] && (best < 0 || gs[g] > gs[best]))
            best = g;
        keep[best] = true;
      }
      for (int64_t j = 0; j < e; ++j)
        allowed[j] = keep[j / per];
    }
    std::vector<int64_t> chosen;
    for (int64_t n = 0; n < k; ++n) {
      int64_t best = -1;
      for (int64_t j = 0; j < e; ++j)
        if (allowed[j] && (best < 0 || sel[j] > sel[best]))
          best = j;
      allowed[best] = false;
      chosen.push_back(best);
    }
    float total = 0;
    for (int64_t j : chosen)
      total += s[j];
    for (int64_t j : chosen) {
      r.w.push_back((renorm ? s[j] / total : s[j]) * scale);
      r.ids.push_back(j);
    }
  }
  return r;
}

TEST_F(EvaluatorTest, RouteSoftmaxRenormalized) {
  const char *src = R"mlir(
    func.func @main(%l: tensor<?x8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi64>) {
      %w, %i = moe.route %l top_k 2 {score_func = #moe<score_func softmax>, renormalize = true}
          : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi64>
      return %w, %i : tensor<?x2xf32>, tensor<?x2xi64>
    })mlir";
  Tensor l = randomF32({7, 8});
  auto out = run(src, {l});
  ASSERT_EQ(out.size(), 2u);
  RouteRef ref = routeRef(l, nullptr, 2, false, true, 1.0, 1, 1);
  EXPECT_EQ(out[1].i, ref.ids);
  expectClose(out[0], ref.w, {7, 2});
}

TEST_F(EvaluatorTest, RouteSigmoidBiasGroups) {
  const char *src = R"mlir(
    func.func @main(%l: tensor<5x8xf32>, %b: tensor<8xf32>) -> (tensor<5x3xf32>, tensor<5x3xi64>) {
      %w, %i = moe.route %l bias %b top_k 3 {score_func = #moe<score_func sigmoid>,
          renormalize = true, scaling_factor = 2.5 : f64, num_groups = 4 : i64,
          topk_groups = 2 : i64, group_score = #moe<group_score top2_sum>}
          : tensor<5x8xf32>, tensor<8xf32> -> tensor<5x3xf32>, tensor<5x3xi64>
      return %w, %i : tensor<5x3xf32>, tensor<5x3xi64>
    })mlir";
  Tensor l = randomF32({5, 8}), b = randomF32({8});
  auto out = run(src, {l, b});
  ASSERT_EQ(out.size(), 2u);
  RouteRef ref = routeRef(l, &b, 3, true, true, 2.5, 4, 2);
  EXPECT_EQ(out[1].i, ref.ids);
  expectClose(out[0], ref.w, {5, 3});
}

TEST_F(EvaluatorTest, ExpertsGatedSiluWithOffset) {
  const char *src = R"mlir(
    func.func @main(%x: tensor<5x6xf32>, %idx: tensor<5x2xi64>, %w: tensor<5x2xf32>,
                    %g: tensor<3x6x7xf32>, %u: tensor<3x6x7xf32>, %d: tensor<3x7x6xf32>)
        -> tensor<5x6xf32> {
      %y = moe.experts %x, %idx, %w gate %g up %u down %d
          {activation = #moe<activation silu>, expert_offset = 1 : i64}
          : (tensor<5x6xf32>, tensor<5x2xi64>, tensor<5x2xf32>, tensor<3x6x7xf32>,
             tensor<3x6x7xf32>, tensor<3x7x6xf32>) -> tensor<5x6xf32>
      return %y : tensor<5x6xf32>
    })mlir";
  Tensor x = randomF32({5, 6}), w = randomF32({5, 2});
  Tensor g = randomF32({3, 6, 7}), u = randomF32({3, 6, 7}),
         d = randomF32({3, 7, 6});
  // Global ids 1..3 are held; 0 and 4 contribute nothing.
  Tensor idx = intTensor({5, 2}, {1, 2, 3, 0, 4, 2, 1, 1, 0, 4});
  auto out = run(src, {x, idx, w, g, u, d});
  ASSERT_EQ(out.size(), 1u);
  std::vector<double> want(30, 0.0);
  for (int t = 0; t < 5; ++t)
    for (int j = 0; j < 2; ++j) {
      int64_t e = idx.i[t * 2 + j] - 1;
      if (e < 0 || e >= 3)
        continue;
      std::vector<double> hid(7);
      for (int c = 0; c < 7; ++c) {
        double a = 0, b = 0;
        for (int i = 0; i < 6; ++i) {
          a += x.f[t * 6 + i] * g.f[(e * 6 + i) * 7 + c];
          b += x.f[t * 6 + i] * u.f[(e * 6 + i) * 7 + c];
        }
        hid[c] = a / (1 + std::exp(-a)) * b;
      }
      for (int o = 0; o < 6; ++o) {
        double y = 0;
        for (int c = 0; c < 7; ++c)
          y += hid[c] * d.f[(e * 7 + c) * 6 + o];
        want[t * 6 + o] += w.f[t * 2 + j] * y;
      }
    }
  expectClose(out[0], want, {5, 6}, 1e-5);
}

// weight_input (Llama 4): out[t] = sum_j FFN_{idx[t,j]}(w[t,j] * x[t]); a
// SwiGLU FFN is not linear, so this differs from w[t,j] * FFN(x[t]).
TEST_F(EvaluatorTest, ExpertsWeightInput) {
  const char *src = R"mlir(
    func.func @main(%x: tensor<4x6xf32>, %idx: tensor<4x2xi64>, %w: tensor<4x2xf32>,
                    %g: tensor<3x6x5xf32>, %u: tensor<3x6x5xf32>, %d: tensor<3x5x6xf32>)
        -> tensor<4x6xf32> {
      %y = moe.experts %x, %idx, %w gate %g up %u down %d
          {activation = #moe<activation silu>, weight_input}
          : (tensor<4x6xf32>, tensor<4x2xi64>, tensor<4x2xf32>, tensor<3x6x5xf32>,
             tensor<3x6x5xf32>, tensor<3x5x6xf32>) -> tensor<4x6xf32>
      return %y : tensor<4x6xf32>
    })mlir";
  Tensor x = randomF32({4, 6}), w = randomF32({4, 2});
  Tensor g = randomF32({3, 6, 5}), u = randomF32({3, 6, 5}),
         d = randomF32({3, 5, 6});
  Tensor idx = intTensor({4, 2}, {0, 2, 1, 0, 2, 1, 1, 2});
  auto out = run(src, {x, idx, w, g, u, d});
  ASSERT_EQ(out.size(), 1u);
  std::vector<double> want(24, 0.0), plain(24, 0.0);
  for (int t = 0; t < 4; ++t)
    for (int j = 0; j < 2; ++j) {
      int64_t e = idx.i[t * 2 + j];
      double wt = w.f[t * 2 + j];
      for (bool scaleInput : {true, false}) {
        double s = scaleInput ? wt : 1.0;
        std::vector<double> hid(5);
        for (int c = 0; c < 5; ++c) {
          double a = 0, b = 0;
          for (int i = 0; i < 6; ++i) {
            a += float(s * x.f[t * 6 + i]) * g.f[(e * 6 + i) * 5 + c];
            b += float(s * x.f[t * 6 + i]) * u.f[(e * 6 + i) * 5 + c];
          }
          hid[c] = a / (1 + std::exp(-a)) * b;
        }
        for (int o = 0; o < 6; ++o) {
          double y = 0;
          for (int c = 0; c < 5; ++c)
            y += hid[c] * d.f[(e * 5 + c) * 6 + o];
          (scaleInput ? want : plain)[t * 6 + o] += scaleInput ? y : wt * y;
        }
      }
    }
  expectClose(out[0], want, {4, 6}, 1e-5);
  // The two semantics differ on this data (the check above is not vacuous).
  double diff = 0;
  for (int k = 0; k < 24; ++k)
    diff = std::max(diff, std::abs(want[k] - plain[k]));
  EXPECT_GT(diff, 1e-2);
}

TEST_F(EvaluatorTest, IntegerWidthsAndElementwiseTensors) {
  const char *src = R"mlir(
    func.func @main(%a: tensor<4xi8>, %b: tensor<4xi8>) -> (tensor<4xi8>, tensor<4xi32>, tensor<4xi1>, tensor<4xi8>) {
      %s = arith.addi %a, %b : tensor<4xi8>
      %x = arith.extui %a : tensor<4xi8> to tensor<4xi32>
      %c = arith.cmpi ult, %a, %b : tensor<4xi8>
      %d = arith.divsi %a, %b : tensor<4xi8>
      return %s, %x, %c, %d : tensor<4xi8>, tensor<4xi32>, tensor<4xi1>, tensor<4xi8>
    })mlir";
  Tensor a = intTensor({4}, {127, -128, -1, 5}, 8);
  Tensor b = intTensor({4}, {1, -1, 2, -3}, 8);
  auto out = run(src, {a, b});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{-128, 127, 1, 2}));
  EXPECT_EQ(out[1].i, (std::vector<int64_t>{127, 128, 255, 5}));
  EXPECT_EQ(out[2].i, (std::vector<int64_t>{0, 1, 0, 1}));
  EXPECT_EQ(out[3].i, (std::vector<int64_t>{127, -128, 0, -1}));

  Tensor zero = intTensor({4}, {1, 1, 0, 1}, 8);
  EXPECT_NE(runError(src, {a, zero}).find("division by zero"),
            std::string::npos);
}

TEST_F(EvaluatorTest, TensorDataMovementAndResources) {
  std::string text = R"mlir(
    func.func @main(%a: tensor<2x3xf32>) -> (tensor<6xf32>, tensor<3x2xf32>, tensor<4x3xf32>, tensor<2xf32>, tensor<4x3xf32>) {
      %c = tensor.collapse_shape %a [[0, 1]] : tensor<2x3xf32> into tensor<6xf32>
      %e = tensor.expand_shape %c [[0, 1]] output_shape [3, 2] : tensor<6xf32> into tensor<3x2xf32>
      %w = arith.constant dense_resource<blob1> : tensor<2x3xf32>
      %cat = tensor.concat dim(0) %a, %w : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
      %s = tensor.extract_slice %cat[1, 2] [2, 1] [2, 1] : tensor<4x3xf32> to tensor<2xf32>
      %z = arith.constant dense<0.0> : tensor<4x3xf32>
      %ins = tensor.insert_slice %a into %z[1, 0] [2, 3] [1, 1] : tensor<2x3xf32> into tensor<4x3xf32>
      return %c, %e, %cat, %s, %ins : tensor<6xf32>, tensor<3x2xf32>, tensor<4x3xf32>, tensor<2xf32>, tensor<4x3xf32>
    }
    {-#
      dialect_resources: {
        builtin: {
          blob1: "0x040000000000803F0000004000004040000080400000A0400000C040"
        }
      }
    #-})mlir";
  Tensor a = f32Tensor({2, 3}, {10, 11, 12, 13, 14, 15});
  auto out = run(text, {a});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{6}));
  EXPECT_EQ(out[0].f, a.f);
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(out[2].f,
            (std::vector<double>{10, 11, 12, 13, 14, 15, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(out[3].f, (std::vector<double>{15, 6}));
  EXPECT_EQ(out[4].f,
            (std::vector<double>{0, 0, 0, 10, 11, 12, 13, 14, 15, 0, 0, 0}));
}

TEST_F(EvaluatorTest, ErrorsNameTheOp) {
  const char *unsupported = R"mlir(
    func.func @main(%a: tensor<2xi32>) -> tensor<2xi32> {
      %c = math.ctpop %a : tensor<2xi32>
      return %c : tensor<2xi32>
    })mlir";
  std::string err = runError(unsupported, {intTensor({2}, {1, 2}, 32)});
  EXPECT_NE(err.find("cannot evaluate 'math.ctpop'"), std::string::npos) << err;

  // Shapes that disagree at run time (dynamic dims in the types).
  const char *mismatch = R"mlir(
    #id = affine_map<(d0) -> (d0)>
    func.func @main(%a: tensor<?xf32>, %b: tensor<?xf32>) -> tensor<?xf32> {
      %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel"]}
          ins(%a : tensor<?xf32>) outs(%b : tensor<?xf32>) {
      ^bb0(%x: f32, %o: f32):
        linalg.yield %x : f32
      } -> tensor<?xf32>
      return %r : tensor<?xf32>
    })mlir";
  err = runError(mismatch, {randomF32({3}), randomF32({4})});
  EXPECT_NE(err.find("cannot evaluate 'linalg.generic'"), std::string::npos)
      << err;
  EXPECT_NE(err.find("does not match the loop ranges"), std::string::npos)
      << err;

  const char *extract = R"mlir(
    func.func @main(%a: tensor<3xf32>, %i: tensor<1xi64>) -> tensor<1xf32> {
      %c0 = arith.constant 0 : index
      %k = tensor.extract %i[%c0] : tensor<1xi64>
      %ki = arith.index_cast %k : i64 to index
      %v = tensor.extract %a[%ki] : tensor<3xf32>
      %r = tensor.from_elements %v : tensor<1xf32>
      return %r : tensor<1xf32>
    })mlir";
  auto ok = run(extract, {randomF32({3}), intTensor({1}, {2})});
  ASSERT_EQ(ok.size(), 1u);
  err = runError(extract, {randomF32({3}), intTensor({1}, {3})});
  EXPECT_NE(err.find("out of range"), std::string::npos) << err;

  // Wrong inputs.
  err = runError(extract, {randomF32({4}), intTensor({1}, {0})});
  EXPECT_NE(err.find("input 0 has shape [4]"), std::string::npos) << err;
  err = runError(extract, {randomF32({3})});
  EXPECT_NE(err.find("takes 2 inputs, 1 given"), std::string::npos) << err;
}

} // namespace
