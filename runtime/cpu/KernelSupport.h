//===- KernelSupport.h - shared by the CPU kernels' sources -----*- C++ -*-===//
//
// Internal to runtime/cpu: the OpenMP and SIMD-clone macros, the BLAS GEMM
// and the packed-row expansion that the kernels' sources share.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CPU_KERNELSUPPORT_H
#define MOERT_CPU_KERNELSUPPORT_H

#include <cstdint>

/// OpenMP is optional: without it the pragmas are ignored and the loops run
/// serially. Loops with fewer than kParallelWork floats of work stay serial:
/// a fork/join costs more than that, much more when the cores are shared
/// (a descheduled thread holds up the barrier for a whole time slice).
#ifdef _OPENMP
#define MOERT_STR(x) #x
#define MOERT_OMP(x) _Pragma(MOERT_STR(omp x))
#else
#define MOERT_OMP(x)
#endif

/// GCC (12 and later) on x86-64 Linux also compiles the marked loops for
/// x86-64-v3 (AVX2, FMA) and picks that version at load time on CPUs that
/// have it; elsewhere they are compiled for the target only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 &&              \
    defined(__x86_64__) && defined(__linux__)
#define MOERT_SIMD_CLONES                                                      \
  __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MOERT_SIMD_CLONES
#endif
#if defined(__GNUC__)
#define MOERT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define MOERT_ALWAYS_INLINE
#endif

namespace moert::cpu::detail {

constexpr int64_t kParallelWork = int64_t(1) << 18;

/// C[M,N] = A[M,K] * B (+ C when accumulate), row major with leading
/// dimensions lda, ldb, ldc; B is [K,N], or [N,K] when `transB`. The BLAS
/// when the library has one (always called from serial code, so that its
/// own threads are the only ones inside a GEMM), else a loop.
void sgemm(const float *A, int64_t lda, const float *B, int64_t ldb,
           bool transB, float *C, int64_t ldc, int64_t M, int64_t K, int64_t N,
           bool accumulate);

/// Codes c0 .. c1 - 1 of one packed row (a PackedWeight's row: `s` and `z`
/// its scales and zero points, z null for `dflt`) as (q - z) * s into
/// dst[0 .. c1 - c0) (QuantKernels.cpp).
void unpackRow(const uint8_t *row, const float *s, const float *z, float dflt,
               int64_t bits, int64_t blockSize, int64_t c0, int64_t c1,
               float *dst);

} // namespace moert::cpu::detail

#endif // MOERT_CPU_KERNELSUPPORT_H
