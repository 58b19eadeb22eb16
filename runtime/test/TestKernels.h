//===- TestKernels.h - the shape of TestKernels.cpp's kernel ------*- C++
//-*-===//

#ifndef MOERT_TEST_TESTKERNELS_H
#define MOERT_TEST_TESTKERNELS_H

namespace moert {
namespace testplans {

/// kernel_0 of TestKernels.cpp: y = sum_i (i + 1) * x_i, each [3, 5] f32 on
/// a rank; 40 inputs, far more than the 10 pointers the CPU runtime passed
/// before plan version 3.
constexpr int kWideKernelInputs = 40;
constexpr int kWideKernelRows = 3, kWideKernelCols = 5;
constexpr int kWideKernelElems = kWideKernelRows * kWideKernelCols;

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_TESTKERNELS_H
