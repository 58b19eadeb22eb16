//===- TestKernels.cpp - a generated-kernel stand-in for ExecutorTest
//------===//
//
// Built as a shared object that ExecutorTest embeds as a plan's CPU code:
// the calling convention moec's kernels have (plan version 3,
// docs/plan-format.md), one array of pointers, inputs then results.
//
//===----------------------------------------------------------------------===//

#include "TestKernels.h"

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
