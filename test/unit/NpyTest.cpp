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
  std::string f =
      image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }");
  EXPECT_FALSE(parseNpy(f.data(), f.size(), "f", b, err));
  EXPECT_NE(err.find("Fortran"), std::string::npos) << err;
  std::string c =
      image("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }");
  EXPECT_FALSE(parseNpy(c.data(), c.size(), "c", b, err));
  EXPECT_NE(err.find("<c8"), std::string::npos) << err;
}

TEST(Npy, ImageSpellsShapesAsNumpy) {
  auto header = [](std::vector<int64_t> shape) {
    std::string img = npyImage(makeF32(shape));
    return img.substr(10, img.find('}') - 9);
  };
  EXPECT_EQ(header({}),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
  EXPECT_EQ(header({7}),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }");
  EXPECT_EQ(header({2, 3}),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
}

TEST(Npy, Crc32) {
  // The zip (IEEE 802.3) check value.
  EXPECT_EQ(zipCrc32("123456789", 9), 0xCBF43926u);
  EXPECT_EQ(zipCrc32("", 0), 0u);
}

namespace {
template <typename T> T le(const std::string &s, size_t off) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v |= uint64_t(uint8_t(s[off + i])) << (8 * i);
  return T(v);
}
} // namespace

TEST(Npy, NpzIsAStoredZipOfNpyMembers) {
  std::vector<std::pair<std::string, NpyArray>> arrays = {
      {"out", makeF32({3, 5})}, {"hidden", makeF32({7})}};
  std::string err, p = tmpPath("two.npz");
  ASSERT_TRUE(writeNpz(p, arrays, err)) << err;
  std::ifstream in(p, std::ios::binary);
  std::string z((std::istreambuf_iterator<char>(in)), {});
  // Walk the local file headers: each member NAME.npy, stored, its CRC.
  size_t off = 0;
  for (auto &[name, a] : arrays) {
    ASSERT_EQ(le<uint32_t>(z, off), 0x04034b50u);
    EXPECT_EQ(le<uint16_t>(z, off + 8), 0u); // stored
    uint32_t crc = le<uint32_t>(z, off + 14), size = le<uint32_t>(z, off + 18);
    uint16_t nameLen = le<uint16_t>(z, off + 26);
    EXPECT_EQ(z.substr(off + 30, nameLen), name + ".npy");
    const char *data = z.data() + off + 30 + nameLen;
    EXPECT_EQ(zipCrc32(data, size), crc);
    NpyArray b;
    ASSERT_TRUE(parseNpy(data, size, name, b, err)) << err;
    EXPECT_EQ(b.shape, a.shape);
    EXPECT_EQ(b.data, a.data);
    off += 30 + nameLen + size;
  }
  // The central directory follows; the end record counts both members.
  EXPECT_EQ(le<uint32_t>(z, off), 0x02014b50u);
  size_t end = z.size() - 22;
  ASSERT_EQ(le<uint32_t>(z, end), 0x06054b50u);
  EXPECT_EQ(le<uint16_t>(z, end + 10), 2u);
  EXPECT_EQ(le<uint32_t>(z, end + 16), uint32_t(off));
  EXPECT_EQ(le<uint32_t>(z, end + 12), uint32_t(end - off));
}

TEST(Npy, WriteErrorsNameTheFile) {
  std::string err, p = tmpPath("no_such_dir") + "/x.npz";
  EXPECT_FALSE(writeNpz(p, {{"a", makeF32({2})}}, err));
  EXPECT_NE(err.find(p + ": cannot open for writing"), std::string::npos)
      << err;
  EXPECT_FALSE(writeNpy(p, makeF32({2}), err));
  EXPECT_NE(err.find(p + ": cannot open for writing"), std::string::npos)
      << err;
}
