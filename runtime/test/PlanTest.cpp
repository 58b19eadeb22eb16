//===- PlanTest.cpp - .moeplan writer, reader and verifier ----------------===//
//
// A hand-built plan (TestPlans.h) written and read back for every rank; each
// corruption of the file refused with its message naming the file; each
// check of verifyPlan; a reduce_scatter step through the file, --describe
// and the verifier; the rules of topk and scatter_elements steps
// (IndexPlans.h) and their --describe.
//
//===----------------------------------------------------------------------===//

#include "IndexPlans.h"
#include "TestPlans.h"

#include "moert/Npy.h"
#include "moert/Plan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-plan-" + tag + "-" +
         std::to_string(getpid()) + ".moeplan";
}

std::string readFile(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), bytes.size());
}

uint64_t fnv1a(const std::string &s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

template <typename T> T field(const std::string &file, size_t off) {
  T v;
  std::memcpy(&v, file.data() + off, sizeof(T));
  return v;
}
template <typename T> void setField(std::string &file, size_t off, T v) {
  std::memcpy(&file[off], &v, sizeof(T));
}

/// A written two-rank MoE plan; the fixture removes it.
class PlanFile : public ::testing::Test {
protected:
  void SetUp() override {
    MoESpec s;
    s.ranks = 2;
    tc = makeMoE(s);
    path = tempPath(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::string error;
    ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
    bytes = readFile(path);
  }
  void TearDown() override { std::remove(path.c_str()); }

  /// Writes `file` and expects open to fail with `what` in the message.
  void expectRefused(const std::string &file, const std::string &what) {
    writeFile(path, file);
    std::string error;
    auto lp = LoadedPlan::open(path, 0, error);
    EXPECT_FALSE(lp);
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_NE(error.find(what), std::string::npos) << error;
  }
  /// Replaces the manifest text (same length) and fixes the checksum.
  /// The file with its manifest (the FlatBuffer) changed by `edit` and the
  /// checksum recomputed, so that only the loader's checks can refuse it.
  std::string withManifest(const std::function<void(std::string &)> &edit) {
    std::string file = bytes;
    uint64_t size = field<uint64_t>(file, 24);
    std::string m = file.substr(64, size);
    edit(m);
    EXPECT_EQ(m.size(), size);
    file.replace(64, size, m);
    setField<uint64_t>(file, 48, fnv1a(m));
    return file;
  }
  /// ... changed through the generated mutable accessors.
  std::string withMutatedPlan(const std::function<void(fb::Plan &)> &edit) {
    return withManifest([&](std::string &m) {
      edit(*fb::GetMutablePlan(reinterpret_cast<uint8_t *>(m.data())));
    });
  }

  TestCase tc;
  std::string path, bytes;
};

TEST_F(PlanFile, Layout) {
  ASSERT_GE(bytes.size(), 64u);
  EXPECT_EQ(std::string(bytes.data(), 8), std::string("MOEPLAN\0", 8));
  EXPECT_EQ(field<uint32_t>(bytes, 8), kPlanVersion);
  EXPECT_EQ(field<uint64_t>(bytes, 16), 64u);
  uint64_t dataOffset = field<uint64_t>(bytes, 32);
  EXPECT_EQ(dataOffset % 4096, 0u);
  EXPECT_EQ(bytes.size(), dataOffset + field<uint64_t>(bytes, 40));
  for (const Segment &s : tc.plan.segments)
    EXPECT_EQ(s.offset % 4096, 0u) << s.name;
  std::string manifest = bytes.substr(64, field<uint64_t>(bytes, 24));
  EXPECT_EQ(field<uint64_t>(bytes, 48), fnv1a(manifest));
}

TEST_F(PlanFile, RoundTrip) {
  for (int rank : {-1, 0, 1}) {
    std::string error;
    auto lp = LoadedPlan::open(path, rank, error);
    ASSERT_TRUE(lp) << error;
    const Plan &p = lp->plan();
    EXPECT_EQ(p.producer, "moert-test");
    EXPECT_EQ(p.worldSize(), 2);
    EXPECT_EQ(p.arenaBytes, tc.plan.arenaBytes);
    ASSERT_EQ(p.values.size(), tc.plan.values.size());
    for (size_t i = 0; i < p.values.size(); ++i) {
      const Value &a = p.values[i], &b = tc.plan.values[i];
      EXPECT_EQ(a.name, b.name);
      EXPECT_EQ(a.dtype, b.dtype);
      EXPECT_EQ(a.shape, b.shape);
      EXPECT_EQ(a.kind, b.kind);
      EXPECT_EQ(a.offset, b.offset);
      ASSERT_EQ(a.data.size(), b.data.size());
      if (a.kind != ValueKind::constant)
        continue;
      const void *d = lp->constantData(a);
      if (rank < 0) {
        EXPECT_EQ(d, nullptr);
        continue;
      }
      ASSERT_NE(d, nullptr) << a.name;
      const DataRef &ref = b.data.size() == 1 ? b.data[0] : b.data[rank];
      EXPECT_EQ(std::memcmp(d,
                            tc.data.segments[ref.segment].data() + ref.offset,
                            ref.bytes),
                0)
          << a.name;
    }
    ASSERT_EQ(p.steps.size(), tc.plan.steps.size());
    for (size_t i = 0; i < p.steps.size(); ++i) {
      EXPECT_EQ(p.steps[i].kind(), tc.plan.steps[i].kind());
      EXPECT_EQ(p.steps[i].inputs, tc.plan.steps[i].inputs);
      EXPECT_EQ(p.steps[i].outputs, tc.plan.steps[i].outputs);
      EXPECT_EQ(p.steps[i].loc, tc.plan.steps[i].loc);
    }
    const Step &d = p.steps[2];
    ASSERT_NE(d.attrs.Asdispatch(), nullptr);
    EXPECT_EQ(d.attrs.Asdispatch()->axes, "ep");
    EXPECT_EQ(d.attrs.Asdispatch()->replicas,
              tc.plan.steps[2].attrs.Asdispatch()->replicas);
    EXPECT_EQ(p.steps[1].attrs.Asroute()->top_k,
              tc.plan.steps[1].attrs.Asroute()->top_k);
    // Every attribute of every step (and the rest of the manifest) as
    // --describe prints it.
    EXPECT_EQ(describePlan(p), describePlan(tc.plan));
    EXPECT_EQ(p.inputs[0].split.over, std::vector<std::string>{"ep"});
    // Rank r maps the shared segment and its own only.
    uint64_t expect = 0;
    if (rank >= 0)
      expect = p.segments[0].size + p.segments[1 + rank].size;
    EXPECT_EQ(lp->mappedBytes(), expect);
  }
}

TEST_F(PlanFile, Describe) {
  std::string d = describePlan(tc.plan);
  EXPECT_NE(d.find("ep=2 (2 ranks)"), std::string::npos) << d;
  EXPECT_NE(d.find("dispatch(v0, v4) -> v5"), std::string::npos) << d;
  EXPECT_NE(d.find("@ /moe/dispatch"), std::string::npos) << d;
  EXPECT_NE(d.find("rank1:"), std::string::npos) << d;
}

TEST_F(PlanFile, Missing) {
  std::remove(path.c_str());
  std::string error;
  EXPECT_FALSE(LoadedPlan::open(path, 0, error));
  EXPECT_NE(error.find(path), std::string::npos);
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

TEST_F(PlanFile, BadMagic) {
  std::string f = bytes;
  f[0] = 'X';
  expectRefused(f, "not a moe plan");
  expectRefused("hello", "not a moe plan");
  expectRefused("", "not a moe plan");
}

TEST_F(PlanFile, TruncatedHeader) {
  expectRefused(bytes.substr(0, 40), "truncated plan");
}

TEST_F(PlanFile, TruncatedManifest) {
  expectRefused(bytes.substr(0, 100), "manifest runs past the end");
}

TEST_F(PlanFile, TruncatedData) {
  expectRefused(bytes.substr(0, bytes.size() - 1), "truncated plan");
}

TEST_F(PlanFile, VersionMismatch) {
  std::string f = bytes;
  setField<uint32_t>(f, 8, 7);
  expectRefused(f, "version 7");
  expectRefused(f, "reads version " + std::to_string(kPlanVersion));
}

TEST_F(PlanFile, ChecksumMismatch) {
  std::string f = bytes;
  f[80] ^= 1;
  expectRefused(f, "checksum mismatch");
}

TEST_F(PlanFile, CorruptManifest) {
  // Offsets that point outside the manifest, and a wrong file identifier:
  // the schema's verifier refuses them.
  const char *schema = "does not verify against the plan schema";
  expectRefused(
      withManifest([](std::string &m) { setField<uint32_t>(m, 0, 1u << 30); }),
      schema);
  expectRefused(withManifest([](std::string &m) { m[4] = 'X'; }), schema);
  expectRefused(withManifest([](std::string &m) {
                  for (size_t i = 8; i < m.size(); i += 7)
                    m[i] = char(0xff);
                }),
                schema);
}

TEST_F(PlanFile, SchemaErrors) {
  // Manifests the verifier accepts but verifyPlan refuses, named as such.
  expectRefused(withMutatedPlan([](fb::Plan &p) { p.mutate_arena_bytes(64); }),
                "invalid plan: value 0 ('x') at arena offset");
  expectRefused(
      withMutatedPlan([](fb::Plan &p) {
        p.mutable_steps()->GetMutableObject(0)->mutable_inputs()->Mutate(0, 77);
      }),
      "invalid plan: step 0 (matmul at '/gate/MatMul'): operand "
      "value 77 does not exist");
}

TEST_F(PlanFile, RankOutsideMesh) {
  std::string error;
  EXPECT_FALSE(LoadedPlan::open(path, 5, error));
  EXPECT_NE(error.find("rank 5"), std::string::npos) << error;
}

/// verifyPlan on a copy of the plan changed by `edit`.
class Verify : public PlanFile {
protected:
  std::string verifyError(const std::function<void(Plan &)> &edit) {
    Plan p = tc.plan;
    edit(p);
    std::string error;
    EXPECT_FALSE(verifyPlan(p, error));
    return error;
  }
};

#define EXPECT_CONTAINS(s, sub)                                                \
  EXPECT_NE(std::string(s).find(sub), std::string::npos) << (s)

TEST_F(Verify, Valid) {
  std::string error;
  EXPECT_TRUE(verifyPlan(tc.plan, error)) << error;
}

TEST_F(Verify, Errors) {
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.mesh.clear(); }), "no mesh axes");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.mesh[0].size = 0; }),
                  "mesh axis 'ep' has size 0");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[1].id = 9; }),
                  "value 1 ('router.weight') has id 9");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[2].shape[0] = -1; }),
                  "negative dim");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[1].data[0].segment = 9; }),
                  "segment 9, which does not exist");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[1].data[0].bytes = 4; }),
                  "4 bytes of data");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.values[1].data[0].offset = p.segments[0].size;
                  }),
                  "lies outside segment 'shared'");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    Value &v = p.values[6]; // w_gate, per rank
                    v.data.push_back(v.data[0]);
                  }),
                  "3 data entries");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    Value &v = p.values[6];
                    std::swap(v.data[0], v.data[1]);
                  }),
                  "rank 0 reads segment 'rank1'");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.segments[1].ranks = {4}; }),
                  "segment 'rank0' lists rank 4");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.arenaBytes = 64; }),
                  "lies outside the arena");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.inputs[0].value = 99; }),
                  "input 'x' refers to value 99");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.outputs[0].split.axis = 3; }),
                  "output 'out' is split along axis 3");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.inputs[0].split.over = {"dp"}; }),
                  "unknown mesh axis 'dp'");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].attrs.Reset(); }),
                  "step 1 (NONE at '/route'): unknown step kind");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.steps[1].attrs.Asroute()->score_func = fb::ScoreFunc(7);
                  }),
                  "step 1 (route at '/route'): an attribute has an unknown "
                  "enum value");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[0].inputs = {0}; }),
                  "1 operands, expected 2..3");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].outputs = {3}; }),
                  "1 results, expected 2");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[0].inputs[0] = 77; }),
                  "operand value 77 does not exist");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[0].outputs[0] = 1; }),
                  "result value 1 does not exist or is a constant");
  EXPECT_CONTAINS(
      verifyError([](Plan &p) { p.steps[3].attrs.Asexperts()->dispatch = 0; }),
      "attribute 'dispatch' must name an earlier dispatch step");
  // clamped_swiglu's parameters: only on that activation, a positive limit.
  EXPECT_CONTAINS(
      verifyError([](Plan &p) { p.steps[3].attrs.Asexperts()->limit = 7; }),
      "activation parameters alpha=1.000000 beta=0.000000 limit=7.000000 are "
      "invalid for silu");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    fb::ExpertsT *e = p.steps[3].attrs.Asexperts();
                    e->activation = fb::Activation::clamped_swiglu;
                    e->limit = -1;
                  }),
                  "are invalid for clamped_swiglu");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.steps[3].attrs.Asexperts()->activation =
                        fb::Activation(9);
                  }),
                  "an attribute has an unknown enum value");
  // The routing weights scale the dispatched rows or the combined ones,
  // exactly once.
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[4].inputs[1] = -1; }),
                  "step 4 (combine at '/moe/combine'): has no routing "
                  "weights, and its dispatch sent unscaled rows");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.steps[2].inputs.push_back(p.steps[4].inputs[1]);
                  }),
                  "step 4 (combine at '/moe/combine'): takes routing weights, "
                  "but its dispatch scaled the rows it sent already");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.steps[2].inputs = {0, 1, 2, 3};
                  }),
                  "4 operands, expected 2..3");
  Plan scaled = tc.plan;
  scaled.steps[2].inputs.push_back(scaled.steps[4].inputs[1]);
  scaled.steps[4].inputs[1] = -1;
  std::string error;
  EXPECT_TRUE(verifyPlan(scaled, error)) << error;
}

/// The limits of moert/Limits.h: a kernel step's pointers and a GPU
/// launch's parameter bytes.
TEST_F(Verify, KernelLimits) {
  // A kernel step of kMaxKernelOperands pointers (the input 255 times and
  // the result) is valid; one more is not.
  auto addKernel = [](Plan &p, int inputs) {
    fb::KernelT a;
    a.name = "kernel_0";
    Step s;
    s.attrs.Set(a);
    s.inputs.assign(size_t(inputs), p.inputs[0].value);
    s.outputs = {p.outputs[0].value};
    s.loc = "/wide";
    p.steps.push_back(s);
    KernelCode k;
    k.name = "kernel_0";
    k.numArgs = inputs + 1;
    p.kernels.push_back(k);
  };
  Plan ok = tc.plan;
  addKernel(ok, kMaxKernelOperands - 1);
  std::string error;
  EXPECT_TRUE(verifyPlan(ok, error)) << error;
  EXPECT_CONTAINS(verifyError([&](Plan &p) {
                    addKernel(p, kMaxKernelOperands);
                    p.kernels[0].numArgs = 1;
                  }),
                  "(kernel at '/wide'): 257 operands and results, at most 256 "
                  "are supported");
  EXPECT_CONTAINS(verifyError([&](Plan &p) {
                    addKernel(p, kMaxKernelOperands);
                    p.steps.pop_back();
                  }),
                  "kernel 'kernel_0' takes 257 pointers, at most 256 are "
                  "supported");
  // 8 bytes per pointer or i64, 4 per f32 at its alignment: 511 pointers
  // and two f32 fill 4096 bytes, 512 pointers and one f32 need 4100.
  GpuLaunchCode l;
  for (int i = 0; i < 511; ++i)
    l.addArg(LaunchArg::pointer, 0);
  l.addArg(LaunchArg::f32, 0);
  l.addArg(LaunchArg::f32, 0);
  EXPECT_EQ(l.paramBytes(), 4096);
  GpuLaunchCode big;
  big.addArg(LaunchArg::f32, 0);
  for (int i = 0; i < 512; ++i)
    big.addArg(LaunchArg::i64, 0);
  EXPECT_EQ(big.paramBytes(), 4104);
  ok.kernels[0].launches = {l};
  EXPECT_TRUE(verifyPlan(ok, error)) << error;
  EXPECT_CONTAINS(verifyError([&](Plan &p) {
                    addKernel(p, 1);
                    big.function = "big";
                    p.kernels[0].launches = {l, big};
                  }),
                  "kernel 'kernel_0' launches 'big' with 4104 bytes of "
                  "parameters, at most 4096 are supported");
}

TEST(PlanStep, ReduceScatter) {
  ReduceScatterSpec spec;
  spec.dp = 2;
  spec.ep = 3;
  spec.axes = "ep";
  spec.axis = 1;
  TestCase tc = makeReduceScatter(spec);
  std::string path = tempPath("rs"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, 4, error);
  std::remove(path.c_str());
  ASSERT_TRUE(lp) << error;
  const Step &s = lp->plan().steps[0];
  EXPECT_EQ(s.kind(), StepKind::reduce_scatter);
  EXPECT_STREQ(s.op(), "reduce_scatter");
  ASSERT_NE(s.attrs.Asreduce_scatter(), nullptr);
  EXPECT_EQ(s.attrs.Asreduce_scatter()->axis, 1);
  EXPECT_EQ(s.attrs.Asreduce_scatter()->reduction, fb::Reduction::sum);
  EXPECT_EQ(s.axes(), "ep");
  std::string d = describePlan(lp->plan());
  EXPECT_NE(d.find("0: reduce_scatter(v0) -> v1 axes=ep axis=1 "
                   "reduction=sum  @ /sp/reduce_scatter"),
            std::string::npos)
      << d;
  Plan p = tc.plan;
  p.steps[0].inputs.push_back(0);
  EXPECT_FALSE(verifyPlan(p, error));
  EXPECT_NE(error.find("2 operands, expected 1"), std::string::npos) << error;
  p = tc.plan;
  p.steps[0].attrs.Asreduce_scatter()->reduction = fb::Reduction(3);
  EXPECT_FALSE(verifyPlan(p, error));
  EXPECT_NE(error.find("step 0 (reduce_scatter at '/sp/reduce_scatter'): an "
                       "attribute has an unknown enum value"),
            std::string::npos)
      << error;
}

/// verifyPlan on the topk / scatter_elements plan changed by `edit`.
class IndexVerify : public ::testing::Test {
protected:
  TestCase tc = makeIndexSteps(IndexSpec());
  std::string verifyError(const std::function<void(Plan &)> &edit) {
    Plan p = tc.plan;
    edit(p);
    std::string error;
    EXPECT_FALSE(verifyPlan(p, error));
    return error;
  }
};

TEST_F(IndexVerify, ValidPlan) {
  std::string error;
  EXPECT_TRUE(verifyPlan(tc.plan, error)) << error;
}

TEST_F(IndexVerify, TopKRules) {
  auto topk = [](Plan &p) { return p.steps[0].attrs.Astopk(); };
  EXPECT_CONTAINS(verifyError([&](Plan &p) { topk(p)->k = 7; }),
                  "step 0 (topk at '/router/topk'): k=7 outside [1, 6] for "
                  "x f32[8,6]");
  EXPECT_CONTAINS(verifyError([&](Plan &p) { topk(p)->k = 0; }),
                  "k=0 outside [1, 6]");
  // k must agree with the results' last dim.
  EXPECT_CONTAINS(verifyError([&](Plan &p) { topk(p)->k = 3; }),
                  "values f32[8,2] is not f32[8,3]");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[5].dtype = DType::i32; }),
                  "indices i32[8,2] is not i64[8,2]");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[0].dtype = DType::bf16; }),
                  "x bf16[8,6] is not f32");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[0].outputs.pop_back(); }),
                  "1 results, expected 2");
}

TEST_F(IndexVerify, ScatterRules) {
  auto mask = [](Plan &p) { return p.steps[1].attrs.Asscatter_elements(); };
  EXPECT_CONTAINS(verifyError([&](Plan &p) { mask(p)->axis = 2; }),
                  "step 1 (scatter_elements at '/router/mask'): axis 2 "
                  "outside [0, 2)");
  // Updates of another shape than the indices.
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].inputs[2] = 3; }),
                  "indices i64[8,2] and updates f32[2,6] must have one shape");
  // Indices past data off the axis.
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    Value small = p.values[6]; // f32 [8,6]
                    small.id = int32_t(p.values.size());
                    small.shape = {1, 6};
                    p.values.push_back(small);
                    Step &s = p.steps[4];
                    s.attrs.Asscatter_elements()->axis = 1;
                    s.inputs[0] = s.outputs[0] = small.id;
                  }),
                  "indices i32[2,6] exceed data f32[1,6] in dim 0 (off the "
                  "axis 1)");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.values[6].shape = {8, 5};
                  }),
                  "must have the dtype of data f32[8,6], the result its shape");
  EXPECT_CONTAINS(verifyError([&](Plan &p) {
                    mask(p)->reduction = fb::ScatterReduction(9);
                  }),
                  "an attribute has an unknown enum value");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].inputs[1] = 3; }),
                  "indices f32[2,6] is not i64 or i32");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[1].inputs[0] = -1; }),
                  "data, indices, updates and result must all be given");
}

TEST_F(IndexVerify, Describe) {
  std::string d = describePlan(tc.plan);
  EXPECT_CONTAINS(d, "0: topk(v0) -> v4, v5 k=2 largest=1  @ /router/topk");
  EXPECT_CONTAINS(d, "1: scatter_elements(v0, v5, v2) -> v6 axis=1 "
                     "reduction=none  @ /router/mask");
  EXPECT_CONTAINS(d, "3: topk(v9) -> v10, v11 k=2 largest=0  @ /low/topk");
  EXPECT_CONTAINS(d, "4: scatter_elements(v0, v1, v3) -> v12 axis=0 "
                     "reduction=add  @ /acc/scatter");
}

TEST(PlanWrite, DataCountMismatch) {
  MoESpec s;
  TestCase tc = makeMoE(s);
  tc.data.segments.pop_back();
  std::string error;
  EXPECT_FALSE(writePlan(tempPath("count"), tc.plan, tc.data, error));
  EXPECT_CONTAINS(error, "data buffers");
}

TEST(PlanWrite, UnwritablePath) {
  MoESpec s;
  TestCase tc = makeMoE(s);
  std::string error;
  EXPECT_FALSE(
      writePlan("/nonexistent-dir/x.moeplan", tc.plan, tc.data, error));
  EXPECT_CONTAINS(error, "cannot write plan");
}

TEST(PlanGroups, CoordAndGroup) {
  Plan p;
  p.mesh = {{"dp", 2}, {"ep", 4}, {"tp", 2}};
  EXPECT_EQ(p.worldSize(), 16);
  // rank = (dp*4 + ep)*2 + tp
  EXPECT_EQ(p.coord(13, "dp"), 1);
  EXPECT_EQ(p.coord(13, "ep"), 2);
  EXPECT_EQ(p.coord(13, "tp"), 1);
  EXPECT_EQ(p.coord(13, "xx"), 0);
  EXPECT_EQ(p.group(13, {"ep"}), (std::vector<int32_t>{9, 11, 13, 15}));
  EXPECT_EQ(p.group(13, {"tp"}), (std::vector<int32_t>{12, 13}));
  EXPECT_EQ(p.group(13, {"dp", "ep"}),
            (std::vector<int32_t>{1, 3, 5, 7, 9, 11, 13, 15}));
  EXPECT_EQ(p.group(13, {}), (std::vector<int32_t>{13}));
}

// moert/Mesh.h against a plain loop: every rank of a dp x ep x tp mesh
// round-trips through its coordinates, and a group is the ranks that share
// the other coordinates, ordered by the group's own coordinates.
TEST(Mesh, CoordsAndGroupsAgainstLoops) {
  MeshAxes m = {{"dp", 3}, {"ep", 2}, {"tp", 4}};
  ASSERT_EQ(meshWorldSize(m), 24);
  for (int64_t r = 0; r < 24; ++r) {
    std::vector<int64_t> c = meshCoords(m, r);
    EXPECT_EQ((c[0] * 2 + c[1]) * 4 + c[2], r);
    EXPECT_EQ(meshCoord(m, r, "ep"), c[1]);
    std::vector<int32_t> expect;
    for (int64_t d = 0; d < 3; ++d)
      for (int64_t t = 0; t < 4; ++t)
        expect.push_back(int32_t((d * 2 + c[1]) * 4 + t));
    EXPECT_EQ(meshGroup(m, r, {"dp", "tp"}), expect) << "rank " << r;
  }
  EXPECT_EQ(meshAxisSize(m, "xx"), 1);
  EXPECT_EQ(meshAxisIndex(m, "tp"), 2);
  EXPECT_EQ(meshAxisIndex(m, "xx"), -1);
}

TEST(Mesh, Parse) {
  MeshAxes m;
  std::string err;
  ASSERT_TRUE(parseMesh("tp=2, dp=4", m, err)) << err;
  EXPECT_EQ(meshString(m), "dp=4,ep=1,tp=2"); // canonical order, ep present
  ASSERT_TRUE(parseMesh("ep=8", m, err)) << err;
  EXPECT_EQ(meshString(m), "ep=8");
  auto bad = [&](const std::string &spec) {
    MeshAxes out;
    std::string e;
    EXPECT_FALSE(parseMesh(spec, out, e)) << spec;
    return e;
  };
  EXPECT_CONTAINS(bad(""), "empty mesh spec");
  EXPECT_CONTAINS(bad("pp=2"), "unknown axis 'pp'");
  EXPECT_CONTAINS(bad("ep=0"), "axis 'ep' needs a size >= 1, got '0'");
  EXPECT_CONTAINS(bad("ep"), "axis 'ep' needs a size >= 1, got ''");
  EXPECT_CONTAINS(bad("ep=x"), "got 'x'");
  EXPECT_CONTAINS(bad("ep=99999999999999999999"), "needs a size >= 1");
  EXPECT_CONTAINS(bad("ep=2,ep=4"), "axis 'ep' given twice");
  EXPECT_CONTAINS(bad("ep=2,"), "unknown axis ''");
}

//===- Hostile headers and manifests (issue 17) --------------------------===//
// Each is refused with a message before any allocation or loop sized by the
// bad value.

TEST_F(PlanFile, HeaderFlags) {
  std::string f = bytes;
  setField<uint32_t>(f, 12, 1);
  expectRefused(f, "unknown header flags 0x1");
}

TEST_F(PlanFile, HugeManifestSize) {
  std::string f = bytes;
  setField<uint64_t>(f, 24, UINT64_MAX); // 64 + size wraps to 63
  expectRefused(f, "manifest runs past the end");
  setField<uint64_t>(f, 24, UINT64_MAX - 63); // wraps to 0
  expectRefused(f, "manifest runs past the end");
}

TEST_F(PlanFile, HugeDataRegion) {
  std::string f = bytes;
  setField<uint64_t>(f, 40, UINT64_MAX - 4095);
  expectRefused(f, "truncated plan (the weights need more than 2^64 bytes");
  f = bytes;
  setField<uint64_t>(f, 32, UINT64_MAX - 4095);
  expectRefused(f, "truncated plan");
  f = bytes;
  setField<uint64_t>(f, 16, 0);
  expectRefused(f, "the manifest starts at byte 0");
}

TEST_F(PlanFile, NegativeValueOffset) {
  // A temp's arena offset of -64: offset + size wraps past the arena check.
  expectRefused(withMutatedPlan([](fb::Plan &p) {
                  auto *values = p.mutable_values();
                  for (size_t i = 0; i < values->size(); ++i)
                    if (fb::Value *v = values->GetMutableObject(i);
                        v->offset() != 0) {
                      EXPECT_TRUE(v->mutate_offset(uint64_t(-64)));
                      return;
                    }
                  ADD_FAILURE() << "no value with an arena offset";
                }),
                "lies outside the arena");
}

TEST_F(PlanFile, HugeShape) {
  // 2^40 x 2^40 elements: the byte size wraps a 64-bit product.
  expectRefused(withMutatedPlan([](fb::Plan &p) {
                  auto *shape =
                      p.mutable_values()->GetMutableObject(0)->mutable_shape();
                  for (size_t i = 0; i < shape->size(); ++i)
                    shape->Mutate(i, int64_t(1) << 40);
                }),
                "has more than");
}

TEST_F(PlanFile, HugeMesh) {
  // 2^40 ranks: refused at once, not by a loop over them (which hung).
  expectRefused(withMutatedPlan([](fb::Plan &p) {
                  EXPECT_TRUE(
                      p.mutable_mesh()->GetMutableObject(0)->mutate_size(
                          int64_t(1) << 40));
                }),
                "invalid plan: mesh axis 'ep' has size 1099511627776: the "
                "mesh has more than 65536 ranks");
  std::string error;
  Plan p = tc.plan;
  p.mesh.push_back({"dp", int64_t(1) << 40});
  p.mesh.push_back({"tp", int64_t(1) << 40}); // the product wraps
  EXPECT_FALSE(verifyPlan(p, error));
  EXPECT_NE(error.find("more than 65536 ranks"), std::string::npos) << error;
}

TEST_F(PlanFile, SegmentOutsideData) {
  expectRefused(withMutatedPlan([](fb::Plan &p) {
                  EXPECT_TRUE(
                      p.mutable_segments()->GetMutableObject(1)->mutate_offset(
                          UINT64_MAX - 4095));
                }),
                "segment 'rank0' lies outside the data region");
}

TEST_F(PlanFile, Int64AttributesOutOfRange) {
  // Attributes the backends use as int32: a value past INT32_MAX is refused,
  // not cut.
  Plan p = tc.plan;
  p.steps[1].attrs.Asroute()->top_k = (int64_t(1) << 32) + 2;
  std::string error;
  EXPECT_FALSE(verifyPlan(p, error));
  EXPECT_NE(error.find("step 1 (route at '/route'): attribute 'top_k' = "
                       "4294967298 outside [1, 2147483647]"),
            std::string::npos)
      << error;
  p = tc.plan;
  p.steps[2].attrs.Asdispatch()->num_experts = int64_t(1) << 40;
  EXPECT_FALSE(verifyPlan(p, error));
  EXPECT_NE(error.find("attribute 'num_experts' = 1099511627776"),
            std::string::npos)
      << error;
  p = tc.plan;
  p.steps[2].attrs.Asdispatch()->capacity = -5;
  EXPECT_FALSE(verifyPlan(p, error));
  EXPECT_NE(error.find("attribute 'capacity' = -5 outside [-1,"),
            std::string::npos)
      << error;
}

//===- .npy reading (issue 17) --------------------------------------------===//

std::string npyWithHeader(const std::string &dict, size_t dataBytes) {
  std::string header = dict;
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char(header.size() & 0xff);
  out += char(header.size() >> 8);
  return out + header + std::string(dataBytes, '\0');
}

std::string npyError(const std::string &file) {
  NpyArray a;
  std::string error;
  EXPECT_FALSE(parseNpy(file.data(), file.size(), "t.npy", a, error));
  EXPECT_EQ(error.rfind("t.npy: not a valid .npy file: ", 0), 0u) << error;
  return error;
}

TEST(Npy, HostileHeaders) {
  auto dict = [](const std::string &descr, const std::string &shape) {
    return "{'descr': '" + descr +
           "', 'fortran_order': False, 'shape': " + shape + ", }";
  };
  NpyArray a;
  std::string error, ok = npyWithHeader(dict("<f4", "(2, 3)"), 24);
  ASSERT_TRUE(parseNpy(ok.data(), ok.size(), "t.npy", a, error)) << error;
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  // A huge shape: the product wraps to 0 bytes in 64 bits.
  EXPECT_CONTAINS(
      npyError(npyWithHeader(dict("<f4", "(4294967296, 4294967296)"), 16)),
      "its shape [4294967296,4294967296] needs more than 2^64 bytes (the "
      "file holds 16)");
  EXPECT_CONTAINS(npyError(npyWithHeader(dict("<f4", "(-1, 4)"), 16)),
                  "negative dim -1");
  EXPECT_CONTAINS(npyError(npyWithHeader(dict("<f4", "(2x, 3)"), 24)),
                  "malformed shape");
  EXPECT_CONTAINS(
      npyError(npyWithHeader(dict("<f4", "(99999999999999999999,)"), 24)),
      "malformed shape");
  EXPECT_CONTAINS(npyError(npyWithHeader(dict("<f4", "(2, 3)"), 23)),
                  "holds 23 data bytes, 24 expected");
  EXPECT_CONTAINS(npyError(npyWithHeader(dict("<c8", "(2,)"), 16)),
                  "dtype '<c8' is not supported");
  EXPECT_CONTAINS(
      npyError(npyWithHeader(
          "{'fortran_order': False, 'shape': (2,), 'descr': '<f4}", 8)),
      "malformed descr");
  EXPECT_CONTAINS(npyError(ok.substr(0, 9)), "missing the \\x93NUMPY magic");
  EXPECT_CONTAINS(npyError(ok.substr(0, 40)), "truncated header");
  // A zero dim: no data, whatever the others.
  std::string empty = npyWithHeader(dict("<f4", "(0, 4294967296)"), 0);
  EXPECT_TRUE(parseNpy(empty.data(), empty.size(), "t.npy", a, error)) << error;
}

TEST(Npy, NotAFile) {
  NpyArray a;
  std::string error;
  EXPECT_FALSE(readNpy(::testing::TempDir(), a, error));
  EXPECT_CONTAINS(error, "not a regular file (a directory");
  EXPECT_FALSE(readNpy(::testing::TempDir() + "/no-such.npy", a, error));
  EXPECT_CONTAINS(error, "no-such.npy: cannot open (No such file");
}

} // namespace
