//===- Checksum.h - the weight segments' checksum ------------*- C++ -*-===//
//
// The 64-bit hash a plan stores for each weight segment (the checksum
// trailer of the plan file and of each weight file, docs/plan-format.md).
// moert::writePlan computes it while it streams the segments out; a rank
// checks every segment it maps (LoadedPlan::open; moe-run
// --no-verify-weights skips it). It is XXH64 with seed 0 (Yann Collet's
// algorithm, this implementation written for moert): 4 lanes of 8-byte
// multiply-rotate rounds, about 10 GB/s on one core, so that checking a
// rank's weights costs little next to reading them from disk. A checksum
// against accidental corruption (a flipped bit, a torn copy), not a
// cryptographic hash.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CHECKSUM_H
#define MOERT_CHECKSUM_H

#include <cstddef>
#include <cstdint>

namespace moert {

/// Hashes a byte stream given in pieces of any size: the result of
/// `digest()` depends only on the concatenated bytes.
class WeightHasher {
public:
  WeightHasher();
  void update(const void *data, size_t size);
  uint64_t digest() const;

private:
  uint64_t lanes_[4];
  unsigned char buf_[32]; ///< a partial 32-byte stripe
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

/// The checksum of `size` bytes at `data` (WeightHasher over one piece).
uint64_t weightChecksum(const void *data, size_t size);

} // namespace moert

#endif // MOERT_CHECKSUM_H
