//===- MeshTest.cpp - mesh coordinates, groups and --mesh specs -----------===//
//
// Plan::coord and Plan::group against plain loops over the ranks, and the
// parser of mesh specs (ep=4, dp=2,ep=4,tp=2) with its errors.
//
//===----------------------------------------------------------------------===//

#include "moert/Mesh.h"
#include "moert/Plan.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace moert;

namespace {

#define EXPECT_CONTAINS(s, sub)                                                \
  EXPECT_NE(std::string(s).find(sub), std::string::npos) << (s)

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

} // namespace
