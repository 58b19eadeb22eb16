//===- CpuBackendQuant.cpp - packed weights on the CPU --------------------===//
//
// The dequantize step (plan.fbs Dequantize, kernels in QuantKernels.cpp) and
// the experts step on packed expert weights. A dense weight (MatMulNBits) is
// expanded into the arena before its matmul. A rank's stacked experts
// (QMoE), expanded after their dispatch, are deferred when the experts step
// of that dispatch is the only reader: the experts step then expands one
// slot at a time into a buffer that stays in cache for that slot's GEMMs,
// instead of all slots into the arena (4 bytes per weight written to memory
// and read back).
//
//===----------------------------------------------------------------------===//

#include "CpuBackendImpl.h"

namespace moert::cpuexec {

bool CpuBackend::deferredDequantize(const Plan &p, size_t index) {
  int8_t &known = deferrable_[index];
  if (known >= 0)
    return known;
  known = 0;
  const Step &s = p.steps[index];
  const fb::DequantizeT *a = s.attrs.Asdequantize();
  int32_t out = s.outputs[0];
  if (!a || a->dispatch < 0)
    return false;
  for (const ModelIO &io : p.outputs)
    if (io.value == out)
      return false;
  // Every reader: an experts step of the same dispatch, as a weight.
  for (size_t j = 0; j < p.steps.size(); ++j) {
    if (j == index)
      continue;
    const Step &r = p.steps[j];
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      if (r.inputs[i] != out)
        continue;
      const fb::ExpertsT *e = r.attrs.Asexperts();
      if (!e || e->dispatch != a->dispatch || i < 1 || i > 3)
        return false;
    }
  }
  known = 1;
  return true;
}

void CpuBackend::dequantize(ExecContext &ctx, size_t index,
                            const fb::DequantizeT &a) {
  const Step &s = ctx.plan().steps[index];
  DequantizeDims d = checkDequantizeStep(ctx, index);
  if (deferredDequantize(ctx.plan(), index)) {
    stateFor(ctx, index, a.dispatch); // its dispatch has run
    packedSrc_[s.outputs[0]] = index;
    return;
  }
  auto *codes = reinterpret_cast<const uint8_t *>(
      ptr(ctx, index, s.inputs[0], DType::u8, "codes"));
  const float *scales = f32(ctx, index, s.inputs[1], "scales");
  const float *zp = optF32(ctx, index, s, 2, "zero_points");
  float *out = f32(ctx, index, s.outputs[0], "result");
  if (a.dispatch < 0) {
    cpu::dequantize(codes, scales, zp, d.batch, d.n, d.k, d.bits, d.blockSize,
                    out);
    return;
  }
  // Only the slots the dispatch gave rows (verifyPlan: batch == slots).
  const std::vector<int64_t> &offs =
      stateFor(ctx, index, a.dispatch).slotOffsets;
  for (int64_t e = 0; e < d.batch; ++e)
    if (offs[size_t(e + 1)] > offs[size_t(e)])
      cpu::dequantize(codes + e * d.codesPerWeight,
                      scales + e * d.scalesPerWeight,
                      zp ? zp + e * d.scalesPerWeight : nullptr, 1, d.n, d.k,
                      d.bits, d.blockSize, out + e * d.n * d.k);
}

const float *CpuBackend::expandSlot(ExecContext &ctx, size_t dq, int64_t slot,
                                    std::vector<float> &buf) {
  const Step &s = ctx.plan().steps[dq];
  DequantizeDims d = checkDequantizeStep(ctx, dq);
  auto *codes = reinterpret_cast<const uint8_t *>(
      ptr(ctx, dq, s.inputs[0], DType::u8, "codes"));
  const float *scales = f32(ctx, dq, s.inputs[1], "scales");
  const float *zp = optF32(ctx, dq, s, 2, "zero_points");
  buf.resize(size_t(d.n * d.k));
  cpu::dequantize(codes + slot * d.codesPerWeight,
                  scales + slot * d.scalesPerWeight,
                  zp ? zp + slot * d.scalesPerWeight : nullptr, 1, d.n, d.k,
                  d.bits, d.blockSize, buf.data());
  return buf.data();
}

void CpuBackend::expertsPacked(ExecContext &ctx, size_t index,
                               const DispatchState &st,
                               const cpu::ExpertWeights &all, const float *x,
                               float *y) {
  const Step &s = ctx.plan().steps[index];
  int64_t H = all.H, F = all.F;
  const std::vector<int64_t> &offs = st.slotOffsets;
  const float *bases[3] = {all.wGate, all.wUp, all.wDown};
  std::vector<int64_t> one = {0, 0};
  for (int64_t sl = 0; sl + 1 < int64_t(offs.size()); ++sl) {
    int64_t rows = offs[size_t(sl + 1)] - offs[size_t(sl)];
    if (rows == 0)
      continue;
    // This slot's weights: expanded when deferred, else its block of the
    // stacked value; its biases.
    cpu::ExpertWeights w = all;
    const float **ws[3] = {&w.wGate, &w.wUp, &w.wDown};
    for (int i = 0; i < 3; ++i) {
      if (!bases[i])
        continue;
      auto it = packedSrc_.find(s.inputs[size_t(1 + i)]);
      *ws[i] = it != packedSrc_.end()
                   ? expandSlot(ctx, it->second, sl, packedW_[i])
                   : bases[i] + sl * H * F;
    }
    w.bGate = all.bGate ? all.bGate + sl * F : nullptr;
    w.bUp = all.bUp ? all.bUp + sl * F : nullptr;
    w.bDown = all.bDown ? all.bDown + sl * H : nullptr;
    one[1] = rows;
    scratch_.resize(cpu::groupedFFNScratch(rows, w) / sizeof(float) + 16);
    cpu::groupedFFN(x + offs[size_t(sl)] * H, one, w, y + offs[size_t(sl)] * H,
                    scratch_.data());
  }
}

} // namespace moert::cpuexec
