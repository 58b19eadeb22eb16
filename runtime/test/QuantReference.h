//===- QuantReference.h - dequantize test cases and a plain loop *- C++ -*-===//
//
// The reference for cpu::dequantize and cuda::dequantize: unpacks every code
// into an int array first (one element at a time, from its bit offset), then
// applies out[c, r] = (q[r, c] - zp) * scale in double. Shared by
// CpuQuantKernelsTest.cpp and CudaQuantKernelsTest.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_QUANTREFERENCE_H
#define MOERT_TEST_QUANTREFERENCE_H

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace moert::quanttest {

/// One random packed weight: codes [n, blocks, blob], scales and zero
/// points [n, blocks].
struct Case {
  int64_t n, k, bits, blockSize, blocks, blob;
  std::vector<uint8_t> codes;
  std::vector<float> scales, zeroPoints;
};

inline Case randomCase(int64_t n, int64_t k, int64_t bits, int64_t blockSize,
                       unsigned seed) {
  Case c{n, k, bits, blockSize, (k + blockSize - 1) / blockSize, 0, {}, {}, {}};
  c.blob = blockSize * bits / 8;
  std::mt19937 rng(seed);
  c.codes.resize(size_t(n * c.blocks * c.blob));
  for (uint8_t &b : c.codes)
    b = uint8_t(rng() & 0xff);
  std::uniform_real_distribution<float> s(-0.5f, 0.5f);
  for (int64_t i = 0; i < n * c.blocks; ++i) {
    c.scales.push_back(s(rng));
    c.zeroPoints.push_back(float(rng() % (1u << bits)));
  }
  return c;
}

/// The plain loop: [k, n], zero points 2^(bits - 1) unless `withZp`.
inline std::vector<float> reference(const Case &c, bool withZp) {
  std::vector<int64_t> q(size_t(c.n * c.blocks * c.blockSize));
  for (size_t i = 0; i < q.size(); ++i) {
    size_t bit = i * size_t(c.bits);
    q[i] = (c.codes[bit / 8] >> (bit % 8)) & ((1 << c.bits) - 1);
  }
  std::vector<float> out(size_t(c.k * c.n));
  for (int64_t r = 0; r < c.n; ++r)
    for (int64_t col = 0; col < c.k; ++col) {
      int64_t b = r * c.blocks + col / c.blockSize;
      double zp = withZp ? c.zeroPoints[b] : double(1 << (c.bits - 1));
      double code = double(q[r * c.blocks * c.blockSize + col]);
      out[col * c.n + r] = float((code - zp) * double(c.scales[b]));
    }
  return out;
}

/// `batch` random weights stacked as the operands of one step (stacked
/// experts), and the plain loop applied to each: want is [batch, k, n].
struct Stack {
  Case all; // n, k, ... of one weight; codes, scales, zero points of all
  int64_t batch;
  std::vector<float> want;
};

/// Failures (at most 5 reported through `report`) of got = before (when
/// accumulating, else 0) + bias (when non-null) + A[m, k] * w (w the plain
/// loop's [k, n]), each within 1e-5 of the sum of |terms| + 1e-6.
template <typename Report>
int packedProductFailures(const std::vector<float> &a, int64_t m, int64_t k,
                          const std::vector<float> &w, int64_t n,
                          const std::vector<float> &got,
                          const std::vector<float> *before,
                          const std::vector<float> *bias, Report report) {
  int bad = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double want = (before ? (*before)[size_t(i * n + j)] : 0.0) +
                    (bias ? (*bias)[size_t(j)] : 0.0);
      double mag = std::fabs(want);
      for (int64_t x = 0; x < k; ++x) {
        double t = double(a[size_t(i * k + x)]) * double(w[size_t(x * n + j)]);
        want += t;
        mag += std::fabs(t);
      }
      double g = got[size_t(i * n + j)];
      if (!(std::fabs(g - want) <= 1e-5 * mag + 1e-6) && bad++ < 5)
        report(i, j, g, want);
    }
  return bad;
}

inline Stack randomStack(int64_t batch, int64_t n, int64_t k, int64_t bits,
                         int64_t blockSize, unsigned seed, bool withZp) {
  Stack st{randomCase(n, k, bits, blockSize, seed), batch, {}};
  st.want = reference(st.all, withZp);
  for (int64_t e = 1; e < batch; ++e) {
    Case c = randomCase(n, k, bits, blockSize, seed + 1000 * unsigned(e));
    st.all.codes.insert(st.all.codes.end(), c.codes.begin(), c.codes.end());
    st.all.scales.insert(st.all.scales.end(), c.scales.begin(), c.scales.end());
    st.all.zeroPoints.insert(st.all.zeroPoints.end(), c.zeroPoints.begin(),
                             c.zeroPoints.end());
    std::vector<float> w = reference(c, withZp);
    st.want.insert(st.want.end(), w.begin(), w.end());
  }
  return st;
}

} // namespace moert::quanttest

#endif // MOERT_TEST_QUANTREFERENCE_H
