//===- CudaBackendDense.cpp - dense steps on a CUDA device ----------------===//
//
// Matmul and batch matmul (cuBLAS), unary, broadcasting binary, softmax and
// copy steps: the kernels of moert/cuda/Kernels.h on the rank's stream.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"

namespace moert::cudaexec {

void CudaBackend::matmul(ExecContext &ctx, size_t index,
                         const fb::MatmulT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
  MatmulDims d = checkMatmulStep(ctx, index);
  const Value &c = val(s.outputs[0]);
  cuda::DType in = gpuType(ctx, index, s.inputs[0], "A");
  cuda::DType out = gpuType(ctx, index, s.outputs[0], "C");
  const void *bias = nullptr;
  if (s.inputs.size() > 2 && s.inputs[2] >= 0)
    bias = ptr(ctx, index, s.inputs[2], "bias", &c.dtype);
  // B packed, its dequantize step left to this GEMV (CudaBackendIndex.cpp;
  // f32 A and C, decode-sized M).
  if (std::optional<cpu::PackedWeight> pb = packedB(ctx, s.inputs[1])) {
    if (pb->k != d.K || pb->n != d.N || d.transB)
      throw ctx.error(index, "B is a packed weight [" + std::to_string(pb->k) +
                                 ", " + std::to_string(pb->n) + "], not [" +
                                 std::to_string(d.K) + ", " +
                                 std::to_string(d.N) + "]");
    cuda::packedGemv(f32(ctx, index, s.inputs[0], "A"), d.M, *pb,
                     static_cast<const float *>(bias),
                     f32(ctx, index, s.outputs[0], "C"), false, stream_);
    return;
  }
  cuda::matmul(*blas_, in, ptr(ctx, index, s.inputs[0], "A"),
               ptr(ctx, index, s.inputs[1], "B"), bias, out,
               ptr(ctx, index, s.outputs[0], "C"), d.M, d.K, d.N, d.transB);
}

void CudaBackend::batchMatmul(ExecContext &ctx, size_t index,
                              const fb::BatchMatmulT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  BatchMatmulDims d = checkBatchMatmulStep(ctx, index);
  cuda::batchMatmul(*blas_, f32(ctx, index, s.inputs[0], "A"),
                    f32(ctx, index, s.inputs[1], "B"),
                    f32(ctx, index, s.outputs[0], "C"), d.batch, d.M, d.K, d.N,
                    d.transB);
}

void CudaBackend::unary(ExecContext &ctx, size_t index, const fb::UnaryT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  cpu::Unary fn;
  int64_t n = checkUnaryStep(ctx, index, fn);
  cuda::unary(fn, f32(ctx, index, s.inputs[0], "x"),
              f32(ctx, index, s.outputs[0], "y"), n, stream_);
}

void CudaBackend::binary(ExecContext &ctx, size_t index,
                         const fb::BinaryT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  cpu::Binary fn;
  std::vector<int64_t> as, bs;
  checkBinaryStep(ctx, index, fn, as, bs);
  const Value &c = val(s.outputs[0]);
  need(c.shape.size() <= 8, "results of more than 8 dims are not supported");
  cuda::binary(fn, f32(ctx, index, s.inputs[0], "a"), as,
               f32(ctx, index, s.inputs[1], "b"), bs,
               f32(ctx, index, s.outputs[0], "c"), c.shape, stream_);
}

void CudaBackend::softmax(ExecContext &ctx, size_t index,
                          const fb::SoftmaxT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
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
  cuda::softmax(f32(ctx, index, s.inputs[0], "x"),
                f32(ctx, index, s.outputs[0], "y"), n ? x.numElements() / n : 0,
                n, stream_);
}

void CudaBackend::copy(ExecContext &ctx, size_t index, const fb::CopyT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto val = [&](int32_t id) -> const Value & { return p.values[size_t(id)]; };
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &x = val(s.inputs[0]), &y = val(s.outputs[0]);
  need(x.byteSize() == y.byteSize() && x.dtype == y.dtype,
       "x " + shapeString(x.shape) + " and y " + shapeString(y.shape) +
           " differ in size or dtype");
  moveBytes(ptr(ctx, index, s.outputs[0], "y"),
            ptr(ctx, index, s.inputs[0], "x"), x.byteSize());
}

} // namespace moert::cudaexec
