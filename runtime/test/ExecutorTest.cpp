//===- ExecutorTest.cpp - plans run on 1, 2 and 4 thread ranks ------------===//
//
// Hand-built plans (TestPlans.h, written with writePlan and loaded back)
// run on ThreadComm ranks and are compared with the dense plain-loop
// references: a one-layer MoE under several placements (contiguous,
// round-robin, replicas, empty slots) with and without capacity, a
// tensor-parallel MLP with all_reduce and all_gather, all_slice and
// reduce_scatter over one and two mesh axes (f32 and bf16), attention. Also
// the reports, the input checks and a rank that fails (bad expert id) ending
// every rank.
//
// Tolerance: fp32 kernels against double references; dot products of at most
// 24 terms of magnitude <= 1, so 1e-4 of the reference's largest magnitude;
// bf16 results are rounded once, so 2 ulps of bf16 (TestCase::tolerance).
//
//===----------------------------------------------------------------------===//

#include "CpuTestUtil.h"
#include "DensePlans.h"
#include "QuantPlans.h"
#include "TestKernels.h"
#include "TestPlans.h"

#include "moert/Comm.h"
#include "moert/Executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <unistd.h>

using namespace moert;
using namespace moert::testplans;

namespace {

std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-exec-" + tag + "-" +
         std::to_string(getpid()) + ".moeplan";
}

struct RunResult {
  std::vector<std::pair<std::string, NpyArray>> outputs;
  std::vector<RunReport> reports;
};

/// Writes the plan, runs it on its world size of thread ranks.
RunResult runCase(TestCase &tc, const std::string &tag) {
  std::string path = tempPath(tag), error;
  EXPECT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  int n = int(tc.plan.worldSize());
  RunResult result;
  runThreadRanks(n, [&](Comm &world) {
    std::string err;
    auto lp = LoadedPlan::open(path, world.rank(), err);
    if (!lp)
      throw RunError(err);
    Executor ex(*lp, world, createCpuBackend());
    ex.setInputs(tc.inputs);
    ex.run();
    auto outs = ex.gatherOutputs();
    auto reps = ex.gatherReports();
    if (world.rank() == 0) {
      result.outputs = std::move(outs);
      result.reports = std::move(reps);
    }
  });
  std::remove(path.c_str());
  return result;
}

void expectMatches(const RunResult &r, const TestCase &tc) {
  ASSERT_EQ(r.outputs.size(), tc.expected.size());
  for (auto &[name, got] : r.outputs) {
    const NpyArray &want = tc.expected.at(name);
    EXPECT_EQ(got.shape, want.shape) << name;
    ASSERT_EQ(got.data.size(), want.data.size()) << name;
    test::expectNearScaled(reinterpret_cast<const float *>(got.data.data()),
                           reinterpret_cast<const float *>(want.data.data()),
                           got.data.size() / 4, tc.tolerance, name);
  }
}

/// Sum over ranks of the tokens per expert equals every assignment; rows
/// sent by p to q equal rows q received from p.
void expectConsistentReports(const RunResult &r, const MoESpec &spec) {
  ASSERT_EQ(int(r.reports.size()), spec.ranks);
  int64_t total = 0, dropped = 0;
  for (const RunReport &rep : r.reports) {
    ASSERT_EQ(rep.layers.size(), 1u);
    const MoELayerStats &l = rep.layers[0];
    EXPECT_EQ(l.loc, "/moe/dispatch");
    ASSERT_EQ(int64_t(l.tokensPerExpert.size()), spec.E);
    for (int64_t t : l.tokensPerExpert)
      total += t;
    dropped += l.dropped;
    ASSERT_EQ(int(l.peers.size()), spec.ranks);
    for (int q = 0; q < spec.ranks; ++q) {
      const PeerTraffic &mine = l.peers[q];
      const PeerTraffic &theirs = r.reports[q].layers[0].peers[rep.rank];
      EXPECT_EQ(mine.peer, q);
      EXPECT_EQ(mine.rowsSent, theirs.rowsRecv);
      EXPECT_EQ(mine.bytesSent, theirs.bytesRecv);
      EXPECT_EQ(mine.rowsRecv, theirs.rowsSent);
      // Dispatch sends rowsSent rows, combine returns the rowsRecv rows.
      EXPECT_EQ(mine.bytesSent, (mine.rowsSent + mine.rowsRecv) * spec.H * 4);
    }
    EXPECT_EQ(rep.steps.size(),
              (spec.idsAsInputs ? 3u : 5u) + (spec.packedGate ? 1u : 0u));
    // One group (ep), carried by the thread communicator (the report went
    // through JSON on its way to rank 0).
    ASSERT_EQ(rep.collectives.size(), 1u);
    EXPECT_EQ(rep.collectives[0].axes, "ep");
    EXPECT_EQ(rep.collectives[0].ranks, spec.ranks);
    EXPECT_EQ(rep.collectives[0].transport,
              spec.ranks == 1 ? "local" : "threads");
  }
  EXPECT_EQ(total, spec.ranks * spec.tokensPerRank * spec.k);
  if (spec.capacity < 0) {
    EXPECT_EQ(dropped, 0);
  }
}

void runMoE(const MoESpec &spec, const std::string &tag) {
  TestCase tc = makeMoE(spec);
  RunResult r = runCase(tc, tag);
  expectMatches(r, tc);
  expectConsistentReports(r, spec);
}

TEST(Executor, MoEOneRank) {
  MoESpec s;
  runMoE(s, "moe1");
}

TEST(Executor, MoEOneRankTopOne) {
  MoESpec s;
  s.k = 1;
  s.renormalize = false;
  runMoE(s, "moe1k1");
}

TEST(Executor, MoETwoRanksContiguous) {
  MoESpec s;
  s.ranks = 2;
  runMoE(s, "moe2c");
}

TEST(Executor, MoETwoRanksRoundRobin) {
  MoESpec s;
  s.ranks = 2;
  s.S = 2;
  s.slots = {0, 2, 1, 3};
  runMoE(s, "moe2rr");
}

TEST(Executor, MoETwoRanksEmptySlot) {
  MoESpec s;
  s.ranks = 2;
  s.E = 3;
  s.S = 2;
  s.slots = {0, 1, 2, -1};
  runMoE(s, "moe2e");
}

TEST(Executor, MoEFourRanksContiguous) {
  MoESpec s;
  s.ranks = 4;
  s.E = 8;
  s.tokensPerRank = 5;
  runMoE(s, "moe4c");
}

TEST(Executor, MoEFourRanksReplicas) {
  // Experts 0 and 1 have a second replica on ranks 3 and 2.
  MoESpec s;
  s.ranks = 4;
  s.E = 6;
  s.S = 2;
  s.slots = {0, 1, 2, 3, 4, 1, 5, 0};
  s.tokensPerRank = 7;
  runMoE(s, "moe4r");
}

TEST(Executor, MoEPackedGate) {
  // w_gate as 4-bit codes, dequantized after the dispatch for the slots
  // that received rows only: with one token per rank and k=1 of 8 experts
  // most slots get none, and the experts step must not need them.
  for (int64_t tokens : {int64_t(1), int64_t(8)}) {
    MoESpec s;
    s.ranks = 2;
    s.E = 8;
    s.k = 1;
    s.tokensPerRank = tokens;
    s.packedGate = true;
    runMoE(s, "moepacked" + std::to_string(tokens));
  }
}

TEST(Executor, PackedMatmul) {
  // Two packed dense layers: the CPU backend runs their matmuls on the
  // codes (the GEMV for 1 and 3 rows, the tiles for 40), or, with W1 also
  // a plan output, runs W1's dequantize step as written; 2, 4 and 8 bits.
  for (int64_t m : {1, 3, 40})
    for (int64_t bits : {2, 4, 8})
      for (bool weightOutput : {false, true}) {
        PackedMatmulSpec s;
        s.M = m;
        s.bits = bits;
        s.zeroPoints = bits != 8;
        s.weightOutput = weightOutput;
        SCOPED_TRACE("M=" + std::to_string(m) + " bits=" +
                     std::to_string(bits) + (weightOutput ? " W1 out" : ""));
        TestCase tc = makePackedMatmul(s);
        expectMatches(runCase(tc, "packedmm"), tc);
      }
}

TEST(Executor, MoETwoRanksCapacity) {
  MoESpec s;
  s.ranks = 2;
  s.capacity = 2;
  s.tokensPerRank = 9;
  TestCase tc = makeMoE(s);
  RunResult r = runCase(tc, "moe2cap");
  expectMatches(r, tc);
  expectConsistentReports(r, s);
  int64_t dropped = 0;
  for (const RunReport &rep : r.reports)
    dropped += rep.layers[0].dropped;
  EXPECT_GT(dropped, 0); // 9 tokens x 2 over 4 experts x 2 slots
}

TEST(Executor, MoEFourRanksReplicasCapacity) {
  MoESpec s;
  s.ranks = 4;
  s.E = 4;
  s.S = 2;
  s.slots = {0, 1, 2, 3, 0, 1, 2, 3};
  s.capacity = 1;
  s.tokensPerRank = 4;
  runMoE(s, "moe4rc");
}

// The routing weight on the expert input (Llama 4): dispatch sends scaled
// rows, combine sums them with weight 1.
TEST(Executor, MoEWeightInput) {
  for (int ranks : {1, 2, 4}) {
    MoESpec s;
    s.ranks = ranks;
    s.E = 8;
    s.renormalize = false;
    s.weightInput = true;
    runMoE(s, "weight-input-" + std::to_string(ranks));
  }
  MoESpec s;
  s.ranks = 4;
  s.E = 4;
  s.S = 2;
  s.slots = {0, 1, 2, 3, 1, 0, 3, 2};
  s.capacity = 3;
  s.weightInput = true;
  runMoE(s, "weight-input-replicas-capacity");
}

TEST(Executor, MoEIdsAsInputs) {
  MoESpec s;
  s.ranks = 2;
  s.idsAsInputs = true;
  runMoE(s, "moe2ids");
}

TEST(Executor, TensorParallel) {
  for (int n : {1, 2, 4}) {
    TestCase tc = makeTP(n);
    RunResult r = runCase(tc, "tp" + std::to_string(n));
    expectMatches(r, tc);
    ASSERT_EQ(int(r.reports.size()), n);
    EXPECT_EQ(r.reports[0].steps.size(), 5u);
    EXPECT_EQ(r.reports[0].steps[3].op, "all_reduce");
    for (const RunReport &rep : r.reports) {
      ASSERT_EQ(rep.collectives.size(), 1u);
      EXPECT_EQ(rep.collectives[0].axes, "tp");
      EXPECT_EQ(rep.collectives[0].ranks, n);
      EXPECT_EQ(rep.collectives[0].transport, n == 1 ? "local" : "threads");
    }
  }
}

TEST(Executor, SliceAndGatherOverTwoAxes) {
  for (auto [dp, ep] : {std::pair{1, 1}, {1, 4}, {2, 2}, {2, 3}})
    for (int64_t axis : {0, 1, 2}) {
      TestCase tc = makeSliceGather(dp, ep, axis);
      RunResult r = runCase(tc, "slice" + std::to_string(dp * ep) + "_" +
                                    std::to_string(axis));
      expectMatches(r, tc);
      ASSERT_EQ(int(r.reports.size()), dp * ep);
      EXPECT_EQ(r.reports[0].steps[0].op, "all_slice");
    }
}

TEST(Executor, SliceShapeError) {
  TestCase tc = makeSliceGather(1, 2, 0);
  tc.plan.values[size_t(tc.plan.steps[0].outputs[0])].shape = {3, 3, 5};
  try {
    runCase(tc, "slicebad");
    FAIL() << "a slice of the wrong shape ran";
  } catch (const std::exception &e) {
    EXPECT_NE(
        std::string(e.what()).find("x [4,3,5] is not 2 copies of y [3,3,5]"),
        std::string::npos)
        << e.what();
  }
}

/// Runs a reduce_scatter plan and checks it: outputs against the plain
/// loops, all_gather after reduce_scatter bit for bit equal to all_reduce,
/// and each rank's bytes_in (x's bytes when the group has several ranks).
void runReduceScatter(const ReduceScatterSpec &spec) {
  TestCase tc = makeReduceScatter(spec);
  std::string tag = std::string("rs_") + dtypeName(spec.dtype) + "_" +
                    std::to_string(spec.dp) + "x" + std::to_string(spec.ep) +
                    "_" + std::to_string(spec.axis);
  SCOPED_TRACE(tag + " over " + spec.axes);
  RunResult r = runCase(tc, tag);
  expectMatches(r, tc);
  std::map<std::string, NpyArray> out(r.outputs.begin(), r.outputs.end());
  EXPECT_EQ(out.at("gathered").data, out.at("reduced").data);
  const Plan &p = tc.plan;
  int64_t G = int64_t(p.group(0, splitAxes(spec.axes)).size());
  const Value &x = p.values[size_t(p.steps[0].inputs[0])];
  ASSERT_EQ(int64_t(r.reports.size()), p.worldSize());
  for (const RunReport &rep : r.reports) {
    ASSERT_GE(rep.steps.size(), 3u);
    EXPECT_EQ(rep.steps[0].op, "reduce_scatter");
    EXPECT_EQ(rep.steps[0].loc, "/sp/reduce_scatter");
    EXPECT_EQ(rep.steps[0].bytesIn, G > 1 ? int64_t(x.byteSize()) : 0)
        << "rank " << rep.rank;
    EXPECT_EQ(rep.steps[2].bytesIn, rep.steps[0].bytesIn); // all_reduce's
  }
}

TEST(Executor, ReduceScatterOneToSixRanks) {
  for (DType dt : {DType::f32, DType::bf16})
    for (int n = 1; n <= 6; ++n)
      for (int64_t axis : {0, 1, 2}) {
        ReduceScatterSpec s;
        s.ep = n;
        s.axis = axis;
        s.dtype = dt;
        s.seed = unsigned(100 + n * 3 + axis);
        runReduceScatter(s);
      }
}

TEST(Executor, ReduceScatterOverTwoAxes) {
  // A 2 x 3 mesh: over both axes (one group of 6, in either order), and
  // over one of them (three groups of 2, two groups of 3).
  for (DType dt : {DType::f32, DType::bf16})
    for (const char *axes : {"dp,ep", "ep,dp", "dp", "ep"})
      for (int64_t axis : {0, 2}) {
        ReduceScatterSpec s;
        s.dp = 2;
        s.ep = 3;
        s.axes = axes;
        s.axis = axis;
        s.dtype = dt;
        s.y = {2, 3, 5};
        runReduceScatter(s);
      }
}

TEST(Executor, ReduceScatterShapeError) {
  ReduceScatterSpec spec;
  spec.ep = 2;
  TestCase tc = makeReduceScatter(spec);
  tc.plan.values[size_t(tc.plan.steps[0].outputs[0])].shape = {3, 5, 6};
  try {
    runCase(tc, "rsbad");
    FAIL() << "a reduce_scatter of the wrong shape ran";
  } catch (const std::exception &e) {
    std::string what = e.what();
    EXPECT_NE(what.find("step 0 (reduce_scatter at '/sp/reduce_scatter'): x "
                        "[6,5,7] is not 2 copies of y [3,5,6] along axis 0"),
              std::string::npos)
        << what;
  }
}

TEST(Executor, AttentionBatchMatmul) {
  for (int n : {1, 2}) {
    TestCase tc = makeAttention(n);
    RunResult r = runCase(tc, "attn" + std::to_string(n));
    expectMatches(r, tc);
    ASSERT_EQ(r.reports[0].steps.size(), 3u);
    EXPECT_EQ(r.reports[0].steps[0].op, "batch_matmul");
  }
}

TEST(Executor, AttentionBatchMatmulTransB) {
  // q k^T with the keys as they lie ([B, S, D], trans_b): against the same
  // plain loop; a plan with it is format version 9.
  for (int n : {1, 2}) {
    TestCase tc = makeAttention(n, 3, 7, 5, 11, /*transB=*/true);
    EXPECT_EQ(minPlanVersion(tc.plan), kPlanVersionBatchTransB);
    RunResult r = runCase(tc, "attnT" + std::to_string(n));
    expectMatches(r, tc);
  }
  TestCase plain = makeAttention(1);
  EXPECT_EQ(minPlanVersion(plain.plan), kPlanVersion);
}

TEST(Executor, BatchMatmulShapeErrors) {
  // B's batch or contraction size differs from A's: the step names both
  // (and a transposed B, trans_b, whose rows and columns are the other way
  // round, as transposed).
  for (bool transB : {false, true})
    for (auto shape : {std::vector<int64_t>{2, 5, 7}, {3, 4, 7}, {3, 5, 7}}) {
      if (!transB && shape[1] == 5 && shape[0] == 3)
        continue; // [3, 5, 7] is kt's own shape
      TestCase tc = makeAttention(1, 3, 7, 5, 11, transB);
      const char *k = transB ? "k" : "kt";
      tc.plan.values[size_t(tc.plan.steps[0].inputs[1])].shape = shape;
      tc.plan.inputs[1].shape = shape;
      tc.inputs[k].shape = shape;
      tc.inputs[k].data.resize(size_t(shape[0] * shape[1] * shape[2]) * 4);
      try {
        runCase(tc, "attnbad");
        FAIL() << "expected a RunError";
      } catch (const RunError &e) {
        std::string m = e.what();
        EXPECT_NE(m.find("/attn/qk"), std::string::npos) << m;
        EXPECT_NE(m.find("does not match B"), std::string::npos) << m;
        EXPECT_EQ(m.find("(transposed)") != std::string::npos, transB) << m;
      }
    }
}

/// A plan whose one `kernel` step passes kWideKernelInputs + 1 pointers to
/// TestKernels.cpp's kernel_0 (the plan's CPU code): the CPU backend calls
/// every kernel through one array of pointers, whatever their number.
TestCase makeWideKernel(int ranks) {
  TestCase tc;
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "ExecutorTest.cpp";
  p.mesh = {{"ep", ranks}};
  Builder b(p, tc.data);
  b.segments(ranks);
  const int64_t R = kWideKernelRows, C = kWideKernelCols;
  std::vector<int32_t> xs;
  for (int i = 0; i < kWideKernelInputs; ++i)
    xs.push_back(
        b.value("x" + std::to_string(i), DType::f32, {R, C}, ValueKind::input));
  int32_t vy = b.value("y", DType::f32, {R, C}, ValueKind::output);
  fb::KernelT kern;
  kern.name = "kernel_0";
  b.step(kern, xs, {vy}, "/wide");
  KernelCode k;
  k.name = "kernel_0";
  k.numArgs = kWideKernelInputs + 1;
  p.kernels.push_back(k);
  std::ifstream so(MOERT_TEST_KERNELS, std::ios::binary);
  std::vector<char> code((std::istreambuf_iterator<char>(so)),
                         std::istreambuf_iterator<char>());
  EXPECT_FALSE(code.empty()) << MOERT_TEST_KERNELS;
  embedCode(tc, p.cpuCode, code.data(), code.size());

  std::mt19937 rng(5);
  std::vector<double> y(size_t(R * ranks * C), 0.0);
  for (int i = 0; i < kWideKernelInputs; ++i) {
    std::vector<float> x = randomFloats(rng, y.size(), 1.0f);
    std::vector<double> xd(x.begin(), x.end());
    for (size_t e = 0; e < y.size(); ++e)
      y[e] += (i + 1) * xd[e];
    std::string name = "x" + std::to_string(i);
    p.inputs.push_back(splitIO(name, DType::f32, {R * ranks, C}, xs[i], "ep"));
    tc.inputs[name] = f32Array({R * ranks, C}, xd);
  }
  p.outputs.push_back(splitIO("y", DType::f32, {R * ranks, C}, vy, "ep"));
  tc.expected["y"] = f32Array({R * ranks, C}, y);
  return tc;
}

TEST(Executor, KernelOfManyOperands) {
  for (int ranks : {1, 2}) {
    TestCase tc = makeWideKernel(ranks);
    std::string error;
    ASSERT_TRUE(verifyPlan(tc.plan, error)) << error;
    RunResult r = runCase(tc, "wide" + std::to_string(ranks));
    expectMatches(r, tc);
  }
}

/// Runs `tc` on one rank (SelfComm, CPU backend) and checks its outputs;
/// returns the first step's bytes_in.
static int64_t runOnSelfComm(TestCase tc, const char *name) {
  std::string path = tempPath(name), error;
  EXPECT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, 0, error);
  EXPECT_TRUE(lp) << error;
  if (!lp)
    return -1;
  auto comm = createSelfComm();
  Executor ex(*lp, *comm, createCpuBackend());
  ex.setInputs(tc.inputs);
  ex.run();
  RunResult r;
  r.outputs = ex.gatherOutputs();
  expectMatches(r, tc);
  std::remove(path.c_str());
  return ex.report().steps.empty() ? -1 : ex.report().steps[0].bytesIn;
}

TEST(Executor, SelfComm) {
  MoESpec s;
  runOnSelfComm(makeMoE(s), "self");
}

TEST(Executor, ReduceScatterSelfComm) {
  for (DType dt : {DType::f32, DType::bf16}) {
    ReduceScatterSpec s;
    s.dtype = dt;
    s.axis = 1;
    EXPECT_EQ(runOnSelfComm(makeReduceScatter(s), "rsself"), 0);
  }
}

TEST(Executor, BadExpertIdEndsAllRanks) {
  MoESpec s;
  s.ranks = 4;
  s.E = 4;
  s.idsAsInputs = true;
  s.badRank = 1;
  TestCase tc = makeMoE(s);
  try {
    runCase(tc, "bad");
    FAIL() << "expected a RunError";
  } catch (const RunError &e) {
    std::string m = e.what();
    EXPECT_NE(m.find("rank 1"), std::string::npos) << m;
    EXPECT_NE(m.find("/moe/dispatch"), std::string::npos) << m;
    EXPECT_NE(m.find("7"), std::string::npos) << m; // the bad id, E + 3
  }
}

// The grouping rules of moert/Routing.h hold on every backend: E = 4
// experts in 3 groups is refused with the step named, not routed.
TEST(Executor, RouteGroupingRules) {
  MoESpec s;
  s.ranks = 2;
  TestCase tc = makeMoE(s);
  bool found = false;
  for (Step &st : tc.plan.steps)
    if (fb::RouteT *r = st.attrs.Asroute()) {
      r->num_groups = 3;
      r->topk_groups = 2;
      found = true;
    }
  ASSERT_TRUE(found);
  try {
    runCase(tc, "badgroups");
    FAIL() << "expected a RunError";
  } catch (const RunError &e) {
    std::string m = e.what();
    EXPECT_NE(m.find("bad grouping: 3 groups of 4 experts, 2 kept"),
              std::string::npos)
        << m;
  }
}

TEST(Executor, WrongWorldSize) {
  MoESpec s;
  s.ranks = 2;
  TestCase tc = makeMoE(s);
  std::string path = tempPath("ws"), error;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error)) << error;
  auto lp = LoadedPlan::open(path, 0, error);
  ASSERT_TRUE(lp) << error;
  auto comm = createSelfComm();
  EXPECT_THROW(Executor(*lp, *comm, createCpuBackend()), RunError);
  std::remove(path.c_str());
}

TEST(Executor, CheckInputs) {
  MoESpec s;
  s.idsAsInputs = true;
  TestCase tc = makeMoE(s);
  std::string error;
  EXPECT_TRUE(checkInputs(tc.plan, tc.inputs, error)) << error;
  auto in = tc.inputs;
  in.erase("ids");
  EXPECT_FALSE(checkInputs(tc.plan, in, error));
  EXPECT_NE(error.find("missing input 'ids'"), std::string::npos) << error;
  in = tc.inputs;
  in["y"] = in["x"];
  EXPECT_FALSE(checkInputs(tc.plan, in, error));
  EXPECT_NE(error.find("unknown input 'y'"), std::string::npos) << error;
  in = tc.inputs;
  in["x"].shape = {4, 32};
  EXPECT_FALSE(checkInputs(tc.plan, in, error));
  EXPECT_NE(error.find("input 'x': expected shape [8,16], got [4,32]"),
            std::string::npos)
      << error;
  in = tc.inputs;
  in["ids"].dtype = "<i4";
  EXPECT_FALSE(checkInputs(tc.plan, in, error));
  EXPECT_NE(error.find("input 'ids': expected dtype i64 (<i8), got <i4"),
            std::string::npos)
      << error;
}

TEST(Comm, ThreadCollectives) {
  const int n = 3;
  std::atomic<int> ok{0};
  runThreadRanks(n, [&](Comm &c) {
    int r = c.rank();
    std::vector<int64_t> send(n), recv(n);
    for (int p = 0; p < n; ++p)
      send[p] = r * 10 + p;
    c.allToAll(send.data(), recv.data(), 1);
    for (int p = 0; p < n; ++p)
      if (recv[p] != p * 10 + r)
        throw std::runtime_error("allToAll");
    // Rank r sends p+1 bytes of value r to p.
    std::vector<int64_t> sb(n), so(n), rb(n), ro(n);
    std::vector<char> sbuf, rbuf;
    for (int p = 0; p < n; ++p) {
      so[p] = int64_t(sbuf.size());
      sb[p] = p + 1;
      sbuf.insert(sbuf.end(), p + 1, char(r));
      ro[p] = p * 8;
      rb[p] = r + 1;
    }
    rbuf.assign(8 * n, -1);
    c.allToAllV(sbuf.data(), sb.data(), so.data(), rbuf.data(), rb.data(),
                ro.data());
    for (int p = 0; p < n; ++p)
      for (int i = 0; i <= r; ++i)
        if (rbuf[p * 8 + i] != char(p))
          throw std::runtime_error("allToAllV");
    float v[2] = {float(r), 1.0f};
    c.allReduceSum(v, 2);
    if (v[0] != 3.0f || v[1] != 3.0f)
      throw std::runtime_error("allReduceSum");
    // Block p of rank r holds r + 10 p and 1: rank p gets 3 + 30 p and 3.
    std::vector<float> blocks(2 * n), part(2, -1.0f);
    for (int p = 0; p < n; ++p) {
      blocks[2 * p] = float(r + 10 * p);
      blocks[2 * p + 1] = 1.0f;
    }
    c.reduceScatterSum(blocks.data(), part.data(), 2);
    if (part[0] != float(3 + 30 * r) || part[1] != 3.0f)
      throw std::runtime_error("reduceScatterSum");
    int32_t mine = r * 7, all[n];
    c.allGather(&mine, 4, all);
    for (int p = 0; p < n; ++p)
      if (all[p] != p * 7)
        throw std::runtime_error("allGather");
    std::vector<std::vector<char>> g;
    std::string s(r + 1, 'a' + r);
    c.gatherToRoot(s.data(), int64_t(s.size()), g);
    if (r == 0 && (g.size() != n || g[2] != std::vector<char>(3, 'c')))
      throw std::runtime_error("gatherToRoot");
    auto sub = c.split(r % 2, -r);
    if (sub->size() != (r % 2 ? 1 : 2) || (r == 2 && sub->rank() != 0))
      throw std::runtime_error("split");
    float x = 1.0f;
    sub->allReduceSum(&x, 1);
    if (x != float(sub->size()))
      throw std::runtime_error("split allReduce");
    c.barrier();
    ++ok;
  });
  EXPECT_EQ(ok, n);
}

TEST(Comm, EmptyAllToAllV) {
  // A rank that sends and receives no rows passes empty buffers (null
  // data(), as a dispatch with nothing to move): nothing is copied (under
  // UBSan, scripts/sanitize.sh, a memcpy of null failed here).
  for (int n : {1, 3}) {
    auto run = [n](Comm &c) {
      std::vector<int64_t> zero(n, 0);
      std::vector<char> none;
      c.allToAllV(none.data(), zero.data(), zero.data(), none.data(),
                  zero.data(), zero.data());
    };
    if (n == 1)
      run(*createSelfComm());
    else
      runThreadRanks(n, run);
  }
}

TEST(Comm, ThreadAbortWakesPeers) {
  try {
    runThreadRanks(3, [](Comm &c) {
      if (c.rank() == 2)
        throw RunError("rank 2 gives up");
      c.barrier(); // the others wait here until the abort
      c.barrier();
    });
    FAIL() << "expected the rank's error";
  } catch (const RunError &e) {
    EXPECT_STREQ(e.what(), "rank 2 gives up");
  }
}

} // namespace
