//===- plan_fuzzer.cpp - fuzz the plan loader and verifier ----------------===//
//
// Input: the bytes of a whole .moeplan file. They are written to a file in
// a private directory and opened for rank 0 the way moe-run opens a plan
// (moert::LoadedPlan::open: the header, the manifest's checksum, the
// FlatBuffers verifier, verifyPlan, the segments mapped). A plan that loads
// is then described (moe-run --describe) and every constant this rank maps
// is read whole: the loader's checks must keep each inside its mapping.
// Mutations would rarely get past the manifest's FNV-1a checksum, so the
// target writes the checksum of the mutated manifest into the header
// first (when the header's manifest size fits the input): the mutations
// reach the FlatBuffers verifier and verifyPlan. The checksum check itself
// is held by the unit tests (runtime/test/PlanTest.cpp).
//
// Per-rank weight files a plan names are absent from the directory, so
// those plans fail at load; fuzz/seeds.sh makes seeds with the weights in
// the plan file.
//
// An error is a fine outcome; a crash, an abort, an uncaught exception or a
// sanitizer report is a finding.
//
//===----------------------------------------------------------------------===//

#include "moert/Plan.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

namespace {
const std::string &planPath() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/moert-plan-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("plan-fuzzer: mkdtemp");
      std::abort();
    }
    return std::string(tmpl) + "/fuzz.moeplan";
  }();
  return path;
}

// The header of docs/plan-format.md: manifest size at byte 24, checksum of
// the manifest's bytes (FNV-1a, 64 bits) at byte 48; the manifest at 64.
constexpr size_t kHeaderSize = 64, kManifestSizeAt = 24, kChecksumAt = 48;

uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

/// `data` with the header's checksum made to match the manifest.
std::vector<uint8_t> withChecksum(const uint8_t *data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  if (size < kHeaderSize)
    return b;
  uint64_t n;
  std::memcpy(&n, &b[kManifestSizeAt], 8);
  if (n > size - kHeaderSize)
    return b;
  uint64_t h = fnv1a(&b[kHeaderSize], n);
  std::memcpy(&b[kChecksumAt], &h, 8);
  return b;
}

void writeAll(const uint8_t *data, size_t size) {
  int fd = ::open(planPath().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    std::perror("plan-fuzzer: open");
    std::abort();
  }
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n <= 0) {
      std::perror("plan-fuzzer: write");
      std::abort();
    }
    data += n;
    size -= size_t(n);
  }
  ::close(fd);
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<uint8_t> file = withChecksum(data, size);
  writeAll(file.data(), file.size());
  std::string error;
  auto lp = moert::LoadedPlan::open(planPath(), /*rank=*/0, error);
  if (!lp) {
    if (error.empty()) {
      std::fprintf(stderr, "plan-fuzzer: load failed without an error\n");
      std::abort();
    }
    return 0;
  }
  const moert::Plan &plan = lp->plan();
  volatile size_t sink = moert::describePlan(plan).size();
  for (const moert::Value &v : plan.values) {
    const auto *p = static_cast<const unsigned char *>(lp->constantData(v));
    if (!p)
      continue;
    unsigned char x = 0;
    for (uint64_t i = 0, n = v.byteSize(); i < n; ++i)
      x ^= p[i];
    sink = sink + x;
  }
  for (const moert::DataRef *d : {&plan.cpuCode, &plan.ptxCode})
    if (const char *p = lp->codeData(*d))
      for (uint64_t i = 0; i < d->bytes; ++i)
        sink = sink + size_t(p[i]);
  (void)sink;
  return 0;
}
