//===- CudaBackendIndex.cpp - index and dequantize steps on a CUDA device -===//
//
// The index steps: the kernels of runtime/cuda/Index.cu on the rank's
// stream. A scatter reads its device error status back (one stream
// synchronisation) so that an index out of range stops the run with the
// CPU backend's message.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"

namespace moert::cudaexec {

void CudaBackend::topk(ExecContext &ctx, size_t index, const fb::TopKT &at) {
  const Step &s = ctx.plan().steps[index];
  TopKDims d = checkTopKStep(ctx, index);
  DType i64 = DType::i64;
  auto *idx = reinterpret_cast<int64_t *>(
      ptr(ctx, index, s.outputs[1], "indices", &i64));
  if (d.i64) {
    auto ids = [&](int32_t id, const char *role) {
      return reinterpret_cast<int64_t *>(ptr(ctx, index, id, role, &i64));
    };
    cuda::topk(ids(s.inputs[0], "x"), d.rows, d.n, d.k, d.largest,
               ids(s.outputs[0], "values"), idx, stream_);
    return;
  }
  cuda::topk(f32(ctx, index, s.inputs[0], "x"), d.rows, d.n, d.k, d.largest,
             f32(ctx, index, s.outputs[0], "values"), idx, stream_);
}

void CudaBackend::scatterElements(ExecContext &ctx, size_t index,
                                  const fb::ScatterElementsT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  ScatterElementsDims d = checkScatterElementsStep(ctx, index);
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  need(d.shape.data.size() <= size_t(cuda::kMaxScatterRank),
       "data and indices of more than " +
           std::to_string(cuda::kMaxScatterRank) +
           " dims that do not merge are not supported on CUDA");
  const Value &data = p.values[size_t(s.inputs[0])];
  DType idxType = d.indices64 ? DType::i64 : DType::i32;
  char *out = ptr(ctx, index, s.outputs[0], "result", &d.dtype);
  moveBytes(out, ptr(ctx, index, s.inputs[0], "data", &d.dtype),
            data.byteSize());
  const char *ip = ptr(ctx, index, s.inputs[1], "indices", &idxType);
  int64_t *status =
      reinterpret_cast<int64_t *>(scatterStatus_.ensure(16, stream_));
  cuda::scatterElements(d.shape, ip, d.indices64,
                        ptr(ctx, index, s.inputs[2], "updates", &d.dtype),
                        dtypeSize(d.dtype), d.reduction, out, status, stream_);
  int64_t *host =
      reinterpret_cast<int64_t *>(scatterStatusHost_.ensure(24, stream_));
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(host, status, 16, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (host[0] == 0)
    return;
  // The value of the first bad index, for the CPU backend's message.
  size_t width = d.indices64 ? 8 : 4;
  int64_t bad = host[1], value = 0;
  int32_t value32 = 0;
  MOERT_CUDA_CHECK(cudaMemcpy(
      d.indices64 ? static_cast<void *>(&value) : static_cast<void *>(&value32),
      ip + size_t(bad) * width, width, cudaMemcpyDeviceToHost));
  throw scatterIndexError(ctx, index, bad, d.indices64 ? value : value32);
}

bool CudaBackend::gemvDequantize(const Plan &p, size_t index) {
  if (gemvDeferred_.size() != p.steps.size())
    gemvDeferred_.assign(p.steps.size(), -1);
  int8_t &known = gemvDeferred_[index];
  if (known < 0) {
    const Step &s = p.steps[index];
    const fb::DequantizeT *a = s.attrs.Asdequantize();
    DequantizeReaders r = dequantizeReaders(p, index);
    known = a && a->dispatch < 0 &&
                    p.values[size_t(s.outputs[0])].shape.size() == 2 &&
                    r.gemmsOnly && r.f32Matmuls &&
                    r.maxRows <= cuda::kPackedGemvRows
                ? 1
                : 0;
  }
  return known;
}

std::optional<cpu::PackedWeight> CudaBackend::packedB(ExecContext &ctx,
                                                      int32_t b) {
  auto it = gemvSrc_.find(b);
  if (it == gemvSrc_.end())
    return std::nullopt;
  const Step &s = ctx.plan().steps[it->second];
  DequantizeDims d = checkDequantizeStep(ctx, it->second);
  DType u8 = DType::u8;
  return d.weight(reinterpret_cast<const uint8_t *>(
                      ptr(ctx, it->second, s.inputs[0], "codes", &u8)),
                  f32(ctx, it->second, s.inputs[1], "scales"),
                  optF32(ctx, it->second, s, 2, "zero_points"));
}

void CudaBackend::dequantize(ExecContext &ctx, size_t index,
                             const fb::DequantizeT &a) {
  const Step &s = ctx.plan().steps[index];
  DequantizeDims d = checkDequantizeStep(ctx, index);
  // On the loaded plan: its shapes are those at the maximum token count,
  // so the decision holds for every count (a resolved plan has fewer rows).
  if (gemvDequantize(ctx.loaded().plan(), index)) {
    gemvSrc_[s.outputs[0]] = index;
    return;
  }
  DType u8 = DType::u8;
  auto *codes = reinterpret_cast<const uint8_t *>(
      ptr(ctx, index, s.inputs[0], "codes", &u8));
  const float *scales = f32(ctx, index, s.inputs[1], "scales");
  const float *zp = optF32(ctx, index, s, 2, "zero_points");
  // f32, or f16/bf16 weights of a 16-bit model.
  cuda::DType ot = gpuType(ctx, index, s.outputs[0], "result");
  char *out = static_cast<char *>(ptr(ctx, index, s.outputs[0], "result"));
  size_t eltBytes = ot == cuda::DType::f32 ? 4 : 2;
  if (a.dispatch < 0) {
    cuda::dequantize(codes, scales, zp, d.batch, d.n, d.k, d.bits, d.blockSize,
                     out, ot, stream_);
    return;
  }
  // Only the slots the dispatch gave rows (verifyPlan: batch == slots);
  // consecutive ones in one launch.
  const std::vector<int64_t> &offs =
      stateFor(ctx, index, a.dispatch).hostSlotOffsets;
  for (int64_t e = 0; e < d.batch;) {
    if (offs[size_t(e + 1)] == offs[size_t(e)]) {
      ++e;
      continue;
    }
    int64_t end = e + 1;
    while (end < d.batch && offs[size_t(end + 1)] > offs[size_t(end)])
      ++end;
    cuda::dequantize(
        codes + e * d.codesPerWeight, scales + e * d.scalesPerWeight,
        zp ? zp + e * d.scalesPerWeight : nullptr, end - e, d.n, d.k, d.bits,
        d.blockSize, out + size_t(e * d.n * d.k) * eltBytes, ot, stream_);
    e = end;
  }
}

} // namespace moert::cudaexec
