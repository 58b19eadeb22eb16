//===- Checksum.cpp - XXH64 over weight segments -------------------------===//
//
// moert/Checksum.h: XXH64 with seed 0, written from the algorithm's
// description (4 accumulators over 32-byte stripes, then the tail in 8-,
// 4- and 1-byte steps, then an avalanche). Little-endian loads through
// memcpy (the plan format is little endian; so are the hosts it runs on).
//
//===----------------------------------------------------------------------===//

#include "moert/Checksum.h"

#include <algorithm>
#include <cstring>

using namespace moert;

namespace {
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t load64(const unsigned char *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t load32(const unsigned char *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  return rotl(acc, 31) * kP1;
}
inline uint64_t mergeRound(uint64_t acc, uint64_t lane) {
  acc ^= round(0, lane);
  return acc * kP1 + kP4;
}
/// Consumes whole 32-byte stripes of [p, p + n); returns the bytes used.
size_t stripes(uint64_t *lanes, const unsigned char *p, size_t n) {
  uint64_t a = lanes[0], b = lanes[1], c = lanes[2], d = lanes[3];
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a = round(a, load64(p + i));
    b = round(b, load64(p + i + 8));
    c = round(c, load64(p + i + 16));
    d = round(d, load64(p + i + 24));
  }
  lanes[0] = a, lanes[1] = b, lanes[2] = c, lanes[3] = d;
  return i;
}
} // namespace

WeightHasher::WeightHasher() {
  lanes_[0] = kP1 + kP2;
  lanes_[1] = kP2;
  lanes_[2] = 0;
  lanes_[3] = 0 - kP1;
}

void WeightHasher::update(const void *data, size_t size) {
  if (size == 0)
    return; // `data` may be null (an empty vector's)
  const auto *p = static_cast<const unsigned char *>(data);
  total_ += size;
  if (buffered_ > 0) {
    size_t take = std::min(size, sizeof(buf_) - buffered_);
    std::memcpy(buf_ + buffered_, p, take);
    buffered_ += take;
    p += take;
    size -= take;
    if (buffered_ < sizeof(buf_))
      return;
    stripes(lanes_, buf_, sizeof(buf_));
    buffered_ = 0;
  }
  size_t used = stripes(lanes_, p, size);
  std::memcpy(buf_, p + used, size - used);
  buffered_ = size - used;
}

uint64_t WeightHasher::digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) +
        rotl(lanes_[3], 18);
    for (uint64_t lane : lanes_)
      h = mergeRound(h, lane);
  } else {
    h = lanes_[2] + kP5; // the seed (0) + P5
  }
  h += total_;
  const unsigned char *p = buf_, *end = buf_ + buffered_;
  for (; p + 8 <= end; p += 8)
    h = rotl(h ^ round(0, load64(p)), 27) * kP1 + kP4;
  if (p + 4 <= end) {
    h = rotl(h ^ (uint64_t(load32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; ++p)
    h = rotl(h ^ (uint64_t(*p) * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t moert::weightChecksum(const void *data, size_t size) {
  WeightHasher h;
  h.update(data, size);
  return h.digest();
}
