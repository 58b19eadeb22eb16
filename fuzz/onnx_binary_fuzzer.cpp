//===- onnx_binary_fuzzer.cpp - fuzz the binary ONNX reader and importer --===//
//
// Input: the bytes of a .onnx file (a ModelProto). See ImportFuzz.h.
//
//===----------------------------------------------------------------------===//

#include "ImportFuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  moec_fuzz::importOne(data, size, ".onnx");
  return 0;
}
