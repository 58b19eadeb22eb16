//===- npy_fuzzer.cpp - fuzz the .npy reader ------------------------------===//
//
// Input: the bytes of a .npy file, parsed by moert::parseNpy (what readNpy
// and so moe-run --input use). An array that parses must be whole (its data
// exactly its shape's bytes) and must round-trip: npyImage writes it as
// numpy.save would, and that image parses back to the same array.
//
// An error is a fine outcome; a crash, an abort, an uncaught exception or a
// sanitizer report is a finding.
//
//===----------------------------------------------------------------------===//

#include "moert/Npy.h"

#include <cstdio>
#include <cstdlib>
#include <string>

static void finding(const char *what, const std::string &detail) {
  std::fprintf(stderr, "npy-fuzzer: %s: %s\n", what, detail.c_str());
  std::abort();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  moert::NpyArray a;
  std::string error;
  if (!moert::parseNpy(reinterpret_cast<const char *>(data), size, "fuzz.npy",
                       a, error)) {
    if (error.empty())
      finding("parse failed without an error", "");
    return 0;
  }
  // Whole: the data is exactly the shape's bytes (no dim is negative, the
  // product did not wrap).
  uint64_t bytes = uint64_t(moert::NpyArray::elementSize(a.dtype));
  bool zero = false;
  for (int64_t d : a.shape) {
    if (d < 0)
      finding("negative dim accepted", std::to_string(d));
    zero |= d == 0;
  }
  for (int64_t d : a.shape)
    if (!zero && __builtin_mul_overflow(bytes, uint64_t(d), &bytes))
      finding("shape's bytes wrap 64 bits", a.dtype);
  if (zero)
    bytes = 0;
  if (bytes != a.data.size())
    finding("data size differs from the shape's bytes",
            std::to_string(a.data.size()) + " vs " + std::to_string(bytes));
  // Round trip.
  std::string image = moert::npyImage(a);
  moert::NpyArray b;
  if (!moert::parseNpy(image.data(), image.size(), "round-trip.npy", b, error))
    finding("its own image does not parse", error);
  if (b.dtype != a.dtype || b.shape != a.shape || b.data != a.data)
    finding("round trip changed the array", a.dtype);
  return 0;
}
