//===- ImportFuzz.h - shared body of the ONNX import fuzz targets -*- C++
//-*-===//
//
// The binary and the text ONNX targets feed their input to the importer as
// moec does (moec::importOnnxBuffer: the reader, the ONNX checker, shape
// inference, the graph importer and the verifier of the imported module).
// An error is a fine outcome; a crash, an abort, an uncaught exception or a
// sanitizer report is a finding.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_FUZZ_IMPORTFUZZ_H
#define MOEC_FUZZ_IMPORTFUZZ_H

#include <cstddef>
#include <cstdint>

namespace moec_fuzz {
/// Imports `data` as a model file named `model<extension>` (".onnx" or
/// ".onnxtxt"), in an empty directory (so that external data is missing
/// unless the model names a file elsewhere).
void importOne(const uint8_t *data, size_t size, const char *extension);
} // namespace moec_fuzz

#endif // MOEC_FUZZ_IMPORTFUZZ_H
