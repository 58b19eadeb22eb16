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

#include <optional>

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

CpuBackend::PackedOperands CpuBackend::packedOperands(ExecContext &ctx,
                                                      size_t index) {
  const Step &s = ctx.plan().steps[index];
  PackedOperands p;
  p.d = checkDequantizeStep(ctx, index);
  p.codes = reinterpret_cast<const uint8_t *>(
      ptr(ctx, index, s.inputs[0], DType::u8, "codes"));
  p.scales = f32(ctx, index, s.inputs[1], "scales");
  p.zeroPoints = optF32(ctx, index, s, 2, "zero_points");
  return p;
}

void CpuBackend::PackedOperands::expand(int64_t e, float *out) const {
  cpu::dequantize(codes + e * d.codesPerWeight, scales + e * d.scalesPerWeight,
                  zeroPoints ? zeroPoints + e * d.scalesPerWeight : nullptr, 1,
                  d.n, d.k, d.bits, d.blockSize, out);
}

void CpuBackend::dequantize(ExecContext &ctx, size_t index,
                            const fb::DequantizeT &a) {
  const Step &s = ctx.plan().steps[index];
  PackedOperands p = packedOperands(ctx, index);
  if (deferredDequantize(ctx.plan(), index)) {
    stateFor(ctx, index, a.dispatch); // its dispatch has run
    packedSrc_[s.outputs[0]] = index;
    return;
  }
  float *out = f32(ctx, index, s.outputs[0], "result");
  const DequantizeDims &d = p.d;
  if (a.dispatch < 0) {
    cpu::dequantize(p.codes, p.scales, p.zeroPoints, d.batch, d.n, d.k, d.bits,
                    d.blockSize, out);
    return;
  }
  // Only the slots the dispatch gave rows (verifyPlan: batch == slots).
  const std::vector<int64_t> &offs =
      stateFor(ctx, index, a.dispatch).slotOffsets;
  for (int64_t e = 0; e < d.batch; ++e)
    if (offs[size_t(e + 1)] > offs[size_t(e)])
      p.expand(e, out + e * d.n * d.k);
}

void CpuBackend::expertsPacked(ExecContext &ctx, size_t index,
                               const DispatchState &st,
                               const cpu::ExpertWeights &all, const float *x,
                               float *y) {
  const Step &s = ctx.plan().steps[index];
  int64_t H = all.H, F = all.F;
  const std::vector<int64_t> &offs = st.slotOffsets;
  const float *bases[3] = {all.wGate, all.wUp, all.wDown};
  // The deferred weights' operands, resolved once for all slots.
  std::optional<PackedOperands> packed[3];
  for (int i = 0; i < 3; ++i)
    if (auto it = packedSrc_.find(s.inputs[size_t(1 + i)]);
        bases[i] && it != packedSrc_.end())
      packed[i] = packedOperands(ctx, it->second);
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
      if (!packed[i]) {
        *ws[i] = bases[i] + sl * H * F;
        continue;
      }
      packedW_[i].resize(size_t(packed[i]->d.n * packed[i]->d.k));
      packed[i]->expand(sl, packedW_[i].data());
      *ws[i] = packedW_[i].data();
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
