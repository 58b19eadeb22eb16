//===- PackedMatmul.cpp - GEMMs that read packed weights ------------------===//
//
// cpu::packedMatmul: C[M, n] = A[M, k] * W for a PackedWeight W, without
// W's floats ever reaching memory. The CPU backend runs it for the GEMMs
// whose `dequantize` step it defers (CpuBackendQuant.cpp).
//
// A is first copied into `prep` [M, kp] (kp: k rounded up to whole blocks,
// zeros past k), in the order the codes hold their columns: for 4-bit codes
// ("nibbles", blocks of 16 codes or more) the even columns then the odd
// ones, since byte j of a row holds columns 2j and 2j + 1; A's natural
// order for 8-bit codes ("bytes") and for every other width and block
// ("expanded", through unpackRow). Then
//   - M <= kGemvMaxRows (decode): a GEMV that turns each 8 codes into
//     floats in registers, q * s - z * s, and multiplies them with up to 8
//     rows of A (AVX2 and FMA when the CPU has them; otherwise each row of
//     W is expanded into a buffer in L1 and dotted with A's rows);
//   - more rows: tiles of W's rows expanded into a buffer that stays in
//     cache, each multiplied by the BLAS (B transposed).
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

#include "KernelSupport.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MOERT_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace moert::cpu {

namespace {

/// Rows of A at most this many take the GEMV, more the tiled GEMM.
/// Measured on Zen 1 (moert-packed-bench, K = N = 2048, 4 bits): the GEMV
/// beats sgemm on the expanded fp32 weight up to 8 rows (1.8x at 8); from
/// 16 rows the tiles are faster than the GEMV (0.7-0.8x of fp32 sgemm).
constexpr int64_t kGemvMaxRows = 8;
/// Multiply-adds below which the GEMV stays on the calling thread: about
/// 1 ms of it. An OpenMP team forked between BLAS calls shares the cores
/// with the BLAS's spinning threads; on 2 cores, a decode step of the
/// builder's LFM2 int4 model (GEMVs of 0.5 M weights) took 0.7-0.8 ms with
/// the GEMV serial, and 0.8 to 20 ms (time slices lost at the barrier) with
/// a team from detail::kParallelWork on.
constexpr int64_t kGemvParallelWork = int64_t(1) << 23;
/// W's rows per tile of the GEMM: 256 rows of K = 2048 is 2 MiB, which
/// measured faster than 64 or 128 rows (the BLAS packs A once per tile).
constexpr int64_t kTileRows = 256;

enum class Form { nibbles, bytes, expanded };

Form formOf(const PackedWeight &w) {
  if (w.bits == 4 && w.blockSize % 16 == 0)
    return Form::nibbles;
  if (w.bits == 8 && w.blockSize % 8 == 0)
    return Form::bytes;
  return Form::expanded;
}

/// A's rows in the form's column order, [M, kp], zeros past k.
void prepareA(const float *A, int64_t M, const PackedWeight &w, Form form,
              int64_t kp, std::vector<float> &prep) {
  const int64_t k = w.k;
  prep.assign(size_t(M * kp), 0.0f);
  for (int64_t m = 0; m < M; ++m) {
    const float *src = A + m * k;
    float *dst = prep.data() + m * kp;
    if (form == Form::nibbles) {
      for (int64_t c = 0; c < k; ++c)
        dst[(c % 2) * (kp / 2) + c / 2] = src[c];
    } else {
      std::copy_n(src, k, dst);
    }
  }
}

/// Row r of W as floats in the form's column order: kp of them (nibbles,
/// bytes: the padding codes become finite values that meet A's zeros) or k
/// (expanded).
void expandRowGeneric(const PackedWeight &w, Form form, int64_t r, float *dst) {
  const int64_t blocks = w.blocks(), bs = w.blockSize;
  const uint8_t *q = w.codes + r * w.rowBytes();
  const float *s = w.scales + r * blocks;
  const float *z = w.zeroPoints ? w.zeroPoints + r * blocks : nullptr;
  const float dflt = float(int64_t(1) << (w.bits - 1));
  if (form == Form::expanded) {
    detail::unpackRow(q, s, z, dflt, w.bits, bs, 0, w.k, dst);
    return;
  }
  const int64_t half = blocks * bs / 2;
  for (int64_t b = 0; b < blocks; ++b) {
    const float sc = s[b], nz = -(z ? z[b] : dflt) * sc;
    if (form == Form::nibbles) {
      for (int64_t j = b * bs / 2; j < (b + 1) * bs / 2; ++j) {
        dst[j] = float(q[j] & 15u) * sc + nz;
        dst[half + j] = float(q[j] >> 4) * sc + nz;
      }
    } else {
      for (int64_t j = b * bs; j < (b + 1) * bs; ++j)
        dst[j] = float(q[j]) * sc + nz;
    }
  }
}

#ifdef MOERT_AVX2
/// MOERT_NO_AVX2 set (to anything) takes the generic code (the tests run
/// both).
bool haveAvx2() {
  static const bool yes = __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("fma") &&
                          !std::getenv("MOERT_NO_AVX2");
  return yes;
}

/// 8 codes from 8 bytes (bytes) or 16 codes from 8 bytes (nibbles: lo the
/// even columns, hi the odd ones), as q * s + nz.
MOERT_AVX2 inline __m256i load8Bytes(const uint8_t *p) {
  return _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
}
MOERT_AVX2 inline __m256 scaled(__m256i c, __m256 s, __m256 nz) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), s, nz);
}

/// expandRowGeneric for nibbles and bytes.
MOERT_AVX2 void expandRowAvx2(const PackedWeight &w, Form form, int64_t r,
                              float *dst) {
  const int64_t blocks = w.blocks(), bs = w.blockSize, half = blocks * bs / 2;
  const uint8_t *q = w.codes + r * w.rowBytes();
  const float *s = w.scales + r * blocks;
  const float *z = w.zeroPoints ? w.zeroPoints + r * blocks : nullptr;
  const float dflt = float(int64_t(1) << (w.bits - 1));
  const __m256i m15 = _mm256_set1_epi32(15);
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256 sv = _mm256_set1_ps(s[b]);
    const __m256 nz = _mm256_set1_ps(-(z ? z[b] : dflt) * s[b]);
    if (form == Form::nibbles) {
      for (int64_t j = b * bs / 2; j < (b + 1) * bs / 2; j += 8) {
        __m256i c = load8Bytes(q + j);
        _mm256_storeu_ps(dst + j, scaled(_mm256_and_si256(c, m15), sv, nz));
        _mm256_storeu_ps(dst + half + j,
                         scaled(_mm256_srli_epi32(c, 4), sv, nz));
      }
    } else {
      for (int64_t j = b * bs; j < (b + 1) * bs; j += 8)
        _mm256_storeu_ps(dst + j, scaled(load8Bytes(q + j), sv, nz));
    }
  }
}

/// One chunk of 8 code bytes (16 nibbles: `lo` the even columns, `hi` the
/// odd ones, which may be the same accumulators) into MR rows of A.
template <int MR>
MOERT_AVX2 inline void nibbleChunk(const float *a, int64_t kp, int64_t half,
                                   const uint8_t *q, int64_t j, __m256 sv,
                                   __m256 nz, __m256 (&lo)[MR],
                                   __m256 (&hi)[MR]) {
  const __m256i m15 = _mm256_set1_epi32(15);
  __m256i c = load8Bytes(q + j);
  __m256 l = scaled(_mm256_and_si256(c, m15), sv, nz);
  __m256 h = scaled(_mm256_srli_epi32(c, 4), sv, nz);
  for (int m = 0; m < MR; ++m) {
    lo[m] = _mm256_fmadd_ps(_mm256_loadu_ps(a + m * kp + j), l, lo[m]);
    hi[m] = _mm256_fmadd_ps(_mm256_loadu_ps(a + m * kp + half + j), h, hi[m]);
  }
}

/// One chunk of 8 one-byte codes into MR rows of A.
template <int MR>
MOERT_AVX2 inline void byteChunk(const float *a, int64_t kp, const uint8_t *q,
                                 int64_t j, __m256 sv, __m256 nz,
                                 __m256 (&acc)[MR]) {
  __m256 c = scaled(load8Bytes(q + j), sv, nz);
  for (int m = 0; m < MR; ++m)
    acc[m] = _mm256_fmadd_ps(_mm256_loadu_ps(a + m * kp + j), c, acc[m]);
}

/// C[m0 .. m0 + MR, r] against W's row r, codes converted in registers.
/// Each row of A keeps kAcc independent FMA chains, so that few rows do
/// not wait on one chain's latency (4 cycles or more per FMA). Bytes: 4
/// chains for one or two rows (measured on Zen 1, moert-packed-bench
/// --bits 8: one row took longer than four on one chain, 1.2-1.8x faster
/// on four), one from 3 rows (2 chains measured slower there). Nibbles: 2
/// up to 4 rows (the even and odd columns), 1 from 5 to 8 (16 registers):
/// each chunk's conversions already take about an FMA's latency, and 4
/// chains measured 10-20% slower.
template <int MR, Form F>
MOERT_AVX2 inline void gemvRowAvx2(const float *a, int64_t kp,
                                   const PackedWeight &w, int64_t r, float *C,
                                   int64_t ldc, bool accumulate) {
  constexpr int kAcc = F == Form::bytes ? (MR <= 2 ? 4 : 1) : MR <= 4 ? 2 : 1;
  const int64_t blocks = w.blocks(), bs = w.blockSize, half = kp / 2;
  const uint8_t *q = w.codes + r * w.rowBytes();
  const float *s = w.scales + r * blocks;
  const float *z = w.zeroPoints ? w.zeroPoints + r * blocks : nullptr;
  const float dflt = float(int64_t(1) << (w.bits - 1));
  __m256 acc[kAcc][MR];
  for (int i = 0; i < kAcc; ++i)
    for (int m = 0; m < MR; ++m)
      acc[i][m] = _mm256_setzero_ps();
  constexpr int kOdd = kAcc > 1 ? 1 : 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256 sv = _mm256_set1_ps(s[b]);
    const __m256 nz = _mm256_set1_ps(-(z ? z[b] : dflt) * s[b]);
    if constexpr (F == Form::nibbles) {
      int64_t j = b * bs / 2;
      const int64_t end = (b + 1) * bs / 2;
      if constexpr (kAcc == 4)
        for (; j + 16 <= end; j += 16) {
          nibbleChunk<MR>(a, kp, half, q, j, sv, nz, acc[0], acc[1]);
          nibbleChunk<MR>(a, kp, half, q, j + 8, sv, nz, acc[2], acc[3]);
        }
      for (; j < end; j += 8)
        nibbleChunk<MR>(a, kp, half, q, j, sv, nz, acc[0], acc[kOdd]);
    } else {
      int64_t j = b * bs;
      const int64_t end = (b + 1) * bs;
      if constexpr (kAcc == 4)
        for (; j + 32 <= end; j += 32) {
          byteChunk<MR>(a, kp, q, j, sv, nz, acc[0]);
          byteChunk<MR>(a, kp, q, j + 8, sv, nz, acc[1]);
          byteChunk<MR>(a, kp, q, j + 16, sv, nz, acc[2]);
          byteChunk<MR>(a, kp, q, j + 24, sv, nz, acc[3]);
        }
      if constexpr (kAcc >= 2)
        for (; j + 16 <= end; j += 16) {
          byteChunk<MR>(a, kp, q, j, sv, nz, acc[0]);
          byteChunk<MR>(a, kp, q, j + 8, sv, nz, acc[1]);
        }
      for (; j < end; j += 8)
        byteChunk<MR>(a, kp, q, j, sv, nz, acc[0]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    __m256 t = acc[0][m];
    for (int i = 1; i < kAcc; ++i)
      t = _mm256_add_ps(t, acc[i][m]);
    __m128 v =
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_movehdup_ps(v));
    float *out = C + m * ldc + r;
    *out = accumulate ? *out + _mm_cvtss_f32(v) : _mm_cvtss_f32(v);
  }
}

template <Form F>
MOERT_AVX2 void gemvRowsAvx2(const float *a, int64_t M, int64_t kp,
                             const PackedWeight &w, int64_t r0, int64_t r1,
                             float *C, int64_t ldc, bool accumulate) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      const float *am = a + m0 * kp;
      float *cm = C + m0 * ldc;
      switch (std::min<int64_t>(8, M - m0)) {
#define MOERT_GEMV_CASE(MR)                                                    \
  case MR:                                                                     \
    gemvRowAvx2<MR, F>(am, kp, w, r, cm, ldc, accumulate);                     \
    break;
        MOERT_GEMV_CASE(1)
        MOERT_GEMV_CASE(2)
        MOERT_GEMV_CASE(3)
        MOERT_GEMV_CASE(4)
        MOERT_GEMV_CASE(5)
        MOERT_GEMV_CASE(6)
        MOERT_GEMV_CASE(7)
        MOERT_GEMV_CASE(8)
#undef MOERT_GEMV_CASE
      }
    }
}
#endif

bool fast(Form form) {
#ifdef MOERT_AVX2
  return form != Form::expanded && haveAvx2();
#else
  (void)form;
  return false;
#endif
}

void expandRow(const PackedWeight &w, Form form, int64_t r, float *dst) {
#ifdef MOERT_AVX2
  if (fast(form))
    return expandRowAvx2(w, form, r, dst);
#endif
  expandRowGeneric(w, form, r, dst);
}

/// The generic GEMV: W's row expanded into `buf` (kp floats), dotted with
/// each row of A with 8 partial sums (vectorised without reassociation).
MOERT_SIMD_CLONES void gemvRowsGeneric(const float *a, int64_t M, int64_t kp,
                                       int64_t kd, const PackedWeight &w,
                                       Form form, int64_t r0, int64_t r1,
                                       float *buf, float *C, int64_t ldc,
                                       bool accumulate) {
  for (int64_t r = r0; r < r1; ++r) {
    expandRowGeneric(w, form, r, buf);
    const int64_t k8 = kd / 8 * 8;
    for (int64_t m = 0; m < M; ++m) {
      const float *am = a + m * kp;
      float part[8] = {};
      for (int64_t c = 0; c < k8; c += 8)
        for (int l = 0; l < 8; ++l)
          part[l] += am[c + l] * buf[c + l];
      float v = ((part[0] + part[4]) + (part[1] + part[5])) +
                ((part[2] + part[6]) + (part[3] + part[7]));
      for (int64_t c = k8; c < kd; ++c)
        v += am[c] * buf[c];
      float *out = C + m * ldc + r;
      *out = accumulate ? *out + v : v;
    }
  }
}

void packedGemv(const float *a, int64_t M, int64_t kp, int64_t kd,
                const PackedWeight &w, Form form, float *C, bool accumulate) {
  const int64_t n = w.n;
  MOERT_OMP(parallel if (M * n * kd > kGemvParallelWork)) {
    std::vector<float> buf(fast(form) ? 0 : size_t(kp));
    MOERT_OMP(for schedule(static))
    for (int64_t r0 = 0; r0 < n; r0 += 16) {
      const int64_t r1 = std::min(n, r0 + 16);
#ifdef MOERT_AVX2
      if (fast(form)) {
        if (form == Form::nibbles)
          gemvRowsAvx2<Form::nibbles>(a, M, kp, w, r0, r1, C, n, accumulate);
        else
          gemvRowsAvx2<Form::bytes>(a, M, kp, w, r0, r1, C, n, accumulate);
        continue;
      }
#endif
      gemvRowsGeneric(a, M, kp, kd, w, form, r0, r1, buf.data(), C, n,
                      accumulate);
    }
  }
}

void packedGemm(const float *a, int64_t M, int64_t kp, int64_t kd,
                const PackedWeight &w, Form form, float *C, bool accumulate) {
  const int64_t n = w.n, tile = std::min(n, kTileRows);
  // The calling thread's buffer; OpenMP's threads write into it too.
  thread_local std::vector<float> tileBuf;
  tileBuf.resize(size_t(tile * kp));
  float *buf = tileBuf.data();
  for (int64_t r0 = 0; r0 < n; r0 += tile) {
    const int64_t rows = std::min(tile, n - r0);
    // Serial: an OpenMP team forked between the BLAS calls of this loop
    // loses time slices to the BLAS's spinning threads (measured 10x
    // slower on 2 cores); the expansion is a small part of the tile's time.
    for (int64_t i = 0; i < rows; ++i)
      expandRow(w, form, r0 + i, buf + i * kp);
    detail::sgemm(a, kp, buf, kp, /*transB=*/true, C + r0, n, M, kd, rows,
                  accumulate);
  }
}
} // namespace

void packedMatmul(const float *A, int64_t M, const PackedWeight &w, float *C,
                  bool accumulate) {
  if (M <= 0 || w.n <= 0)
    return;
  if (w.k <= 0) {
    if (!accumulate)
      std::fill(C, C + M * w.n, 0.0f);
    return;
  }
  const Form form = formOf(w);
  // kd: the columns the products run over (kp with the padding codes for
  // nibbles and bytes, whose A columns are zero; k for expanded rows).
  const int64_t kp = w.blocks() * w.blockSize;
  const int64_t kd = form == Form::expanded ? w.k : kp;
  thread_local std::vector<float> prep;
  prepareA(A, M, w, form, kp, prep);
  if (M <= kGemvMaxRows)
    packedGemv(prep.data(), M, kp, kd, w, form, C, accumulate);
  else
    packedGemm(prep.data(), M, kp, kd, w, form, C, accumulate);
}

} // namespace moert::cpu
