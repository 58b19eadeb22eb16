//===- CpuBackendMemory.cpp - the CPU backend's copies to and from values -===//
//
// Where a value's bytes are (the arena, or memory bound to its root) and
// the copies the executor asks for: host inputs and outputs, and the held
// KV cache (Executor::holdOutputs). A cache kept in place (Value::boxed)
// lies at its box's strides; these copies take and give packed bytes, in
// the runs of forEachBoxRun.
//
//===----------------------------------------------------------------------===//

#include "CpuBackendImpl.h"

#include <cstring>

using namespace moert;

namespace moert::cpuexec {

char *CpuBackend::at(const Value &v, uint64_t bytes) const {
  char *p = locate(v, arena_, arenaSize_, bytes);
  if (!p)
    throw RunError("value '" + v.name + "': " + std::to_string(bytes) +
                   " bytes lie outside its memory");
  return p;
}

void CpuBackend::copyIn(const Value &v, const void *src, size_t bytes) {
  if (!v.stridedInBox()) {
    std::memcpy(at(v, bytes), src, bytes);
    return;
  }
  char *box = at(v, boxedBytes(v, bytes));
  const char *packed = static_cast<const char *>(src);
  forEachBoxRun(v.shape, v.box, dtypeSize(v.dtype),
                [&](uint64_t p, uint64_t b, uint64_t n) {
                  std::memcpy(box + b, packed + p, n);
                });
}

void CpuBackend::copyOut(const Value &v, void *dst, size_t bytes) const {
  if (!v.stridedInBox()) {
    std::memcpy(dst, at(v, bytes), bytes);
    return;
  }
  const char *box = at(v, boxedBytes(v, bytes));
  char *packed = static_cast<char *>(dst);
  forEachBoxRun(v.shape, v.box, dtypeSize(v.dtype),
                [&](uint64_t p, uint64_t b, uint64_t n) {
                  std::memcpy(packed + p, box + b, n);
                });
}

uint64_t CpuBackend::boxedBytes(const Value &v, size_t bytes) {
  bool fits = v.box.size() == v.shape.size() && bytes == v.byteSize();
  for (size_t d = 0; fits && d < v.shape.size(); ++d)
    fits = v.shape[d] <= v.box[d];
  if (!fits)
    throw RunError("value '" + v.name + "' " + shapeString(v.shape) + ": " +
                   std::to_string(bytes) + " bytes do not lie in its box " +
                   shapeString(v.box));
  return v.boxBytes();
}

void CpuBackend::upload(const Value &v, const void *src, size_t bytes) {
  copyIn(v, src, bytes);
}
void CpuBackend::download(const Value &v, void *dst, size_t bytes) {
  copyOut(v, dst, bytes);
}

void *CpuBackend::allocateHeld(size_t bytes) {
  held_.push_back(std::make_unique<char[]>(bytes + 64));
  uintptr_t p = reinterpret_cast<uintptr_t>(held_.back().get());
  return reinterpret_cast<void *>((p + 63) / 64 * 64);
}
void CpuBackend::saveHeld(const Value &v, void *p, size_t bytes) {
  copyOut(v, p, bytes);
}
void CpuBackend::loadHeld(const Value &v, const void *p, size_t bytes) {
  copyIn(v, p, bytes);
}

} // namespace moert::cpuexec
