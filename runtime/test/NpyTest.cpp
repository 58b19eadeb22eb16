//===- NpyTest.cpp - .npy reading of hostile files -----------------------===//
//
// .npy headers that lie (a shape whose byte size wraps 64 bits, negative or
// malformed dims, short data, unknown dtypes, truncation) and paths that are
// not files: each refused with one message naming the file (issue 17).
//
//===----------------------------------------------------------------------===//

#include "moert/Npy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace moert;

namespace {

#define EXPECT_CONTAINS(s, sub)                                                \
  EXPECT_NE(std::string(s).find(sub), std::string::npos) << (s)

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
