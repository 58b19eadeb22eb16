//===- onnx_text_fuzzer.cpp - fuzz the ONNX text reader and importer ------===//
//
// Input: the text of a .onnxtxt file (libonnx's OnnxParser syntax). See
// ImportFuzz.h.
//
//===----------------------------------------------------------------------===//

#include "ImportFuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  moec_fuzz::importOne(data, size, ".onnxtxt");
  return 0;
}
