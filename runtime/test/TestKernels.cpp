//===- TestKernels.cpp - a generated-kernel stand-in for ExecutorTest
//------===//
//
// Built as a shared object that ExecutorTest embeds as a plan's CPU code:
// the calling convention moec's kernels have (plan version 3,
// docs/plan-format.md), one array of pointers, inputs then results.
//
//===----------------------------------------------------------------------===//

#include "TestKernels.h"

#include <cstdint>

/// y = sum_i (i + 1) * x_i over kWideKernelInputs inputs of
/// kWideKernelElems floats: args[0 .. n-1] the inputs, args[n] y.
extern "C" void kernel_0(void **args) {
  using namespace moert::testplans;
  float *y = static_cast<float *>(args[kWideKernelInputs]);
  for (int e = 0; e < kWideKernelElems; ++e) {
    float s = 0;
    for (int i = 0; i < kWideKernelInputs; ++i)
      s += float(i + 1) * static_cast<const float *>(args[i])[e];
    y[e] = s;
  }
}

/// kernel_append: see TestKernels.h. Reads past and writes present at the
/// box's strides; the rows before P are already in place.
extern "C" void kernel_append(void **args) {
  using namespace moert::testplans;
  const float *past = static_cast<const float *>(args[0]);
  const float *add = static_cast<const float *>(args[1]);
  float *present = static_cast<float *>(args[2]);
  float *sum = static_cast<float *>(args[3]);
  const int64_t P = static_cast<const int64_t *>(args[4])[2];
  for (int h = 0; h < kBoxHeads; ++h)
    for (int w = 0; w < kBoxWidth; ++w) {
      float s = add[h * kBoxWidth + w];
      for (int64_t i = 0; i < P; ++i)
        s += past[(h * kBoxLen + i) * kBoxWidth + w];
      sum[h * kBoxWidth + w] = s;
      present[(h * kBoxLen + P) * kBoxWidth + w] = add[h * kBoxWidth + w];
    }
}
