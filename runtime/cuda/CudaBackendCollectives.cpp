//===- CudaBackendCollectives.cpp - collectives on a CUDA device ----------===//
//
// How each group's collectives move data (setupTransports: NCCL, device
// copies between thread ranks, or pinned host staging through the
// communicator), the ragged row exchange of dispatch and combine, and the
// all-reduce, all-gather, all-slice and reduce-scatter steps.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"

#include <cstdlib>
#include <cstring>
#include <set>

namespace moert::cudaexec {

//===----------------------------------------------------------------------===//
// Transports
//===----------------------------------------------------------------------===//

void CudaBackend::setupTransports(ExecContext &ctx) {
  if (!transport_.empty())
    return;
  const char *env = std::getenv("MOERT_NCCL");
  const char *copiesEnv = std::getenv("MOERT_DEVICE_COPIES");
  bool wantCopies = options_.allowDeviceCopies &&
                    !(copiesEnv && std::string(copiesEnv) == "0");
#ifdef MOERT_HAVE_NCCL
  bool wantNccl = options_.allowNccl && !(env && std::string(env) == "0");
  // MOERT_NCCL=force: one-rank groups get a one-rank NCCL communicator too
  // (rows sent to self through ncclSend/ncclRecv), so that the NCCL path
  // runs on a machine with one GPU.
  bool force = wantNccl && env && std::string(env) == "force";
#else
  bool wantNccl = false, force = false;
  if (env && std::string(env) == "force")
    throw RunError("MOERT_NCCL=force, but this moe-run was built without "
                   "NCCL (nccl.h/libnccl not found at configure time)");
#endif
  cudaDeviceProp prop;
  MOERT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  int devices = 0;
  MOERT_CUDA_CHECK(cudaGetDeviceCount(&devices));
  // Every rank decides alike: from what all ranks of the group report.
  struct Info {
    char uuid[16];
    int32_t wantNccl, wantCopies;
  };
  std::set<std::string> axesUsed;
  for (const Step &s : ctx.plan().steps)
    if (!s.axes().empty())
      axesUsed.insert(s.axes());
  for (const std::string &axes : axesUsed) {
    Comm &c = ctx.group(axes);
    Transport t = Transport::hostStaging;
    if (c.size() <= 1) {
      t = force ? Transport::nccl : Transport::local;
    } else {
      Info mine;
      std::memset(&mine, 0, sizeof(mine));
      std::memcpy(mine.uuid, &prop.uuid, sizeof(mine.uuid));
      mine.wantNccl = wantNccl;
      mine.wantCopies = wantCopies;
      std::vector<Info> all(size_t(c.size()));
      c.allGather(&mine, sizeof(Info), all.data());
      bool nccl = true, copies = true;
      std::set<std::string> uuids;
      for (const Info &i : all) {
        nccl = nccl && i.wantNccl;
        copies = copies && i.wantCopies;
        uuids.insert(std::string(i.uuid, sizeof(i.uuid)));
      }
      // NCCL cannot have two ranks of a communicator on one GPU. Thread
      // ranks use it only when every rank of the world has a GPU of its
      // own: communicators of different groups sharing GPUs, driven from
      // different threads, can deadlock. Device pointers are shared by the
      // threads of one process (every kind of a group is the same on all
      // its ranks).
      if (std::string(c.kind()) == "threads" &&
          devices < ctx.plan().worldSize())
        nccl = false;
      if (nccl && int(uuids.size()) == c.size())
        t = Transport::nccl;
      else if (copies && std::string(c.kind()) == "threads")
        t = Transport::deviceCopies;
    }
    transport_[axes] = t;
#ifdef MOERT_HAVE_NCCL
    if (t != Transport::nccl)
      continue;
    if (c.size() <= 1) {
      nccl_[axes] = std::make_unique<cuda::NcclComm>(
          1, 0, cuda::ncclNewUniqueId(), device_);
      continue;
    }
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (c.rank() == 0)
      id = cuda::ncclNewUniqueId();
    std::vector<ncclUniqueId> ids(size_t(c.size()));
    c.allGather(&id, sizeof(id), ids.data());
    nccl_[axes] =
        std::make_unique<cuda::NcclComm>(c.size(), c.rank(), ids[0], device_);
#endif
  }
}

std::string CudaBackend::transport(const std::string &axes,
                                   const Comm &group) const {
  auto it = transport_.find(axes);
  if (it == transport_.end())
    return Backend::transport(axes, group);
  switch (it->second) {
  case Transport::local:
    return "local";
  case Transport::nccl:
    return "nccl";
  case Transport::deviceCopies:
    return "device copies";
  case Transport::hostStaging:
    return std::string("host staging (") + group.kind() + ")";
  }
  return "?";
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

void CudaBackend::gatherFromPeers(Comm &comm, const void *mine, size_t bytes,
                                  char *g) {
  // Every rank's whole buffer: one row of `bytes`.
  pullFromPeers(comm, mine, 0, bytes, bytes, 1, g);
}

void CudaBackend::pullFromPeers(Comm &comm, const void *mine, size_t offset,
                                size_t width, size_t pitch, size_t rows,
                                char *g) {
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  int64_t G = comm.size();
  int64_t p = int64_t(reinterpret_cast<uintptr_t>(mine));
  std::vector<int64_t> all(static_cast<size_t>(G), 0);
  comm.allGather(&p, sizeof(p), all.data());
  for (int64_t r = 0; r < G; ++r) {
    const char *src =
        reinterpret_cast<const char *>(uintptr_t(all[size_t(r)])) + offset;
    char *dst = g + size_t(r) * rows * width;
    if (rows == 1)
      MOERT_CUDA_CHECK(
          cudaMemcpyAsync(dst, src, width, cudaMemcpyDefault, stream_));
    else
      MOERT_CUDA_CHECK(cudaMemcpy2DAsync(dst, width, src, pitch, width, rows,
                                         cudaMemcpyDefault, stream_));
  }
  endPeerReads(comm);
}

void CudaBackend::endPeerReads(Comm &comm) {
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.barrier();
}

void CudaBackend::copyExchange(Comm &comm, const char *src,
                               const std::vector<int64_t> &sendBytes,
                               const std::vector<int64_t> &sendOffs, char *dst,
                               const std::vector<int64_t> &recvBytes,
                               const std::vector<int64_t> &recvOffs) {
  // Each rank tells each peer where its rows for that peer lie and how many
  // bytes they are (after its stream has written them), then pulls its own
  // rows from every peer on its stream. Same process: device pointers are
  // valid in every rank's thread; cudaMemcpyDefault also covers peers on
  // another GPU of this process.
  int64_t G = comm.size();
  std::vector<int64_t> mine(static_cast<size_t>(2 * G)),
      theirs(static_cast<size_t>(2 * G));
  for (int64_t q = 0; q < G; ++q) {
    mine[size_t(2 * q)] =
        int64_t(reinterpret_cast<uintptr_t>(src + sendOffs[size_t(q)]));
    mine[size_t(2 * q + 1)] = sendBytes[size_t(q)];
  }
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.allToAll(mine.data(), theirs.data(), 2);
  for (int64_t q = 0; q < G; ++q)
    if (theirs[size_t(2 * q + 1)] != recvBytes[size_t(q)])
      throw CommError("device copies: rank " + std::to_string(q) + " sends " +
                      std::to_string(theirs[size_t(2 * q + 1)]) +
                      " bytes, rank " + std::to_string(comm.rank()) +
                      " expects " + std::to_string(recvBytes[size_t(q)]));
  for (int64_t q = 0; q < G; ++q)
    if (recvBytes[size_t(q)])
      MOERT_CUDA_CHECK(cudaMemcpyAsync(
          dst + recvOffs[size_t(q)],
          reinterpret_cast<const char *>(uintptr_t(theirs[size_t(2 * q)])),
          size_t(recvBytes[size_t(q)]), cudaMemcpyDefault, stream_));
  endPeerReads(comm);
}

void CudaBackend::exchange(const std::string &axes, Comm &comm, const char *src,
                           const std::vector<int64_t> &sendBytes,
                           const std::vector<int64_t> &sendOffs, char *dst,
                           const std::vector<int64_t> &recvBytes,
                           const std::vector<int64_t> &recvOffs,
                           size_t rowBytes) {
  int64_t G = comm.size();
  int64_t sTotal = 0, rTotal = 0;
  for (int64_t q = 0; q < G; ++q) {
    sTotal += sendBytes[size_t(q)];
    rTotal += recvBytes[size_t(q)];
  }
#ifdef MOERT_HAVE_NCCL
  // (A one-rank group has a communicator only under MOERT_NCCL=force.)
  if (auto *nc = static_cast<cuda::NcclComm *>(ncclFor(axes))) {
    std::vector<int64_t> sRows(static_cast<size_t>(G), 0),
        rRows(static_cast<size_t>(G), 0);
    for (int64_t q = 0; q < G; ++q) {
      sRows[size_t(q)] = sendBytes[size_t(q)] / int64_t(rowBytes);
      rRows[size_t(q)] = recvBytes[size_t(q)] / int64_t(rowBytes);
    }
    nc->allToAllV(src, sRows, dst, rRows, rowBytes, stream_);
    return;
  }
#else
  (void)axes;
  (void)rowBytes;
#endif
  if (G == 1) { // the rows stay here
    if (sTotal)
      MOERT_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(sTotal),
                                       cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  if (transportOf(axes) == Transport::deviceCopies) {
    copyExchange(comm, src, sendBytes, sendOffs, dst, recvBytes, recvOffs);
    return;
  }
  // Host staging: device -> pinned, the communicator, pinned -> device.
  char *hs = hostSend_.ensure(size_t(sTotal), stream_);
  char *hr = hostRecv_.ensure(size_t(rTotal), stream_);
  if (sTotal)
    MOERT_CUDA_CHECK(cudaMemcpyAsync(hs, src, size_t(sTotal),
                                     cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.allToAllV(hs, sendBytes.data(), sendOffs.data(), hr, recvBytes.data(),
                 recvOffs.data());
  if (rTotal)
    MOERT_CUDA_CHECK(cudaMemcpyAsync(dst, hr, size_t(rTotal),
                                     cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::allReduce(ExecContext &ctx, size_t index,
                            const fb::AllReduceT &at) {
  const Step &s = ctx.plan().steps[index];
  if (at.reduction != fb::Reduction::sum)
    throw ctx.error(index, std::string("unsupported reduction '") +
                               fb::EnumNameReduction(at.reduction) + "'");
  const Value &x = ctx.plan().values[size_t(s.inputs[0])];
  if (ctx.plan().values[size_t(s.outputs[0])].numElements() != x.numElements())
    throw ctx.error(index, "x and y differ in size");
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  // f32, or the 16-bit partial sums of a --precision plan with tp > 1.
  DType dt = x.dtype;
  cuda::DType gt = gpuType(ctx, index, s.inputs[0], "x");
  char *xp = ptr(ctx, index, s.inputs[0], "x", &dt);
  char *yp = ptr(ctx, index, s.outputs[0], "y", &dt);
  size_t bytes = x.byteSize();
  size_t n = size_t(x.numElements());
  int64_t G = comm.size();
  // Device copies, and 16-bit partial sums over NCCL (ncclAllReduce would
  // round to 16 bits at every hop of its ring): every rank's x into
  // g [G][n], then the sum in rank order (fp32 accumulation, one rounding),
  // the same bits on every rank.
  if (G > 1 && bytes &&
      (transportOf(axes) == Transport::deviceCopies ||
       (transportOf(axes) == Transport::nccl && gt != cuda::DType::f32))) {
    char *g = gatherBlocks(axes, comm, xp, bytes);
    cuda::sumSlices(g, gt, G, int64_t(n), yp, stream_);
    return;
  }
  moveBytes(yp, xp, bytes);
  if (bytes == 0)
    return;
#ifdef MOERT_HAVE_NCCL
  if (auto *nc = static_cast<cuda::NcclComm *>(ncclFor(axes))) {
    nc->allReduceSum(yp, yp, n, gt, stream_);
    return;
  }
#endif
  if (comm.size() == 1)
    return;
  char *h = hostSend_.ensure(bytes, stream_);
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(h, yp, bytes, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (gt == cuda::DType::f32) {
    comm.allReduceSum(reinterpret_cast<float *>(h), int64_t(n));
  } else {
    // Host staging: summed in fp32 (as the CPU backend), rounded once.
    Half16 h16 = gt == cuda::DType::bf16 ? Half16::bf16 : Half16::f16;
    std::vector<float> wide(n);
    toF32(h16, reinterpret_cast<const uint16_t *>(h), wide.data(), n);
    comm.allReduceSum(wide.data(), int64_t(n));
    fromF32(h16, wide.data(), reinterpret_cast<uint16_t *>(h), n);
  }
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(yp, h, bytes, cudaMemcpyHostToDevice, stream_));
}

char *CudaBackend::gatherBlocks(const std::string &axes, Comm &comm,
                                const char *mine, size_t bytes) {
  int64_t G = comm.size();
  char *g = gather_.ensure(size_t(G) * bytes, stream_);
#ifdef MOERT_HAVE_NCCL
  if (auto *nc = static_cast<cuda::NcclComm *>(ncclFor(axes))) {
    MOERT_NCCL_CHECK(
        ncclAllGather(mine, g, bytes, ncclUint8, nc->get(), stream_));
    return g;
  }
#endif
  if (transportOf(axes) == Transport::deviceCopies) {
    gatherFromPeers(comm, mine, bytes, g);
    return g;
  }
  char *hs = hostSend_.ensure(bytes, stream_);
  char *hr = hostRecv_.ensure(size_t(G) * bytes, stream_);
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(hs, mine, bytes, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  comm.allGather(hs, int64_t(bytes), hr);
  MOERT_CUDA_CHECK(cudaMemcpyAsync(g, hr, size_t(G) * bytes,
                                   cudaMemcpyHostToDevice, stream_));
  return g;
}

void CudaBackend::allGather(ExecContext &ctx, size_t index,
                            const fb::AllGatherT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  const Value &x = p.values[size_t(s.inputs[0])];
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  int64_t G = comm.size();
  if (RowBlocks r; checkRowBlocks(ctx, index, G, comm.rank(), r)) {
    // Uneven blocks of the token count's rows: every rank sends tb rows
    // from x's arena slot, which is planned at the maximum's block and so
    // holds them (rows past t are padding); block g lands at row g * tb,
    // so the first T rows gathered are the whole.
    size_t block = size_t(r.tb) * r.rowBytes;
    if (block == 0)
      return;
    char *g =
        gatherBlocks(axes, comm, ptr(ctx, index, s.inputs[0], "x"), block);
    moveBytes(ptr(ctx, index, s.outputs[0], "y"), g, size_t(r.T) * r.rowBytes);
    return;
  }
  int64_t outer = checkAllGatherStep(ctx, index, G);
  size_t xBytes = x.byteSize();
  size_t inner = outer ? xBytes / size_t(outer) : 0;
  char *xp = ptr(ctx, index, s.inputs[0], "x");
  char *yp = ptr(ctx, index, s.outputs[0], "y");
  if (xBytes == 0)
    return;
  if (G == 1) {
    moveBytes(yp, xp, xBytes);
    return;
  }
  char *g = gatherBlocks(axes, comm, xp, xBytes);
  // y[o][r] = g[r][o]: one strided copy per rank.
  for (int64_t r = 0; r < G; ++r)
    MOERT_CUDA_CHECK(cudaMemcpy2DAsync(
        yp + size_t(r) * inner, size_t(G) * inner, g + size_t(r) * xBytes,
        inner, inner, size_t(outer), cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::allSlice(ExecContext &ctx, size_t index,
                           const fb::AllSliceT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  const Value &y = p.values[size_t(s.outputs[0])];
  Comm &comm = ctx.group(at.axes);
  int64_t G = comm.size(), g = comm.rank();
  if (RowBlocks r; checkRowBlocks(ctx, index, G, g, r)) {
    // Rank g's block of the token count's rows: t rows from row g * tb.
    if (r.t)
      moveBytes(ptr(ctx, index, s.outputs[0], "y"),
                ptr(ctx, index, s.inputs[0], "x") +
                    size_t(g * r.tb) * r.rowBytes,
                size_t(r.t) * r.rowBytes);
    return;
  }
  int64_t outer = checkAllSliceStep(ctx, index, G);
  size_t yBytes = y.byteSize();
  size_t inner = outer ? yBytes / size_t(outer) : 0;
  char *xp = ptr(ctx, index, s.inputs[0], "x");
  char *yp = ptr(ctx, index, s.outputs[0], "y");
  if (yBytes == 0)
    return;
  // y[o] = x[o][g]: one strided copy, no data moves between ranks.
  MOERT_CUDA_CHECK(cudaMemcpy2DAsync(yp, inner, xp + size_t(g) * inner,
                                     size_t(G) * inner, inner, size_t(outer),
                                     cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::reduceScatter(ExecContext &ctx, size_t index,
                                const fb::ReduceScatterT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  const Value &x = p.values[size_t(s.inputs[0])];
  const Value &y = p.values[size_t(s.outputs[0])];
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  int64_t G = comm.size(), g = comm.rank();
  if (RowBlocks r; checkRowBlocks(ctx, index, G, g, r))
    throw ctx.error(index, "a reduce_scatter into uneven blocks of the token "
                           "count's rows (a dynamic plan with folded MoE "
                           "layers) runs on the CPU backend only so far");
  int64_t outer = checkReduceScatterStep(ctx, index, G);
  // f32, or 16-bit partial sums (summed in fp32, rounded once).
  cuda::DType gt = gpuType(ctx, index, s.inputs[0], "x");
  char *xp = ptr(ctx, index, s.inputs[0], "x");
  char *yp = ptr(ctx, index, s.outputs[0], "y");
  size_t xBytes = x.byteSize(), yBytes = y.byteSize();
  size_t n = size_t(y.numElements());
  size_t inner = outer ? yBytes / size_t(outer) : 0;
  if (yBytes == 0)
    return;
  Transport t = transportOf(axes);
  // Device copies, as all_reduce: block g of every rank's x (strided,
  // straight from its buffer) into [G][n], then the sum in rank order
  // (fp32 accumulation, one rounding), the same bits as all_reduce's.
  if (G > 1 && t == Transport::deviceCopies) {
    char *blocks = gather_.ensure(size_t(G) * yBytes, stream_);
    pullFromPeers(comm, xp, size_t(g) * inner, inner, size_t(G) * inner,
                  size_t(outer), blocks);
    cuda::sumSlices(blocks, gt, G, int64_t(n), yp, stream_);
    return;
  }
  // (A one-rank group has a communicator only under MOERT_NCCL=force.)
  if (G == 1 && !ncclFor(axes)) {
    moveBytes(yp, xp, yBytes);
    return;
  }
  // NCCL and host staging send x as [G][n] (block r of every outer row
  // together, for rank r): x itself when it has one outer row, else packed
  // by G strided copies; also packed when y overlaps it (other than in
  // place on one rank).
  const char *send = xp;
  bool overlap = yp < xp + xBytes && xp < yp + yBytes;
  if ((G > 1 && outer > 1) || (overlap && (G > 1 || xp != yp))) {
    char *packed = pack_.ensure(xBytes, stream_);
    for (int64_t r = 0; r < G; ++r)
      MOERT_CUDA_CHECK(
          cudaMemcpy2DAsync(packed + size_t(r) * yBytes, inner,
                            xp + size_t(r) * inner, size_t(G) * inner, inner,
                            size_t(outer), cudaMemcpyDeviceToDevice, stream_));
    send = packed;
  }
#ifdef MOERT_HAVE_NCCL
  if (auto *nc = static_cast<cuda::NcclComm *>(ncclFor(axes))) {
    if (gt == cuda::DType::f32) {
      MOERT_NCCL_CHECK(ncclReduceScatter(send, yp, n, ncclFloat, ncclSum,
                                         nc->get(), stream_));
      return;
    }
    // 16-bit: ncclReduceScatter would round to 16 bits at every hop of its
    // ring. Block g of every rank (an all-to-all of the blocks) into
    // [G][n], then the sum in rank order, as all_reduce.
    char *blocks = gather_.ensure(size_t(G) * yBytes, stream_);
    std::vector<int64_t> one(static_cast<size_t>(G), 1);
    nc->allToAllV(send, one, blocks, one, yBytes, stream_);
    cuda::sumSlices(blocks, gt, G, int64_t(n), yp, stream_);
    return;
  }
#endif
  // Host staging: device -> pinned, the communicator's reduce-scatter (in
  // fp32: 16-bit sums are widened and rounded once, as the CPU backend),
  // pinned -> device.
  char *hs = hostSend_.ensure(xBytes, stream_);
  char *hr = hostRecv_.ensure(yBytes, stream_);
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(hs, send, xBytes, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (gt == cuda::DType::f32) {
    comm.reduceScatterSum(reinterpret_cast<const float *>(hs),
                          reinterpret_cast<float *>(hr), int64_t(n));
  } else {
    Half16 h16 = gt == cuda::DType::bf16 ? Half16::bf16 : Half16::f16;
    std::vector<float> wide(size_t(G) * n), sum(n);
    toF32(h16, reinterpret_cast<const uint16_t *>(hs), wide.data(),
          wide.size());
    comm.reduceScatterSum(wide.data(), sum.data(), int64_t(n));
    fromF32(h16, sum.data(), reinterpret_cast<uint16_t *>(hr), n);
  }
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(yp, hr, yBytes, cudaMemcpyHostToDevice, stream_));
}

} // namespace moert::cudaexec
