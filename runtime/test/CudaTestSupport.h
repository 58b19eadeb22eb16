//===- CudaTestSupport.h - helpers of the CUDA kernel tests -----*- C++ -*-===//
//
// What runtime/test/CudaKernelsTest.cpp and CudaIndexKernelsTest.cpp share:
// kernel failures as exceptions, the skip where there is no device, a stream
// and a device buffer.
//
//===----------------------------------------------------------------------===//
#ifndef MOERT_TEST_CUDATESTSUPPORT_H
#define MOERT_TEST_CUDATESTSUPPORT_H

#include "moert/cuda/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace moert::cudatest {

/// Failures inside the kernels become exceptions (GoogleTest reports them
/// as test failures) instead of aborting the whole test binary.
inline const bool kHandlerInstalled = [] {
  cuda::setFailureHandler(
      [](const std::string &msg) { throw std::runtime_error(msg); });
  return true;
}();

/// A CUDA stream, destroyed with the object.
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { MOERT_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~Stream() { (void)cudaStreamDestroy(s); }
  void sync() { MOERT_CUDA_CHECK(cudaStreamSynchronize(s)); }
  operator cudaStream_t() const { return s; }
};

/// A device buffer of n elements of T.
template <typename T> struct Dev {
  T *p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    MOERT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void **>(&p),
                                std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit Dev(const std::vector<T> &v) : Dev(v.size()) { upload(v); }
  ~Dev() { (void)cudaFree(p); }
  Dev(const Dev &) = delete;
  void upload(const std::vector<T> &v) {
    MOERT_CUDA_CHECK(
        cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> v(n);
    MOERT_CUDA_CHECK(
        cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  void fill(unsigned char byte) {
    MOERT_CUDA_CHECK(cudaMemset(p, byte, std::max<size_t>(n, 1) * sizeof(T)));
  }
};

} // namespace moert::cudatest

/// Skips the test where there is no CUDA device, saying why.
#define REQUIRE_CUDA_DEVICE()                                                  \
  do {                                                                         \
    std::string why_;                                                          \
    if (!::moert::cuda::deviceAvailable(&why_))                                \
      GTEST_SKIP() << "no CUDA device: " << why_;                              \
  } while (0)

#endif // MOERT_TEST_CUDATESTSUPPORT_H
