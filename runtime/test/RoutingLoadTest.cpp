//===- RoutingLoadTest.cpp - the expert load file (moert/RoutingLoad.h) ---===//
//
// What moe-run --record-routing writes and moe-place-experts reads: a round
// trip through the file, the files the compiler's lit tests hand-write, and
// each malformed file refused with a message naming the file and the
// problem.
//
//===----------------------------------------------------------------------===//

#include "moert/RoutingLoad.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace moert;

namespace {

std::string tempPath(const std::string &tag) {
  return ::testing::TempDir() + "/moert-routing-" + tag + "-" +
         std::to_string(getpid()) + ".json";
}

std::string readFile(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// The error of parsing `text` (named "f.json"), "" when it parses.
std::string parseError(const std::string &text) {
  RoutingLoad load;
  std::string error;
  return RoutingLoad::parse(text, "f.json", load, error) ? "" : error;
}

#define EXPECT_CONTAINS(s, sub)                                                \
  do {                                                                         \
    std::string s_ = (s);                                                      \
    EXPECT_NE(s_.find(sub), std::string::npos) << s_;                          \
  } while (0)

} // namespace

TEST(RoutingLoad, WriteReadRoundTrip) {
  RoutingLoad load;
  load.layers.push_back({2, "/layers.0/moe/dispatch", {120, 31, 0, 77}});
  load.layers.push_back({9, "/layers.1/moe/dispatch", {0, 0, 5, 1}});
  std::string path = tempPath("rt"), error;
  ASSERT_TRUE(writeRoutingLoad(path, load, error)) << error;
  RoutingLoad back;
  ASSERT_TRUE(readRoutingLoad(path, back, error)) << error;
  ASSERT_EQ(back.layers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back.layers[i].step, load.layers[i].step);
    EXPECT_EQ(back.layers[i].loc, load.layers[i].loc);
    EXPECT_EQ(back.layers[i].tokensPerExpert, load.layers[i].tokensPerExpert);
  }
  // The format moe-run has always written: integer counts, pretty-printed.
  std::string text = readFile(path);
  EXPECT_CONTAINS(text, "\"layers\": [");
  EXPECT_CONTAINS(text, "\"loc\": \"/layers.0/moe/dispatch\"");
  EXPECT_CONTAINS(text, "\"step\": 2");
  EXPECT_CONTAINS(text, "\"tokens_per_expert\": [\n        120,");
  EXPECT_EQ(text.find("120.0"), std::string::npos) << text;
  EXPECT_EQ(text.back(), '\n');
  std::remove(path.c_str());
}

TEST(RoutingLoad, CountsOnlyAndFractions) {
  // The compiler's lit tests hand-write files without "step" and "loc".
  RoutingLoad load;
  std::string error;
  ASSERT_TRUE(RoutingLoad::parse(
      R"({"layers": [{"tokens_per_expert": [100, 10, 2.5]}, )"
      R"({"tokens_per_expert": []}]})",
      "f.json", load, error))
      << error;
  ASSERT_EQ(load.layers.size(), 2u);
  EXPECT_FALSE(load.layers[0].step.has_value());
  EXPECT_FALSE(load.layers[0].loc.has_value());
  EXPECT_EQ(load.layers[0].tokensPerExpert,
            (std::vector<double>{100, 10, 2.5}));
  EXPECT_TRUE(load.layers[1].tokensPerExpert.empty());
  // Written back as read: no step or loc, the fraction kept.
  std::string text = load.toJson();
  EXPECT_EQ(text.find("step"), std::string::npos) << text;
  EXPECT_CONTAINS(text, "2.5");
  RoutingLoad again;
  ASSERT_TRUE(RoutingLoad::parse(text, "f.json", again, error)) << error;
  EXPECT_EQ(again.layers[0].tokensPerExpert, load.layers[0].tokensPerExpert);
  // No layers at all.
  ASSERT_TRUE(RoutingLoad::parse(R"({"layers": []})", "f.json", load, error));
  EXPECT_TRUE(load.layers.empty());
}

TEST(RoutingLoad, TokenFlowRoundTrip) {
  // moe-run writes the dispatch's rank-to-rank rows; older files lack them.
  RoutingLoad load;
  load.layers.push_back({2, "/moe/dispatch", {3, 1}, {{3, 1}, {0, 4}}});
  load.layers.push_back({5, std::nullopt, {1, 1}});
  std::string error;
  RoutingLoad back;
  ASSERT_TRUE(RoutingLoad::parse(load.toJson(), "f.json", back, error))
      << error;
  EXPECT_EQ(back.layers[0].rowsSent,
            (std::vector<std::vector<int64_t>>{{3, 1}, {0, 4}}));
  EXPECT_TRUE(back.layers[1].rowsSent.empty());
  // Only the layer that has a flow writes one.
  std::string text = load.toJson();
  EXPECT_NE(text.find("\"rows_sent\""), std::string::npos) << text;
  EXPECT_EQ(text.find("\"rows_sent\""), text.rfind("\"rows_sent\"")) << text;
}

TEST(RoutingLoad, MalformedFilesNameFileAndProblem) {
  EXPECT_CONTAINS(parseError("{\"layers\": ["),
                  "expert load file 'f.json' is not valid JSON: ");
  EXPECT_CONTAINS(parseError(""), "is not valid JSON");
  EXPECT_CONTAINS(parseError("{\"layers\": [] } x"), "is not valid JSON");
  EXPECT_CONTAINS(parseError("[1, 2]"),
                  "expert load file 'f.json': expected an object with a "
                  "\"layers\" array");
  EXPECT_CONTAINS(parseError(R"({"layer": []})"), "a \"layers\" array");
  EXPECT_CONTAINS(parseError(R"({"layers": {}})"), "a \"layers\" array");
  EXPECT_CONTAINS(parseError(R"({"layers": [{"tokens_per_expert": [1]}, 3]})"),
                  "expert load file 'f.json': layer 1 has no "
                  "\"tokens_per_expert\" array");
  EXPECT_CONTAINS(parseError(R"({"layers": [{"tokens": [1]}]})"),
                  "layer 0 has no \"tokens_per_expert\" array");
  EXPECT_CONTAINS(parseError(R"({"layers": [{"tokens_per_expert": [1, -2]}]})"),
                  "layer 0 has a count that is not a number >= 0");
  EXPECT_CONTAINS(
      parseError(R"({"layers": [{"tokens_per_expert": [1, "2"]}]})"),
      "layer 0 has a count that is not a number >= 0");
  EXPECT_CONTAINS(
      parseError(R"({"layers": [{"step": "2", "tokens_per_expert": [1]}]})"),
      "layer 0: \"step\" is not an integer");
  EXPECT_CONTAINS(
      parseError(R"({"layers": [{"loc": 3, "tokens_per_expert": [1]}]})"),
      "layer 0: \"loc\" is not a string");
  for (const char *flow : {"[[1, 2]]", "[[1], [2]]", "[[1, -1], [0, 0]]",
                           "[[1, 0.5], [0, 0]]", "[]", "3"})
    EXPECT_CONTAINS(parseError(std::string(R"({"layers": [{"rows_sent": )") +
                               flow + R"(, "tokens_per_expert": [1]}]})"),
                    "layer 0: \"rows_sent\" is not a square matrix of "
                    "integers >= 0");
}

TEST(RoutingLoad, UnreadableAndUnwritableFiles) {
  RoutingLoad load;
  std::string error;
  std::string missing = tempPath("does-not-exist");
  EXPECT_FALSE(readRoutingLoad(missing, load, error));
  EXPECT_CONTAINS(error, "cannot read expert load file '" + missing + "'");
  EXPECT_CONTAINS(error, "No such file or directory");
  std::string bad = tempPath("no-such-dir") + "/load.json";
  EXPECT_FALSE(writeRoutingLoad(bad, load, error));
  EXPECT_CONTAINS(error, "cannot write expert load file '" + bad + "'");
  // A file that is there but not a load file names the file.
  std::string path = tempPath("garbage");
  std::ofstream(path) << "not json";
  EXPECT_FALSE(readRoutingLoad(path, load, error));
  EXPECT_CONTAINS(error, "expert load file '" + path + "' is not valid JSON");
  std::remove(path.c_str());
}
