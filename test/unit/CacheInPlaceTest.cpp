//===- CacheInPlaceTest.cpp - boxCachePairs on hand-built decode plans ----===//
//
// A decode step as moec lowers one: past_k_0 [1, 2, P, 4] (P <= 8) and a
// new row [1, 2, 1, 4] concatenated by kernel @cat into present_k_0
// [1, 2, P + 1, 4], which a second kernel reads through a view that adds a
// unit dim. moec::boxCachePairs must put the pair in place exactly when the
// kernel is the concatenation and only kernels touch the pair, and say why
// not otherwise.
//
//===----------------------------------------------------------------------===//

#include "moec/Conversion/CacheInPlace.h"
#include "moec/InitAll.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

using namespace mlir;

namespace {

/// OutlineKernels' concatenation of %arg1 (past) and %arg0 (the row) along
/// dim 2, with checkKernelConstants' tensor.dim for past's size; `pastAt`
/// is the index into past along dim 2 (`%clamped` in the right form).
/// `batch` sequences: the tensors are [batch, 2, ...], indexed by d0.
std::string catKernel(const std::string &pastAt = "%clamped", int batch = 1) {
  std::string k = R"(
func.func @cat(%arg0: tensor<1x2x1x4xf32>, %arg1: tensor<1x2x8x4xf32>) -> tensor<1x2x9x4xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %p = tensor.dim %arg1, %c2 : tensor<1x2x8x4xf32>
  %m1 = arith.constant -1 : index
  %last = arith.addi %p, %m1 : index
  %e = tensor.empty() : tensor<1x2x9x4xf32>
  %r = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>],
      iterator_types = ["parallel", "parallel", "parallel", "parallel"]} outs(%e : tensor<1x2x9x4xf32>) {
  ^bb0(%out: f32):
    %i1 = linalg.index 1 : index
    %i2 = linalg.index 2 : index
    %i3 = linalg.index 3 : index
    %s = arith.subi %i2, %p : index
    %s0 = arith.maxsi %s, %c0 : index
    %s1 = arith.minsi %s0, %c0 : index
    %row = tensor.extract %arg0[%c0, %i1, %s1, %i3] : tensor<1x2x1x4xf32>
    %q0 = arith.maxsi %i2, %c0 : index
    %clamped = arith.minsi %q0, %last : index
    %shifted = arith.addi %i2, %c1 : index
    %old = tensor.extract %arg1[%c0, %i1, )" +
                  pastAt + R"(, %i3] : tensor<1x2x8x4xf32>
    %before = arith.cmpi slt, %i2, %p : index
    %v = arith.select %before, %old, %row : f32
    linalg.yield %v : f32
  } -> tensor<1x2x9x4xf32>
  return %r : tensor<1x2x9x4xf32>
}
)";
  if (batch == 1)
    return k;
  // [batch, 2, ...] read at index d0 of the result.
  std::string b = std::to_string(batch) + "x2x";
  for (size_t at; (at = k.find("<1x2x")) != std::string::npos;)
    k.replace(at + 1, 4, b);
  k.replace(k.find("%i1 = linalg.index 1"), 0,
            "%i0 = linalg.index 0 : index\n    ");
  for (size_t at; (at = k.find("[%c0, %i1")) != std::string::npos;)
    k.replace(at, 9, "[%i0, %i1");
  return k;
}

class CacheInPlaceTest : public ::testing::Test {
protected:
  CacheInPlaceTest() {
    DialectRegistry registry;
    moec::registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
  }

  int32_t value(moert::Plan &p, const char *name, std::vector<int64_t> shape,
                moert::ValueKind kind) {
    moert::Value v;
    v.id = int32_t(p.values.size());
    v.name = name;
    v.shape = std::move(shape);
    v.kind = kind;
    p.values.push_back(v);
    return v.id;
  }

  void kernel(moert::Plan &p, const char *name, std::vector<int32_t> in,
              int32_t out, bool isKernel = true) {
    moert::Step s;
    if (isKernel) {
      moert::fb::KernelT k;
      k.name = name;
      s.attrs.Set(k);
    } else {
      s.attrs.Set(moert::fb::SoftmaxT());
    }
    s.inputs = std::move(in);
    s.outputs = {out};
    p.steps.push_back(s);
  }

  /// The decode step; `useStep` false: the view's reader is a softmax step,
  /// `merge`: the view is [1, 18, 4] (length merged with the heads);
  /// `batch` > 1: [batch, 2, ...] tensors and the view [batch * 2, P + 1, 4]
  /// (attention's batch of heads, moe-fold-kv-repeat's).
  moert::Plan decodePlan(bool useStep = true, bool merge = false,
                         int64_t batch = 1) {
    moert::Plan p;
    p.mesh = {{"ep", 1}};
    int32_t past =
        value(p, "past_k_0", {batch, 2, 8, 4}, moert::ValueKind::input);
    int32_t row = value(p, "row", {batch, 2, 1, 4}, moert::ValueKind::temp);
    int32_t present =
        value(p, "present", {batch, 2, 9, 4}, moert::ValueKind::output);
    int32_t view = value(p, "view",
                         merge       ? std::vector<int64_t>{1, 18, 4}
                         : batch > 1 ? std::vector<int64_t>{batch * 2, 9, 4}
                                     : std::vector<int64_t>{1, 2, 1, 9, 4},
                         moert::ValueKind::temp);
    int32_t y = value(p, "y", {1, 2, 1, 9, 4}, moert::ValueKind::output);
    p.values[size_t(past)].symDims = {{2, moert::SymKind::T, 1, 0}};
    p.values[size_t(present)].symDims = {{2, moert::SymKind::T, 1, 1}};
    p.values[size_t(view)].symDims = {{merge || batch > 1 ? 1 : 3,
                                       moert::SymKind::T, merge ? 2 : 1,
                                       merge ? 2 : 1}};
    p.values[size_t(view)].root = present;
    p.values[size_t(past)].outside = p.values[size_t(present)].outside = true;
    kernel(p, "cat", {row, past}, present);
    kernel(p, "use", {view}, y, useStep);
    moert::ModelIO in, out, out2;
    in.name = "past_k_0";
    in.value = past;
    out.name = "present_k_0";
    out.value = present;
    out2.name = "y";
    out2.value = y;
    p.inputs = {in};
    p.outputs = {out, out2};
    return p;
  }

  /// boxCachePairs on `p` with kernel @cat from `src`: the reasons given.
  std::vector<std::string> box(moert::Plan &p, const std::string &src) {
    module = parseSourceString<ModuleOp>(src, &ctx);
    EXPECT_TRUE(module) << "parse error";
    std::vector<std::string> why;
    moec::boxCachePairs(p, *module, &why);
    return why;
  }

  MLIRContext ctx;
  OwningOpRef<ModuleOp> module;
};

TEST_F(CacheInPlaceTest, ConcatenationGoesInPlace) {
  moert::Plan p = decodePlan();
  std::vector<std::string> why = box(p, catKernel());
  EXPECT_TRUE(why.empty()) << why[0];
  // Past, present and the view are boxed at present's maximum.
  for (int v : {0, 2, 3})
    EXPECT_TRUE(p.values[size_t(v)].boxed) << v;
  EXPECT_FALSE(p.values[1].boxed);
  EXPECT_FALSE(p.values[4].boxed);
  EXPECT_EQ(p.values[0].shape, (std::vector<int64_t>{1, 2, 9, 4}));
  EXPECT_EQ(p.values[2].shape, (std::vector<int64_t>{1, 2, 9, 4}));
  EXPECT_EQ(p.values[3].shape, (std::vector<int64_t>{1, 2, 1, 9, 4}));
  int past = -1, rows = -1;
  ASSERT_TRUE(moec::appendsToCache(p, p.steps[0], past, rows));
  EXPECT_EQ(past, 1);
  EXPECT_EQ(rows, 0);
  EXPECT_FALSE(moec::appendsToCache(p, p.steps[1], past, rows));
}

TEST_F(CacheInPlaceTest, OtherKernelsStaySwapped) {
  // past[i + 1]: a shift, which in one buffer would read what it wrote.
  moert::Plan p = decodePlan();
  std::vector<std::string> why = box(p, catKernel("%shifted"));
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("kernel 'cat' is not a concatenation"),
            std::string::npos)
      << why[0];
  EXPECT_FALSE(p.values[0].boxed);
  EXPECT_EQ(p.values[0].shape, (std::vector<int64_t>{1, 2, 8, 4}));
}

TEST_F(CacheInPlaceTest, OnlyKernelsMayTouchThePair) {
  moert::Plan p = decodePlan(/*useStep=*/false);
  std::vector<std::string> why = box(p, catKernel());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("step 1 (softmax) reads or writes it"),
            std::string::npos)
      << why[0];
  EXPECT_FALSE(p.values[2].boxed);
}

TEST_F(CacheInPlaceTest, ViewsKeepTheLengthApart) {
  moert::Plan p = decodePlan(true, /*merge=*/true);
  std::vector<std::string> why = box(p, catKernel());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("view v3 merges the cache's length"), std::string::npos)
      << why[0];
}

TEST_F(CacheInPlaceTest, ViewsMayMergeTheDimsBeforeTheLength) {
  // [2, 2, P, 4] seen as [4, P, 4] (a batch of heads): the same element at
  // the box's strides of either, so the pair goes in place, the view with
  // the box [4, 9, 4].
  moert::Plan p = decodePlan(true, false, /*batch=*/2);
  std::vector<std::string> why = box(p, catKernel("%clamped", 2));
  EXPECT_TRUE(why.empty()) << why[0];
  EXPECT_TRUE(p.values[3].boxed);
  EXPECT_EQ(p.values[3].shape, (std::vector<int64_t>{4, 9, 4}));
  EXPECT_EQ(p.values[3].boxBytes(), p.values[2].boxBytes());
  EXPECT_TRUE(p.values[3].boxRowsOfBatches());
  // Merged with the length, it is not.
  moert::Plan q = decodePlan(true, false, 2);
  q.values[3].shape = {2, 18, 4};
  q.values[3].symDims = {{1, moert::SymKind::T, 2, 2}};
  why = box(q, catKernel("%clamped", 2));
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("view v3 merges the cache's length"), std::string::npos)
      << why[0];
}

TEST_F(CacheInPlaceTest, RowsMustBeTheDifference) {
  // Present two rows longer than past, but the kernel appends one.
  moert::Plan p = decodePlan();
  p.values[2].symDims[0].b = 2;
  std::vector<std::string> why = box(p, catKernel());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("the rows appended are not [1,2,2,4]"),
            std::string::npos)
      << why[0];
}

} // namespace
