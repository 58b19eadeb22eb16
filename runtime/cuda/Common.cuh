//===- Common.cuh - helpers shared by the CUDA kernels ------------*- CUDA
//-*-===//

#ifndef MOERT_CUDA_COMMON_CUH
#define MOERT_CUDA_COMMON_CUH

#include "moert/cuda/Kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace moert {
namespace cuda {
namespace detail {

constexpr int kWarp = 32;

template <typename T> __device__ __forceinline__ float toFloat(T v);
template <> __device__ __forceinline__ float toFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <> __device__ __forceinline__ float toFloat<__half>(__half v) {
  return __half2float(v);
}

template <typename T> __device__ __forceinline__ T fromFloat(float v);
template <> __device__ __forceinline__ float fromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half fromFloat<__half>(float v) {
  return __float2half_rn(v);
}

__device__ __forceinline__ float geluErf(float x) {
  return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float geluTanh(float x) {
  return 0.5f * x *
         (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float sigmoidF(float x) {
  return 1.f / (1.f + expf(-x));
}

/// The FFN activations of cpu::groupedFFN.
__device__ __forceinline__ float activate(Activation act, float x) {
  switch (act) {
  case Activation::silu:
    return x * sigmoidF(x);
  case Activation::gelu:
    return geluErf(x);
  case Activation::gelu_tanh:
    return geluTanh(x);
  case Activation::relu:
    return x > 0.f ? x : 0.f;
  case Activation::identity:
    return x;
  case Activation::clamped_swiglu: // needs the up value: actMulKernel
    break;
  }
  return x;
}

/// Blocks for `n` items of `perBlock` each, capped (kernels grid-stride).
inline unsigned blocksFor(int64_t n, int64_t perBlock,
                          int64_t cap = int64_t(1) << 20) {
  int64_t b = (n + perBlock - 1) / perBlock;
  return unsigned(std::max<int64_t>(1, std::min(b, cap)));
}

/// Calls f.template operator()<T>() with T the C++ type of `dt`.
template <typename F> void dispatchDType(DType dt, F &&f) {
  switch (dt) {
  case DType::f32:
    f(float());
    break;
  case DType::bf16:
    f(__nv_bfloat16());
    break;
  case DType::f16:
    f(__half());
    break;
  }
}

} // namespace detail
} // namespace cuda
} // namespace moert

#endif // MOERT_CUDA_COMMON_CUH
