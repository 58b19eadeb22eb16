//===- CudaBackend.h - plan steps on a CUDA device ----------------*- C++
//-*-===//
//
// The CUDA backend of the executor (moert/Executor.h): every step of
// docs/plan-format.md runs on one GPU with the moert/cuda/Kernels.h kernels
// (cuBLAS for matmul and the grouped expert FFN), the plan's generated PTX
// kernels through the CUDA driver API, one stream and one device arena per
// rank. The collectives of a group of ranks go through NCCL when it was
// found at build time and every rank of the group is on a GPU of its own;
// else, when the ranks are threads of one process (e.g. several ranks on
// one GPU), through device-to-device copies between the ranks' buffers on
// their streams; else through host staging buffers and the executor's
// communicator (MPI ranks sharing a GPU). RunReport::collectives says which
// each group used. See docs/cuda.md.
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
  /// Device-to-device copies between thread ranks of one process (where
  /// NCCL is not used). False: host staging instead. The environment
  /// variable MOERT_DEVICE_COPIES=0 also turns them off.
  bool allowDeviceCopies = true;
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
