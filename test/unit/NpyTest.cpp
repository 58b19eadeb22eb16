//===- NpyTest.cpp - .npy reader/writer tests -----------------------------===//

#include "moert/Npy.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

using namespace moert;

namespace {
std::string tmpPath(const std::string &name) {
  return ::testing::TempDir() + "moec_npy_" + name;
}

NpyArray makeF32(std::vector<int64_t> shape) {
  NpyArray a;
  a.dtype = "<f4";
  a.shape = shape;
  int64_t n = a.numElements();
  a.data.resize(n * 4);
  for (int64_t i = 0; i < n; ++i) {
    float v = float(i) * 0.5f - 3.0f;
    std::memcpy(a.data.data() + 4 * i, &v, 4);
  }
  return a;
}
} // namespace

TEST(Npy, RoundTripOddShapes) {
  for (std::vector<int64_t> shape :
       {std::vector<int64_t>{}, {1}, {7}, {3, 5}, {2, 1, 9}, {0, 4}}) {
    NpyArray a = makeF32(shape), b;
    std::string err, p = tmpPath("rt.npy");
    ASSERT_TRUE(writeNpy(p, a, err)) << err;
    ASSERT_TRUE(readNpy(p, b, err)) << err;
    EXPECT_EQ(b.dtype, "<f4");
    EXPECT_EQ(b.shape, shape);
    EXPECT_EQ(b.data, a.data);
  }
}

TEST(Npy, HeaderIsAligned) {
  NpyArray a = makeF32({3, 5});
  std::string err, p = tmpPath("align.npy");
  ASSERT_TRUE(writeNpy(p, a, err)) << err;
  std::ifstream in(p, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ((bytes.size() - a.data.size()) % 64, 0u);
  EXPECT_EQ(bytes[bytes.size() - a.data.size() - 1], '\n');
}

TEST(Npy, RejectsTruncatedData) {
  NpyArray a = makeF32({4, 4}), b;
  std::string err, p = tmpPath("trunc.npy");
  ASSERT_TRUE(writeNpy(p, a, err)) << err;
  std::ifstream in(p, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  bytes.resize(bytes.size() - 5);
  EXPECT_FALSE(parseNpy(bytes.data(), bytes.size(), "t.npy", b, err));
  EXPECT_NE(err.find("t.npy"), std::string::npos) << err;
  EXPECT_NE(err.find("expected"), std::string::npos) << err;
}

TEST(Npy, RejectsNonNpyAndMissing) {
  NpyArray b;
  std::string err;
  const char junk[] = "PK\x03\x04 not an npy file";
  EXPECT_FALSE(parseNpy(junk, sizeof(junk), "junk", b, err));
  EXPECT_NE(err.find("magic"), std::string::npos) << err;
  EXPECT_FALSE(readNpy(tmpPath("does_not_exist.npy"), b, err));
  EXPECT_NE(err.find("cannot open"), std::string::npos) << err;
}

TEST(Npy, RejectsFortranOrderAndUnknownDtype) {
  auto image = [](const std::string &dict) {
    std::string h = dict;
    h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
    h += '\n';
    std::string s = "\x93NUMPY\x01";
    s += '\0';
    s += char(h.size() & 0xff);
    s += char(h.size() >> 8);
    return s + h + std::string(64, '\0');
  };
  NpyArray b;
  std::string err;
  std::string f = image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }");
  EXPECT_FALSE(parseNpy(f.data(), f.size(), "f", b, err));
  EXPECT_NE(err.find("Fortran"), std::string::npos) << err;
  std::string c = image("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }");
  EXPECT_FALSE(parseNpy(c.data(), c.size(), "c", b, err));
  EXPECT_NE(err.find("<c8"), std::string::npos) << err;
}
