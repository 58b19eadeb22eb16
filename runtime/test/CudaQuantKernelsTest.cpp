//===- CudaQuantKernelsTest.cpp - packed weights against a plain loop -----===//
//
// The cases of CpuQuantKernelsTest.cpp on the device, plus one larger than
// a grid's worth of threads (the grid-stride loop). Skips with "no CUDA
// device: ..." where there is none.
//
//===----------------------------------------------------------------------===//

#include "CudaTestSupport.h"
#include "QuantReference.h"
#include "moert/Half.h"
#include "moert/cuda/Kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace moert;
using namespace moert::cudatest;
using namespace moert::quanttest;

TEST(CudaQuant, DequantizeMatchesAPlainLoop) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  unsigned seed = 1;
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{
           {7, 16}, {7, 37}, {5, 256}, {4100, 4100}})
    for (int64_t bits : {2, 4, 8})
      for (int64_t bs : {16, 24, 32})
        for (int64_t batch : {1, 3})
          for (bool zp : {false, true}) {
            if (batch > 1 && n > 1000)
              continue; // the grid-stride case: one weight is enough
            SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) +
                         " bits=" + std::to_string(bits) +
                         " block_size=" + std::to_string(bs) + " batch=" +
                         std::to_string(batch) + (zp ? " zero points" : ""));
            Stack st = randomStack(batch, n, k, bits, bs, seed++, zp);
            const Case &c = st.all;
            Dev<uint8_t> dq(c.codes);
            Dev<float> ds(c.scales), dz(c.zeroPoints), dout(st.want.size());
            cuda::dequantize(dq.p, ds.p, zp ? dz.p : nullptr, batch, c.n, c.k,
                             bits, bs, dout.p, cuda::DType::f32, s);
            s.sync();
            std::vector<float> got = dout.download();
            int bad = 0;
            for (size_t i = 0; i < got.size(); ++i)
              if (got[i] != st.want[i] && bad++ < 5)
                ADD_FAILURE() << "element " << i << ": " << got[i]
                              << ", expected " << st.want[i];
          }
}

TEST(CudaQuant, DequantizeToHalfRoundsOnce) {
  // An fp16 model's weights: the f32 value rounded once to f16 (as the CPU
  // backend's fromF32 rounds it).
  REQUIRE_CUDA_DEVICE();
  Stream s;
  Stack st = randomStack(2, 37, 96, 4, 32, 21, true);
  const Case &c = st.all;
  Dev<uint8_t> dq(c.codes);
  Dev<float> ds(c.scales), dz(c.zeroPoints);
  Dev<uint16_t> dout(st.want.size());
  cuda::dequantize(dq.p, ds.p, dz.p, 2, c.n, c.k, 4, 32, dout.p,
                   cuda::DType::f16, s);
  s.sync();
  std::vector<uint16_t> got = dout.download(), want(st.want.size());
  fromF32(Half16::f16, st.want.data(), want.data(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ < 5)
      ADD_FAILURE() << "element " << i << ": " << got[i] << ", expected "
                    << want[i];
}

// packedGemv against the plain loop's weight times A in double: 2, 4 and 8
// bits, blocks of 16, 24, 32 and one per row, K a multiple of 32 lanes and
// not, 1 to 11 rows of A (two launches past 8), bias and accumulate.
TEST(CudaQuant, PackedGemvMatchesAPlainLoop) {
  REQUIRE_CUDA_DEVICE();
  Stream s;
  unsigned seed = 11;
  for (int64_t bits : {2, 4, 8})
    for (int64_t bs : {16, 24, 32, 0})
      for (int64_t k : {int64_t(64), int64_t(75)})
        for (int64_t m : {1, 3, 8, 11}) {
          int64_t block = bs ? bs : 8 * ((k + 7) / 8);
          int64_t n = 37;
          bool zp = m % 2 == 1, accumulate = m == 3, withBias = m >= 8;
          SCOPED_TRACE("bits=" + std::to_string(bits) +
                       " block_size=" + std::to_string(block) +
                       " k=" + std::to_string(k) + " m=" + std::to_string(m));
          Case c = randomCase(n, k, bits, block, seed++);
          std::vector<float> w = reference(c, zp); // [k, n]
          std::mt19937 rng(seed);
          std::uniform_real_distribution<float> u(-1.0f, 1.0f);
          std::vector<float> a(size_t(m * k)), c0(size_t(m * n)), bias(n);
          for (float &x : a)
            x = u(rng);
          for (float &x : c0)
            x = u(rng);
          for (float &x : bias)
            x = u(rng);
          Dev<uint8_t> dq(c.codes);
          Dev<float> ds(c.scales), dz(c.zeroPoints), da(a), dc(c0), db(bias);
          cpu::PackedWeight pw;
          pw.codes = dq.p;
          pw.scales = ds.p;
          pw.zeroPoints = zp ? dz.p : nullptr;
          pw.n = n;
          pw.k = k;
          pw.bits = bits;
          pw.blockSize = block;
          cuda::packedGemv(da.p, m, pw, withBias ? db.p : nullptr, dc.p,
                           accumulate, s);
          s.sync();
          std::vector<float> got = dc.download();
          packedProductFailures(
              a, m, k, w, n, got, accumulate ? &c0 : nullptr,
              withBias ? &bias : nullptr,
              [](int64_t i, int64_t j, double g, double want) {
                ADD_FAILURE() << "C[" << i << ", " << j << "] = " << g
                              << ", expected " << want;
              });
        }
}
