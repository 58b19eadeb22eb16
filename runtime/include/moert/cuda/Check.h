//===- Check.h - error checks for CUDA and cuBLAS calls -----------*- C++
//-*-===//
//
// MOERT_CUDA_CHECK(call) and MOERT_CUBLAS_CHECK(call) evaluate `call` once
// and, when it fails, report the file, the line, the call's text and the
// library's error name and string through the failure handler
// (MOERT_NCCL_CHECK is in moert/cuda/Nccl.h). The default handler prints
// the message to stderr and aborts; an executor installs its own (to stop
// every rank with MPI_Abort, or to throw). When a handler returns, the
// process aborts all the same: a failed CUDA call is never ignored.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_CHECK_H
#define MOERT_CUDA_CHECK_H

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <functional>
#include <string>

namespace moert {
namespace cuda {

/// Receives the full message ("moert: CUDA error at FILE:LINE: CALL: NAME
/// (STRING)"). May throw; if it returns, the process aborts.
using FailureHandler = std::function<void(const std::string &message)>;

/// Installs `handler` (an empty one restores the default: print, abort).
/// Returns the previous handler. Thread-safe.
FailureHandler setFailureHandler(FailureHandler handler);

/// Reports a failure: "moert: <what> at <file>:<line>: <call>: <detail>".
[[noreturn]] void fail(const char *what, const char *file, int line,
                       const char *call, const std::string &detail);
[[noreturn]] void failCuda(const char *file, int line, const char *call,
                           cudaError_t err);
[[noreturn]] void failCublas(const char *file, int line, const char *call,
                             cublasStatus_t status);

/// Name of a cuBLAS status ("CUBLAS_STATUS_NOT_SUPPORTED").
const char *cublasStatusName(cublasStatus_t status);

} // namespace cuda
} // namespace moert

#define MOERT_CUDA_CHECK(call)                                                 \
  do {                                                                         \
    cudaError_t moertCudaErr_ = (call);                                        \
    if (moertCudaErr_ != cudaSuccess)                                          \
      ::moert::cuda::failCuda(__FILE__, __LINE__, #call, moertCudaErr_);       \
  } while (0)

/// After a kernel launch: reports launch errors (bad configuration, too much
/// shared memory, no device).
#define MOERT_CUDA_CHECK_LAUNCH() MOERT_CUDA_CHECK(cudaGetLastError())

#define MOERT_CUBLAS_CHECK(call)                                               \
  do {                                                                         \
    cublasStatus_t moertCublasSt_ = (call);                                    \
    if (moertCublasSt_ != CUBLAS_STATUS_SUCCESS)                               \
      ::moert::cuda::failCublas(__FILE__, __LINE__, #call, moertCublasSt_);    \
  } while (0)

/// For checks of arguments: fails with `message` when `cond` is false.
#define MOERT_CUDA_REQUIRE(cond, message)                                      \
  do {                                                                         \
    if (!(cond))                                                               \
      ::moert::cuda::fail("invalid argument", __FILE__, __LINE__, #cond,       \
                          (message));                                          \
  } while (0)

#endif // MOERT_CUDA_CHECK_H
