//===- PlanFile.cpp - the .moeplan file: FlatBuffers manifest, data ------===//
//
// Writes and loads plan files: a 64-byte header, the manifest (a FlatBuffer
// of runtime/schema/plan.fbs, checked with its generated verifier and an
// FNV-1a checksum), the page-aligned data region that each rank maps
// read-only, and the checksum trailer: one moert::weightChecksum per
// segment in the file, checked when a rank maps it (docs/plan-format.md).
//
//===----------------------------------------------------------------------===//

#include "moert/Plan.h"

#include "PlanManifest.h"

#include "moert/Checksum.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace moert;

namespace {
constexpr char kMagic[8] = {'M', 'O', 'E', 'P', 'L', 'A', 'N', '\0'};
constexpr uint64_t kHeaderSize = 64;
constexpr uint64_t kPage = 4096;

std::string hex(uint64_t x) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%llx", (unsigned long long)x);
  return buf;
}

uint64_t alignTo(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

uint64_t fnv1a(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t flags;
  uint64_t manifestOffset;
  uint64_t manifestSize;
  uint64_t dataOffset;
  uint64_t dataSize;
  uint64_t checksum;
  uint64_t reserved;
};
static_assert(sizeof(Header) == kHeaderSize, "header is 64 bytes");

} // namespace

uint64_t PlanData::segmentSize(size_t seg) const {
  uint64_t n = seg < segments.size() ? segments[seg].size() : 0;
  if (seg < deferred.size() && !deferred[seg].empty())
    n = deferred[seg].back().offset + deferred[seg].back().size;
  return n;
}

uint64_t PlanData::append(size_t seg, const char *p, size_t n) {
  if (segments.size() <= seg)
    segments.resize(seg + 1);
  if (seg >= deferred.size() || deferred[seg].empty()) {
    std::vector<char> &v = segments[seg];
    uint64_t off = alignTo(v.size(), 64);
    v.resize(off + n);
    std::memcpy(v.data() + off, p, n);
    return off;
  }
  // After a deferred piece: a piece that holds its bytes.
  auto held = std::make_shared<std::vector<char>>(p, p + n);
  return appendDeferred(
      seg, n, [held](uint64_t off, uint64_t len, char *dst, std::string &) {
        std::memcpy(dst, held->data() + off, len);
        return true;
      });
}

uint64_t PlanData::appendDeferred(size_t seg, uint64_t size, Fill fill) {
  if (segments.size() <= seg)
    segments.resize(seg + 1);
  if (deferred.size() <= seg)
    deferred.resize(seg + 1);
  uint64_t off = alignTo(segmentSize(seg), 64);
  deferred[seg].push_back({off, size, std::move(fill)});
  return off;
}

namespace {
/// STEM.TAG.weights for plan STEM.moeplan.
std::string weightsPath(const std::string &planPath, const std::string &tag) {
  std::string stem = planPath;
  const std::string ext = ".moeplan";
  if (stem.size() > ext.size() &&
      stem.compare(stem.size() - ext.size(), ext.size(), ext) == 0)
    stem.resize(stem.size() - ext.size());
  return stem + "." + tag + ".weights";
}
} // namespace

std::string moert::rankWeightsPath(const std::string &planPath, int32_t rank) {
  return weightsPath(planPath, "rank-" + std::to_string(rank));
}

namespace {
/// The header of a per-rank weight file: its data region starts at
/// kPage; `checksum` is the plan manifest's, so that a weight file from
/// another compile is refused.
struct WeightsHeader {
  char magic[8];
  uint32_t version;
  int32_t rank; ///< -1: a segment a group of ranks shares
  uint64_t checksum;
  uint64_t dataSize;
  uint64_t reserved[4];
};
static_assert(sizeof(WeightsHeader) == kHeaderSize, "header is 64 bytes");
constexpr char kWeightsMagic[8] = {'M', 'O', 'E', 'W', 'G', 'H', 'T', '\0'};

std::string baseName(const std::string &path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}
std::string dirName(const std::string &path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

/// True when the `n` bytes of `fd` at `at` can be read and are all zeros.
bool zeros(int fd, uint64_t at, uint64_t n) {
  std::vector<char> buf(size_t(std::min<uint64_t>(n, 1 << 16)));
  for (uint64_t done = 0; done < n;) {
    size_t k = size_t(std::min<uint64_t>(n - done, buf.size()));
    if (pread(fd, buf.data(), k, off_t(at + done)) != ssize_t(k) ||
        std::any_of(buf.begin(), buf.begin() + k, [](char c) { return c; }))
      return false;
    done += k;
  }
  return true;
}

/// Writes the data of the segments `segs` (plan.segments indices, in
/// increasing offsets) into `f` at their offsets past `base`, padding to
/// `end`, then the checksum trailer: each segment's weightChecksum, in the
/// order of `segs`. Deferred pieces are produced in windows of at most
/// 64 MiB and hashed as they are written.
bool writeSegments(std::ofstream &f, const std::string &path, const Plan &plan,
                   const PlanData &data, const std::vector<size_t> &segs,
                   uint64_t end, uint64_t &done, uint64_t total,
                   const WriteOptions &options, std::string &error) {
  uint64_t at = 0; // bytes of the data region written so far
  std::vector<char> zeros(kPage, 0), window;
  WeightHasher *hash = nullptr; // the segment being written, if any
  auto put = [&](const char *p, uint64_t n) {
    f.write(p, std::streamsize(n));
    if (hash)
      hash->update(p, n);
    at += n;
  };
  auto pad = [&](uint64_t to) {
    while (at < to)
      put(zeros.data(), std::min<uint64_t>(to - at, zeros.size()));
  };
  std::vector<uint64_t> sums;
  for (size_t i : segs) {
    const Segment &s = plan.segments[i];
    pad(s.offset);
    WeightHasher h;
    hash = &h;
    const std::vector<char> &held = data.segments[i];
    put(held.data(), held.size());
    if (i < data.deferred.size())
      for (const PlanData::Deferred &d : data.deferred[i]) {
        pad(s.offset + d.offset);
        constexpr uint64_t kWindow = uint64_t(64) << 20;
        window.resize(size_t(std::min(d.size, kWindow)));
        for (uint64_t o = 0; o < d.size; o += kWindow) {
          uint64_t n = std::min(kWindow, d.size - o);
          std::string why;
          if (!d.fill(o, n, window.data(), why)) {
            error = "cannot write plan '" + path + "': segment '" + s.name +
                    "': " + why;
            return false;
          }
          put(window.data(), n);
          done += n;
          if (options.progress)
            options.progress(done, total);
        }
      }
    done += held.size();
    if (options.progress)
      options.progress(done, total);
    hash = nullptr;
    sums.push_back(h.digest());
  }
  pad(end);
  f.write(reinterpret_cast<const char *>(sums.data()),
          std::streamsize(sums.size() * sizeof(uint64_t)));
  if (!f) {
    error = "cannot write '" + path + "': " + std::strerror(errno);
    return false;
  }
  return true;
}
} // namespace

bool moert::writePlan(const std::string &path, Plan &plan, const PlanData &data,
                      std::string &error, const WriteOptions &options) {
  if (data.segments.size() != plan.segments.size() ||
      data.deferred.size() > plan.segments.size()) {
    error = "plan has " + std::to_string(plan.segments.size()) +
            " segments but " + std::to_string(data.segments.size()) +
            " data buffers";
    return false;
  }
  // Which file each segment goes to: the plan's data region, or (per-rank
  // weights) the weight file of its one rank.
  std::map<std::string, std::vector<size_t>> files; // "" = the plan file
  std::map<std::string, std::vector<int32_t>> fileRanks;
  int groups = 0;
  for (size_t i = 0; i < plan.segments.size(); ++i) {
    Segment &s = plan.segments[i];
    s.file.clear();
    if (options.weightsPerRank && !s.ranks.empty()) {
      // A rank's own segment, or one a group of ranks shares (the
      // data-parallel replicas of an expert-parallel slice).
      s.file = baseName(
          s.ranks.size() == 1
              ? rankWeightsPath(path, s.ranks[0])
              : weightsPath(path, "group-" + std::to_string(groups++)));
      fileRanks[s.file] = s.ranks;
    }
    files[s.file].push_back(i);
  }
  uint64_t total = 0;
  std::map<std::string, uint64_t> fileSize;
  for (auto &[file, segs] : files) {
    uint64_t off = 0;
    for (size_t i : segs) {
      plan.segments[i].offset = off;
      plan.segments[i].size = data.segmentSize(i);
      off = alignTo(off + plan.segments[i].size, kPage);
      total += plan.segments[i].size;
    }
    fileSize[file] = off;
  }
  // Version 8 only for a dynamic token count, 9 only for a transposed
  // batch_matmul: other plans stay version 7, byte for byte.
  plan.version = minPlanVersion(plan);
  if (!verifyPlan(plan, error))
    return false;
  flatbuffers::FlatBufferBuilder fbb(1 << 16);
  fb::FinishPlanBuffer(fbb, manifest::toFb(plan, fbb));
  std::string manifest(reinterpret_cast<const char *>(fbb.GetBufferPointer()),
                       fbb.GetSize());
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = plan.version;
  h.manifestOffset = kHeaderSize;
  h.manifestSize = manifest.size();
  h.dataOffset = alignTo(kHeaderSize + manifest.size(), kPage);
  h.dataSize = fileSize[""];
  h.checksum = fnv1a(manifest.data(), manifest.size());
  uint64_t done = 0;
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) {
      error = "cannot write plan '" + path + "': " + std::strerror(errno);
      return false;
    }
    f.write(reinterpret_cast<const char *>(&h), sizeof(h));
    f.write(manifest.data(), std::streamsize(manifest.size()));
    std::vector<char> pad(h.dataOffset - kHeaderSize - manifest.size(), 0);
    f.write(pad.data(), std::streamsize(pad.size()));
    if (!writeSegments(f, path, plan, data, files[""], h.dataSize, done, total,
                       options, error))
      return false;
  }
  for (auto &[file, segs] : files) {
    if (file.empty())
      continue;
    const std::vector<int32_t> &ranks = fileRanks[file];
    bool wanted = options.ranks.empty();
    for (int32_t r : ranks)
      wanted |= std::find(options.ranks.begin(), options.ranks.end(), r) !=
                options.ranks.end();
    if (!wanted || fileSize[file] == 0)
      continue; // not asked for, or nothing in it (never opened)
    int32_t rank = ranks.size() == 1 ? ranks[0] : -1;
    std::string wpath = dirName(path) + file;
    std::ofstream f(wpath, std::ios::binary | std::ios::trunc);
    if (!f) {
      error = "cannot write '" + wpath + "': " + std::strerror(errno);
      return false;
    }
    WeightsHeader wh{};
    std::memcpy(wh.magic, kWeightsMagic, 8);
    wh.version = plan.version;
    wh.rank = rank;
    wh.checksum = h.checksum;
    wh.dataSize = fileSize[file];
    f.write(reinterpret_cast<const char *>(&wh), sizeof(wh));
    std::vector<char> pad(kPage - kHeaderSize, 0);
    f.write(pad.data(), std::streamsize(pad.size()));
    if (!writeSegments(f, wpath, plan, data, segs, wh.dataSize, done, total,
                       options, error))
      return false;
  }
  return true;
}

namespace {
/// Opens a per-rank weight file for segment `s`: its header must name this
/// plan (manifest checksum), its data region hold the segment and its
/// trailer `count` checksums (the segments in the file); `trailer` is set to
/// where the trailer starts.
int openWeights(const std::string &wpath, uint64_t checksum, const Segment &s,
                uint64_t count, uint64_t &trailer, std::string &error) {
  int fd = ::open(wpath.c_str(), O_RDONLY);
  if (fd < 0) {
    error = "cannot open the weights of segment '" + s.name + "' ('" + wpath +
            "'): " + std::strerror(errno) +
            " (plans compiled with --weights-per-rank keep each rank's "
            "weights in a file next to the plan; copy it there)";
    return -1;
  }
  WeightsHeader wh;
  std::memset(&wh, 0, sizeof(wh));
  struct stat st;
  bool ok = pread(fd, &wh, sizeof(wh), 0) == ssize_t(sizeof(wh)) &&
            fstat(fd, &st) == 0;
  if (!ok || std::memcmp(wh.magic, kWeightsMagic, 8) != 0)
    error = "'" + wpath + "' is not a moe weight file (bad magic)";
  else if (std::any_of(std::begin(wh.reserved), std::end(wh.reserved),
                       [](uint64_t w) { return w != 0; }))
    error = "'" + wpath +
            "' is corrupt (its header's reserved words are not "
            "0)";
  else if (wh.checksum != checksum ||
           (wh.version < kPlanVersion || wh.version > kPlanVersionBatchTransB))
    error = "'" + wpath +
            "' belongs to another compile of the plan (checksum differs): "
            "copy the weight files written with this plan";
  else if (s.offset > wh.dataSize || s.size > wh.dataSize - s.offset ||
           uint64_t(st.st_size) < kPage ||
           wh.dataSize > uint64_t(st.st_size) - kPage)
    error = "'" + wpath + "' is truncated (segment '" + s.name + "' needs " +
            std::to_string(kPage + s.offset + s.size) +
            " bytes, the file has " + std::to_string(uint64_t(st.st_size)) +
            ")";
  else if (count > (uint64_t(st.st_size) - kPage - wh.dataSize) / 8)
    error = "'" + wpath + "' is truncated (its checksum trailer of " +
            std::to_string(count) + " segments is missing)";
  trailer = kPage + wh.dataSize;
  if (!error.empty()) {
    ::close(fd);
    return -1;
  }
  return fd;
}
} // namespace

LoadedPlan::~LoadedPlan() {
  for (int fd : weightFds_)
    close(fd);
  for (auto &[p, n] : maps_)
    if (p)
      munmap(p, n);
  if (fd_ >= 0)
    close(fd_);
}

std::unique_ptr<LoadedPlan>
LoadedPlan::open(const std::string &path, int rank, std::string &error,
                 bool verifyWeights,
                 const std::function<void(uint64_t, uint64_t)> &progress) {
  auto fail = [&](const std::string &m) -> std::unique_ptr<LoadedPlan> {
    error = path + ": " + m;
    return nullptr;
  };
  std::unique_ptr<LoadedPlan> lp(new LoadedPlan());
  lp->fd_ = ::open(path.c_str(), O_RDONLY);
  if (lp->fd_ < 0)
    return fail(std::string("cannot open plan: ") + std::strerror(errno));
  struct stat st;
  if (fstat(lp->fd_, &st) != 0)
    return fail(std::string("cannot stat plan: ") + std::strerror(errno));
  uint64_t fileSize = st.st_size;
  Header h;
  std::memset(&h, 0, sizeof(h));
  ssize_t got = pread(lp->fd_, &h, sizeof(h), 0);
  if (got < ssize_t(sizeof(kMagic)) || std::memcmp(h.magic, kMagic, 8) != 0)
    return fail("not a moe plan (bad magic; expected \"MOEPLAN\")");
  if (fileSize < kHeaderSize || got != ssize_t(sizeof(h)))
    return fail("truncated plan (the file has " + std::to_string(fileSize) +
                " bytes, less than the 64-byte header)");
  if (h.version < kPlanVersion || h.version > kPlanVersionBatchTransB)
    return fail("plan format version " + std::to_string(h.version) +
                ", this moe-run reads version " + std::to_string(kPlanVersion) +
                " (" + std::to_string(kPlanVersionSymbols) +
                " for dynamic token counts, " +
                std::to_string(kPlanVersionBatchTransB) +
                " for transposed batch_matmuls; recompile with this moec)");
  if (h.flags != 0)
    return fail("corrupt plan (unknown header flags 0x" + hex(h.flags) +
                "; this moe-run knows none)");
  if (h.reserved != 0)
    return fail("corrupt plan (the header's reserved word is not 0)");
  if (h.manifestOffset != kHeaderSize)
    return fail("corrupt plan (the manifest starts at byte " +
                std::to_string(h.manifestOffset) + ", not after the " +
                std::to_string(kHeaderSize) + "-byte header)");
  // Sizes are checked against the file, without overflow, before anything
  // is allocated.
  if (h.manifestSize > fileSize - kHeaderSize)
    return fail("truncated plan (the manifest runs past the end of the file)");
  if (h.dataOffset < kHeaderSize + h.manifestSize || h.dataOffset % kPage != 0)
    return fail("corrupt plan (the data region starts at byte " +
                std::to_string(h.dataOffset) +
                ", not on a page past the manifest)");
  if (h.dataOffset > fileSize || h.dataSize > fileSize - h.dataOffset)
    return fail("truncated plan (the weights need " +
                (h.dataSize > UINT64_MAX - h.dataOffset
                     ? std::string("more than 2^64")
                     : std::to_string(h.dataOffset + h.dataSize)) +
                " bytes, the file has " + std::to_string(fileSize) + ")");
  std::string manifest(h.manifestSize, '\0');
  if (pread(lp->fd_, manifest.data(), manifest.size(), h.manifestOffset) !=
      ssize_t(manifest.size()))
    return fail("cannot read the manifest");
  if (fnv1a(manifest.data(), manifest.size()) != h.checksum)
    return fail("corrupt plan (manifest checksum mismatch)");
  // The padding up to the data region is written as zeros (less than a
  // page): anything else is a corrupt file.
  {
    uint64_t padSize = h.dataOffset - h.manifestOffset - h.manifestSize;
    if (padSize >= kPage)
      return fail("corrupt plan (the data region starts " +
                  std::to_string(padSize) +
                  " bytes past the manifest, not "
                  "on the next page)");
    std::vector<char> pad(padSize);
    if (!pad.empty() &&
        (pread(lp->fd_, pad.data(), pad.size(),
               h.manifestOffset + h.manifestSize) != ssize_t(pad.size()) ||
         std::any_of(pad.begin(), pad.end(), [](char c) { return c != 0; })))
      return fail("corrupt plan (the padding after the manifest is not "
                  "zeros)");
  }
  // The schema's generated verifier: every offset, vector and string inside
  // the manifest, every union member of the declared kind.
  const auto *bytes = reinterpret_cast<const uint8_t *>(manifest.data());
  flatbuffers::Verifier verifier(bytes, manifest.size());
  if (!fb::PlanBufferHasIdentifier(bytes) || !fb::VerifyPlanBuffer(verifier))
    return fail("corrupt manifest (it does not verify against the plan "
                "schema, runtime/schema/plan.fbs)");
  if (std::string v = manifest::misalignedVector(*fb::GetPlan(bytes));
      !v.empty())
    return fail("corrupt manifest (" + v + " is not 8-byte aligned)");
  std::string jerr;
  if (!manifest::fromFb(*fb::GetPlan(bytes), lp->plan_, jerr))
    return fail("invalid plan: " + jerr);
  if (lp->plan_.version != h.version)
    return fail("manifest version " + std::to_string(lp->plan_.version) +
                " differs from the header's " + std::to_string(h.version));
  if (uint32_t need = minPlanVersion(lp->plan_); h.version < need)
    return fail("plan format version " + std::to_string(h.version) +
                (need == kPlanVersionSymbols
                     ? " has no symbols (a dynamic token count needs version "
                     : " has no transposed batch_matmul (trans_b needs "
                       "version ") +
                std::to_string(need) + ")");
  if (!verifyPlan(lp->plan_, jerr))
    return fail("invalid plan: " + jerr);
  for (const Segment &s : lp->plan_.segments)
    if (s.file.empty() &&
        (s.offset > h.dataSize || s.size > h.dataSize - s.offset))
      return fail("segment '" + s.name + "' lies outside the data region");
    else if (s.offset % kPage != 0)
      return fail("segment '" + s.name + "' starts at offset " +
                  std::to_string(s.offset) + ", not on a page");
    else if (s.file.find('/') != std::string::npos || s.file == "..")
      return fail("segment '" + s.name + "' names weight file '" + s.file +
                  "' outside the plan's directory");
  // Each file's checksum trailer: one entry per segment it holds, in the
  // manifest's order (slot[i] is segment i's entry).
  std::map<std::string, uint64_t> inFile;
  std::vector<uint64_t> slot;
  for (const Segment &s : lp->plan_.segments)
    slot.push_back(inFile[s.file]++);
  uint64_t planTrailer = h.dataOffset + h.dataSize; // inside the file
  if (inFile[""] > (fileSize - planTrailer) / 8)
    return fail("truncated plan (its checksum trailer of " +
                std::to_string(inFile[""]) + " segments is missing)");
  lp->maps_.assign(lp->plan_.segments.size(), {nullptr, 0});
  lp->segBase_.assign(lp->plan_.segments.size(), nullptr);
  if (rank < 0)
    return lp;
  lp->rank_ = rank;
  if (rank >= lp->plan_.worldSize())
    return fail("rank " + std::to_string(rank) + " is outside the plan's " +
                std::to_string(lp->plan_.worldSize()) + " ranks");
  auto isMine = [&](const Segment &s) {
    bool mine = s.ranks.empty();
    for (int32_t r : s.ranks)
      mine |= r == rank;
    return mine && s.size != 0;
  };
  uint64_t toCheck = 0, checked = 0;
  for (const Segment &s : lp->plan_.segments)
    toCheck += isMine(s) ? s.size : 0;
  for (size_t i = 0; i < lp->plan_.segments.size(); ++i) {
    const Segment &s = lp->plan_.segments[i];
    if (!isMine(s))
      continue;
    uint64_t off = h.dataOffset + s.offset; // page aligned
    uint64_t trailer = planTrailer;
    int fd = lp->fd_;
    if (!s.file.empty()) {
      // Per-rank weights: the rank's own file, checked against this plan.
      std::string err;
      fd = openWeights(dirName(path) + s.file, h.checksum, s, inFile[s.file],
                       trailer, err);
      if (fd < 0)
        return fail(err);
      lp->weightFds_.push_back(fd);
      off = kPage + s.offset;
    }
    void *p = mmap(nullptr, s.size, PROT_READ, MAP_PRIVATE, fd, off);
    if (p == MAP_FAILED)
      return fail("cannot map segment '" + s.name +
                  "': " + std::strerror(errno));
    lp->maps_[i] = {p, s.size};
    lp->segBase_[i] = static_cast<const char *>(p);
    lp->mappedBytes_ += s.size;
    if (!verifyWeights)
      continue;
    // Every byte this rank maps against the file's trailer.
    uint64_t want = 0;
    if (pread(fd, &want, sizeof(want), off_t(trailer + 8 * slot[i])) !=
        ssize_t(sizeof(want)))
      return fail("cannot read the checksum of segment '" + s.name +
                  "': " + std::strerror(errno));
    // In pieces, for the progress of large segments.
    WeightHasher hasher;
    constexpr uint64_t kPiece = uint64_t(256) << 20;
    for (uint64_t o = 0; o < s.size; o += kPiece) {
      uint64_t n = std::min(kPiece, s.size - o);
      hasher.update(static_cast<const char *>(p) + o, size_t(n));
      checked += n;
      if (progress)
        progress(checked, toCheck);
    }
    if (hasher.digest() != want)
      return fail("weight segment " + std::to_string(i) + " '" + s.name +
                  "' (rank " + std::to_string(rank) + " / file " +
                  (s.file.empty() ? baseName(path) : s.file) +
                  ") checksum mismatch: the file is corrupt (or pass "
                  "--no-verify-weights)");
    // The padding after the segment, up to the next segment of its file
    // (or the end of the file's data region), is zeros as written: no
    // checksum covers it.
    uint64_t gapEnd = trailer - (off - s.offset); // data-region coordinates
    for (const Segment &o : lp->plan_.segments)
      if (o.file == s.file && o.offset > s.offset && o.offset < gapEnd)
        gapEnd = o.offset;
    if (gapEnd < s.offset + s.size)
      return fail("segment '" + s.name + "' overlaps the next one");
    if (!zeros(fd, off + s.size, gapEnd - s.offset - s.size))
      return fail("weight segment " + std::to_string(i) + " '" + s.name +
                  "' (rank " + std::to_string(rank) + " / file " +
                  (s.file.empty() ? baseName(path) : s.file) +
                  "): the padding after it is not zeros: the file is corrupt "
                  "(or pass --no-verify-weights)");
  }
  return lp;
}

const char *LoadedPlan::codeData(const DataRef &d) const {
  if (d.segment < 0 || d.segment >= int32_t(segBase_.size()) ||
      !segBase_[d.segment])
    return nullptr;
  return segBase_[d.segment] + d.offset;
}

const void *LoadedPlan::constantData(const Value &v) const {
  if (v.kind != ValueKind::constant || v.data.empty())
    return nullptr;
  // One entry is shared by every rank; otherwise entry r is rank r's.
  if (v.data.size() > 1 && (rank_ < 0 || size_t(rank_) >= v.data.size()))
    return nullptr;
  const DataRef &d = v.data.size() == 1 ? v.data[0] : v.data[rank_];
  if (d.segment < 0 || d.segment >= int32_t(segBase_.size()) ||
      !segBase_[d.segment])
    return nullptr;
  return segBase_[d.segment] + d.offset;
}
