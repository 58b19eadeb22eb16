//===- Weights.cpp - mapped and lazy weights ------------------------------===//
//
// See moec/Analysis/Weights.h. Two process-wide tables, both guarded by one
// mutex: the mapped regions of weight files (for releaseMappedPages) and
// the recipes of lazy constants, keyed by their resource entry (unique per
// context and stable for its lifetime).
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/Weights.h"
#include "moec/Analysis/ConstantBytes.h"

#include "moert/Half.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <sys/mman.h>
#include <unistd.h>

using namespace mlir;
using namespace moec;

namespace {
std::mutex &tableMutex() {
  static std::mutex m;
  return m;
}
/// Mapped regions: start -> length (page aligned).
std::map<void *, size_t> &mappedRegions() {
  static std::map<void *, size_t> m;
  return m;
}
std::map<const void *, LazyWeight> &lazyTable() {
  static std::map<const void *, LazyWeight> t;
  return t;
}
const void *entryOf(DenseResourceElementsAttr r) {
  return r.getRawHandle().getResource();
}
} // namespace

std::optional<AsmResourceBlob> moec::mapFileBlob(StringRef path,
                                                 uint64_t offset, uint64_t size,
                                                 unsigned eltBytes,
                                                 std::string &error) {
  error.clear();
  uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  uint64_t start = offset / page * page, skip = offset - start;
  unsigned align = std::max(1u, eltBytes);
  if (size == 0 || skip % align != 0 || (align & (align - 1)) != 0)
    return std::nullopt;
  std::string p = path.str();
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) {
    error = "cannot open '" + p + "': " + std::strerror(errno);
    return std::nullopt;
  }
  size_t len = size_t(skip + size);
  void *base = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, off_t(start));
  int mapErr = errno;
  ::close(fd);
  if (base == MAP_FAILED) {
    error = "cannot map '" + p + "': " + std::strerror(mapErr);
    return std::nullopt;
  }
  {
    std::lock_guard<std::mutex> g(tableMutex());
    mappedRegions()[base] = len;
  }
  auto deleter = [base, len](void *, size_t, size_t) {
    {
      std::lock_guard<std::mutex> g(tableMutex());
      mappedRegions().erase(base);
    }
    munmap(base, len);
  };
  ArrayRef<char> data(static_cast<const char *>(base) + skip, size_t(size));
  return AsmResourceBlob(data, align, deleter, /*dataIsMutable=*/false);
}

void moec::releaseMappedPages() {
  std::lock_guard<std::mutex> g(tableMutex());
  for (auto &[base, len] : mappedRegions())
    (void)madvise(base, len, MADV_DONTNEED);
}

uint64_t moec::mappedWeightBytes() {
  std::lock_guard<std::mutex> g(tableMutex());
  uint64_t n = 0;
  for (auto &[base, len] : mappedRegions())
    n += len;
  return n;
}

static std::atomic<uint64_t> lazyThreshold{uint64_t(16) << 20};
uint64_t moec::lazyWeightThreshold() { return lazyThreshold.load(); }
void moec::setLazyWeightThreshold(uint64_t bytes) { lazyThreshold = bytes; }

Value moec::makeLazyConstant(OpBuilder &b, Location loc, RankedTensorType type,
                             LazyWeight w, StringRef name) {
  auto &mgr = DenseResourceElementsHandle::getManagerInterface(b.getContext());
  DenseResourceElementsHandle handle = mgr.insert(name);
  {
    std::lock_guard<std::mutex> g(tableMutex());
    lazyTable()[handle.getResource()] = std::move(w);
  }
  auto attr = DenseResourceElementsAttr::get(type, handle);
  return arith::ConstantOp::create(b, loc, cast<TypedAttr>(attr)).getResult();
}

const LazyWeight *moec::lazyWeightOf(Attribute a) {
  auto r = dyn_cast<DenseResourceElementsAttr>(a);
  if (!r || r.getRawHandle().getBlob())
    return nullptr;
  std::lock_guard<std::mutex> g(tableMutex());
  auto it = lazyTable().find(entryOf(r));
  return it == lazyTable().end() ? nullptr : &it->second;
}

std::optional<ArrayRef<char>> moec::constantView(Attribute a) {
  if (auto r = dyn_cast<DenseResourceElementsAttr>(a))
    if (AsmResourceBlob *blob = r.getRawHandle().getBlob())
      return blob->getData();
  return std::nullopt;
}

/// dst[i - r0][j] = src[j][i] for i in [r0, r1), j in [0, n); `ld` is
/// src's row length. Square tiles keep both sides in cache.
template <typename T>
static void transposeTiles(const T *src, int64_t ld, int64_t r0, int64_t r1,
                           int64_t n, T *dst) {
  constexpr int64_t kTile = 32;
  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    int64_t j1 = std::min(n, j0 + kTile);
    for (int64_t i0 = r0; i0 < r1; i0 += kTile) {
      int64_t i1 = std::min(r1, i0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        T *d = dst + (i - r0) * n;
        for (int64_t j = j0; j < j1; ++j)
          d[j] = src[j * ld + i];
      }
    }
  }
}

/// Rows [r0, r1) of part `p` of `w` in the source element type, row major
/// ([r1 - r0, outCols]), into `dst`. Transposed parts are read in blocks
/// of source rows, so that each source row is read contiguously.
static void realizeRows(const LazyWeight::Part &p, unsigned eb, int64_t r0,
                        int64_t r1, char *dst) {
  int64_t n = p.outCols(), step = p.colStep;
  if (!p.transposed) {
    for (int64_t i = r0; i < r1; ++i) {
      const char *row = p.src.data() + (i * p.cols + p.colBegin) * eb;
      if (step == 1) {
        std::memcpy(dst + (i - r0) * n * eb, row, n * eb);
        continue;
      }
      for (int64_t j = 0; j < n; ++j)
        std::memcpy(dst + ((i - r0) * n + j) * eb, row + j * step * eb, eb);
    }
    return;
  }
  // dst(i, j) = src(colBegin + j * step, i), in square tiles: source rows
  // `step` apart.
  const char *src = p.src.data() + p.colBegin * p.cols * eb;
  int64_t ld = p.cols * step;
  switch (eb) {
  case 4:
    transposeTiles(reinterpret_cast<const uint32_t *>(src), ld, r0, r1, n,
                   reinterpret_cast<uint32_t *>(dst));
    return;
  case 2:
    transposeTiles(reinterpret_cast<const uint16_t *>(src), ld, r0, r1, n,
                   reinterpret_cast<uint16_t *>(dst));
    return;
  case 8:
    transposeTiles(reinterpret_cast<const uint64_t *>(src), ld, r0, r1, n,
                   reinterpret_cast<uint64_t *>(dst));
    return;
  default:
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = r0; i < r1; ++i)
        std::memcpy(dst + ((i - r0) * n + j) * eb, src + (j * ld + i) * eb, eb);
  }
}

/// Bytes [offset, offset + size) of a lazy weight.
static LogicalResult readLazy(const LazyWeight &w, uint64_t offset,
                              uint64_t size, char *dst) {
  unsigned eb = w.srcEltBytes, ob = w.outEltBytes();
  if (w.narrow && eb != 4)
    return failure();
  uint64_t partStart = 0;
  std::vector<char> rows;
  for (size_t k = 0; k < w.parts.size() && size > 0; ++k) {
    const LazyWeight::Part &p = w.parts[k];
    uint64_t pb = w.partBytes(k);
    if (offset >= partStart + pb) {
      partStart += pb;
      continue;
    }
    uint64_t rowBytes = uint64_t(p.outCols()) * ob;
    // Rows in chunks of about 16 MiB.
    uint64_t chunkRows = std::max<uint64_t>(1, (16u << 20) / rowBytes);
    while (size > 0 && offset < partStart + pb) {
      uint64_t local = offset - partStart;
      int64_t r0 = int64_t(local / rowBytes);
      int64_t r1 = std::min<int64_t>(p.outRows(), r0 + int64_t(chunkRows));
      rows.resize(size_t(r1 - r0) * p.outCols() * eb);
      realizeRows(p, eb, r0, r1, rows.data());
      if (w.narrow) {
        // Narrowed in place: the 16-bit values fill the first half.
        std::vector<float> f(size_t(r1 - r0) * p.outCols());
        std::memcpy(f.data(), rows.data(), f.size() * 4);
        moert::fromF32(w.narrow == 1 ? moert::Half16::bf16 : moert::Half16::f16,
                       f.data(), reinterpret_cast<uint16_t *>(rows.data()),
                       f.size());
      }
      uint64_t from = local - uint64_t(r0) * rowBytes;
      uint64_t have = uint64_t(r1 - r0) * rowBytes - from;
      uint64_t take = std::min(size, have);
      std::memcpy(dst, rows.data() + from, take);
      dst += take;
      offset += take;
      size -= take;
    }
    partStart += pb;
  }
  return success(size == 0);
}

LogicalResult moec::readConstant(Attribute a, uint64_t offset, uint64_t size,
                                 char *dst) {
  if (std::optional<ArrayRef<char>> v = constantView(a)) {
    if (offset + size > v->size())
      return failure();
    std::memcpy(dst, v->data() + offset, size);
    return success();
  }
  if (const LazyWeight *w = lazyWeightOf(a))
    return readLazy(*w, offset, size, dst);
  FailureOr<std::vector<char>> all = constantBytes(a);
  if (failed(all) || offset + size > all->size())
    return failure();
  std::memcpy(dst, all->data() + offset, size);
  return success();
}

FailureOr<LazyWeight> moec::narrowedLazy(Attribute a, int narrow) {
  auto t = dyn_cast<RankedTensorType>(cast<TypedAttr>(a).getType());
  if (!t || !t.getElementType().isF32() || t.getRank() == 0 ||
      t.getNumElements() == 0)
    return failure();
  if (const LazyWeight *w = lazyWeightOf(a)) {
    if (w->narrow || w->srcEltBytes != 4)
      return failure();
    LazyWeight n = *w;
    n.narrow = narrow;
    return n;
  }
  std::optional<ArrayRef<char>> v = constantView(a);
  if (!v)
    return failure();
  LazyWeight n;
  LazyWeight::Part p;
  p.src = *v;
  p.cols = t.getDimSize(t.getRank() - 1);
  p.rows = t.getNumElements() / p.cols;
  n.parts.push_back(p);
  n.narrow = narrow;
  return n;
}

LogicalResult moec::materializeLazyWeights(Operation *root) {
  SmallVector<arith::ConstantOp> lazy;
  root->walk([&](arith::ConstantOp c) {
    if (lazyWeightOf(c.getValue()))
      lazy.push_back(c);
  });
  for (arith::ConstantOp c : lazy) {
    FailureOr<std::vector<char>> bytes = constantBytes(c);
    if (failed(bytes))
      return c.emitError("cannot read the lazy weight's bytes");
    auto r = cast<DenseResourceElementsAttr>(c.getValue());
    OpBuilder b(c);
    Value nc =
        makeBlobConstant(b, c.getLoc(), cast<RankedTensorType>(r.getType()),
                         *bytes, r.getRawHandle().getKey());
    c.getResult().replaceAllUsesWith(nc);
    c.erase();
  }
  return success();
}
