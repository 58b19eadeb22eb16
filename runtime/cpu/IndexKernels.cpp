//===- IndexKernels.cpp - topk and scatter_elements on the CPU ------------===//
//
// The kernels of the index steps (moert/cpu/Kernels.h), with moe-eval's
// semantics (lib/Eval/EvalMoE.cpp evalTopK, evalScatterElements), which
// runtime/test/CpuIndexKernelsTest.cpp checks with plain loops.
//
//===----------------------------------------------------------------------===//

#include "moert/cpu/Kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

using namespace moert;
using cpu::ScatterReduction;

namespace {

bool isNan(float v) { return std::isnan(v); }
bool isNan(int64_t) { return false; }

template <typename T>
void topkRows(const T *x, int64_t rows, int64_t n, int64_t k, bool largest,
              T *values, int64_t *indices) {
  std::vector<int64_t> order(size_t(std::max<int64_t>(n, 0)));
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * n;
    // A strict total order (the evaluator's stable sort): NaN above every
    // number, equal elements by index.
    auto before = [&](int64_t a, int64_t b) {
      T va = xr[a], vb = xr[b];
      bool na = isNan(va), nb = isNan(vb);
      if (na != nb)
        return largest ? na : nb;
      if (!na && va != vb)
        return largest ? va > vb : va < vb;
      return a < b;
    };
    std::iota(order.begin(), order.end(), int64_t(0));
    std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
    for (int64_t j = 0; j < k; ++j) {
      values[r * k + j] = xr[order[size_t(j)]];
      indices[r * k + j] = order[size_t(j)];
    }
  }
}

} // namespace

void cpu::topk(const float *x, int64_t rows, int64_t n, int64_t k, bool largest,
               float *values, int64_t *indices) {
  topkRows(x, rows, n, k, largest, values, indices);
}

void cpu::topk(const int64_t *x, int64_t rows, int64_t n, int64_t k,
               bool largest, int64_t *values, int64_t *indices) {
  topkRows(x, rows, n, k, largest, values, indices);
}

int64_t cpu::ScatterShape::numIndices() const {
  int64_t n = 1;
  for (int64_t d : index)
    n *= d;
  return n;
}

cpu::ScatterShape cpu::scatterShape(const std::vector<int64_t> &data,
                                    const std::vector<int64_t> &index,
                                    int64_t axis) {
  ScatterShape g;
  int at = -1; // the axis among the dims kept so far
  for (size_t d = 0; d < data.size(); ++d) {
    bool isAxis = int64_t(d) == axis;
    if (!isAxis && data[d] == 1 && index[d] == 1)
      continue;
    // An inner dim that indices span whole folds into the dim outside it.
    if (!isAxis && !g.data.empty() && int(g.data.size()) - 1 != at &&
        index[d] == data[d]) {
      g.data.back() *= data[d];
      g.index.back() *= index[d];
      continue;
    }
    if (isAxis)
      at = int(g.data.size());
    g.data.push_back(data[d]);
    g.index.push_back(index[d]);
  }
  g.axis = at;
  return g;
}

namespace {
/// Combines `u` into `*o` as the evaluator does (in double, rounded to f32:
/// the same bits as the float operation for one add or multiply).
void combineF32(ScatterReduction r, float *o, float u) {
  switch (r) {
  case ScatterReduction::none:
    *o = u;
    break;
  case ScatterReduction::add:
    *o = *o + u;
    break;
  case ScatterReduction::mul:
    *o = *o * u;
    break;
  case ScatterReduction::max:
    *o = std::max(*o, u);
    break;
  case ScatterReduction::min:
    *o = std::min(*o, u);
    break;
  }
}
} // namespace

int64_t cpu::scatterElements(const ScatterShape &g, const void *indices,
                             bool indices64, const void *updates,
                             size_t eltBytes, ScatterReduction r, void *out) {
  const int rank = int(g.data.size());
  // Row-major strides of data; index positions walk an odometer.
  std::vector<int64_t> stride(size_t(rank), 1), pos(size_t(rank), 0);
  for (int d = rank - 2; d >= 0; --d)
    stride[size_t(d)] = stride[size_t(d) + 1] * g.data[size_t(d) + 1];
  const int64_t n = g.numIndices(), size = g.data[size_t(g.axis)];
  const char *upd = static_cast<const char *>(updates);
  char *o = static_cast<char *>(out);
  for (int64_t p = 0; p < n; ++p) {
    int64_t i = indices64 ? static_cast<const int64_t *>(indices)[p]
                          : static_cast<const int32_t *>(indices)[p];
    if (i < 0)
      i += size;
    if (i < 0 || i >= size)
      return p;
    int64_t at = 0;
    for (int d = 0; d < rank; ++d)
      at += (d == g.axis ? i : pos[size_t(d)]) * stride[size_t(d)];
    if (r == ScatterReduction::none)
      std::memcpy(o + at * eltBytes, upd + p * eltBytes, eltBytes);
    else
      combineF32(r, reinterpret_cast<float *>(o) + at,
                 reinterpret_cast<const float *>(upd)[p]);
    for (int d = rank - 1; d >= 0 && ++pos[size_t(d)] == g.index[size_t(d)];
         --d)
      pos[size_t(d)] = 0;
  }
  return -1;
}
