//===- Npy.h - NumPy .npy file reading and writing --------------*- C++ -*-===//
//
// The array format `moe-run` reads inputs from and writes outputs to, and the
// format of the examples' reference data. Supports format versions 1.0-3.0,
// little-endian f32/f64/f16/i64/i32/i8/bool, C order. Several arrays go to
// a .npz (writeNpz; numpy.savez's uncompressed zip).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_NPY_H
#define MOERT_NPY_H

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moert {

/// An n-d array as stored in a .npy file: a dtype descriptor ("<f4", "<i8",
/// "|b1", ...), a C-order shape and the raw little-endian bytes.
struct NpyArray {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<char> data;

  /// Number of elements (1 for a 0-d array).
  int64_t numElements() const;
  /// Bytes per element of `dtype`, 0 when the dtype is not supported.
  static int elementSize(const std::string &dtype);
};

/// Reads `path`. Returns false and sets `error` (naming the file and the
/// problem: missing, truncated, Fortran order, unsupported dtype) on failure.
bool readNpy(const std::string &path, NpyArray &out, std::string &error);

/// Parses a .npy image held in memory; `name` is used in error messages.
bool parseNpy(const char *data, size_t size, const std::string &name,
              NpyArray &out, std::string &error);

/// The .npy image (format 1.0) of `array`, as numpy.save writes it.
std::string npyImage(const NpyArray &array);

/// Writes `array` to `path` in format 1.0. Returns false and sets `error` on
/// failure.
bool writeNpy(const std::string &path, const NpyArray &array,
              std::string &error);

/// The .npz image of `arrays`: an uncompressed (stored) zip of NAME.npy
/// members, what numpy.savez writes (numpy.load(...)[NAME] reads them).
/// Without zip64: false, with `error`, when it would reach 4 GiB.
bool npzImage(const std::vector<std::pair<std::string, NpyArray>> &arrays,
              std::string &out, std::string &error);

/// Writes `arrays` to `path` as a .npz (npzImage). Returns false and sets
/// `error` (naming the file) on failure.
bool writeNpz(const std::string &path,
              const std::vector<std::pair<std::string, NpyArray>> &arrays,
              std::string &error);

/// The CRC-32 (zip, IEEE 802.3) of `size` bytes at `data`.
uint32_t zipCrc32(const char *data, size_t size);

} // namespace moert

#endif // MOERT_NPY_H
