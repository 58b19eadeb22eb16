//===- CudaQuantKernelsTest.cpp - cuda::dequantize against a plain loop ---===//
//
// The cases of CpuQuantKernelsTest.cpp on the device, plus one larger than
// a grid's worth of threads (the grid-stride loop). Skips with "no CUDA
// device: ..." where there is none.
//
//===----------------------------------------------------------------------===//

#include "CudaTestSupport.h"
#include "QuantReference.h"
#include "moert/cuda/Kernels.h"

#include <gtest/gtest.h>

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
                             bits, bs, dout.p, s);
            s.sync();
            std::vector<float> got = dout.download();
            int bad = 0;
            for (size_t i = 0; i < got.size(); ++i)
              if (got[i] != st.want[i] && bad++ < 5)
                ADD_FAILURE() << "element " << i << ": " << got[i]
                              << ", expected " << st.want[i];
          }
}
