//===- SymbolCheckTest.cpp - inferPlanSymbols on hand-built plans ---------===//
//
// The differential compile's inference (moec/Conversion/SymbolCheck.h) on a
// small plan built by hand at three token counts: x [T, 4] split over ep=2,
// a matmul with a constant [4, 8], the result an output. Checks the fitted
// dims and that every difference other than an affine size is refused with
// a message that names it. Also the parsing of --input-shape's token-count
// dims.
//
//===----------------------------------------------------------------------===//

#include "moec/Conversion/SymbolCheck.h"
#include "moec/Import/OnnxImporter.h"

#include <gtest/gtest.h>

using namespace moec;
using moert::SymDim;
using moert::SymKind;

namespace {

/// The plan at `tokens` tokens; `rows(t)` gives the matmul result's rows
/// from this rank's t (normally t), `weight` the constant's first element.
PlanSample samplePlan(int64_t tokens, int64_t (*rows)(int64_t) = nullptr,
                      float weight = 0.5f) {
  PlanSample s;
  s.tokens = tokens;
  moert::Plan &p = s.plan;
  p.mesh = {{"ep", 2}};
  int64_t t = tokens / 2;
  p.segments.resize(1);
  p.segments[0].name = "shared";
  std::vector<float> w(32, 0.25f);
  w[0] = weight;
  s.data.segments.resize(1);
  s.data.append(0, reinterpret_cast<const char *>(w.data()),
                w.size() * sizeof(float));
  auto value = [&](const char *name, std::vector<int64_t> shape,
                   moert::ValueKind kind) {
    moert::Value v;
    v.id = int32_t(p.values.size());
    v.name = name;
    v.shape = std::move(shape);
    v.kind = kind;
    p.values.push_back(v);
    return v.id;
  };
  int32_t x = value("x", {t, 4}, moert::ValueKind::input);
  int32_t c = value("w", {4, 8}, moert::ValueKind::constant);
  p.values[size_t(c)].data = {{0, 0, 32 * sizeof(float)}};
  int32_t y = value("y", {rows ? rows(t) : t, 8}, moert::ValueKind::output);
  p.values[size_t(y)].offset = 4096;
  moert::Step st;
  st.attrs.Set(moert::fb::MatmulT());
  st.inputs = {x, c, -1};
  st.outputs = {y};
  st.loc = "/proj/MatMul";
  p.steps.push_back(st);
  moert::ModelIO in, out;
  in.name = "x";
  in.shape = {tokens, 4};
  in.split.axis = 0;
  in.split.over = {"ep"};
  in.value = x;
  out = in;
  out.name = "y";
  out.shape = {tokens, 8};
  out.value = y;
  p.inputs = {in};
  p.outputs = {out};
  p.arenaBytes = 8192;
  return s;
}

/// Runs inferPlanSymbols on the plan at 16 tokens and samples at 14 and
/// 12; "" on success, else the error.
std::string infer(PlanSample &max, PlanSample a, PlanSample b) {
  std::vector<PlanSample> samples;
  samples.push_back(std::move(a));
  samples.push_back(std::move(b));
  std::vector<int32_t> roots = {0, -1, 2};
  std::string error;
  if (inferPlanSymbols(max.plan, max.data, "tokens", 16, samples, roots,
                       /*capacityFactor=*/0, error))
    return "";
  return error.empty() ? "(failed without a message)" : error;
}

bool sameDims(const std::vector<SymDim> &a, const std::vector<SymDim> &b) {
  return a == b;
}

TEST(SymbolCheck, FitsRowsAndGlobalCounts) {
  PlanSample max = samplePlan(16);
  ASSERT_EQ(infer(max, samplePlan(14), samplePlan(12)), "");
  const moert::Plan &p = max.plan;
  ASSERT_EQ(p.symbols.size(), 1u);
  EXPECT_EQ(p.symbols[0].name, "tokens");
  EXPECT_EQ(p.symbols[0].max, 16);
  EXPECT_TRUE(sameDims(p.values[0].symDims, {{0, SymKind::t, 1, 0}}));
  EXPECT_TRUE(p.values[1].symDims.empty()); // the constant
  EXPECT_TRUE(sameDims(p.values[2].symDims, {{0, SymKind::t, 1, 0}}));
  EXPECT_TRUE(sameDims(p.inputs[0].symDims, {{0, SymKind::T, 1, 0}}));
  EXPECT_TRUE(sameDims(p.outputs[0].symDims, {{0, SymKind::T, 1, 0}}));
}

TEST(SymbolCheck, FitsAnOffsetAndASlope) {
  // Rows 3t + 2: a and b from 16 and 14 tokens, met at 12.
  auto rows = [](int64_t t) { return 3 * t + 2; };
  PlanSample max = samplePlan(16, rows);
  ASSERT_EQ(infer(max, samplePlan(14, rows), samplePlan(12, rows)), "");
  EXPECT_TRUE(sameDims(max.plan.values[2].symDims, {{0, SymKind::t, 3, 2}}));
}

TEST(SymbolCheck, RefusesASizeThatIsNotAffine) {
  // t^2 rows: 64, 49, 36 at t = 8, 7, 6.
  auto rows = [](int64_t t) { return t * t; };
  PlanSample max = samplePlan(16, rows);
  std::string e = infer(max, samplePlan(14, rows), samplePlan(12, rows));
  EXPECT_NE(e.find("value 2 ('y'): dim 0 is 64, 49 and 36 at X = 8, 7 and 6"),
            std::string::npos)
      << e;
  EXPECT_TRUE(max.plan.symbols.empty());
}

TEST(SymbolCheck, RefusesASizeThatShrinksWithTheCount) {
  auto rows = [](int64_t t) { return 20 - t; };
  PlanSample max = samplePlan(16, rows);
  std::string e = infer(max, samplePlan(14, rows), samplePlan(12, rows));
  EXPECT_NE(e.find("not a*X+b with a whole a >= 1"), std::string::npos) << e;
}

TEST(SymbolCheck, RefusesAConstantThatDependsOnTheCount) {
  PlanSample max = samplePlan(16);
  std::string e = infer(max, samplePlan(14, nullptr, 0.75f), samplePlan(12));
  EXPECT_NE(e.find("compiles differently at 16 and 14 tokens: value 1 ('w') "
                   "is a constant whose data depends on the token count"),
            std::string::npos)
      << e;
}

TEST(SymbolCheck, RefusesADifferentStructure) {
  PlanSample max = samplePlan(16);
  PlanSample other = samplePlan(12);
  other.plan.steps[0].attrs.Asmatmul()->trans_b = true;
  std::string e = infer(max, samplePlan(14), std::move(other));
  EXPECT_NE(e.find("at 16 and 12 tokens: step 0 (matmul at '/proj/MatMul') "
                   "differs"),
            std::string::npos)
      << e;
}

TEST(SymbolCheck, FitsAKernelsOperands) {
  // A generated kernel's operands get symbolic dims like any step's; the
  // kernel is then compiled for them (KernelSymbols.h).
  auto asKernel = [](PlanSample s) {
    moert::fb::KernelT k;
    k.name = "kernel_0";
    s.plan.steps[0].attrs.Set(k);
    s.plan.steps[0].inputs = {0, 1};
    return s;
  };
  PlanSample max = asKernel(samplePlan(16));
  ASSERT_EQ(infer(max, asKernel(samplePlan(14)), asKernel(samplePlan(12))), "");
  EXPECT_TRUE(sameDims(max.plan.values[0].symDims, {{0, SymKind::t, 1, 0}}));
  EXPECT_TRUE(sameDims(max.plan.values[2].symDims, {{0, SymKind::t, 1, 0}}));
}

TEST(SymbolCheck, RefusesACountTheRanksDoNotDivide) {
  PlanSample max = samplePlan(16);
  std::string e = infer(max, samplePlan(14), samplePlan(13));
  EXPECT_NE(e.find("the token count 13 is not a multiple of the 2 ranks"),
            std::string::npos)
      << e;
}

} // namespace

// --input-shape's token-count dims (moec/Import/OnnxImporter.h).
namespace {
TEST(InputShape, ParsesTokenCountDims) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<SymbolicInputDim> sym;
  std::string error;
  ASSERT_TRUE(
      parseInputShape("x=1,?,64;m=1,?+4;p=2*?,3*?+1", shapes, error, &sym))
      << error;
  ASSERT_EQ(sym.size(), 4u);
  auto is = [&](size_t i, const char *in, int dim, int64_t a, int64_t b) {
    return sym[i].input == in && sym[i].dim == dim && sym[i].a == a &&
           sym[i].b == b;
  };
  EXPECT_TRUE(is(0, "x", 1, 1, 0));
  EXPECT_TRUE(is(1, "m", 1, 1, 4));
  EXPECT_TRUE(is(2, "p", 0, 2, 0));
  EXPECT_TRUE(is(3, "p", 1, 3, 1));
  substituteTokens(shapes, sym, 10);
  EXPECT_EQ(shapes[0].second, (std::vector<int64_t>{1, 10, 64}));
  EXPECT_EQ(shapes[1].second, (std::vector<int64_t>{1, 14}));
  EXPECT_EQ(shapes[2].second, (std::vector<int64_t>{20, 31}));
}

TEST(InputShape, RefusesMalformedTokenCountDims) {
  for (const char *bad : {"x=?*2", "x=0*?", "x=?+-1", "x=??", "x=?+", "x=a?"}) {
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
    std::vector<SymbolicInputDim> sym;
    std::string error;
    EXPECT_FALSE(parseInputShape(bad, shapes, error, &sym)) << bad;
    EXPECT_NE(error.find("is not a non-negative integer or a token-count dim"),
              std::string::npos)
        << bad << ": " << error;
  }
  // Without the symbolic list, `?` is not a dim at all.
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::string error;
  EXPECT_FALSE(parseInputShape("x=1,?", shapes, error));
  EXPECT_NE(error.find("'?' is not a non-negative integer"), std::string::npos)
      << error;
}
} // namespace
