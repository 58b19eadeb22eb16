//===- Nccl.h - thin NCCL wrapper of the moe runtime --------------*- C++
//-*-===//
//
// One communicator per rank, one rank per GPU (NCCL refuses two ranks of
// one communicator on the same device; several ranks on one GPU exchange
// through copies in the executor instead). The executor creates the unique
// id on rank 0 (ncclNewUniqueId), broadcasts its bytes over MPI, and every
// rank constructs its NcclComm with it. Built only where NCCL is found
// (MOERT_HAVE_NCCL is then defined for users of moert_cuda).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CUDA_NCCL_H
#define MOERT_CUDA_NCCL_H

#include "moert/cuda/Kernels.h"

#include <nccl.h>

#include <cstdint>
#include <vector>

namespace moert {
namespace cuda {

[[noreturn]] void failNccl(const char *file, int line, const char *call,
                           ncclResult_t result);

} // namespace cuda
} // namespace moert

/// Checks an NCCL call like MOERT_CUDA_CHECK (file, line, call, NCCL's error
/// string and last error message).
#define MOERT_NCCL_CHECK(call)                                                 \
  do {                                                                         \
    ncclResult_t moertNcclRes_ = (call);                                       \
    if (moertNcclRes_ != ncclSuccess)                                          \
      ::moert::cuda::failNccl(__FILE__, __LINE__, #call, moertNcclRes_);       \
  } while (0)

namespace moert {
namespace cuda {

/// A new unique id (call on one rank, broadcast its sizeof(ncclUniqueId)
/// bytes to the others).
ncclUniqueId ncclNewUniqueId();

ncclDataType_t ncclTypeOf(DType t);

class NcclComm {
public:
  /// Makes `device` current and joins the communicator of `nranks` ranks
  /// identified by `id` as `rank` (ncclCommInitRank; collective: every rank
  /// must call it).
  NcclComm(int nranks, int rank, const ncclUniqueId &id, int device);
  ~NcclComm();
  NcclComm(const NcclComm &) = delete;
  NcclComm &operator=(const NcclComm &) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  ncclComm_t get() const { return comm_; }

  /// Equal-split all-to-all of int64 values: `perPeer` values to and from
  /// every rank (send [size*perPeer] ordered by destination, recv ordered
  /// by source). Device buffers.
  void allToAll(const int64_t *send, int64_t *recv, int64_t perPeer,
                cudaStream_t stream);

  /// Ragged all-to-all of rows (grouped ncclSend/ncclRecv in one
  /// ncclGroupStart/End): sendRows[p] rows of `rowBytes` go to rank p from
  /// `send` (packed in rank order), recvRows[p] rows come from rank p into
  /// `recv` (packed in rank order). Counts are host vectors of size().
  void allToAllV(const void *send, const std::vector<int64_t> &sendRows,
                 void *recv, const std::vector<int64_t> &recvRows,
                 size_t rowBytes, cudaStream_t stream);

  /// Dispatch/combine exchange: first the per-(rank, slot) counts
  /// (dSendCounts [size*slots] device, all-to-all into dRecvCounts), then
  /// both count tables are copied to the host (the stream is synchronised:
  /// NCCL needs the sizes on the host), then the rows (allToAllV with the
  /// per-rank sums). Fails if more than recvCapacityRows rows arrive.
  /// hostSendCounts/hostRecvCounts receive the tables.
  void raggedAllToAll(const void *send, const int64_t *dSendCounts,
                      int64_t slots, void *recv, int64_t recvCapacityRows,
                      size_t rowBytes, int64_t *dRecvCounts,
                      std::vector<int64_t> &hostSendCounts,
                      std::vector<int64_t> &hostRecvCounts,
                      cudaStream_t stream);

  /// Ends the communicator now (ncclCommAbort): operations in flight are
  /// cancelled. For error paths; the object can only be destroyed after.
  void abort();

  /// recv = sum over ranks of send (count elements of type t; in place when
  /// send == recv).
  void allReduceSum(const void *send, void *recv, size_t count, DType t,
                    cudaStream_t stream);

private:
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
};

} // namespace cuda
} // namespace moert

#endif // MOERT_CUDA_NCCL_H
