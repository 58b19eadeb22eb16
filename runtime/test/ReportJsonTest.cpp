//===- ReportJsonTest.cpp - RunReport to JSON and back --------------------===//
//
// The run report as moe-run --json prints it (docs/runtime.md) and as the
// ranks send it to rank 0: every member written under its documented key,
// and read back unchanged.
//
//===----------------------------------------------------------------------===//

#include "moert/Executor.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace moert;
using nlohmann::json;

namespace {

RunReport sampleReport() {
  RunReport r;
  r.rank = 3;
  r.backend = "cpu";
  r.mappedBytes = 5ull << 32; // past 32 bits
  r.arenaBytes = 4096;
  r.collectives = {{"ep", 4, "threads"}, {"tp", 1, "local"}};
  r.steps = {{"matmul", "/gate", 0.25}, {"dispatch", "/moe/dispatch", 1e-6}};
  MoELayerStats l;
  l.step = 1;
  l.loc = "/moe/dispatch";
  l.tokensPerExpert = {5, 0, 7, 1};
  l.peers = {{0, 2, 3, 64, 96}, {3, 4, 4, 128, 128}};
  l.dropped = 2;
  l.rowsReceived = 9;
  r.layers = {l};
  r.seconds = 1.5;
  return r;
}

} // namespace

TEST(ReportJson, DocumentedKeys) {
  json j = sampleReport().toJson();
  for (const char *k : {"rank", "backend", "mapped_bytes", "arena_bytes",
                        "collectives", "seconds", "steps", "layers"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j.size(), 8u) << j.dump();
  EXPECT_EQ(j["rank"], 3);
  EXPECT_EQ(j["mapped_bytes"], 5ull << 32);
  EXPECT_EQ(j["collectives"][0],
            json({{"axes", "ep"}, {"ranks", 4}, {"transport", "threads"}}));
  EXPECT_EQ(j["steps"][1]["op"], "dispatch");
  const json &l = j["layers"][0];
  EXPECT_EQ(l.size(), 6u) << l.dump();
  EXPECT_EQ(l["tokens_per_expert"], json({5, 0, 7, 1}));
  EXPECT_EQ(l["rows_received"], 9);
  EXPECT_EQ(l["peers"][1], json({{"peer", 3},
                                 {"rows_sent", 4},
                                 {"rows_recv", 4},
                                 {"bytes_sent", 128},
                                 {"bytes_recv", 128}}));
  // Keys in sorted order, as moe-run has always printed them.
  EXPECT_EQ(j.begin().key(), "arena_bytes");
}

TEST(ReportJson, RoundTripThroughText) {
  RunReport r = sampleReport(), back;
  std::string error;
  ASSERT_TRUE(RunReport::fromJson(json::parse(r.toJson().dump()), back, error))
      << error;
  EXPECT_EQ(back.toJson(), r.toJson());
  EXPECT_EQ(back.mappedBytes, r.mappedBytes);
  EXPECT_DOUBLE_EQ(back.steps[1].seconds, 1e-6);
  ASSERT_EQ(back.layers.size(), 1u);
  EXPECT_EQ(back.layers[0].peers[0].bytesRecv, 96);
}

TEST(ReportJson, MissingMembersReadAsZero) {
  RunReport back;
  std::string error;
  ASSERT_TRUE(RunReport::fromJson(
      json::parse(R"({"rank": 1, "layers": [{"peers": [{}]}], "steps": 3})"),
      back, error))
      << error;
  EXPECT_EQ(back.rank, 1);
  EXPECT_TRUE(back.steps.empty());
  ASSERT_EQ(back.layers.size(), 1u);
  EXPECT_EQ(back.layers[0].peers.size(), 1u);
  EXPECT_EQ(back.layers[0].peers[0].rowsSent, 0);
  EXPECT_FALSE(RunReport::fromJson(json::array(), back, error));
  EXPECT_EQ(error, "a run report must be a JSON object");
}
