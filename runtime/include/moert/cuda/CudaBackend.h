//===- CudaBackend.h - plan steps on a CUDA device ----------------*- C++
//-*-===//
//
// The CUDA backend of the executor (moert/Executor.h): every step of
// docs/plan-format.md runs on one GPU with the moert/cuda/Kernels.h kernels
// (cuBLAS for matmul and the grouped expert FFN), the plan's generated PTX
// kernels through the CUDA driver API, one stream and one device arena per
// rank. Collectives go through the executor's communicator on host staging
// buffers (any communicator: self, threads, MPI; also several ranks on one
// GPU), or through NCCL when it was found at build time and every rank of
// a group is on a GPU of its own. See docs/cuda.md.
//
// Built as moert_cuda_exec only where moert_cuda is built.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_CUDABACKEND_H
#define MOERT_CUDA_CUDABACKEND_H

#include "moert/Executor.h"

#include <memory>
#include <string>

namespace moert {

struct CudaBackendOptions {
  /// The GPU of this rank; < 0: the rank's local index (from the MPI
  /// launcher's environment, else the rank) modulo the number of GPUs.
  int device = -1;
  /// Collectives through NCCL where every rank of a group has its own GPU
  /// (and NCCL was built in). False: always through host staging buffers.
  /// The environment variable MOERT_NCCL=0 also turns it off.
  bool allowNccl = true;
};

/// Whether this build has the CUDA backend (true here) and a CUDA device is
/// usable; `why` receives the reason when not.
bool cudaBackendAvailable(std::string *why = nullptr);

/// A CUDA backend. Creating it needs no GPU; prepare() throws RunError
/// ("no CUDA device: ...") where none is usable. CUDA, cuBLAS, NCCL and
/// driver failures in a run throw RunError naming the rank, the step, and
/// the failed call with its file and line (the backend installs a throwing
/// moert::cuda failure handler for the process).
std::unique_ptr<Backend>
createCudaBackend(const CudaBackendOptions &options = CudaBackendOptions());

} // namespace moert

#endif // MOERT_CUDA_CUDABACKEND_H
