//===- QuantPlans.h - hand-built plans with packed dense weights -*- C++
//-*-===//
//
// A plan of two packed MatMulNBits-like layers on one rank: x [M, K] ->
// matmul with dequantize(W1) [K, N] + bias -> relu -> matmul with
// dequantize(W2) [N, K]; optionally W1 (the dequantize step's f32 result)
// is a plan output too, which leaves that step to run as written (the
// backends skip a dequantize step only when GEMMs alone read it). The
// reference is the plain loop of QuantReference.h in double.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_QUANTPLANS_H
#define MOERT_TEST_QUANTPLANS_H

#include "QuantReference.h"
#include "TestPlans.h"

namespace moert::testplans {

struct PackedMatmulSpec {
  int64_t M = 1, K = 64, N = 48, bits = 4, blockSize = 32;
  bool zeroPoints = true;
  /// W1's expanded weight is a plan output as well.
  bool weightOutput = false;
  unsigned seed = 5;
};

inline TestCase makePackedMatmul(const PackedMatmulSpec &spec) {
  using quanttest::Case;
  TestCase tc;
  const int64_t M = spec.M, K = spec.K, N = spec.N;
  std::mt19937 rng(spec.seed);
  std::vector<float> x = randomFloats(rng, size_t(M * K), 1.0f);
  std::vector<float> bias = randomFloats(rng, size_t(N), 0.5f);
  Case c1 = quanttest::randomCase(N, K, spec.bits, spec.blockSize, spec.seed);
  Case c2 =
      quanttest::randomCase(K, N, spec.bits, spec.blockSize, spec.seed + 1);
  std::vector<float> w1 = quanttest::reference(c1, spec.zeroPoints); // [K, N]
  std::vector<float> w2 = quanttest::reference(c2, spec.zeroPoints); // [N, K]
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "QuantPlans.h";
  p.mesh = {{"tp", 1}};
  Builder b(p, tc.data);
  b.segments(1);
  auto packed = [&](const std::string &name, const Case &c) {
    int32_t q =
        b.perRankBytes(name + ".codes", {c.n, c.blocks, c.blob}, {c.codes});
    int32_t s = b.perRank(name + ".scales", {c.n, c.blocks}, {c.scales});
    int32_t z = spec.zeroPoints ? b.perRank(name + ".zero_points",
                                            {c.n, c.blocks}, {c.zeroPoints})
                                : -1;
    return std::vector<int32_t>{q, s, z};
  };
  std::vector<int32_t> p1 = packed("w1", c1), p2 = packed("w2", c2);
  int32_t vb = b.perRank("b1", {N}, {bias});
  int32_t vx = b.value("x", DType::f32, {M, K}, ValueKind::input);
  int32_t vw1 =
      b.value("w1", DType::f32, {K, N},
              spec.weightOutput ? ValueKind::output : ValueKind::temp);
  int32_t vw2 = b.value("w2", DType::f32, {N, K}, ValueKind::temp);
  int32_t vh = b.value("h", DType::f32, {M, N}, ValueKind::temp);
  int32_t va = b.value("a", DType::f32, {M, N}, ValueKind::temp);
  int32_t vy = b.value("y", DType::f32, {M, K}, ValueKind::output);
  auto dq = [&](int64_t k) {
    fb::DequantizeT d;
    d.bits = spec.bits;
    d.block_size = spec.blockSize;
    d.k = k;
    return d;
  };
  b.step(dq(K), p1, {vw1}, "/fc1/dequantize");
  b.step(dq(N), p2, {vw2}, "/fc2/dequantize");
  b.step(fb::MatmulT(), {vx, vw1, vb}, {vh}, "/fc1");
  fb::UnaryT relu;
  relu.fn = fb::UnaryFn::relu;
  b.step(relu, {vh}, {va}, "/relu");
  b.step(fb::MatmulT(), {va, vw2, -1}, {vy}, "/fc2");

  std::vector<double> hid(size_t(M * N)), y(size_t(M * K), 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias[size_t(n)];
      for (int64_t k = 0; k < K; ++k)
        acc += double(x[size_t(m * K + k)]) * w1[size_t(k * N + n)];
      hid[size_t(m * N + n)] = std::max(acc, 0.0);
    }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n)
        y[size_t(m * K + k)] += hid[size_t(m * N + n)] * w2[size_t(n * K + k)];
  auto io = [&](const std::string &name, std::vector<int64_t> shape,
                int32_t v) {
    ModelIO m;
    m.name = name;
    m.shape = std::move(shape);
    m.value = v;
    return m;
  };
  p.inputs.push_back(io("x", {M, K}, vx));
  p.outputs.push_back(io("y", {M, K}, vy));
  std::vector<double> xd(x.begin(), x.end());
  tc.inputs["x"] = f32Array({M, K}, xd);
  tc.expected["y"] = f32Array({M, K}, y);
  if (spec.weightOutput) {
    p.outputs.push_back(io("w1", {K, N}, vw1));
    tc.expected["w1"] =
        f32Array({K, N}, std::vector<double>(w1.begin(), w1.end()));
  }
  return tc;
}

} // namespace moert::testplans

#endif // MOERT_TEST_QUANTPLANS_H
