//===- CpuTestUtil.h - helpers of the CPU kernel tests ---------*- C++ -*-===//
//
// Random data, a tolerance check against double references and the
// activations' reference formulas, shared by CpuKernelsTest.cpp and
// CpuDispatchKernelsTest.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_CPUTESTUTIL_H
#define MOERT_TEST_CPUTESTUTIL_H

#include "moert/cpu/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace moert::test {

inline std::vector<float> randomVec(std::mt19937 &rng, size_t n,
                                    float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

/// Expects |got - ref| <= relTol * max|ref| elementwise.
/// got[i] within `tol` x max|want| of want[i] for each of the `n` floats;
/// `what` names the array in a failure.
inline void expectNearScaled(const float *got, const float *want, size_t n,
                             double tol, const std::string &what) {
  double scale = 1e-30;
  for (size_t i = 0; i < n; ++i)
    scale = std::max(scale, double(std::fabs(want[i])));
  for (size_t i = 0; i < n; ++i)
    ASSERT_NEAR(got[i], want[i], tol * scale) << what << " element " << i;
}

inline void expectClose(const float *got, const std::vector<double> &ref,
                        double relTol, const std::string &what) {
  double scale = 0;
  for (double r : ref)
    scale = std::max(scale, std::fabs(r));
  double tol = relTol * std::max(scale, 1e-30);
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (!(std::fabs(got[i] - ref[i]) <= tol) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", expected "
                    << ref[i] << " (tolerance " << tol << ")";
  EXPECT_EQ(bad, 0) << what << ": elements out of tolerance";
}

inline double activationRef(Activation a, double x) {
  switch (a) {
  case Activation::silu:
    return x / (1 + std::exp(-x));
  case Activation::gelu:
    return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  case Activation::gelu_tanh:
    return 0.5 * x *
           (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  case Activation::relu:
    return x > 0 ? x : 0;
  case Activation::identity:
    return x;
  case Activation::clamped_swiglu: // needs the up value: clampedRef
    break;
  }
  return NAN;
}

inline const Activation kActivations[] = {
    Activation::silu, Activation::gelu, Activation::gelu_tanh, Activation::relu,
    Activation::identity};

inline const char *activationName(Activation a) {
  switch (a) {
  case Activation::silu:
    return "silu";
  case Activation::gelu:
    return "gelu";
  case Activation::gelu_tanh:
    return "gelu_tanh";
  case Activation::relu:
    return "relu";
  case Activation::identity:
    return "identity";
  case Activation::clamped_swiglu:
    return "clamped_swiglu";
  }
  return "?";
}

} // namespace moert::test

#endif // MOERT_TEST_CPUTESTUTIL_H
