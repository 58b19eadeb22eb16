//===- CpuBackendQuant.cpp - packed weights on the CPU --------------------===//
//
// The dequantize step (plan.fbs Dequantize, kernels in QuantKernels.cpp) and
// the steps that read its result. A dequantize step whose only readers are
// GEMMs is deferred: it writes nothing, and its readers run
// cpu::packedMatmul on the codes instead of a GEMM on the expanded weight
// (which costs 4 bytes per weight written to memory and read back, on every
// call). Deferred:
//   - a dense weight (MatMulNBits) read only as B of `matmul` steps without
//     trans_b;
//   - a rank's stacked experts (QMoE), expanded after their dispatch, read
//     only as weights of that dispatch's experts step.
// Anything else (a plan output, an all_slice of the weight, a transposed
// read) expands into the arena as the step says.
//
//===----------------------------------------------------------------------===//

#include "CpuBackendImpl.h"

namespace moert::cpuexec {

bool CpuBackend::deferredDequantize(const Plan &p, size_t index) {
  int8_t &known = deferrable_[index];
  if (known < 0)
    known = dequantizeReaders(p, index).gemmsOnly ? 1 : 0;
  return known;
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

cpu::PackedWeight CpuBackend::PackedOperands::weight() const {
  return d.weight(codes, scales, zeroPoints);
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
    if (a.dispatch >= 0)
      stateFor(ctx, index, a.dispatch); // its dispatch has run
    packedSrc_[s.outputs[0]] = index;
    return;
  }
  const DequantizeDims &d = p.d;
  // A 16-bit result (an f16/bf16 model's weights) is expanded in f32, one
  // weight at a time, and narrowed (each weight is exact in f32: the one
  // rounding is the narrowing).
  DType odt = ctx.plan().values[size_t(s.outputs[0])].dtype;
  Half16 h16 = Half16::bf16;
  bool narrow = half16(odt, h16);
  char *out = ptr(ctx, index, s.outputs[0], odt, "result");
  // Weight e of the stack; narrowed through scratch_ for 16 bits.
  size_t elems = size_t(d.n * d.k);
  auto expand = [&](int64_t e) {
    if (!narrow) {
      p.expand(e, reinterpret_cast<float *>(out) + size_t(e) * elems);
      return;
    }
    scratch_.resize(elems);
    p.expand(e, scratch_.data());
    fromF32(h16, scratch_.data(),
            reinterpret_cast<uint16_t *>(out) + size_t(e) * elems, elems);
  };
  if (a.dispatch < 0) {
    for (int64_t e = 0; e < d.batch; ++e)
      expand(e);
    return;
  }
  // Only the slots the dispatch gave rows (verifyPlan: batch == slots).
  const std::vector<int64_t> &offs =
      stateFor(ctx, index, a.dispatch).slotOffsets;
  for (int64_t e = 0; e < d.batch; ++e)
    if (offs[size_t(e + 1)] > offs[size_t(e)])
      expand(e);
}

std::optional<cpu::PackedWeight> CpuBackend::packedB(ExecContext &ctx,
                                                     size_t index, int32_t b,
                                                     int64_t K, int64_t N) {
  auto it = packedSrc_.find(b);
  if (it == packedSrc_.end())
    return std::nullopt;
  PackedOperands p = packedOperands(ctx, it->second);
  if (p.d.batch != 1 || p.d.k != K || p.d.n != N)
    throw ctx.error(index, "B is a packed weight [" + std::to_string(p.d.k) +
                               ", " + std::to_string(p.d.n) + "] x " +
                               std::to_string(p.d.batch) + ", not [" +
                               std::to_string(K) + ", " + std::to_string(N) +
                               "]");
  return p.weight();
}

void CpuBackend::expertsPacked(ExecContext &ctx, size_t index,
                               const DispatchState &st, cpu::ExpertWeights w,
                               const float *x, float *y) {
  const Step &s = ctx.plan().steps[index];
  // The deferred weights: packedMatmul on each slot's codes (empty slots
  // are skipped by groupedFFN); the others as the arena holds them.
  cpu::PackedWeight packed[3];
  const cpu::PackedWeight **slots[3] = {&w.pGate, &w.pUp, &w.pDown};
  for (int i = 0; i < 3; ++i) {
    size_t in = size_t(1 + i);
    if (in >= s.inputs.size() || s.inputs[in] < 0)
      continue;
    auto it = packedSrc_.find(s.inputs[in]);
    if (it == packedSrc_.end())
      continue;
    PackedOperands p = packedOperands(ctx, it->second);
    bool down = i == 2;
    if (p.d.batch != st.S || p.d.k != (down ? w.F : w.H) ||
        p.d.n != (down ? w.H : w.F))
      throw ctx.error(index, "a packed expert weight does not match the "
                             "experts step's shapes");
    packed[i] = p.weight();
    *slots[i] = &packed[i];
  }
  scratch_.resize(cpu::groupedFFNScratch(st.recvRows, w) / sizeof(float) + 16);
  cpu::groupedFFN(x, st.slotOffsets, w, y, scratch_.data());
}

} // namespace moert::cpuexec
