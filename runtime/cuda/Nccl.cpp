//===- Nccl.cpp - thin NCCL wrapper of the moe runtime --------------------===//

#include "moert/cuda/Nccl.h"

#include <cstdio>
#include <string>

namespace moert {
namespace cuda {

void failNccl(const char *file, int line, const char *call,
              ncclResult_t result) {
  std::string detail = ncclGetErrorString(result);
  const char *last = ncclGetLastError(nullptr);
  if (last && *last)
    detail += std::string(" (") + last + ")";
  fail("NCCL error", file, line, call, detail);
}

ncclUniqueId ncclNewUniqueId() {
  ncclUniqueId id;
  MOERT_NCCL_CHECK(ncclGetUniqueId(&id));
  return id;
}

ncclDataType_t ncclTypeOf(DType t) {
  switch (t) {
  case DType::f32:
    return ncclFloat32;
  case DType::bf16:
    return ncclBfloat16;
  case DType::f16:
    return ncclFloat16;
  }
  return ncclFloat32;
}

NcclComm::NcclComm(int nranks, int rank, const ncclUniqueId &id, int device)
    : rank_(rank), size_(nranks), device_(device) {
  MOERT_CUDA_REQUIRE(nranks >= 1 && rank >= 0 && rank < nranks,
                     "NcclComm: rank " + std::to_string(rank) + " of " +
                         std::to_string(nranks));
  MOERT_CUDA_CHECK(cudaSetDevice(device));
  MOERT_NCCL_CHECK(ncclCommInitRank(&comm_, nranks, id, rank));
}

NcclComm::~NcclComm() {
  if (!comm_)
    return;
  ncclResult_t r = ncclCommDestroy(comm_);
  if (r != ncclSuccess)
    std::fprintf(stderr, "moert: ncclCommDestroy: %s\n", ncclGetErrorString(r));
}

void NcclComm::abort() {
  if (!comm_)
    return;
  ncclResult_t r = ncclCommAbort(comm_);
  if (r != ncclSuccess)
    std::fprintf(stderr, "moert: ncclCommAbort: %s\n", ncclGetErrorString(r));
  comm_ = nullptr;
}

void NcclComm::allToAll(const int64_t *send, int64_t *recv, int64_t perPeer,
                        cudaStream_t stream) {
  if (perPeer == 0)
    return;
  MOERT_NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < size_; ++p) {
    MOERT_NCCL_CHECK(ncclSend(send + int64_t(p) * perPeer, size_t(perPeer),
                              ncclInt64, p, comm_, stream));
    MOERT_NCCL_CHECK(ncclRecv(recv + int64_t(p) * perPeer, size_t(perPeer),
                              ncclInt64, p, comm_, stream));
  }
  MOERT_NCCL_CHECK(ncclGroupEnd());
}

void NcclComm::allToAllV(const void *send, const std::vector<int64_t> &sendRows,
                         void *recv, const std::vector<int64_t> &recvRows,
                         size_t rowBytes, cudaStream_t stream) {
  MOERT_CUDA_REQUIRE(
      int(sendRows.size()) == size_ && int(recvRows.size()) == size_,
      "allToAllV: count vectors of " + std::to_string(sendRows.size()) + "/" +
          std::to_string(recvRows.size()) + " entries for " +
          std::to_string(size_) + " ranks");
  const char *s = static_cast<const char *>(send);
  char *r = static_cast<char *>(recv);
  size_t sOff = 0, rOff = 0;
  MOERT_NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < size_; ++p) {
    size_t sb = size_t(sendRows[size_t(p)]) * rowBytes;
    size_t rb = size_t(recvRows[size_t(p)]) * rowBytes;
    // Both sides know every count (after the count exchange), so skipping
    // empty messages on both sides keeps the sends and receives matched.
    if (sb)
      MOERT_NCCL_CHECK(ncclSend(s + sOff, sb, ncclUint8, p, comm_, stream));
    if (rb)
      MOERT_NCCL_CHECK(ncclRecv(r + rOff, rb, ncclUint8, p, comm_, stream));
    sOff += sb;
    rOff += rb;
  }
  MOERT_NCCL_CHECK(ncclGroupEnd());
}

void NcclComm::raggedAllToAll(const void *send, const int64_t *dSendCounts,
                              int64_t slots, void *recv,
                              int64_t recvCapacityRows, size_t rowBytes,
                              int64_t *dRecvCounts,
                              std::vector<int64_t> &hostSendCounts,
                              std::vector<int64_t> &hostRecvCounts,
                              cudaStream_t stream) {
  const size_t n = size_t(size_) * size_t(slots);
  hostSendCounts.assign(n, 0);
  hostRecvCounts.assign(n, 0);
  if (n == 0)
    return;
  allToAll(dSendCounts, dRecvCounts, slots, stream);
  MOERT_CUDA_CHECK(cudaMemcpyAsync(hostSendCounts.data(), dSendCounts,
                                   n * sizeof(int64_t), cudaMemcpyDeviceToHost,
                                   stream));
  MOERT_CUDA_CHECK(cudaMemcpyAsync(hostRecvCounts.data(), dRecvCounts,
                                   n * sizeof(int64_t), cudaMemcpyDeviceToHost,
                                   stream));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<int64_t> sendRows(size_t(size_), 0), recvRows(size_t(size_), 0);
  int64_t total = 0;
  for (int p = 0; p < size_; ++p)
    for (int64_t q = 0; q < slots; ++q) {
      sendRows[size_t(p)] += hostSendCounts[size_t(p * slots + q)];
      recvRows[size_t(p)] += hostRecvCounts[size_t(p * slots + q)];
      total += hostRecvCounts[size_t(p * slots + q)];
    }
  MOERT_CUDA_REQUIRE(total <= recvCapacityRows,
                     "raggedAllToAll: " + std::to_string(total) +
                         " rows received, buffer holds " +
                         std::to_string(recvCapacityRows));
  allToAllV(send, sendRows, recv, recvRows, rowBytes, stream);
}

void NcclComm::allReduceSum(const void *send, void *recv, size_t count, DType t,
                            cudaStream_t stream) {
  if (count == 0)
    return;
  MOERT_NCCL_CHECK(
      ncclAllReduce(send, recv, count, ncclTypeOf(t), ncclSum, comm_, stream));
}

} // namespace cuda
} // namespace moert
