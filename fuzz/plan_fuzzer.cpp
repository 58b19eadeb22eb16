//===- plan_fuzzer.cpp - fuzz the plan loader, verifier and executor ------===//
//
// Input: the bytes of a whole .moeplan file. They are written to a file in
// a private directory and opened for rank 0 the way moe-run opens a plan
// (moert::LoadedPlan::open: the header, the manifest's checksum, the
// FlatBuffers verifier, verifyPlan, the segments mapped). A plan that loads
// is then described (moe-run --describe) and every constant this rank maps
// is read whole: the loader's checks must keep each inside its mapping.
// Mutations would rarely get past the manifest's FNV-1a checksum, so the
// target writes the checksum of the mutated manifest into the header
// first (when the header's manifest size fits the input): the mutations
// reach the FlatBuffers verifier and verifyPlan. The checksum check itself
// is held by the unit tests (runtime/test/PlanTest.cpp).
//
// A plan that loads is then run (runPlan below: every rank of its mesh as
// a thread, as `moe-run -n N --threads --no-verify-weights` runs it) when
// it is small: at most 4 ranks, a few MiB of arena, inputs and weights, and
// a bounded amount of arithmetic (so that a slow input is a hang, not a big
// matmul). Weights are mapped without their XXH64 checksums, so mutated
// constants (integer ones used as indices included) reach the kernels. The
// model inputs are made from the plan's declared shapes and dtypes and
// filled from a hash of the input: floats with now and then a NaN or an
// infinity, integers (token and expert ids, indices) sometimes small and in
// range, sometimes negative or huge: the runtime must refuse those with an
// error. Plans with generated kernels (native code in the data region,
// trusted by the runtime) are loaded but not run.
//
// Per-rank weight files a plan names are absent from the directory, so
// those plans fail at load; fuzz/make-seeds.sh makes seeds with the weights
// in the plan file.
//
// An error is a fine outcome; a crash, an abort, an uncaught exception, a
// hang or a sanitizer report is a finding.
//
//===----------------------------------------------------------------------===//

#include "moert/Comm.h"
#include "moert/Executor.h"
#include "moert/Plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

namespace {
const std::string &planPath() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/moert-plan-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("plan-fuzzer: mkdtemp");
      std::abort();
    }
    return std::string(tmpl) + "/fuzz.moeplan";
  }();
  return path;
}

// The header of docs/plan-format.md: manifest size at byte 24, checksum of
// the manifest's bytes (FNV-1a, 64 bits) at byte 48; the manifest at 64.
constexpr size_t kHeaderSize = 64, kManifestSizeAt = 24, kChecksumAt = 48;

uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

/// `data` with the header's checksum made to match the manifest.
std::vector<uint8_t> withChecksum(const uint8_t *data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  if (size < kHeaderSize)
    return b;
  uint64_t n;
  std::memcpy(&n, &b[kManifestSizeAt], 8);
  if (n > size - kHeaderSize)
    return b;
  uint64_t h = fnv1a(&b[kHeaderSize], n);
  std::memcpy(&b[kChecksumAt], &h, 8);
  return b;
}

void writeAll(const uint8_t *data, size_t size) {
  int fd = ::open(planPath().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    std::perror("plan-fuzzer: open");
    std::abort();
  }
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n <= 0) {
      std::perror("plan-fuzzer: write");
      std::abort();
    }
    data += n;
    size -= size_t(n);
  }
  ::close(fd);
}
//===----------------------------------------------------------------------===//
// Running a plan
//===----------------------------------------------------------------------===//

// What a plan may hold to be run: small enough that every input runs in
// well under a second under ASan.
constexpr int64_t kMaxRunRanks = 4;
constexpr uint64_t kMaxRunBytes = 8ull << 20; // arena, inputs, weights each
constexpr double kMaxRunWork = 5e7;           // elements touched, see below

/// SplitMix64: the deterministic stream the inputs are filled from.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

int64_t elements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d; // verifyPlan bounds each shape's nonzero dims at 2^56 bytes
  return n;
}

/// An estimate of the elements a run touches: per step, its operands'
/// elements (and a dispatch's slots), times the largest dim among them for
/// the steps that loop over a dim per element (matmul, batch_matmul,
/// experts, route, topk). A plan over the bound would be slow, not wrong
/// (a dispatch of 2^24 slots on each of 2 ranks took 20 s: a slot costs
/// about as much as 100 elements).
double runWork(const moert::Plan &plan) {
  double work = 0;
  for (const moert::Step &s : plan.steps) {
    double n = 0, maxDim = 1;
    for (const std::vector<int32_t> *ids : {&s.inputs, &s.outputs})
      for (int32_t id : *ids) {
        if (id < 0)
          continue;
        const moert::Value &v = plan.values[size_t(id)];
        n += double(elements(v.shape));
        for (int64_t d : v.shape)
          maxDim = std::max(maxDim, double(d));
      }
    // A dispatch's counts and offsets are per (rank, slot) of its group.
    if (const moert::fb::DispatchT *d = s.attrs.Asdispatch())
      n += 100 * double(plan.worldSize()) * double(d->slots_per_rank);
    switch (s.kind()) {
    case moert::StepKind::matmul:
    case moert::StepKind::batch_matmul:
    case moert::StepKind::experts:
    case moert::StepKind::route:
    case moert::StepKind::topk:
      n *= 3 * maxDim;
      break;
    default:
      break;
    }
    work += n;
  }
  return work;
}

/// Whether the fuzzer runs `plan` (see the file comment).
bool runnable(const moert::Plan &plan) {
  if (plan.worldSize() > kMaxRunRanks || !plan.kernels.empty() ||
      plan.arenaBytes > kMaxRunBytes)
    return false;
  uint64_t inputs = 0, weights = 0;
  for (const moert::ModelIO &m : plan.inputs) {
    // Each is at most 2^56 bytes; the sum must not wrap.
    inputs += uint64_t(elements(m.shape)) * moert::dtypeSize(m.dtype);
    if (inputs > kMaxRunBytes)
      return false;
  }
  for (const moert::Segment &s : plan.segments)
    weights += s.size;
  return inputs <= kMaxRunBytes && weights <= kMaxRunBytes &&
         runWork(plan) <= kMaxRunWork;
}

/// One model input of `m`'s dtype and global shape (`shape`: m.shape, or
/// its symbolic dims at one token count), filled from `rng`.
/// Integers are in [0, 4) (in range for most ids), in [-2, 6) or anything
/// at all; floats in [-4, 4), with a NaN or an infinity now and then.
moert::NpyArray makeInput(const moert::ModelIO &m,
                          const std::vector<int64_t> &shape, Rng &rng) {
  moert::NpyArray a;
  a.dtype = moert::npyDType(m.dtype);
  a.shape = shape;
  int64_t n = elements(shape);
  size_t esize = moert::dtypeSize(m.dtype);
  a.data.resize(size_t(n) * esize);
  int mode = int(rng.next() % 4);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t r = rng.next();
    char *dst = a.data.data() + size_t(i) * esize;
    switch (m.dtype) {
    case moert::DType::i64:
    case moert::DType::i32: {
      int64_t v = mode <= 1   ? int64_t(r % 4)
                  : mode == 2 ? int64_t(r % 8) - 2
                              : int64_t(r >> 1) * ((r & 1) ? -1 : 1);
      if (m.dtype == moert::DType::i64) {
        std::memcpy(dst, &v, 8);
      } else {
        int32_t w = int32_t(uint32_t(uint64_t(v)));
        std::memcpy(dst, &w, 4);
      }
      break;
    }
    case moert::DType::u8:
      *dst = char(r);
      break;
    default: {
      float f = float(int64_t(r % 8192) - 4096) / 1024.0f;
      if (mode == 3 && r % 64 == 0)
        f = (r & 64) ? NAN : ((r & 128) ? INFINITY : -INFINITY);
      if (esize == 4) {
        std::memcpy(dst, &f, 4);
      } else {
        // 16-bit floats: the raw top half of f (bf16), or any bits (f16).
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        uint16_t h = m.dtype == moert::DType::bf16 ? uint16_t(bits >> 16)
                                                   : uint16_t(r >> 16);
        std::memcpy(dst, &h, 2);
      }
      break;
    }
    }
  }
  return a;
}

/// Runs `plan` (opened for rank 0 as `lp0`) on every rank of its mesh as
/// threads, with inputs filled from `seed`. Errors are fine outcomes.
void runPlan(std::unique_ptr<moert::LoadedPlan> lp0, uint64_t seed) {
  const moert::Plan &plan = lp0->plan();
  int n = int(plan.worldSize());
  std::vector<std::unique_ptr<moert::LoadedPlan>> lps;
  lps.push_back(std::move(lp0));
  for (int r = 1; r < n; ++r) {
    std::string error;
    lps.push_back(moert::LoadedPlan::open(planPath(), r, error,
                                          /*verifyWeights=*/false));
    if (!lps.back())
      return;
  }
  Rng rng{seed};
  // A dynamic token count (format version 8): inputs at a count in
  // 0..max (each symbolic dim at most its size at the maximum).
  moert::SymValues at;
  if (!plan.symbols.empty())
    at.T = at.t = at.tb =
        int64_t(rng.next() % (uint64_t(plan.symbols[0].max) + 1));
  std::map<std::string, moert::NpyArray> inputs;
  for (const moert::ModelIO &m : lps[0]->plan().inputs)
    inputs[m.name] =
        makeInput(m, moert::resolveShape(m.shape, m.symDims, at), rng);
  try {
    moert::runThreadRanks(n, [&](moert::Comm &world) {
      moert::Executor ex(*lps[size_t(world.rank())], world,
                         moert::createCpuBackend());
      ex.setInputs(inputs);
      ex.run();
      ex.gatherOutputs();
      ex.gatherReports();
    });
  } catch (const std::exception &e) {
    if (!*e.what()) {
      std::fprintf(stderr, "plan-fuzzer: a run failed without a message\n");
      std::abort();
    }
  }
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<uint8_t> file = withChecksum(data, size);
  writeAll(file.data(), file.size());
  std::string error;
  // The weights' checksums (on by default in moe-run) are held by the unit
  // tests; a mutated constant would never get past them.
  auto lp = moert::LoadedPlan::open(planPath(), /*rank=*/0, error,
                                    /*verifyWeights=*/false);
  if (!lp) {
    if (error.empty()) {
      std::fprintf(stderr, "plan-fuzzer: load failed without an error\n");
      std::abort();
    }
    return 0;
  }
  const moert::Plan &plan = lp->plan();
  volatile size_t sink = moert::describePlan(plan).size();
  for (const moert::Value &v : plan.values) {
    const auto *p = static_cast<const unsigned char *>(lp->constantData(v));
    if (!p)
      continue;
    unsigned char x = 0;
    for (uint64_t i = 0, n = v.byteSize(); i < n; ++i)
      x ^= p[i];
    sink = sink + x;
  }
  for (const moert::DataRef *d : {&plan.cpuCode, &plan.ptxCode})
    if (const char *p = lp->codeData(*d))
      for (uint64_t i = 0; i < d->bytes; ++i)
        sink = sink + size_t(p[i]);
  (void)sink;
  if (runnable(plan))
    runPlan(std::move(lp), fnv1a(data, size));
  return 0;
}
