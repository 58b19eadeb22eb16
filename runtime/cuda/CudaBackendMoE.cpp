//===- CudaBackendMoE.cpp - MoE steps on a CUDA device --------------------===//
//
// Route, dispatch, experts and combine. Dispatch exchanges its counts over
// the step's communicator on the host and its rows through the group's
// transport (CudaBackendCollectives.cpp), and leaves a DispatchState for its
// experts step (the cuBLAS grouped FFN) and its combine step.
//
//===----------------------------------------------------------------------===//

#include "CudaBackendImpl.h"

namespace moert::cudaexec {

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

void CudaBackend::route(ExecContext &ctx, size_t index, const fb::RouteT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  int64_t T = 0, E = 0;
  RouteParams rp = checkRouteStep(ctx, index, T, E);
  std::string bad = cuda::checkRoute(E, rp);
  need(bad.empty(), bad);
  DType i64 = DType::i64;
  cuda::route(
      f32(ctx, index, s.inputs[0], "logits"), optF32(ctx, index, s, 1, "bias"),
      T, E, rp, f32(ctx, index, s.outputs[0], "weights"),
      reinterpret_cast<int64_t *>(ptr(ctx, index, s.outputs[1], "ids", &i64)),
      stream_);
}

//===----------------------------------------------------------------------===//
// Dispatch, experts, combine
//===----------------------------------------------------------------------===//

void CudaBackend::dispatch(ExecContext &ctx, size_t index,
                           const fb::DispatchT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  int64_t H = 0, k = 0, T = 0;
  checkDispatchStep(ctx, index, H, k, T);
  const Value &tok = p.values[size_t(s.inputs[0])];
  const Value &recv = p.values[size_t(s.outputs[0])];
  gpuType(ctx, index, s.inputs[0], "tokens");
  const std::string &axes = at.axes;
  Comm &comm = ctx.group(axes);
  int64_t G = comm.size();

  std::unique_ptr<DispatchState> &slot = states_[index];
  if (!slot || !slot->placement) {
    Placement pl = dispatchPlacement(ctx, index, G);
    slot = std::make_unique<DispatchState>();
    slot->placement = std::make_unique<cuda::DevicePlacement>(pl, stream_);
    slot->E = pl.numExperts;
    slot->S = pl.slotsPerRank;
  }
  DispatchState &st = *slot;
  st.valid = false;
  st.comm = &comm;
  st.axes = axes;
  st.H = H;
  st.G = G;
  st.T = T;
  st.k = k;
  st.rowBytes = size_t(H) * dtypeSize(tok.dtype);
  const int64_t S = st.S, GS = G * S, nA = T * k;

  // The send layout on the device, then stats, counts and ids to the host.
  DType i64 = DType::i64;
  const int64_t *idp = reinterpret_cast<const int64_t *>(
      ptr(ctx, index, s.inputs[1], "ids", &i64));
  int64_t *sendPos =
      reinterpret_cast<int64_t *>(st.sendPos.ensure(size_t(nA) * 8, stream_));
  int64_t *sendCounts = reinterpret_cast<int64_t *>(
      st.sendCounts.ensure(size_t(GS) * 8, stream_));
  int64_t *stats = reinterpret_cast<int64_t *>(st.stats.ensure(3 * 8, stream_));
  size_t wsBytes = cuda::planDispatchWorkspace(T, k, *st.placement);
  void *ws = st.planWs.ensure(wsBytes, stream_);
  cuda::planDispatch(idp, T, k, *st.placement, dispatchCapacity(ctx, at, k),
                     sendPos, sendCounts, stats, ws, st.planWs.size(), stream_);
  int64_t *meta = reinterpret_cast<int64_t *>(
      st.meta.ensure(size_t(3 + 2 * GS + nA) * 8, stream_));
  int64_t *hStats = meta, *hSend = meta + 3, *hRecv = meta + 3 + GS,
          *hIds = meta + 3 + 2 * GS;
  MOERT_CUDA_CHECK(
      cudaMemcpyAsync(hStats, stats, 24, cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaMemcpyAsync(hSend, sendCounts, size_t(GS) * 8,
                                   cudaMemcpyDeviceToHost, stream_));
  if (nA)
    MOERT_CUDA_CHECK(cudaMemcpyAsync(hIds, idp, size_t(nA) * 8,
                                     cudaMemcpyDeviceToHost, stream_));
  MOERT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (hStats[2] != 0) {
    // The CPU kernel's message: the first bad assignment.
    for (int64_t a = 0; a < nA; ++a)
      if (hIds[a] < 0 || hIds[a] >= st.E)
        throw ctx.error(index, "expert id " + std::to_string(hIds[a]) +
                                   " of token " + std::to_string(a / k) +
                                   " (choice " + std::to_string(a % k) +
                                   ") outside [0, " + std::to_string(st.E) +
                                   ")");
    throw ctx.error(index, std::to_string(hStats[2]) +
                               " assignments to experts without a replica");
  }
  st.sendRows = hStats[0];

  // Count exchange on the host, then the rows.
  comm.allToAll(hSend, hRecv, S);
  int64_t rowBytes = int64_t(st.rowBytes);
  st.sendBytes.assign(size_t(G), 0);
  st.sendOffs.assign(size_t(G), 0);
  st.recvBytes.assign(size_t(G), 0);
  st.recvOffs.assign(size_t(G), 0);
  int64_t sOff = 0, rOff = 0;
  for (int64_t q = 0; q < G; ++q) {
    int64_t sr = 0, rr = 0;
    for (int64_t sl = 0; sl < S; ++sl) {
      sr += hSend[q * S + sl];
      rr += hRecv[q * S + sl];
    }
    st.sendOffs[size_t(q)] = sOff;
    st.sendBytes[size_t(q)] = sr * rowBytes;
    st.recvOffs[size_t(q)] = rOff;
    st.recvBytes[size_t(q)] = rr * rowBytes;
    sOff += sr * rowBytes;
    rOff += rr * rowBytes;
  }
  st.recvRows = rowBytes ? rOff / rowBytes : 0;
  bool over = st.recvRows > recv.shape[0];
#ifdef MOERT_HAVE_NCCL
  if (G > 1 && ncclFor(axes)) {
    // NCCL work queued to a rank that has thrown would never finish (its
    // peers would wait in a stream sync no abort reaches): every rank
    // learns whether any of the group is over its bound first.
    int32_t mine = over, anyOver = 0;
    std::vector<int32_t> all(static_cast<size_t>(G));
    comm.allGather(&mine, sizeof(mine), all.data());
    for (int64_t q = 0; q < G; ++q)
      if (all[size_t(q)] && !anyOver)
        anyOver = int32_t(q) + 1;
    if (anyOver && !over)
      throw ctx.error(index, "rank " + std::to_string(anyOver - 1) +
                                 " of the group receives more rows than its "
                                 "bound");
  }
#endif
  if (over)
    throw ctx.error(index, "receives " + std::to_string(st.recvRows) +
                               " rows, more than the bound of " +
                               std::to_string(recv.shape[0]));
  char *send = send_.ensure(size_t(sOff), stream_);
  if (dispatchScalesRows(s))
    cuda::packScaledRows(ptr(ctx, index, s.inputs[0], "tokens"),
                         gpuType(ctx, index, s.inputs[0], "tokens"), H, sendPos,
                         T, k, f32(ctx, index, s.inputs[2], "weights"), send,
                         stream_);
  else
    cuda::packRows(ptr(ctx, index, s.inputs[0], "tokens"), st.rowBytes, sendPos,
                   T, k, send, stream_);
  char *recvSrc = recvSrc_.ensure(size_t(rOff), stream_);
  exchange(axes, comm, send, st.sendBytes, st.sendOffs, recvSrc, st.recvBytes,
           st.recvOffs, st.rowBytes);

  // Slot-major order on the device; the slot offsets on the host as well
  // (cuBLAS needs the problem sizes there).
  int64_t *dRecv = reinterpret_cast<int64_t *>(
      st.recvCounts.ensure(size_t(GS) * 8, stream_));
  MOERT_CUDA_CHECK(cudaMemcpyAsync(dRecv, hRecv, size_t(GS) * 8,
                                   cudaMemcpyHostToDevice, stream_));
  int64_t maxRows = recv.shape[0];
  int64_t *perm =
      reinterpret_cast<int64_t *>(st.perm.ensure(size_t(maxRows) * 8, stream_));
  int64_t *slotOffsets = reinterpret_cast<int64_t *>(
      st.slotOffsets.ensure(size_t(S + 1) * 8, stream_));
  size_t owsBytes = cuda::expertMajorOrderWorkspace(G, S);
  void *ows = st.orderWs.ensure(owsBytes, stream_);
  cuda::expertMajorOrder(dRecv, G, S, maxRows, perm, slotOffsets, ows,
                         st.orderWs.size(), stream_);
  cuda::gatherRowsByIndex(recvSrc, st.rowBytes, perm, st.recvRows,
                          ptr(ctx, index, s.outputs[0], "recv"), stream_);
  st.hostSlotOffsets.assign(size_t(S + 1), 0);
  for (int64_t sl = 0; sl < S; ++sl) {
    int64_t rows = 0;
    for (int64_t q = 0; q < G; ++q)
      rows += hRecv[q * S + sl];
    st.hostSlotOffsets[size_t(sl + 1)] = st.hostSlotOffsets[size_t(sl)] + rows;
  }
  st.valid = true;

  // Stats (as the CPU backend).
  MoELayerStats &l = ctx.layer(int64_t(index));
  l.tokensPerExpert.assign(size_t(st.E), 0);
  for (int64_t a = 0; a < nA; ++a)
    if (hIds[a] >= 0 && hIds[a] < st.E)
      ++l.tokensPerExpert[size_t(hIds[a])];
  std::vector<int32_t> ranks = p.group(ctx.rank(), splitAxes(axes));
  l.peers.assign(size_t(G), PeerTraffic());
  for (int64_t q = 0; q < G; ++q) {
    PeerTraffic &t = l.peers[size_t(q)];
    t.peer = q < int64_t(ranks.size()) ? ranks[size_t(q)] : int32_t(q);
    t.rowsSent = st.sendBytes[size_t(q)] / rowBytes;
    t.rowsRecv = st.recvBytes[size_t(q)] / rowBytes;
    t.bytesSent = st.sendBytes[size_t(q)];
    t.bytesRecv = st.recvBytes[size_t(q)];
  }
  l.dropped = hStats[1];
  l.rowsReceived = st.recvRows;
}

void CudaBackend::experts(ExecContext &ctx, size_t index,
                          const fb::ExpertsT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  DispatchState &st = stateFor(ctx, index, at.dispatch);
  auto opt = [&](size_t i) -> const Value * {
    return i < s.inputs.size() && s.inputs[i] >= 0
               ? &p.values[size_t(s.inputs[i])]
               : nullptr;
  };
  int64_t H = st.H;
  int64_t F = checkExpertsStep(ctx, index, H, st.S, st.recvRows);
  // Activations and weights share one dtype (f32, bf16 or f16).
  DType dt = p.values[size_t(s.inputs[0])].dtype;
  cuda::DeviceExpertWeights w;
  w.dtype = gpuType(ctx, index, s.inputs[0], "recv");
  auto optPtr = [&](size_t i, const char *role) -> const void * {
    return opt(i) ? ptr(ctx, index, s.inputs[i], role, &dt) : nullptr;
  };
  w.wGate = ptr(ctx, index, s.inputs[1], "w_gate", &dt);
  w.wUp = optPtr(2, "w_up");
  w.wDown = ptr(ctx, index, s.inputs[3], "w_down", &dt);
  w.bGate = optPtr(4, "b_gate");
  w.bUp = optPtr(5, "b_up");
  w.bDown = optPtr(6, "b_down");
  w.H = H;
  w.F = F;
  w.act = at.activation;
  w.alpha = at.alpha;
  w.beta = at.beta;
  w.limit = at.limit;
  size_t bytes = cuda::groupedFFNScratch(st.recvRows, w);
  char *scratch = ffn_.ensure(bytes, stream_);
  cuda::groupedFFN(
      *blas_, ptr(ctx, index, s.inputs[0], "recv", &dt), st.hostSlotOffsets, w,
      ptr(ctx, index, s.outputs[0], "y", &dt), scratch, ffn_.size());
}

void CudaBackend::combine(ExecContext &ctx, size_t index,
                          const fb::CombineT &at) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  DispatchState &st = stateFor(ctx, index, at.dispatch);
  int64_t H = st.H, T = st.T, k = st.k;
  checkCombineStep(ctx, index, H, T, k, st.recvRows);
  const Value &y = p.values[size_t(s.inputs[0])];
  need(size_t(H) * dtypeSize(y.dtype) == st.rowBytes,
       "y, out and the dispatched rows differ in dtype");
  cuda::DType dt = gpuType(ctx, index, s.inputs[0], "y");
  // Back to source-major order, then home.
  int64_t rTotal = st.recvRows * int64_t(st.rowBytes);
  int64_t sTotal = st.sendRows * int64_t(st.rowBytes);
  char *back = back_.ensure(size_t(rTotal), stream_);
  cuda::scatterRowsByIndex(ptr(ctx, index, s.inputs[0], "y"), st.rowBytes,
                           reinterpret_cast<const int64_t *>(st.perm.get()),
                           st.recvRows, back, stream_);
  char *home = send_.ensure(size_t(sTotal), stream_);
  exchange(st.axes, *st.comm, back, st.recvBytes, st.recvOffs, home,
           st.sendBytes, st.sendOffs, st.rowBytes);
  cuda::combineRows(home, dt, H,
                    reinterpret_cast<const int64_t *>(st.sendPos.get()), T, k,
                    optF32(ctx, index, s, 1, "weights"),
                    ptr(ctx, index, s.outputs[0], "out"), stream_);
  MoELayerStats &l = ctx.layer(at.dispatch);
  for (size_t q = 0; q < l.peers.size(); ++q) {
    l.peers[q].bytesSent += st.recvBytes[q];
    l.peers[q].bytesRecv += st.sendBytes[q];
  }
}

} // namespace moert::cudaexec
