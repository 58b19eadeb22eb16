//===- ExecutorSymbols.cpp - running a plan at one token count ------------===//
//
// A plan with a symbol (format version 8) runs at any token count T in
// 0..max. The executor solves T from the inputs' symbolic dims, gives each
// rank its block of the token split (blocks of tb = ceil(T / W) rows over
// the split's W blocks; the last may be short or empty), and rewrites the
// shapes of its resolved copy of the plan, which the backends read through
// ExecContext::plan(). Static plans never come here.
//
//===----------------------------------------------------------------------===//

#include "moert/Executor.h"

#include <algorithm>
#include <cstring>

using namespace moert;

namespace {
/// Bytes of a model input/output per unit of T along its symbolic dim `d`
/// (inside its split: size a*T with only 1s before it).
uint64_t bytesPerToken(const ModelIO &m, const SymDim &d) {
  uint64_t n = dtypeSize(m.dtype) * uint64_t(d.a);
  for (size_t j = 0; j < m.shape.size(); ++j)
    if (int32_t(j) != d.dim)
      n *= uint64_t(m.shape[j]);
  return n;
}

/// The symbolic dim of `m` that its split cuts, or null.
const SymDim *splitSymDim(const ModelIO &m) {
  for (const SymDim &d : m.symDims)
    if (m.split.axis >= d.dim)
      return &d;
  return nullptr;
}
} // namespace

SymValues Executor::symValuesOf(int64_t rank) const {
  return symValuesAt(sym_.T, rank);
}

SymValues Executor::symValuesAt(int64_t T, int64_t rank) const {
  SymValues x;
  x.T = T;
  int64_t blocks = 1, b = 0;
  if (tokenSplit_.axis >= 0)
    b = splitBlock(plan_, tokenSplit_, rank, blocks);
  x.tb = (x.T + blocks - 1) / blocks;
  x.t = std::clamp<int64_t>(x.T - b * x.tb, 0, x.tb);
  return x;
}

void Executor::resolveSymbols(const std::map<std::string, NpyArray> &inputs) {
  const Symbol &sym = plan_.symbols[0];
  // T from every symbolic dim of every input: integral, in 0..max, and the
  // same for all of them.
  int64_t T = -1;
  std::string from;
  for (const ModelIO &m : plan_.inputs) {
    const NpyArray &a = inputs.at(m.name); // checkInputs: present, rank ok
    for (const SymDim &d : m.symDims) {
      int64_t n = a.shape[size_t(d.dim)];
      std::string what = "input '" + m.name + "': dim " +
                         std::to_string(d.dim) + " has size " +
                         std::to_string(n);
      std::string expr =
          std::to_string(d.a) + "*" + sym.name + "+" + std::to_string(d.b);
      int64_t x = -1;
      if (d.a == 0) {
        if (n != std::min(d.b, m.shape[size_t(d.dim)]))
          throw RunError(what + ", the plan says " + std::to_string(d.b));
        continue; // says nothing about T
      }
      if (n < d.b || (n - d.b) % d.a != 0)
        throw RunError(what + ", which is not " + expr + " for an integral " +
                       sym.name);
      x = (n - d.b) / d.a;
      if (x > sym.max)
        throw RunError(what + ": " + sym.name + " = " + std::to_string(x) +
                       ", more than the plan's maximum of " +
                       std::to_string(sym.max));
      if (T >= 0 && x != T)
        throw RunError(what + ", which gives " + sym.name + " = " +
                       std::to_string(x) + ", but " + from + " gives " +
                       sym.name + " = " + std::to_string(T));
      T = x;
      from = "input '" + m.name + "'";
    }
  }
  if (T < 0)
    T = sym.max; // no input carries the count: the plan's maximum
  if (T < sym.min)
    throw RunError(from + " gives " + sym.name + " = " + std::to_string(T) +
                   ", less than the plan's minimum of " +
                   std::to_string(sym.min) +
                   " (the model takes another path below it, e.g. while a "
                   "sliding window is not full, or computes an index as " +
                   sym.name + " - " + std::to_string(sym.min) + ")");
  if (symResolved_ && T == sym_.T)
    return;
  sym_.T = T;
  SymValues x = symValuesOf(rank_);
  sym_ = x;
  symResolved_ = true;
  for (size_t i = 0; i < plan_.values.size(); ++i)
    if (!plan_.values[i].symDims.empty())
      resolved_->values[i].shape =
          resolveShape(plan_.values[i].shape, plan_.values[i].symDims, x);
  for (auto [src, dst] : {std::pair{&plan_.inputs, &resolved_->inputs},
                          std::pair{&plan_.outputs, &resolved_->outputs}})
    for (size_t i = 0; i < src->size(); ++i)
      if (!(*src)[i].symDims.empty())
        (*dst)[i].shape = resolveShape((*src)[i].shape, (*src)[i].symDims, x);
}

void Executor::uploadSymbolic(const ModelIO &m, const NpyArray &a) {
  const Value &v = resolved_->values[m.value];
  uint64_t local = v.byteSize();
  const SymDim *d = splitSymDim(m);
  uint64_t offset = 0, bytes = a.data.size();
  if (d) {
    int64_t blocks = 1;
    int64_t b = splitBlock(plan_, m.split, rank_, blocks);
    int64_t tokBlocks = 1, tokB = 0;
    if (tokenSplit_.axis >= 0)
      tokB = splitBlock(plan_, tokenSplit_, rank_, tokBlocks);
    if (b != tokB || blocks != tokBlocks)
      throw RunError("input '" + m.name +
                     "': split in other blocks than the token count's "
                     "(the first split input with a symbolic dim)");
    uint64_t unit = bytesPerToken(m, *d);
    bytes = uint64_t(sym_.t) * unit;
    // An empty last block may start past the end.
    offset = bytes ? uint64_t(b) * uint64_t(sym_.tb) * unit : 0;
  } else if (m.split.axis >= 0) {
    // A split that does not cut the symbolic dim: equal blocks.
    int64_t blocks = 1;
    int64_t b = splitBlock(plan_, m.split, rank_, blocks);
    bytes = a.data.size() / uint64_t(blocks);
    offset = uint64_t(b) * bytes;
  }
  if (bytes != local || offset + bytes > a.data.size())
    throw RunError("input '" + m.name + "': this rank's block at " +
                   plan_.symbols[0].name + " = " + std::to_string(sym_.T) +
                   " is " + std::to_string(bytes) + " bytes, its value " +
                   shapeString(v.shape) + " holds " + std::to_string(local));
  if (local) // this rank's block is empty (data() may be null)
    backend_->upload(v, a.data.data() + offset, local);
}

std::vector<std::pair<std::string, NpyArray>>
Executor::gatherSymbolic(const std::vector<std::vector<char>> &all,
                         const std::vector<std::string> *only) {
  std::vector<std::pair<std::string, NpyArray>> result;
  std::vector<uint64_t> off(all.size(), 0);
  for (size_t o = 0; o < plan_.outputs.size(); ++o) {
    const ModelIO &m = plan_.outputs[o];
    if (only && std::find(only->begin(), only->end(), m.name) == only->end())
      continue; // not gathered (Executor::gatherOutputs(only))
    const Value &v = plan_.values[m.value];
    NpyArray a;
    a.dtype = npyDType(m.dtype);
    if (a.dtype.empty())
      throw RunError("output '" + m.name + "' has dtype " + dtypeName(m.dtype) +
                     ", which .npy cannot hold");
    a.shape = resolved_->outputs[o].shape;
    uint64_t global = dtypeSize(m.dtype);
    for (int64_t n : a.shape)
      global *= uint64_t(n);
    a.data.assign(global, 0);
    const SymDim *d = splitSymDim(m);
    int64_t blocks = 1;
    std::vector<bool> done;
    for (int64_t r = 0; r < int64_t(all.size()); ++r) {
      SymValues x = symValuesOf(r);
      Value rv = v;
      rv.shape = resolveShape(v.shape, v.symDims, x);
      uint64_t local = rv.byteSize();
      uint64_t at = 0;
      bool take = r == 0;
      if (m.split.axis >= 0) {
        int64_t b = splitBlock(plan_, m.split, r, blocks);
        done.resize(size_t(blocks), false);
        take = !done[size_t(b)]; // other ranks of a block hold copies
        done[size_t(b)] = true;
        at = d ? uint64_t(b) * uint64_t(x.tb) * bytesPerToken(m, *d)
               : uint64_t(b) * local;
      }
      if (off[r] + local > all[r].size() ||
          (take && local && at + local > a.data.size()))
        throw RunError("output '" + m.name + "': rank " + std::to_string(r) +
                       "'s block of " + std::to_string(local) +
                       " bytes does not fit the gathered " +
                       shapeString(a.shape));
      if (take && local)
        std::memcpy(a.data.data() + at, all[r].data() + off[r], local);
      off[r] += local;
    }
    result.push_back({m.name, std::move(a)});
  }
  return result;
}
