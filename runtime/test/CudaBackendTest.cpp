//===- CudaBackendTest.cpp - plans on the CUDA backend against the CPU ----===//
//
// The hand-built plans of TestPlans.h (a one-layer MoE under several
// placements, with and without capacity; a tensor-parallel MLP with
// all_reduce and all_gather; all_slice and reduce_scatter) run on the CUDA
// backend with 1 and 4 thread ranks (several ranks on one GPU: their own
// streams and arenas; every plan runs twice, with the exchanges as
// device-to-device copies between the ranks' buffers and through host staging,
// and the reports must name the transport used) and are compared with the CPU
// backend (outputs and MoE reports) and with the plain-loop references. A plan
// with hand-written PTX checks `kernel` steps (driver API, several modules and
// launches, all parameter kinds). A plan with a dynamic token count runs
// at several counts, 0 included.
//
// Every test that needs a GPU skips with "no CUDA device: ..." without one;
// DeviceErrorsAreClear runs everywhere.
//
// Tolerance: fp32 on both sides (cuBLAS with CUBLAS_COMPUTE_32F, no TF32),
// so 1e-4 of the largest reference magnitude as in ExecutorTest.cpp; plans
// with bf16 results set their own (TestCase::tolerance).
//
//===----------------------------------------------------------------------===//

#include "DensePlans.h"
#include "DynamicPlans.h"
#include "HeldPlans.h"
#include "IndexPlans.h"
#include "QuantPlans.h"
#include "RowPlans.h"
#include "TestPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"
#include "moert/cuda/CudaBackend.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <tuple>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

#define REQUIRE_CUDA_DEVICE()                                                  \
  do {                                                                         \
    std::string why_;                                                          \
    if (!cudaBackendAvailable(&why_))                                          \
      GTEST_SKIP() << "no CUDA device: " << why_;                              \
  } while (0)

std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-cudaexec-" + tag + "-" +
         std::to_string(getpid()) + ".moeplan";
}

struct RunResult {
  std::vector<std::pair<std::string, NpyArray>> outputs;
  std::vector<RunReport> reports;
};

using BackendFactory = std::function<std::unique_ptr<Backend>()>;

std::unique_ptr<Backend> cpuBackend() { return createCpuBackend(); }
std::unique_ptr<Backend> cudaBackend() { return createCudaBackend(); }

/// The in-process transports of thread ranks (NCCL off, so that a machine
/// with several GPUs tests them too), and what the reports must call them.
struct Transport {
  const char *name;
  CudaBackendOptions options;
};
std::vector<Transport> inProcessTransports() {
  CudaBackendOptions copies, staging;
  copies.allowNccl = staging.allowNccl = false;
  staging.allowDeviceCopies = false;
  return {{"device copies", copies}, {"host staging (threads)", staging}};
}

/// Runs the plan at `path` on its world size of thread ranks, `runs` times
/// with the same executor (the last run's outputs are returned).
RunResult runPlan(const std::string &path, const TestCase &tc,
                  const BackendFactory &make, int runs = 1) {
  int n = int(tc.plan.worldSize());
  RunResult result;
  runThreadRanks(n, [&](Comm &world) {
    std::string err;
    auto lp = LoadedPlan::open(path, world.rank(), err);
    if (!lp)
      throw RunError(err);
    Executor ex(*lp, world, make());
    ex.setInputs(tc.inputs);
    for (int i = 0; i < runs; ++i)
      ex.run();
    auto outs = ex.gatherOutputs();
    auto reps = ex.gatherReports();
    if (world.rank() == 0) {
      result.outputs = std::move(outs);
      result.reports = std::move(reps);
    }
  });
  return result;
}

void expectNear(const std::vector<std::pair<std::string, NpyArray>> &got,
                const std::map<std::string, NpyArray> &want,
                const std::string &what, double tolerance = 1e-4) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (auto &[name, g] : got) {
    const NpyArray &w = want.at(name);
    EXPECT_EQ(g.shape, w.shape) << what << ": " << name;
    ASSERT_EQ(g.data.size(), w.data.size()) << what << ": " << name;
    const float *gp = reinterpret_cast<const float *>(g.data.data());
    const float *wp = reinterpret_cast<const float *>(w.data.data());
    size_t n = g.data.size() / 4;
    double scale = 1e-30;
    for (size_t i = 0; i < n; ++i)
      scale = std::max(scale, double(std::fabs(wp[i])));
    for (size_t i = 0; i < n; ++i)
      ASSERT_NEAR(gp[i], wp[i], tolerance * scale)
          << what << ": " << name << " element " << i;
  }
}

std::map<std::string, NpyArray>
asMap(const std::vector<std::pair<std::string, NpyArray>> &v) {
  return std::map<std::string, NpyArray>(v.begin(), v.end());
}

/// The MoE statistics are exact (integers): they must agree.
void expectSameReports(const RunResult &gpu, const RunResult &cpu) {
  ASSERT_EQ(gpu.reports.size(), cpu.reports.size());
  for (size_t r = 0; r < gpu.reports.size(); ++r) {
    const RunReport &g = gpu.reports[r], &c = cpu.reports[r];
    EXPECT_EQ(g.backend, "cuda");
    EXPECT_EQ(g.steps.size(), c.steps.size());
    ASSERT_EQ(g.collectives.size(), c.collectives.size());
    for (size_t i = 0; i < g.collectives.size(); ++i) {
      EXPECT_EQ(g.collectives[i].axes, c.collectives[i].axes);
      EXPECT_EQ(g.collectives[i].ranks, c.collectives[i].ranks);
    }
    ASSERT_EQ(g.layers.size(), c.layers.size());
    for (size_t l = 0; l < g.layers.size(); ++l) {
      const MoELayerStats &a = g.layers[l], &b = c.layers[l];
      EXPECT_EQ(a.tokensPerExpert, b.tokensPerExpert) << "rank " << r;
      EXPECT_EQ(a.dropped, b.dropped) << "rank " << r;
      EXPECT_EQ(a.rowsReceived, b.rowsReceived) << "rank " << r;
      ASSERT_EQ(a.peers.size(), b.peers.size());
      for (size_t q = 0; q < a.peers.size(); ++q) {
        EXPECT_EQ(a.peers[q].peer, b.peers[q].peer);
        EXPECT_EQ(a.peers[q].rowsSent, b.peers[q].rowsSent);
        EXPECT_EQ(a.peers[q].rowsRecv, b.peers[q].rowsRecv);
        EXPECT_EQ(a.peers[q].bytesSent, b.peers[q].bytesSent);
        EXPECT_EQ(a.peers[q].bytesRecv, b.peers[q].bytesRecv);
      }
    }
  }
}

/// CUDA against the reference and the CPU backend (outputs and reports).
/// Once per in-process transport; groups of several ranks must report it.
void compareWithCpu(TestCase &tc, const std::string &tag, int runs = 1) {
  std::string path = tempPath(tag), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  RunResult cpu = runPlan(path, tc, cpuBackend);
  for (const Transport &t : inProcessTransports()) {
    SCOPED_TRACE(t.name);
    RunResult gpu = runPlan(
        path, tc, [&] { return createCudaBackend(t.options); }, runs);
    expectNear(gpu.outputs, tc.expected, tag + " (cuda vs reference)",
               tc.tolerance);
    expectNear(gpu.outputs, asMap(cpu.outputs), tag + " (cuda vs cpu)",
               tc.tolerance);
    expectSameReports(gpu, cpu);
    for (const RunReport &r : gpu.reports)
      for (const GroupTransport &g : r.collectives)
        EXPECT_EQ(g.transport, g.ranks == 1 ? "local" : t.name)
            << "rank " << r.rank << ", axes " << g.axes;
  }
  std::remove(path.c_str());
}

TEST(CudaBackend, MoEOneRank) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moe1");
}

TEST(CudaBackend, DynamicTokenCounts) {
  // The MoE plan with a dynamic token count (format version 8) compiled at
  // 32 tokens, run at 0, 1, 5 and 32 on 1 and 4 ranks (uneven and empty
  // blocks; dispatch and experts with no rows).
  REQUIRE_CUDA_DEVICE();
  for (int ranks : {1, 4})
    for (int64_t T : {0, 1, 5, 32}) {
      SCOPED_TRACE("T = " + std::to_string(T) + " on " + std::to_string(ranks) +
                   " ranks");
      MoESpec s;
      s.ranks = ranks;
      s.tokensPerRank = 32 / ranks;
      TestCase tc = makeDynamicMoE(s);
      atTokens(tc, T);
      compareWithCpu(tc,
                     "dyn" + std::to_string(ranks) + "-" + std::to_string(T));
    }
}

TEST(CudaBackend, MoEOneRankTopOneRunTwice) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  s.k = 1;
  s.renormalize = false;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moe1k1", /*runs=*/2);
}

TEST(CudaBackend, MoEPackedGate) {
  // The dequantize step after the dispatch, slots with rows only (runs of
  // consecutive slots in one launch), against the CPU backend.
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  s.ranks = 2;
  s.E = 8;
  s.k = 1;
  s.tokensPerRank = 3;
  s.packedGate = true;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moepacked");
}

TEST(CudaBackend, PackedMatmul) {
  // Packed dense layers against the CPU backend: decode-sized M takes
  // cuda::packedGemv on the codes (its dequantize step skipped), M = 40 the
  // dequantize step and cuBLAS; W1 also an output keeps its step.
  REQUIRE_CUDA_DEVICE();
  for (int64_t m : {1, 8, 40})
    for (bool weightOutput : {false, true}) {
      PackedMatmulSpec s;
      s.M = m;
      s.weightOutput = weightOutput;
      TestCase tc = makePackedMatmul(s);
      compareWithCpu(tc, "packedmm");
    }
}

TEST(CudaBackend, MoEFourRanksContiguous) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  s.ranks = 4;
  s.E = 8;
  s.tokensPerRank = 5;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moe4c");
}

TEST(CudaBackend, MoEFourRanksReplicasEmptySlot) {
  REQUIRE_CUDA_DEVICE();
  // Experts 0 and 1 have a second replica; rank 3's last slot is empty.
  MoESpec s;
  s.ranks = 4;
  s.E = 5;
  s.S = 2;
  s.slots = {0, 1, 2, 3, 4, 1, 0, -1};
  s.tokensPerRank = 7;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moe4r", /*runs=*/2);
}

TEST(CudaBackend, MoEFourRanksCapacity) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  s.ranks = 4;
  s.E = 4;
  s.S = 2;
  s.slots = {0, 1, 2, 3, 0, 1, 2, 3};
  s.capacity = 1;
  s.tokensPerRank = 4;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moe4cap");
}

// The routing weight on the expert input: scaled rows dispatched, an
// unweighted combine.
TEST(CudaBackend, MoEFourRanksWeightInput) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  s.ranks = 4;
  s.E = 8;
  s.renormalize = false;
  s.weightInput = true;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moe4win");
}

TEST(CudaBackend, MoEFourRanksIdsAsInputs) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  s.ranks = 4;
  s.idsAsInputs = true;
  TestCase tc = makeMoE(s);
  compareWithCpu(tc, "moe4ids");
}

TEST(CudaBackend, TensorParallel) {
  REQUIRE_CUDA_DEVICE();
  for (int n : {1, 4}) {
    TestCase tc = makeTP(n);
    compareWithCpu(tc, "tp" + std::to_string(n));
  }
}

TEST(CudaBackend, SliceAndGather) {
  REQUIRE_CUDA_DEVICE();
  for (auto [dp, ep] : {std::pair{1, 1}, {2, 2}})
    for (int64_t axis : {0, 2}) {
      TestCase tc = makeSliceGather(dp, ep, axis);
      compareWithCpu(tc, "slice" + std::to_string(dp * ep) + "_" +
                             std::to_string(axis));
    }
}

TEST(CudaBackend, ReduceScatter) {
  REQUIRE_CUDA_DEVICE();
  // One and four ranks (over both axes of 2 x 2, and over one of them),
  // the axis outermost (no packing) and innermost, f32 and bf16.
  for (DType dt : {DType::f32, DType::bf16})
    for (auto [dp, ep, axes] :
         {std::tuple{1, 1, "dp,ep"}, {2, 2, "dp,ep"}, {2, 2, "ep"}})
      for (int64_t axis : {0, 2}) {
        ReduceScatterSpec s;
        s.dp = dp;
        s.ep = ep;
        s.axes = axes;
        s.axis = axis;
        s.dtype = dt;
        TestCase tc = makeReduceScatter(s);
        compareWithCpu(tc, std::string("rs_") + dtypeName(dt) +
                               std::to_string(dp * ep) + "_" + axes + "_" +
                               std::to_string(axis));
      }
}

TEST(CudaBackend, SelfComm) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  TestCase tc = makeMoE(s);
  std::string path = tempPath("self"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, 0, error);
  ASSERT_TRUE(lp) << error;
  auto comm = createSelfComm();
  Executor ex(*lp, *comm, createCudaBackend());
  ex.setInputs(tc.inputs);
  ex.run();
  expectNear(ex.gatherOutputs(), tc.expected, "self");
  EXPECT_EQ(ex.report().backend, "cuda");
  std::remove(path.c_str());
}

/// Executor::holdOutputs on the device (a decode loop's KV cache): a
/// prefill's output held into a step plan, then the step fed its own
/// output, on 2 thread ranks: x + 2c, as HeldValuesTest.cpp on the CPU.
TEST(CudaBackend, HeldOutputsStayOnTheDevice) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(6);
  std::vector<float> c = randomValues(rng, kWidth);
  std::vector<float> x = randomValues(rng, 2 * 5 * kWidth);
  TestCase step = lengthPlan("past", "present", kStepMax, true, c);
  TestCase prefill = lengthPlan("x", "present", kPrefillMax, false, c);
  std::vector<std::pair<std::string, NpyArray>> outs;
  onTwoRanks(
      step, prefill, [] { return createCudaBackend(); },
      [&](Comm &world, Executor &s, Executor &p) {
        p.setInputs({{"x", floats({2, 5, kWidth}, x)}});
        p.run();
        s.holdOutputs(p, {{"present", "past"}});
        s.setInputs({});
        s.run();
        s.holdOutputs(s, {{"present", "past"}});
        s.setInputs({});
        s.run();
        auto o = s.gatherOutputs({"present"});
        if (world.rank() == 0)
          outs = std::move(o);
      });
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].second.shape, (std::vector<int64_t>{2, 5, kWidth}));
  EXPECT_EQ(valuesOf(outs[0].second), plusC(x, c, 2));
}

/// HeldValues.CacheOutsideTheArena on the device: the steps read and write
/// the two held device buffers through the views' roots.
TEST(CudaBackend, HeldCacheOutsideTheArena) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(7);
  std::vector<float> c = randomValues(rng, kWidth);
  std::vector<float> x = randomValues(rng, 2 * 3 * kWidth);
  for (bool bind : {true, false}) {
    HeldLoop r = heldLoop([] { return createCudaBackend(); }, c, x, true, bind);
    EXPECT_EQ(valuesOf(r.present), plusC(x, c, 4));
    EXPECT_EQ(r.steps, bind ? 0u : 3 * 48u);
  }
}

/// A cache kept in place (Value::boxed) needs generated kernels compiled
/// for the box's strides, which are CPU code only: refused at prepare,
/// before the device is looked at (so without a GPU too).
TEST(CudaBackend, BoxedCacheRefused) {
  TestCase step = boxedStep({}), prefill = packedPrefill();
  std::string what;
  onTwoRanks(
      step, prefill, [] { return createCudaBackend(); },
      [&](Comm &world, Executor &s, Executor &) {
        try {
          s.setInputs({{"past_k_0", floats({2, kBoxHeads, 1, kBoxWidth},
                                           std::vector<float>(16))},
                       {"new", floats({2, kBoxHeads, 1, kBoxWidth},
                                      std::vector<float>(16))}});
        } catch (const RunError &e) {
          if (world.rank() == 0)
            what = e.what();
        }
      });
  EXPECT_EQ(what, "rank 0: value 0 ('past_k_0') is a KV cache kept in place "
                  "(boxed), which the CUDA backend does not take yet; dynamic "
                  "plans with generated kernels are CPU-only");
}

TEST(CudaBackend, BadExpertIdEndsAllRanks) {
  REQUIRE_CUDA_DEVICE();
  MoESpec s;
  s.ranks = 4;
  s.E = 4;
  s.idsAsInputs = true;
  s.badRank = 1;
  TestCase tc = makeMoE(s);
  std::string path = tempPath("bad"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  try {
    runPlan(path, tc, cudaBackend);
    FAIL() << "expected a RunError";
  } catch (const RunError &e) {
    std::string m = e.what();
    EXPECT_NE(m.find("rank 1"), std::string::npos) << m;
    EXPECT_NE(m.find("/moe/dispatch"), std::string::npos) << m;
    EXPECT_NE(m.find("7"), std::string::npos) << m; // the bad id, E + 3
  }
  std::remove(path.c_str());
}

// A router left as dense ops: topk and scatter_elements steps. Not with
// reduction none: the plan's axis-0 scatter has duplicate indices, whose
// writer the device does not fix (ONNX leaves it undefined).
TEST(CudaBackend, IndexSteps) {
  REQUIRE_CUDA_DEVICE();
  for (int ranks : {1, 3})
    for (fb::ScatterReduction r :
         {fb::ScatterReduction::add, fb::ScatterReduction::mul,
          fb::ScatterReduction::max, fb::ScatterReduction::min}) {
      SCOPED_TRACE(std::to_string(ranks) + " ranks, reduction " +
                   fb::EnumNameScatterReduction(r));
      IndexSpec spec;
      spec.ranks = ranks;
      spec.reduction = r;
      spec.seed = unsigned(10 + ranks + int(r));
      TestCase tc = makeIndexSteps(spec);
      compareWithCpu(tc, "index");
    }
}

// An index out of range stops the run with the CPU backend's message.
TEST(CudaBackend, ScatterIndexOutOfRange) {
  REQUIRE_CUDA_DEVICE();
  IndexSpec spec;
  spec.ranks = 3;
  spec.badIndex = true;
  TestCase tc = makeIndexSteps(spec);
  std::string path = tempPath("badindex"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  try {
    runPlan(path, tc, cudaBackend);
    FAIL() << "expected a RunError";
  } catch (const RunError &e) {
    std::string m = e.what();
    EXPECT_NE(m.find("step 4 (scatter_elements at '/acc/scatter'): index 8 "
                     "at position 0 of indices [2,6] is out of range for "
                     "axis 0 of data [8,6]"),
              std::string::npos)
        << m;
  }
  std::remove(path.c_str());
}

TEST(CudaBackend, AttentionBatchMatmul) {
  REQUIRE_CUDA_DEVICE();
  for (int ranks : {1, 4})
    for (bool transB : {false, true}) {
      TestCase tc = makeAttention(ranks, 3, 7, 5, 11, transB);
      std::string path = tempPath("attn" + std::to_string(ranks)), error;
      ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
      RunResult r = runPlan(path, tc, cudaBackend);
      std::remove(path.c_str());
      expectNear(r.outputs, tc.expected,
                 "attention x" + std::to_string(ranks) +
                     (transB ? " (keys transposed)" : ""));
    }
}

//===----------------------------------------------------------------------===//
// `kernel` steps: hand-written PTX
//===----------------------------------------------------------------------===//

/// out[i] = in[i] * scale + 1 for i < n (pointer, pointer, i64, f32).
std::string scaleAddPtx(const std::string &entry) {
  return ".version 8.0\n.target sm_90\n.address_size 64\n\n"
         ".visible .entry " +
         entry +
         "(\n"
         "  .param .u64 p_in,\n  .param .u64 p_out,\n"
         "  .param .u64 p_n,\n  .param .f32 p_scale\n)\n{\n"
         "  .reg .pred %p<2>;\n  .reg .b32 %r<5>;\n"
         "  .reg .b64 %rd<10>;\n  .reg .f32 %f<4>;\n"
         "  ld.param.u64 %rd1, [p_in];\n  ld.param.u64 %rd2, [p_out];\n"
         "  ld.param.u64 %rd3, [p_n];\n  ld.param.f32 %f1, [p_scale];\n"
         "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n"
         "  mov.u32 %r3, %tid.x;\n  mad.lo.s32 %r4, %r1, %r2, %r3;\n"
         "  cvt.s64.s32 %rd4, %r4;\n  setp.ge.s64 %p1, %rd4, %rd3;\n"
         "  @%p1 bra DONE;\n"
         "  cvta.to.global.u64 %rd5, %rd1;\n"
         "  cvta.to.global.u64 %rd6, %rd2;\n"
         "  shl.b64 %rd7, %rd4, 2;\n  add.s64 %rd8, %rd5, %rd7;\n"
         "  ld.global.f32 %f2, [%rd8];\n"
         "  fma.rn.f32 %f3, %f2, %f1, 0f3F800000;\n"
         "  add.s64 %rd9, %rd6, %rd7;\n  st.global.f32 [%rd9], %f3;\n"
         "DONE:\n  ret;\n}\n";
}

/// y = (x * 2 + 1) * 0.5 + 1 through two launches of two PTX modules.
TestCase makeKernelPlan(int ranks) {
  TestCase tc;
  const int64_t Tl = 3, C = 37, n = Tl * C;
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "CudaBackendTest.cpp";
  p.mesh = {{"ep", ranks}};
  Builder b(p, tc.data);
  b.segments(ranks);
  int32_t vx = b.value("x", DType::f32, {Tl, C}, ValueKind::input);
  int32_t vy = b.value("y", DType::f32, {Tl, C}, ValueKind::output);
  fb::KernelT kern;
  kern.name = "kernel_0";
  b.step(kern, {vx}, {vy}, "/fused");
  std::string blob = scaleAddPtx("scale_add_a");
  blob.push_back('\0');
  blob += scaleAddPtx("scale_add_b");
  blob.push_back('\0');
  embedCode(tc, p.ptxCode, blob.data(), blob.size());
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return int64_t(u);
  };
  KernelCode k;
  k.name = "kernel_0";
  k.numArgs = 2;
  GpuLaunchCode l1;
  l1.module = 0;
  l1.function = "scale_add_a";
  l1.grid[0] = (n + 31) / 32;
  l1.block[0] = 32;
  l1.args = {0, 0, 0, 1, 1, n, 2, bits(2.0f)};
  GpuLaunchCode l2 = l1;
  l2.module = 1;
  l2.function = "scale_add_b";
  l2.args = {0, 1, 0, 1, 1, n, 2, bits(0.5f)};
  k.launches = {l1, l2};
  p.kernels.push_back(k);

  std::mt19937 rng(3);
  std::vector<float> x = randomFloats(rng, size_t(n * ranks), 1.0f);
  std::vector<double> xd(x.begin(), x.end()), yd(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    yd[i] = (double(x[i]) * 2 + 1) * 0.5 + 1;
  ModelIO in;
  in.name = "x";
  in.shape = {Tl * ranks, C};
  in.split.axis = 0;
  in.split.over = {"ep"};
  in.value = vx;
  p.inputs.push_back(in);
  ModelIO out = in;
  out.name = "y";
  out.value = vy;
  p.outputs.push_back(out);
  tc.inputs["x"] = f32Array({Tl * ranks, C}, xd);
  tc.expected["y"] = f32Array({Tl * ranks, C}, yd);
  return tc;
}

TEST(CudaBackend, KernelPlanIsValid) {
  // No GPU needed: the hand-built PTX plan verifies and its code maps.
  TestCase tc = makeKernelPlan(4);
  std::string path = tempPath("ptxplan"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, 2, error);
  ASSERT_TRUE(lp) << error;
  const char *code = lp->codeData(lp->plan().ptxCode);
  ASSERT_NE(code, nullptr);
  EXPECT_EQ(std::string(code).substr(0, 12), ".version 8.0");
  ASSERT_EQ(lp->plan().kernels.size(), 1u);
  EXPECT_EQ(lp->plan().kernels[0].launches.size(), 2u);
  std::remove(path.c_str());
}

TEST(CudaBackend, GeneratedKernelSteps) {
  REQUIRE_CUDA_DEVICE();
  for (int ranks : {1, 4}) {
    TestCase tc = makeKernelPlan(ranks);
    std::string path = tempPath("ptx" + std::to_string(ranks)), error;
    ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
    RunResult r = runPlan(path, tc, cudaBackend);
    std::remove(path.c_str());
    expectNear(r.outputs, tc.expected, "ptx x" + std::to_string(ranks));
  }
}

//===----------------------------------------------------------------------===//
// Without a (usable) device
//===----------------------------------------------------------------------===//

TEST(CudaBackend, DeviceErrorsAreClear) {
  // No GPU: "no CUDA device: ..."; with one: a device index out of range.
  MoESpec s;
  TestCase tc = makeMoE(s);
  std::string path = tempPath("nodev"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, 0, error);
  ASSERT_TRUE(lp) << error;
  std::string why;
  bool have = cudaBackendAvailable(&why);
  CudaBackendOptions o;
  if (have)
    o.device = 4096;
  auto comm = createSelfComm();
  Executor ex(*lp, *comm, createCudaBackend(o));
  EXPECT_EQ(ex.report().backend, "cuda");
  try {
    ex.setInputs(tc.inputs);
    FAIL() << "expected a RunError";
  } catch (const RunError &e) {
    std::string m = e.what();
    EXPECT_NE(m.find("rank 0"), std::string::npos) << m;
    if (have)
      EXPECT_NE(m.find("CUDA device 4096 requested"), std::string::npos) << m;
    else
      EXPECT_NE(m.find("no CUDA device: " + why), std::string::npos) << m;
  }
  std::remove(path.c_str());
}

} // namespace

/// Uneven row blocks of a dynamic count (RowPlans.h, as RowBlocksTest.cpp on
/// the CPU): all_slice and all_gather of T = 0..8 rows over 4 thread ranks
/// on the device; a reduce_scatter into uneven blocks is refused by name.
TEST(CudaBackend, RowBlocksAtEveryCount) {
  REQUIRE_CUDA_DEVICE();
  using namespace rows;
  TestCase tc = makeRowPlan(false, /*reduceScatter=*/false);
  std::mt19937 rng(12);
  std::vector<float> x = randomValues(rng, size_t(kMax * K));
  const std::vector<int64_t> counts = {0, 1, 3, 5, 7, 8, 2};
  auto outs =
      runAtCounts(tc, "cuda", counts, x, [] { return createCudaBackend(); });
  for (size_t c = 0; c < counts.size(); ++c) {
    int64_t T = counts[c];
    SCOPED_TRACE("T = " + std::to_string(T));
    ASSERT_TRUE(outs[c].count("out"));
    const NpyArray &got = outs[c].at("out");
    EXPECT_EQ(got.shape, (std::vector<int64_t>{T, K}));
    std::vector<double> want = rowReference(x, T).at("out");
    std::vector<float> have = valuesOf(got);
    ASSERT_EQ(have.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(have[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << i;
  }
  TestCase withRs = makeRowPlan(false, /*reduceScatter=*/true);
  try {
    runAtCounts(withRs, "cuda-rs", {5}, x, [] { return createCudaBackend(); });
    ADD_FAILURE() << "an uneven reduce_scatter ran on the CUDA backend";
  } catch (const std::exception &e) {
    EXPECT_NE(std::string(e.what()).find("runs on the CPU backend only"),
              std::string::npos)
        << e.what();
  }
}
