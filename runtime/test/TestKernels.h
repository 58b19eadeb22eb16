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

/// kernel_append of TestKernels.cpp, a decode step on a KV cache kept in
/// place (BoxedCacheTest.cpp): on a rank, past [kBoxHeads, P, kBoxWidth]
/// and present [.., P + 1, ..] lie in one buffer at the strides of the box
/// [kBoxHeads, kBoxLen, kBoxWidth] (P = T, args[4][2]). It writes row P of
/// present, new[h, w], and sum[h, w] = new[h, w] + sum_{i < P} past[h, i,
/// w] (added in order, in float); args: past, new, present, sum, counts.
constexpr int kBoxHeads = 2, kBoxWidth = 4, kBoxMax = 8;
constexpr int kBoxLen = kBoxMax + 1;

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_TESTKERNELS_H
