//===- PlanTest.cpp - .moeplan writer, reader and verifier ----------------===//
//
// A hand-built plan (TestPlans.h) written and read back for every rank; each
// corruption of the file refused with its message naming the file (a
// flipped weight byte by the segment checksums, moert/Checksum.h); each
// check of verifyPlan; a reduce_scatter step through the file, --describe
// and the verifier. (The rules of topk and scatter_elements steps:
// IndexStepsTest.cpp; mesh ranks and groups: MeshTest.cpp.)
//
//===----------------------------------------------------------------------===//

#include "DensePlans.h"
#include "IndexPlans.h"
#include "TestPlans.h"

#include "moert/Checksum.h"
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

#define EXPECT_CONTAINS(s, sub)                                                \
  EXPECT_NE(std::string(s).find(sub), std::string::npos) << (s)

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
  // The data region, then the checksum trailer: one per segment.
  uint64_t trailer = dataOffset + field<uint64_t>(bytes, 40);
  ASSERT_EQ(tc.plan.segments.size(), 3u);
  EXPECT_EQ(bytes.size(), trailer + 8 * 3);
  for (size_t i = 0; i < 3; ++i) {
    const Segment &s = tc.plan.segments[i];
    EXPECT_EQ(s.offset % 4096, 0u) << s.name;
    EXPECT_EQ(field<uint64_t>(bytes, trailer + 8 * i),
              weightChecksum(bytes.data() + dataOffset + s.offset, s.size))
        << s.name;
  }
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
  expectRefused(bytes.substr(0, bytes.size() - 3 * 8 - 1),
                "truncated plan (the weights need");
  expectRefused(bytes.substr(0, bytes.size() - 1),
                "truncated plan (its checksum trailer of 3 segments is "
                "missing)");
}

TEST_F(PlanFile, VersionMismatch) {
  std::string f = bytes;
  setField<uint32_t>(f, 8, kPlanVersion - 1); // before the checksums
  expectRefused(f, "plan format version " + std::to_string(kPlanVersion - 1));
  expectRefused(f, "reads version " + std::to_string(kPlanVersion));
}

TEST_F(PlanFile, ChecksumMismatch) {
  std::string f = bytes;
  f[80] ^= 1;
  expectRefused(f, "checksum mismatch");
}

TEST(WeightChecksum, KnownValuesAndPieces) {
  // XXH64 (seed 0) of "", "a", "abc" and of 1000 bytes (i * 131 + 7), as
  // the xxHash library computes them.
  EXPECT_EQ(weightChecksum("", 0), 0xef46db3751d8e999ull);
  EXPECT_EQ(weightChecksum("a", 1), 0xd24ec4f1a98c6e5bull);
  EXPECT_EQ(weightChecksum("abc", 3), 0x44bc2cf5ad770999ull);
  std::string s;
  for (int i = 0; i < 1000; ++i)
    s += char((i * 131 + 7) & 0xff);
  EXPECT_EQ(weightChecksum(s.data(), 33), 0x09f85eeb4e1cbe9full);
  EXPECT_EQ(weightChecksum(s.data(), 1000), 0x0bf0bdbcc82eb373ull);
  // In pieces of any size (the writer's windows): the same digest.
  for (size_t piece : {1, 5, 31, 32, 33, 999}) {
    WeightHasher h;
    for (size_t i = 0; i < s.size(); i += piece)
      h.update(s.data() + i, std::min(piece, s.size() - i));
    EXPECT_EQ(h.digest(), 0x0bf0bdbcc82eb373ull) << piece;
  }
  // Any one flipped bit changes it.
  for (size_t i = 0; i < s.size(); i += 37) {
    std::string t = s;
    t[i] ^= 4;
    EXPECT_NE(weightChecksum(t.data(), t.size()), 0x0bf0bdbcc82eb373ull) << i;
  }
}

TEST_F(PlanFile, FlippedWeightByte) {
  // One byte of rank 1's segment (2) flipped: rank 1 refuses the plan naming
  // the segment; rank 0 does not map it; --no-verify-weights loads it.
  const Segment &seg = tc.plan.segments[2];
  std::string f = bytes;
  f[field<uint64_t>(bytes, 32) + seg.offset + seg.size / 2] ^= 1;
  writeFile(path, f);
  std::string error;
  EXPECT_FALSE(LoadedPlan::open(path, 1, error));
  std::string name = path.substr(path.rfind('/') + 1);
  EXPECT_CONTAINS(error, path + ": weight segment 2 'rank1' (rank 1 / file " +
                             name +
                             ") checksum mismatch: the file is corrupt (or "
                             "pass --no-verify-weights)");
  EXPECT_TRUE(LoadedPlan::open(path, 0, error)) << error;
  EXPECT_TRUE(LoadedPlan::open(path, -1, error)) << error;
  EXPECT_TRUE(LoadedPlan::open(path, 1, error, /*verifyWeights=*/false));
  // The shared segment: every rank refuses; a flipped trailer entry too.
  f = bytes;
  f[field<uint64_t>(bytes, 32) + tc.plan.segments[0].offset] ^= 0x80;
  for (int rank : {0, 1}) {
    writeFile(path, f);
    EXPECT_FALSE(LoadedPlan::open(path, rank, error));
    EXPECT_CONTAINS(error, "weight segment 0 'shared' (rank " +
                               std::to_string(rank) + " / file " + name +
                               ") checksum mismatch");
  }
  f = bytes;
  f[f.size() - 16] ^= 1; // segment 1's entry
  expectRefused(f, "weight segment 1 'rank0' (rank 0");
}

TEST_F(PlanFile, FlippedPaddingByte) {
  // A byte of the zero padding after rank 1's segment (2), which no
  // checksum covers: rank 1 refuses the plan; rank 0 does not map segment 2;
  // --no-verify-weights loads it. The last byte of the data region (after
  // the last segment) is padding too.
  const Segment &seg = tc.plan.segments[2];
  uint64_t data = field<uint64_t>(bytes, 32);
  ASSERT_NE(seg.size % 4096, 0u) << "the test needs padding after segment 2";
  std::string f = bytes;
  f[data + seg.offset + seg.size] ^= 1;
  writeFile(path, f);
  std::string error;
  EXPECT_FALSE(LoadedPlan::open(path, 1, error));
  EXPECT_CONTAINS(error, "weight segment 2 'rank1' (rank 1 / file " +
                             path.substr(path.rfind('/') + 1) +
                             "): the padding after it is not zeros");
  EXPECT_TRUE(LoadedPlan::open(path, 0, error)) << error;
  EXPECT_TRUE(LoadedPlan::open(path, 1, error, /*verifyWeights=*/false));
}

TEST_F(PlanFile, ChecksumOverDeferredPieces) {
  // Two deferred pieces after segment 1's held bytes, with zero padding
  // between them: the checksum covers what was written, padding included.
  PlanData d = tc.data;
  auto fill = [](uint64_t off, uint64_t n, char *dst, std::string &) {
    for (uint64_t i = 0; i < n; ++i)
      dst[i] = char(off + i + 1);
    return true;
  };
  uint64_t held = d.segments[1].size(), a = d.appendDeferred(1, 100, fill);
  EXPECT_EQ(a % 64, 0u);
  EXPECT_EQ(d.appendDeferred(1, 64, fill), a + 128);
  std::string error;
  ASSERT_TRUE(writePlan(path, tc.plan, d, error)) << error;
  EXPECT_EQ(tc.plan.segments[1].size, a + 192);
  EXPECT_TRUE(LoadedPlan::open(path, 0, error)) << error;
  std::string f = readFile(path);
  uint64_t seg1 = field<uint64_t>(f, 32) + tc.plan.segments[1].offset;
  EXPECT_EQ(f[seg1 + a + 99], char(100));
  f[seg1 + a + 110] ^= 1; // the padding between the pieces
  expectRefused(f, "weight segment 1 'rank0' (rank 0");
  EXPECT_GE(a, held);
}

TEST(PlanWeightFiles, FlippedByteAndTruncatedTrailer) {
  // Per-rank weight files carry their own trailer; each rank checks the
  // segments it maps from them.
  MoESpec s;
  s.ranks = 2;
  TestCase tc = makeMoE(s);
  std::string path = tempPath("perrank"), error;
  WriteOptions o;
  o.weightsPerRank = true;
  ASSERT_TRUE(writePlan(path, tc.plan, tc.data, error, o)) << error;
  std::string wpath = rankWeightsPath(path, 1), w = readFile(wpath);
  ASSERT_EQ(w.size(), 4096 + field<uint64_t>(w, 24) + 8);
  EXPECT_TRUE(LoadedPlan::open(path, 1, error)) << error;
  std::string bad = w;
  bad[4096 + 5] ^= 1;
  writeFile(wpath, bad);
  EXPECT_FALSE(LoadedPlan::open(path, 1, error));
  EXPECT_CONTAINS(error, "weight segment 2 'rank1' (rank 1 / file " +
                             wpath.substr(wpath.rfind('/') + 1) +
                             ") checksum mismatch");
  EXPECT_TRUE(LoadedPlan::open(path, 0, error)) << error;
  EXPECT_TRUE(LoadedPlan::open(path, 1, error, false)) << error;
  writeFile(wpath, w.substr(0, w.size() - 1));
  EXPECT_FALSE(LoadedPlan::open(path, 1, error));
  EXPECT_CONTAINS(error, "is truncated (its checksum trailer of 1 segments is "
                         "missing)");
  std::remove(wpath.c_str());
  std::remove(rankWeightsPath(path, 0).c_str());
  std::remove(path.c_str());
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

TEST(VerifyPacked, DequantizeAfterDispatch) {
  // A dequantize step that expands only the slots its dispatch gave rows
  // must name an earlier dispatch step.
  MoESpec spec;
  spec.ranks = 2;
  spec.packedGate = true;
  TestCase tc = makeMoE(spec);
  std::string error;
  ASSERT_TRUE(verifyPlan(tc.plan, error)) << error;
  size_t dq = 0;
  while (tc.plan.steps[dq].kind() != StepKind::dequantize)
    ++dq;
  for (int64_t bad : {int64_t(dq), int64_t(dq) + 1, int64_t(0)}) {
    Plan p = tc.plan;
    p.steps[dq].attrs.Asdequantize()->dispatch = bad;
    EXPECT_FALSE(verifyPlan(p, error));
    EXPECT_CONTAINS(error, "attribute 'dispatch' must name an earlier "
                           "dispatch step");
  }
}

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
  // A zero dim does not excuse the others: numElements multiplies in order
  // and overflowed before the 0 (plan fuzz target).
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.values[2].shape = {int64_t(1) << 61, 160, 0};
                  }),
                  "value 2 ('logits') of shape [2305843009213693952,160,0] has "
                  "more than 72057594037927936 bytes in its nonzero dims");
  EXPECT_CONTAINS(verifyError([](Plan &p) {
                    p.outputs[0].shape = {0, int64_t(1) << 60, 16};
                  }),
                  "in its nonzero dims");
  {
    Plan empty = tc.plan;
    empty.values[2].shape = {0, 4};
    std::string error;
    EXPECT_TRUE(verifyPlan(empty, error)) << error;
  }
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
  // Offsets are 64-byte aligned: a route's int64 ids at an odd arena offset
  // were a misaligned store (plan fuzz target, run).
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[4].offset += 57; }),
                  "value 4 ('ids') at arena offset 761 is not 64-byte aligned");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.values[6].data[0].offset = 8; }),
                  "value 6 ('experts.w_gate') at offset 8 of segment 'rank0' "
                  "is not 64-byte aligned");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.inputs[0].value = 99; }),
                  "input 'x' refers to value 99");
  // Inputs are copied into the arena and outputs out of it at the value's
  // offset: a constant has none (plan fuzz target, run).
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.inputs[0].value = 1; }),
                  "input 'x' refers to value 1, a constant (not in the arena)");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.outputs[0].value = 6; }),
                  "output 'out' refers to value 6, a constant");
  // Checked like a value's: dtypeSize of an unknown dtype is 0, and the
  // plan fuzz target made an empty array for a 256-element input.
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.inputs[0].dtype = DType(9); }),
                  "input 'x' has an unknown dtype");
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
  // Only the operands docs/plan-format.md calls optional may be -1: the
  // CPU experts step read value -1 as its rows (plan fuzz target, run).
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[3].inputs[0] = -1; }),
                  "step 3 (experts at '/moe/experts'): operand 0 is required, "
                  "but absent (-1)");
  EXPECT_CONTAINS(verifyError([](Plan &p) { p.steps[0].inputs[1] = -1; }),
                  "operand 1 is required");
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

} // namespace
