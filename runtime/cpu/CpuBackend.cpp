//===- CpuBackend.cpp - plan steps on the CPU -----------------------------===//
//
// Runs each step of docs/plan-format.md with the kernels of
// moert/cpu/Kernels.h on a host arena; dispatch and combine exchange rows
// over the step's EP group communicator.
//
//===----------------------------------------------------------------------===//

#include "CpuBackendImpl.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <sstream>
#include <sys/mman.h>
#include <unistd.h>

using namespace moert;

namespace moert::cpuexec {

/// The bytes mapped for an arena of `n` bytes (at least one page's worth).
static size_t mappedBytes(uint64_t n) { return size_t(n ? n : 64); }

CpuBackend::~CpuBackend() {
  if (arena_)
    munmap(arena_, mappedBytes(arenaSize_));
  if (code_)
    dlclose(code_);
}

void CpuBackend::prepare(ExecContext &ctx) {
  uint64_t n = (ctx.plan().arenaBytes + 63) / 64 * 64;
  if (arena_)
    munmap(arena_, mappedBytes(arenaSize_));
  // Anonymous pages: zero, and resident only once written. The room a plan
  // gives a deferred dequantize step's f32 result (CpuBackendQuant.cpp) is
  // never written, so it costs address space, not memory.
  arenaSize_ = n;
  void *m = mmap(nullptr, mappedBytes(n), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    arena_ = nullptr;
    throw RunError("rank " + std::to_string(ctx.rank()) +
                   ": cannot allocate the arena of " + std::to_string(n) +
                   " bytes: " + std::strerror(errno));
  }
  arena_ = static_cast<char *>(m);
  states_.assign(ctx.plan().steps.size(), DispatchState());
  packedSrc_.clear();
  deferrable_.assign(ctx.plan().steps.size(), -1);
  wideConst_.clear();
  loadKernels(ctx);
}

char *CpuBackend::ptr(ExecContext &ctx, size_t index, int32_t id, DType want,
                      const char *role) {
  const Plan &p = ctx.plan();
  if (id < 0 || id >= int32_t(p.values.size()))
    throw ctx.error(index, std::string("missing operand (") + role + ")");
  const Value &v = p.values[id];
  if (v.dtype != want)
    throw ctx.error(index, std::string(role) + " v" + std::to_string(id) +
                               " has dtype " + dtypeName(v.dtype) +
                               ", expected " + dtypeName(want));
  if (v.kind == ValueKind::constant) {
    const void *d = ctx.loaded().constantData(v);
    if (!d)
      throw ctx.error(index, std::string(role) + " v" + std::to_string(id) +
                                 " ('" + v.name +
                                 "') is not mapped on this rank");
    return const_cast<char *>(static_cast<const char *>(d));
  }
  char *at = locate(v, arena_, arenaSize_, v.byteSize());
  if (!at)
    throw ctx.error(index, std::string(role) + " lies outside its memory");
  return at;
}

bool CpuBackend::half16(DType t, Half16 &h) {
  if (t == DType::bf16)
    h = Half16::bf16;
  else if (t == DType::f16)
    h = Half16::f16;
  else
    return false;
  return true;
}

const float *CpuBackend::wide(ExecContext &ctx, size_t index, int32_t id,
                              const char *role, std::vector<float> &tmp) {
  const Plan &p = ctx.plan();
  if (id < 0 || id >= int32_t(p.values.size()))
    throw ctx.error(index, std::string("missing operand (") + role + ")");
  const Value &v = p.values[size_t(id)];
  Half16 h = Half16::bf16;
  if (!half16(v.dtype, h))
    return f32(ctx, index, id, role);
  const uint16_t *src =
      reinterpret_cast<const uint16_t *>(ptr(ctx, index, id, v.dtype, role));
  size_t n = size_t(v.numElements());
  std::vector<float> *dst = &tmp;
  if (v.kind == ValueKind::constant) {
    auto it = wideConst_.find(id);
    if (it != wideConst_.end())
      return it->second.data();
    dst = &wideConst_[id];
  }
  dst->resize(n);
  toF32(h, src, dst->data(), n);
  return dst->data();
}

DispatchState &CpuBackend::stateFor(ExecContext &ctx, size_t index, int64_t d) {
  if (d < 0 || d >= int64_t(states_.size()) || !states_[d].valid)
    throw ctx.error(index,
                    "its dispatch step " + std::to_string(d) + " has not run");
  return states_[d];
}

void CpuBackend::matmul(ExecContext &ctx, size_t index, const fb::MatmulT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[id]; };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  MatmulDims d = checkMatmulStep(ctx, index);
  const Value &a = val(s.inputs[0]), &c = val(s.outputs[0]);
  // 16-bit operands (moec --precision): widened, fp32 GEMM; C is f32 or
  // narrowed to A's type.
  Half16 h = Half16::bf16;
  need(c.dtype == DType::f32 || half16(a.dtype, h),
       std::string("C has dtype ") + dtypeName(c.dtype) + " for inputs of " +
           dtypeName(a.dtype));
  const float *bias = nullptr;
  if (s.inputs.size() > 2 && s.inputs[2] >= 0)
    bias = wide(ctx, index, s.inputs[2], "bias", wc_);
  const float *A = wide(ctx, index, s.inputs[0], "A", wa_);
  // B packed (its dequantize step deferred, CpuBackendQuant.cpp) or f32.
  std::optional<cpu::PackedWeight> pb =
      packedB(ctx, index, s.inputs[1], d.K, d.N);
  const float *B = pb ? nullptr : wide(ctx, index, s.inputs[1], "B", wb_);
  auto gemm = [&](float *C) {
    if (!pb) {
      cpu::matmul(A, B, bias, C, d.M, d.K, d.N, d.transB);
      return;
    }
    for (int64_t m = 0; bias && m < d.M; ++m)
      std::copy_n(bias, d.N, C + m * d.N);
    cpu::packedMatmul(A, d.M, *pb, C, bias != nullptr);
  };
  if (c.dtype == DType::f32) {
    gemm(f32(ctx, index, s.outputs[0], "C"));
  } else {
    scratch_.resize(size_t(d.M * d.N));
    gemm(scratch_.data());
    fromF32(h, scratch_.data(),
            reinterpret_cast<uint16_t *>(
                ptr(ctx, index, s.outputs[0], c.dtype, "C")),
            size_t(d.M * d.N));
  }
}

void CpuBackend::batchMatmul(ExecContext &ctx, size_t index,
                             const fb::BatchMatmulT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  BatchMatmulDims d = checkBatchMatmulStep(ctx, index);
  const float *A = f32(ctx, index, s.inputs[0], "A");
  const float *B = f32(ctx, index, s.inputs[1], "B");
  float *C = f32(ctx, index, s.outputs[0], "C");
  // A boxed operand (a KV cache kept in place, [h, rows, d] with its rows
  // boxed: Value::boxRowsOfBatches; trans_b reads keys so) lies at its
  // box's batch stride.
  auto batchStride = [&](int32_t id, int64_t packed) {
    const Value &v = p.values[size_t(id)];
    const std::vector<int64_t> &box = v.boxShape();
    return v.boxed && box.size() == 3 ? box[1] * box[2] : packed;
  };
  int64_t sa = batchStride(s.inputs[0], d.M * d.K);
  int64_t sb = batchStride(s.inputs[1], d.K * d.N);
  for (int64_t b = 0; b < d.batch; ++b)
    cpu::matmul(A + b * sa, B + b * sb, nullptr, C + b * d.M * d.N, d.M, d.K,
                d.N, d.transB);
}

void CpuBackend::route(ExecContext &ctx, size_t index, const fb::RouteT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  int64_t T = 0, E = 0;
  RouteParams rp = checkRouteStep(ctx, index, T, E);
  cpu::route(f32(ctx, index, s.inputs[0], "logits"),
             optF32(ctx, index, s, 1, "bias"), T, E, rp,
             f32(ctx, index, s.outputs[0], "weights"),
             reinterpret_cast<int64_t *>(
                 ptr(ctx, index, s.outputs[1], DType::i64, "ids")));
}

void CpuBackend::unary(ExecContext &ctx, size_t index, const fb::UnaryT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  cpu::Unary fn;
  int64_t n = checkUnaryStep(ctx, index, fn);
  cpu::unary(fn, f32(ctx, index, s.inputs[0], "x"),
             f32(ctx, index, s.outputs[0], "y"), n);
}

void CpuBackend::binary(ExecContext &ctx, size_t index, const fb::BinaryT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[id]; };
  cpu::Binary fn;
  std::vector<int64_t> as, bs;
  checkBinaryStep(ctx, index, fn, as, bs);
  cpu::binary(fn, f32(ctx, index, s.inputs[0], "a"), as,
              f32(ctx, index, s.inputs[1], "b"), bs,
              f32(ctx, index, s.outputs[0], "c"), val(s.outputs[0]).shape);
}

void CpuBackend::softmax(ExecContext &ctx, size_t index,
                         const fb::SoftmaxT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[id]; };
  auto lastDim = [](const Value &v) -> int64_t {
    return v.shape.empty() ? 1 : v.shape.back();
  };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &x = val(s.inputs[0]);
  int64_t n = lastDim(x);
  need(val(s.outputs[0]).numElements() == x.numElements(),
       "x and y differ in size");
  cpu::softmax(f32(ctx, index, s.inputs[0], "x"),
               f32(ctx, index, s.outputs[0], "y"), n ? x.numElements() / n : 0,
               n);
}

void CpuBackend::topk(ExecContext &ctx, size_t index, const fb::TopKT &at) {
  const Step &s = ctx.plan().steps[index];
  TopKDims d = checkTopKStep(ctx, index);
  auto *idx = reinterpret_cast<int64_t *>(
      ptr(ctx, index, s.outputs[1], DType::i64, "indices"));
  if (d.i64) {
    auto i64 = [&](int32_t id, const char *role) {
      return reinterpret_cast<int64_t *>(ptr(ctx, index, id, DType::i64, role));
    };
    cpu::topk(i64(s.inputs[0], "x"), d.rows, d.n, d.k, d.largest,
              i64(s.outputs[0], "values"), idx);
    return;
  }
  cpu::topk(f32(ctx, index, s.inputs[0], "x"), d.rows, d.n, d.k, d.largest,
            f32(ctx, index, s.outputs[0], "values"), idx);
}

void CpuBackend::scatterElements(ExecContext &ctx, size_t index,
                                 const fb::ScatterElementsT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  ScatterElementsDims d = checkScatterElementsStep(ctx, index);
  const Value &data = p.values[size_t(s.inputs[0])];
  const Value &idx = p.values[size_t(s.inputs[1])];
  char *out = ptr(ctx, index, s.outputs[0], d.dtype, "result");
  const char *in = ptr(ctx, index, s.inputs[0], d.dtype, "data");
  if (in != out)
    std::memmove(out, in, data.byteSize());
  const char *ip = ptr(ctx, index, s.inputs[1], idx.dtype, "indices");
  int64_t bad =
      cpu::scatterElements(d.shape, ip, d.indices64,
                           ptr(ctx, index, s.inputs[2], d.dtype, "updates"),
                           dtypeSize(d.dtype), d.reduction, out);
  if (bad >= 0)
    throw scatterIndexError(ctx, index, bad,
                            d.indices64
                                ? reinterpret_cast<const int64_t *>(ip)[bad]
                                : reinterpret_cast<const int32_t *>(ip)[bad]);
}

void CpuBackend::copy(ExecContext &ctx, size_t index, const fb::CopyT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[id]; };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &x = val(s.inputs[0]), &y = val(s.outputs[0]);
  need(x.byteSize() == y.byteSize() && x.dtype == y.dtype,
       "x " + shapeString(x.shape) + " and y " + shapeString(y.shape) +
           " differ in size or dtype");
  std::memmove(ptr(ctx, index, s.outputs[0], y.dtype, "y"),
               ptr(ctx, index, s.inputs[0], x.dtype, "x"), x.byteSize());
}

void CpuBackend::allReduce(ExecContext &ctx, size_t index,
                           const fb::AllReduceT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[id]; };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  need(at.reduction == fb::Reduction::sum,
       std::string("unsupported reduction '") +
           fb::EnumNameReduction(at.reduction) + "'");
  const Value &x = val(s.inputs[0]);
  need(val(s.outputs[0]).numElements() == x.numElements(),
       "x and y differ in size");
  need(val(s.outputs[0]).dtype == x.dtype, "x and y differ in dtype");
  Half16 h = Half16::bf16;
  if (half16(x.dtype, h)) {
    // 16-bit partial sums (a --precision plan with tp > 1): summed in
    // fp32, rounded once.
    size_t n = size_t(x.numElements());
    wa_.resize(n);
    toF32(h,
          reinterpret_cast<const uint16_t *>(
              ptr(ctx, index, s.inputs[0], x.dtype, "x")),
          wa_.data(), n);
    ctx.group(at.axes).allReduceSum(wa_.data(), int64_t(n));
    fromF32(h, wa_.data(),
            reinterpret_cast<uint16_t *>(
                ptr(ctx, index, s.outputs[0], x.dtype, "y")),
            n);
    return;
  }
  float *xp = f32(ctx, index, s.inputs[0], "x");
  float *yp = f32(ctx, index, s.outputs[0], "y");
  if (xp != yp)
    std::memmove(yp, xp, x.byteSize());
  ctx.group(at.axes).allReduceSum(yp, x.numElements());
}

void CpuBackend::allGather(ExecContext &ctx, size_t index,
                           const fb::AllGatherT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[id]; };
  const Value &x = val(s.inputs[0]), &y = val(s.outputs[0]);
  Comm &comm = ctx.group(at.axes);
  int64_t G = comm.size();
  if (RowBlocks r; checkRowBlocks(ctx, index, G, comm.rank(), r)) {
    // Uneven blocks of the token count's rows: every rank sends tb rows
    // (its t, then padding); block g lands at row g * tb, so the first T
    // rows gathered are the whole.
    uint64_t block = uint64_t(r.tb) * r.rowBytes;
    if (block == 0)
      return; // T = 0 on every rank (tb is the same on all)
    rowSend_.assign(block, 0);
    if (r.t)
      std::memcpy(rowSend_.data(), ptr(ctx, index, s.inputs[0], x.dtype, "x"),
                  uint64_t(r.t) * r.rowBytes);
    gather_.resize(uint64_t(G) * block);
    comm.allGather(rowSend_.data(), int64_t(block), gather_.data());
    if (r.T)
      std::memcpy(ptr(ctx, index, s.outputs[0], y.dtype, "y"), gather_.data(),
                  uint64_t(r.T) * r.rowBytes);
    return;
  }
  int64_t outer = checkAllGatherStep(ctx, index, G);
  int64_t inner = outer ? int64_t(x.byteSize()) / outer : 0;
  gather_.resize(G * x.byteSize());
  comm.allGather(ptr(ctx, index, s.inputs[0], x.dtype, "x"),
                 int64_t(x.byteSize()), gather_.data());
  char *yp = ptr(ctx, index, s.outputs[0], y.dtype, "y");
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t g = 0; g < G; ++g)
      std::memcpy(yp + (o * G + g) * inner,
                  gather_.data() + g * x.byteSize() + o * inner, inner);
}

void CpuBackend::allSlice(ExecContext &ctx, size_t index,
                          const fb::AllSliceT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  const Value &x = p.values[size_t(s.inputs[0])];
  const Value &y = p.values[size_t(s.outputs[0])];
  Comm &comm = ctx.group(at.axes);
  int64_t G = comm.size(), g = comm.rank();
  if (RowBlocks r; checkRowBlocks(ctx, index, G, g, r)) {
    // Rank g's block of the token count's rows: t rows from row g * tb.
    if (r.t)
      std::memmove(ptr(ctx, index, s.outputs[0], y.dtype, "y"),
                   ptr(ctx, index, s.inputs[0], x.dtype, "x") +
                       uint64_t(g * r.tb) * r.rowBytes,
                   uint64_t(r.t) * r.rowBytes);
    return;
  }
  int64_t outer = checkAllSliceStep(ctx, index, G);
  size_t inner = outer ? y.byteSize() / size_t(outer) : 0;
  const char *xp = ptr(ctx, index, s.inputs[0], x.dtype, "x");
  char *yp = ptr(ctx, index, s.outputs[0], y.dtype, "y");
  // y[o] = x[o][g]: block g of every outer row.
  for (int64_t o = 0; o < outer; ++o)
    std::memmove(yp + size_t(o) * inner, xp + (size_t(o * G + g)) * inner,
                 inner);
}

void CpuBackend::reduceScatter(ExecContext &ctx, size_t index,
                               const fb::ReduceScatterT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  const Value &x = p.values[size_t(s.inputs[0])];
  Comm &comm = ctx.group(at.axes);
  int64_t G = comm.size();
  RowBlocks r;
  bool rows = checkRowBlocks(ctx, index, G, comm.rank(), r);
  int64_t outer = rows ? 1 : checkReduceScatterStep(ctx, index, G);
  Half16 h = Half16::bf16;
  bool low = half16(x.dtype, h);
  if (!low && x.dtype != DType::f32)
    throw ctx.error(index, std::string("x has dtype ") + dtypeName(x.dtype) +
                               " (f32, bf16 or f16 expected)");
  if (rows) {
    // Uneven blocks of the token count's rows: the whole padded with zeros
    // to G blocks of tb rows, summed in fp32; this rank keeps t rows of
    // its block.
    size_t rowElems = r.rowBytes / dtypeSize(x.dtype);
    size_t block = size_t(r.tb) * rowElems, whole = size_t(r.T) * rowElems;
    if (block == 0)
      return; // T = 0 on every rank (tb is the same on all)
    wa_.assign(size_t(G) * block, 0.0f);
    const char *xp = ptr(ctx, index, s.inputs[0], x.dtype, "x");
    if (low)
      toF32(h, reinterpret_cast<const uint16_t *>(xp), wa_.data(), whole);
    else if (whole)
      std::memcpy(wa_.data(), xp, whole * sizeof(float));
    wb_.resize(block);
    comm.reduceScatterSum(wa_.data(), wb_.data(), int64_t(block));
    size_t mine = size_t(r.t) * rowElems;
    char *yp = ptr(ctx, index, s.outputs[0], x.dtype, "y");
    if (low)
      fromF32(h, wb_.data(), reinterpret_cast<uint16_t *>(yp), mine);
    else if (mine)
      std::memcpy(yp, wb_.data(), mine * sizeof(float));
    return;
  }
  size_t n = size_t(p.values[size_t(s.outputs[0])].numElements());
  size_t inner = outer ? n / size_t(outer) : 0;
  const char *xp = ptr(ctx, index, s.inputs[0], x.dtype, "x");
  char *yp = ptr(ctx, index, s.outputs[0], x.dtype, "y");
  // The send buffer, fp32 (16-bit partial sums are summed in fp32 and
  // rounded once, as all_reduce): block g of every outer row contiguous,
  // wa_[g][o] = x[o][g].
  wa_.resize(size_t(G) * n);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t g = 0; g < G; ++g) {
      size_t from = size_t(o * G + g) * inner;
      float *to = wa_.data() + size_t(g) * n + size_t(o) * inner;
      if (low)
        toF32(h, reinterpret_cast<const uint16_t *>(xp) + from, to, inner);
      else
        std::memcpy(to, reinterpret_cast<const float *>(xp) + from,
                    inner * sizeof(float));
    }
  if (!low) {
    comm.reduceScatterSum(wa_.data(), reinterpret_cast<float *>(yp),
                          int64_t(n));
    return;
  }
  wb_.resize(n);
  comm.reduceScatterSum(wa_.data(), wb_.data(), int64_t(n));
  fromF32(h, wb_.data(), reinterpret_cast<uint16_t *>(yp), n);
}

void CpuBackend::loadKernels(ExecContext &ctx) {
  const Plan &p = ctx.plan();
  if (p.kernels.empty())
    return;
  std::string who = "rank " + std::to_string(ctx.rank()) + ": ";
  const char *bytes = ctx.loaded().codeData(p.cpuCode);
  if (p.cpuCode.segment < 0 || !bytes)
    throw RunError(who + "the plan has generated kernels but no CPU code "
                         "(compiled for another target?)");
  const char *tmp = std::getenv("TMPDIR");
  std::string path =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/moe-kernels-XXXXXX";
  std::vector<char> name(path.begin(), path.end());
  name.push_back('\0');
  int fd = mkstemp(name.data());
  if (fd < 0)
    throw RunError(who + "cannot create a file for the generated kernels: " +
                   std::strerror(errno));
  size_t done = 0;
  while (done < p.cpuCode.bytes) {
    ssize_t w = ::write(fd, bytes + done, p.cpuCode.bytes - done);
    if (w <= 0)
      break;
    done += size_t(w);
  }
  ::close(fd);
  if (done != p.cpuCode.bytes) {
    ::unlink(name.data());
    throw RunError(who + "cannot write the generated kernels to " +
                   name.data());
  }
  code_ = dlopen(name.data(), RTLD_NOW | RTLD_LOCAL);
  ::unlink(name.data());
  if (!code_)
    throw RunError(who + "cannot load the generated kernels: " + dlerror());
  for (const KernelCode &k : p.kernels) {
    void *f = dlsym(code_, k.name.c_str());
    if (!f)
      throw RunError(who + "the generated code lacks kernel '" + k.name + "'");
    kernels_[k.name] = reinterpret_cast<KernelFn>(f);
  }
}

void CpuBackend::kernel(ExecContext &ctx, size_t index, const fb::KernelT &at) {
  const Step &s = ctx.plan().steps[index];
  auto it = kernels_.find(at.name);
  if (it == kernels_.end())
    throw ctx.error(index, "kernel '" + at.name + "' was not loaded");
  std::vector<void *> &a = kernelArgs_;
  a.clear();
  for (int32_t id : s.inputs)
    a.push_back(ptr(ctx, index, id, ctx.plan().values[id].dtype, "operand"));
  for (int32_t id : s.outputs)
    a.push_back(ptr(ctx, index, id, ctx.plan().values[id].dtype, "result"));
  // Symbolic kernels (KernelCode::symbolic) read the counts after the
  // operands; the others never look past them.
  const SymValues &x = ctx.symbols();
  kernelCounts_[int(SymKind::t)] = x.t;
  kernelCounts_[int(SymKind::tb)] = x.tb;
  kernelCounts_[int(SymKind::T)] = x.T;
  a.push_back(kernelCounts_);
  it->second(a.data());
}

void CpuBackend::dispatch(ExecContext &ctx, size_t index,
                          const fb::DispatchT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  int64_t H = 0, k = 0, T = 0;
  checkDispatchStep(ctx, index, H, k, T);
  const Value &tok = p.values[s.inputs[0]];
  const Value &recv = p.values[s.outputs[0]];
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  int64_t G = comm.size();
  Placement pl = dispatchPlacement(ctx, index, G);

  DispatchState &st = states_[index];
  st = DispatchState();
  st.comm = &comm;
  st.H = H;
  st.S = pl.slotsPerRank;
  st.G = G;
  const int64_t *idp = reinterpret_cast<const int64_t *>(
      ptr(ctx, index, s.inputs[1], DType::i64, "ids"));
  std::string err;
  if (!cpu::planDispatch(idp, T, k, pl, dispatchCapacity(ctx, at, k), st.layout,
                         err))
    throw ctx.error(index, err);
  // Rows move as bytes: f32, or 16-bit rows of a --precision plan.
  DType dt = tok.dtype;
  Half16 h16 = Half16::bf16;
  need(dt == DType::f32 || half16(dt, h16), std::string("tokens have dtype ") +
                                                dtypeName(dt) +
                                                " (f32, bf16 or f16 expected)");
  const int64_t rowBytes = H * int64_t(dtypeSize(dt));
  send_.assign(size_t(st.layout.sendRows * rowBytes), 0);
  if (!dispatchScalesRows(s)) {
    cpu::packRowBytes(ptr(ctx, index, s.inputs[0], dt, "tokens"),
                      size_t(rowBytes), st.layout, send_.data());
  } else if (dt == DType::f32) {
    cpu::packScaledRows(f32(ctx, index, s.inputs[0], "tokens"), H, st.layout,
                        f32(ctx, index, s.inputs[2], "weights"),
                        reinterpret_cast<float *>(send_.data()));
  } else {
    // 16-bit rows: scaled in fp32, rounded once.
    size_t n = size_t(T * H), m = size_t(st.layout.sendRows * H);
    wa_.resize(n);
    wc_.resize(m);
    toF32(h16,
          reinterpret_cast<const uint16_t *>(
              ptr(ctx, index, s.inputs[0], dt, "tokens")),
          wa_.data(), n);
    cpu::packScaledRows(wa_.data(), H, st.layout,
                        f32(ctx, index, s.inputs[2], "weights"), wc_.data());
    fromF32(h16, wc_.data(), reinterpret_cast<uint16_t *>(send_.data()), m);
  }

  // Count exchange, then the rows.
  int64_t S = st.S;
  st.recvCounts.assign(G * S, 0);
  comm.allToAll(st.layout.sendCounts.data(), st.recvCounts.data(), S);
  st.sendBytes.assign(G, 0);
  st.sendOffs.assign(G, 0);
  st.recvBytes.assign(G, 0);
  st.recvOffs.assign(G, 0);
  int64_t sOff = 0, rOff = 0;
  for (int64_t q = 0; q < G; ++q) {
    int64_t sr = 0, rr = 0;
    for (int64_t sl = 0; sl < S; ++sl) {
      sr += st.layout.sendCounts[q * S + sl];
      rr += st.recvCounts[q * S + sl];
    }
    st.sendOffs[q] = sOff;
    st.sendBytes[q] = sr * rowBytes;
    st.recvOffs[q] = rOff;
    st.recvBytes[q] = rr * rowBytes;
    sOff += st.sendBytes[q];
    rOff += st.recvBytes[q];
  }
  st.recvRows = rOff / rowBytes;
  if (st.recvRows > recv.shape[0]) {
    // Every rank must leave the collective sequence together: the error
    // ends the run (the executor's caller aborts the world).
    throw ctx.error(index, "receives " + std::to_string(st.recvRows) +
                               " rows, more than the bound of " +
                               std::to_string(recv.shape[0]));
  }
  recvSrc_.assign(size_t(st.recvRows * rowBytes), 0);
  comm.allToAllV(send_.data(), st.sendBytes.data(), st.sendOffs.data(),
                 recvSrc_.data(), st.recvBytes.data(), st.recvOffs.data());
  cpu::expertMajorOrder(st.recvCounts.data(), G, S, st.perm, st.slotOffsets);
  cpu::gatherRowBytes(recvSrc_.data(), size_t(rowBytes), st.perm.data(),
                      st.recvRows, ptr(ctx, index, s.outputs[0], dt, "recv"));
  st.valid = true;

  // Stats.
  MoELayerStats &l = ctx.layer(int64_t(index));
  l.tokensPerExpert.assign(pl.numExperts, 0);
  for (int64_t a = 0; a < T * k; ++a)
    if (idp[a] >= 0 && idp[a] < pl.numExperts)
      ++l.tokensPerExpert[idp[a]];
  std::vector<int32_t> ranks = ctx.plan().group(ctx.rank(), splitAxes(axes));
  l.peers.assign(G, PeerTraffic());
  for (int64_t q = 0; q < G; ++q) {
    PeerTraffic &t = l.peers[q];
    t.peer = q < int64_t(ranks.size()) ? ranks[q] : int32_t(q);
    t.rowsSent = st.sendBytes[q] / rowBytes;
    t.rowsRecv = st.recvBytes[q] / rowBytes;
    t.bytesSent = st.sendBytes[q];
    t.bytesRecv = st.recvBytes[q];
  }
  l.dropped = st.layout.dropped;
  l.rowsReceived = st.recvRows;
}

void CpuBackend::experts(ExecContext &ctx, size_t index,
                         const fb::ExpertsT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  DispatchState &st = stateFor(ctx, index, at.dispatch);
  int64_t H = st.H;
  int64_t F = checkExpertsStep(ctx, index, H, st.S, st.recvRows);
  // Rows, weights and y share one dtype; 16-bit ones are widened (weights
  // once per plan), the FFN runs in fp32 and y is narrowed.
  DType dt = p.values[size_t(s.inputs[0])].dtype;
  Half16 h16 = Half16::bf16;
  bool low = half16(dt, h16);
  need(dt == DType::f32 || low, std::string("recv has dtype ") + dtypeName(dt) +
                                    " (f32, bf16 or f16 expected)");
  need(p.values[size_t(s.outputs[0])].dtype == dt,
       "y and recv differ in dtype");
  // Weights whose dequantize step was deferred are read from their codes
  // (expertsPacked, CpuBackendQuant.cpp), not from the arena.
  auto deferred = [&](size_t i) {
    return i < s.inputs.size() && s.inputs[i] >= 0 &&
           packedSrc_.count(s.inputs[i]) != 0;
  };
  bool anyPacked = deferred(1) || deferred(2) || deferred(3);
  auto weight = [&](size_t i, const char *role) -> const float * {
    if (i >= s.inputs.size() || s.inputs[i] < 0)
      return nullptr;
    need(p.values[size_t(s.inputs[i])].dtype == dt,
         std::string(role) + " and recv differ in dtype");
    return deferred(i) ? nullptr : wide(ctx, index, s.inputs[i], role, wt_[i]);
  };
  cpu::ExpertWeights w;
  w.wGate = weight(1, "w_gate");
  w.wUp = weight(2, "w_up");
  w.wDown = weight(3, "w_down");
  w.bGate = weight(4, "b_gate");
  w.bUp = weight(5, "b_up");
  w.bDown = weight(6, "b_down");
  w.H = H;
  w.F = F;
  w.act = at.activation;
  w.alpha = at.alpha;
  w.beta = at.beta;
  w.limit = at.limit;
  auto run = [&](const float *x, float *y) {
    if (anyPacked) {
      expertsPacked(ctx, index, st, w, x, y);
      return;
    }
    size_t bytes = cpu::groupedFFNScratch(st.recvRows, w);
    scratch_.resize(bytes / sizeof(float) + 16);
    cpu::groupedFFN(x, st.slotOffsets, w, y, scratch_.data());
  };
  if (!low) {
    run(f32(ctx, index, s.inputs[0], "recv"),
        f32(ctx, index, s.outputs[0], "y"));
    return;
  }
  size_t n = size_t(st.recvRows * H);
  wa_.resize(n);
  wc_.assign(n, 0.0f);
  toF32(h16,
        reinterpret_cast<const uint16_t *>(
            ptr(ctx, index, s.inputs[0], dt, "recv")),
        wa_.data(), n);
  run(wa_.data(), wc_.data());
  fromF32(h16, wc_.data(),
          reinterpret_cast<uint16_t *>(ptr(ctx, index, s.outputs[0], dt, "y")),
          n);
}

void CpuBackend::combine(ExecContext &ctx, size_t index,
                         const fb::CombineT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  DispatchState &st = stateFor(ctx, index, at.dispatch);
  int64_t H = st.H, T = st.layout.T, k = st.layout.k;
  checkCombineStep(ctx, index, H, T, k, st.recvRows);
  const Value &y = p.values[s.inputs[0]];
  DType dt = y.dtype;
  Half16 h16 = Half16::bf16;
  bool low = half16(dt, h16);
  need(dt == DType::f32 || low, std::string("y has dtype ") + dtypeName(dt) +
                                    " (f32, bf16 or f16 expected)");
  const size_t rowBytes = size_t(H) * dtypeSize(dt);
  // Back to source-major order, then home.
  back_.assign(size_t(st.recvRows) * rowBytes, 0);
  cpu::scatterRowBytes(ptr(ctx, index, s.inputs[0], dt, "y"), rowBytes,
                       st.perm.data(), st.recvRows, back_.data());
  send_.assign(size_t(st.layout.sendRows) * rowBytes, 0);
  st.comm->allToAllV(back_.data(), st.recvBytes.data(), st.recvOffs.data(),
                     send_.data(), st.sendBytes.data(), st.sendOffs.data());
  // Null when the dispatch scaled the rows: summed with weight 1.
  const float *wts = optF32(ctx, index, s, 1, "weights");
  if (!low) {
    cpu::combineRows(reinterpret_cast<const float *>(send_.data()), H,
                     st.layout, wts, f32(ctx, index, s.outputs[0], "out"));
  } else {
    // fp32 accumulation of the widened rows, one rounding at the end.
    size_t n = size_t(st.layout.sendRows * H);
    wa_.resize(n);
    toF32(h16, reinterpret_cast<const uint16_t *>(send_.data()), wa_.data(), n);
    wc_.resize(size_t(T * H));
    cpu::combineRows(wa_.data(), H, st.layout, wts, wc_.data());
    fromF32(
        h16, wc_.data(),
        reinterpret_cast<uint16_t *>(ptr(ctx, index, s.outputs[0], dt, "out")),
        size_t(T * H));
  }
  MoELayerStats &l = ctx.layer(at.dispatch);
  for (size_t q = 0; q < l.peers.size(); ++q) {
    l.peers[q].bytesSent += st.recvBytes[q];
    l.peers[q].bytesRecv += st.sendBytes[q];
  }
}

} // namespace moert::cpuexec

std::unique_ptr<Backend> moert::createCpuBackend() {
  return std::make_unique<cpuexec::CpuBackend>();
}
