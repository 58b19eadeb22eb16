//===- SymbolCheck.cpp - a plan's dynamic token count ---------------------===//
//
// The differential compile of SymbolCheck.h: the plan at the maximum and the
// same model at two other token counts must agree in everything but sizes;
// the sizes that differ are fitted as a*X+b and checked at the third count.
//
//===----------------------------------------------------------------------===//

#include "moec/Conversion/SymbolCheck.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "llvm/ADT/StringExtras.h"

using namespace moec;
using moert::SymDim;
using moert::SymKind;

namespace {

std::string quoted(const std::string &s) { return "'" + s + "'"; }

/// "value 12 ('router_logits')".
std::string valueName(const moert::Plan &p, int32_t id) {
  return "value " + std::to_string(id) + " (" +
         quoted(p.values[size_t(id)].name) + ")";
}

/// "step 3 (matmul at '/gate/MatMul')".
std::string stepName(const moert::Plan &p, size_t i) {
  const moert::Step &s = p.steps[i];
  return "step " + std::to_string(i) + " (" + moert::stepKindName(s.kind()) +
         (s.loc.empty() ? "" : " at " + quoted(s.loc)) + ")";
}

/// Bytes [off, off + n) of the constant piece `ref` of `data`.
bool readBytes(moert::PlanData &data, const moert::DataRef &ref, uint64_t off,
               uint64_t n, char *dst, std::string &error) {
  size_t seg = size_t(ref.segment);
  if (seg >= data.segments.size()) {
    error = "a constant names segment " + std::to_string(ref.segment) +
            ", which the plan does not have";
    return false;
  }
  uint64_t at = ref.offset + off;
  const std::vector<char> &head = data.segments[seg];
  if (at + n <= head.size()) {
    std::memcpy(dst, head.data() + at, n);
    return true;
  }
  if (seg < data.deferred.size())
    for (const moert::PlanData::Deferred &d : data.deferred[seg])
      if (d.offset <= at && at + n <= d.offset + d.size)
        return d.fill(at - d.offset, n, dst, error);
  error = "a constant's bytes are not in the plan's data";
  return false;
}

/// Whether the constant pieces `a` (of `da`) and `b` (of `db`) hold the
/// same bytes; compared in windows, so that no weight is held whole.
bool sameBytes(moert::PlanData &da, const moert::DataRef &a,
               moert::PlanData &db, const moert::DataRef &b, bool &same,
               std::string &error) {
  same = a.bytes == b.bytes;
  constexpr uint64_t kWindow = uint64_t(16) << 20;
  std::vector<char> x, y;
  for (uint64_t off = 0; same && off < a.bytes; off += kWindow) {
    uint64_t n = std::min(kWindow, a.bytes - off);
    x.resize(n);
    y.resize(n);
    if (!readBytes(da, a, off, n, x.data(), error) ||
        !readBytes(db, b, off, n, y.data(), error))
      return false;
    same = std::memcmp(x.data(), y.data(), n) == 0;
  }
  return true;
}

/// A step's attributes as bytes (flatbuffers), the dispatch capacity and
/// the kernel's name left out: the capacity is the one attribute a token
/// count may change, and kernels are numbered as their types deduplicate
/// (checkKernelConstants compares the kernels step by step).
std::string attrBytes(const moert::Step &s) {
  moert::fb::StepAttrsUnion u = s.attrs;
  if (moert::fb::DispatchT *d = u.Asdispatch())
    d->capacity = 0;
  if (moert::fb::KernelT *k = u.Askernel())
    k->name.clear();
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(u.Pack(fbb));
  return std::string(reinterpret_cast<const char *>(fbb.GetBufferPointer()),
                     fbb.GetSize());
}

/// "" when constant `x` (of `dx`) and constant `y` (of `dy`), of different
/// shapes at two counts, are one constant cut at the count: the smaller
/// one is the box [0, size) along every dim of the larger one (positions
/// 0..S-1 of a rotary table, per-sequence index lists, the top-left
/// corner of a mask), so that at every count the constant is a box of the
/// maximum's: its first bytes when only dims of size 1 come before the
/// dims that differ. Else why not.
std::string boxDiff(const moert::Value &x, moert::PlanData &dx,
                    const moert::Value &y, moert::PlanData &dy) {
  bool xLarger = true;
  for (size_t d = 0; d < x.shape.size(); ++d)
    if (x.shape[d] != y.shape[d])
      xLarger = x.shape[d] > y.shape[d];
  const moert::Value &big = xLarger ? x : y, &small = xLarger ? y : x;
  moert::PlanData &dbig = xLarger ? dx : dy, &dsmall = xLarger ? dy : dx;
  size_t rank = big.shape.size();
  for (size_t d = 0; d < rank; ++d)
    if (small.shape[d] > big.shape[d])
      return "that grows in one dim and shrinks in another";
  uint64_t elt = moert::dtypeSize(big.dtype);
  // Runs along the last dim, at every index of the dims before it.
  uint64_t run = rank ? uint64_t(small.shape[rank - 1]) * elt : elt;
  std::vector<uint64_t> bigStride(rank, elt), smallStride(rank, elt);
  for (size_t d = rank; d-- > 1;) {
    bigStride[d - 1] = bigStride[d] * uint64_t(big.shape[d]);
    smallStride[d - 1] = smallStride[d] * uint64_t(small.shape[d]);
  }
  uint64_t runs = 1;
  for (size_t d = 0; d + 1 < rank; ++d)
    runs *= uint64_t(small.shape[d]);
  std::vector<char> a(run), b(run);
  for (size_t r = 0; r < big.data.size(); ++r) {
    for (uint64_t i = 0; i < runs && run; ++i) {
      uint64_t rest = i, atBig = 0, atSmall = 0;
      for (size_t d = rank - 1; d-- > 0;) {
        uint64_t k = rest % uint64_t(small.shape[d]);
        rest /= uint64_t(small.shape[d]);
        atBig += k * bigStride[d];
        atSmall += k * smallStride[d];
      }
      std::string err;
      if (atBig + run > big.data[r].bytes ||
          atSmall + run > small.data[r].bytes)
        return "with data of unexpected size";
      if (!readBytes(dbig, big.data[r], atBig, run, a.data(), err) ||
          !readBytes(dsmall, small.data[r], atSmall, run, b.data(), err))
        return err;
      if (std::memcmp(a.data(), b.data(), run) != 0)
        return "and its data at the smaller count is not the corner of "
               "its data at the larger one (data computed from the count)";
    }
  }
  return "";
}

/// "" when `b` (compiled at another count) has the structure of `a`: every
/// value, step, input and output alike but for their sizes, and the same
/// constants.
std::string structureDiff(const moert::Plan &a, moert::PlanData &da,
                          const moert::Plan &b, moert::PlanData &db) {
  if (a.mesh.size() != b.mesh.size() || a.values.size() != b.values.size() ||
      a.steps.size() != b.steps.size() || a.inputs.size() != b.inputs.size() ||
      a.outputs.size() != b.outputs.size())
    return "the plans have different numbers of values (" +
           std::to_string(a.values.size()) + ", " +
           std::to_string(b.values.size()) + ") or steps (" +
           std::to_string(a.steps.size()) + ", " +
           std::to_string(b.steps.size()) + ")";
  for (size_t i = 0; i < a.values.size(); ++i) {
    const moert::Value &x = a.values[i], &y = b.values[i];
    std::string what = valueName(a, int32_t(i));
    if (x.name != y.name || x.dtype != y.dtype || x.kind != y.kind ||
        x.shape.size() != y.shape.size() || x.data.size() != y.data.size())
      return what + " differs in its name, type, kind or rank";
    if (x.kind != moert::ValueKind::constant)
      continue;
    if (x.shape != y.shape) {
      if (std::string why = boxDiff(x, da, y, db); !why.empty())
        return what + " is a constant of shape " + moert::shapeString(x.shape) +
               " here and " + moert::shapeString(y.shape) + " there, " + why;
      continue;
    }
    for (size_t r = 0; r < x.data.size(); ++r) {
      bool same = false;
      std::string err;
      if (!sameBytes(da, x.data[r], db, y.data[r], same, err))
        return what + ": " + err;
      if (!same)
        return what + " is a constant whose data depends on the token count";
    }
  }
  for (size_t i = 0; i < a.steps.size(); ++i) {
    const moert::Step &x = a.steps[i], &y = b.steps[i];
    if (x.kind() != y.kind() || x.inputs != y.inputs ||
        x.outputs != y.outputs || x.loc != y.loc ||
        attrBytes(x) != attrBytes(y))
      return stepName(a, i) + " differs (its kind, operands or attributes)";
  }
  for (auto [xs, ys] :
       {std::pair{&a.inputs, &b.inputs}, std::pair{&a.outputs, &b.outputs}})
    for (size_t i = 0; i < xs->size(); ++i) {
      const moert::ModelIO &x = (*xs)[i], &y = (*ys)[i];
      if (x.name != y.name || x.dtype != y.dtype || x.value != y.value ||
          x.shape.size() != y.shape.size() || x.split.axis != y.split.axis ||
          x.split.over != y.split.over)
        return "model " + std::string(xs == &a.inputs ? "input" : "output") +
               " " + quoted(x.name) + " differs (its type, rank or split)";
    }
  return "";
}

/// Sizes s[i] at counts x[i] (i = 0, 1, 2): static when all equal, else
/// a*X+b with integral a >= 1 and b >= 0 that the first two give and the
/// third meets. "" on success, else why not.
std::string fitDim(const int64_t s[3], const int64_t x[3], bool &symbolic,
                   int64_t &a, int64_t &b) {
  symbolic = !(s[0] == s[1] && s[1] == s[2]);
  if (!symbolic)
    return "";
  int64_t dx = x[0] - x[1], ds = s[0] - s[1];
  std::string sizes = "is " + std::to_string(s[0]) + ", " +
                      std::to_string(s[1]) + " and " + std::to_string(s[2]) +
                      " at X = " + std::to_string(x[0]) + ", " +
                      std::to_string(x[1]) + " and " + std::to_string(x[2]);
  if (dx == 0 || ds % dx != 0 || ds / dx < 1)
    return sizes + ", not a*X+b with a whole a >= 1";
  a = ds / dx;
  b = s[0] - a * x[0];
  if (b < 0 || a * x[2] + b != s[2])
    return sizes + ", not a*X+b with b >= 0";
  return "";
}

/// The symbolic dims of a shape at the three counts.
std::string fitShape(const std::vector<int64_t> *shapes[3], const int64_t x[3],
                     SymKind kind, std::vector<SymDim> &out) {
  out.clear();
  for (size_t d = 0; d < shapes[0]->size(); ++d) {
    int64_t s[3] = {(*shapes[0])[d], (*shapes[1])[d], (*shapes[2])[d]};
    bool sym = false;
    int64_t a = 0, b = 0;
    if (std::string why = fitDim(s, x, sym, a, b); !why.empty())
      return "dim " + std::to_string(d) + " " + why;
    if (sym)
      out.push_back({int32_t(d), kind, a, b});
  }
  return "";
}

/// The first symbolic dim of `m` its split cuts, or null.
const SymDim *cutDim(const moert::ModelIO &m) {
  for (const SymDim &d : m.symDims)
    if (m.split.axis >= d.dim)
      return &d;
  return nullptr;
}

/// The rules a model input or output with symbolic dims follows: a dim
/// its split cuts is a*T with only 1s before it, and the split is the
/// token split's; a dim the split does not cut only when no split cuts
/// the count.
std::string ioRules(const moert::Plan &p, const moert::ModelIO &m,
                    const moert::Split &tokenSplit, bool output) {
  std::string what =
      std::string(output ? "output " : "input ") + quoted(m.name) + " " +
      moert::shapeString(m.shape) + " (split " +
      (m.split.axis < 0 ? std::string("none")
                        : "dims 0.." + std::to_string(m.split.axis)) +
      ")";
  // A split into one block (a mesh axis of size 1) cuts nothing.
  bool cuts = m.split.axis >= 0 && splitBlockCount(p, m.split) > 1;
  for (const SymDim &d : m.symDims) {
    std::string at = what + ": dim " + std::to_string(d.dim) + " (" +
                     std::to_string(d.a) + "*T+" + std::to_string(d.b) + ")";
    if (!cuts || m.split.axis < d.dim) {
      if (tokenSplit.axis >= 0)
        return at +
               " follows the token count but is not cut with the "
               "tokens, which are split over " +
               std::to_string(splitBlockCount(p, tokenSplit)) +
               " ranks: not supported yet";
      continue;
    }
    for (int32_t j = 0; j < d.dim; ++j)
      if (m.shape[size_t(j)] != 1)
        return at + " is cut with dim " + std::to_string(j) + " of size " +
               std::to_string(m.shape[size_t(j)]) +
               " before it: the ranks' blocks would cross it (give that "
               "dim 1, or use a mesh whose token split does not cut the "
               "count)";
    if (d.a < 1 || d.b != 0)
      return at + ": a dim the token split cuts must be a whole multiple "
                  "of the count (a*T)";
    if (m.split.over != tokenSplit.over)
      return at + " is cut in blocks over the mesh, but " +
             (tokenSplit.axis < 0
                  ? std::string("no input's token count is (the inputs are "
                                "split along other dims)")
                  : "over other mesh axes than the inputs' token count") +
             ": not supported yet";
  }
  return "";
}

} // namespace

int64_t moec::splitBlockCount(const moert::Plan &p, const moert::Split &split) {
  int64_t n = 1;
  for (const std::string &axis : split.over)
    n *= moert::meshAxisSize(p.mesh, axis);
  return n;
}

std::string moec::probeDiff(const moert::Plan &plan, moert::PlanData &data,
                            PlanSample &probe, int64_t W) {
  // The path: the same steps, of the same ONNX nodes.
  const moert::Plan &p = probe.plan;
  if (plan.steps.size() != p.steps.size())
    return std::to_string(p.steps.size()) + " steps instead of " +
           std::to_string(plan.steps.size());
  for (size_t i = 0; i < plan.steps.size(); ++i)
    if (plan.steps[i].kind() != p.steps[i].kind() ||
        plan.steps[i].loc != p.steps[i].loc)
      return stepName(plan, i) + " is " + stepName(p, i) + " there";
  // The same path with constants pooled differently (a size that equals
  // another of the model's at this count, a dim of 1 dropped): the kernels
  // the plan runs were checked at the compared counts, and the values do
  // not line up to compare one by one.
  if (!structureDiff(plan, data, p, probe.data).empty())
    return "";
  moert::SymValues x;
  x.T = probe.tokens;
  x.t = x.tb = probe.tokens / std::max<int64_t>(W, 1);
  auto predicted = [&](const std::vector<int64_t> &shape,
                       const std::vector<SymDim> &dims,
                       const std::vector<int64_t> &got) -> std::string {
    std::vector<SymDim> compared;
    for (const SymDim &d : dims)
      if (d.sym != moert::SymKind::tb)
        compared.push_back(d);
    std::vector<int64_t> want = moert::resolveShape(shape, compared, x);
    for (size_t d = 0; d < want.size() && d < got.size(); ++d) {
      bool tb = false;
      for (const SymDim &s : dims)
        tb |= s.dim == int32_t(d) && s.sym == moert::SymKind::tb;
      if (!tb && want[d] != got[d])
        return "has shape " + moert::shapeString(got) + ", not " +
               moert::shapeString(want);
    }
    return "";
  };
  for (size_t i = 0; i < plan.values.size(); ++i)
    if (std::string why =
            predicted(plan.values[i].shape, plan.values[i].symDims,
                      probe.plan.values[i].shape);
        !why.empty())
      return valueName(plan, int32_t(i)) + " " + why;
  for (auto [xs, ys] : {std::pair{&plan.inputs, &probe.plan.inputs},
                        std::pair{&plan.outputs, &probe.plan.outputs}})
    for (size_t i = 0; i < xs->size(); ++i)
      if (std::string why =
              predicted((*xs)[i].shape, (*xs)[i].symDims, (*ys)[i].shape);
          !why.empty())
        return "model " +
               std::string(xs == &plan.inputs ? "input " : "output ") +
               quoted((*xs)[i].name) + " " + why;
  return "";
}

bool moec::inferPlanSymbols(moert::Plan &plan, moert::PlanData &data,
                            const std::string &name, int64_t max,
                            std::vector<PlanSample> &samples,
                            const std::vector<int32_t> &roots,
                            double capacityFactor, std::string &error) {
  if (samples.size() != 2 || roots.size() != plan.values.size()) {
    error = "internal error: the dynamic token count needs two samples and "
            "the values' roots";
    return false;
  }
  for (PlanSample &s : samples)
    if (std::string why = structureDiff(plan, data, s.plan, s.data);
        !why.empty()) {
      error = "the model compiles differently at " + std::to_string(max) +
              " and " + std::to_string(s.tokens) + " tokens: " + why +
              " (shape-dependent data or structure: not supported with a "
              "dynamic token count yet)";
      return false;
    }
  const moert::Plan *plans[3] = {&plan, &samples[0].plan, &samples[1].plan};
  const int64_t T[3] = {max, samples[0].tokens, samples[1].tokens};

  // Inputs and outputs follow the global count T.
  for (std::vector<moert::ModelIO> moert::Plan::*ios :
       {&moert::Plan::inputs, &moert::Plan::outputs})
    for (size_t i = 0; i < (plan.*ios).size(); ++i) {
      moert::ModelIO &m = (plan.*ios)[i];
      const std::vector<int64_t> *shapes[3] = {
          &m.shape, &(plans[1]->*ios)[i].shape, &(plans[2]->*ios)[i].shape};
      if (std::string why = fitShape(shapes, T, SymKind::T, m.symDims);
          !why.empty()) {
        error =
            std::string(ios == &moert::Plan::inputs ? "input " : "output ") +
            quoted(m.name) + ": " + why + " (X: the token count)";
        return false;
      }
    }
  // A split into one block (mesh axes of size 1) is the whole tensor: say
  // replicated, which the runtime's rules for symbolic dims expect.
  for (std::vector<moert::ModelIO> *ios : {&plan.inputs, &plan.outputs})
    for (moert::ModelIO &m : *ios)
      if (!m.symDims.empty() && m.split.axis >= 0 &&
          splitBlockCount(plan, m.split) == 1)
        m.split = moert::Split();
  // The token split: the first input whose symbolic dim it cuts.
  moert::Split tokenSplit;
  for (const moert::ModelIO &m : plan.inputs)
    if (cutDim(m) && tokenSplit.axis < 0 && splitBlockCount(plan, m.split) > 1)
      tokenSplit = m.split;
  for (std::vector<moert::ModelIO> moert::Plan::*ios :
       {&moert::Plan::inputs, &moert::Plan::outputs})
    for (const moert::ModelIO &m : plan.*ios)
      if (std::string why =
              ioRules(plan, m, tokenSplit, ios == &moert::Plan::outputs);
          !why.empty()) {
        error = why;
        return false;
      }
  auto groupRanks = [&](llvm::StringRef axes) {
    int64_t n = 1;
    for (llvm::StringRef a : llvm::split(axes, ','))
      if (!a.empty())
        n *= moert::meshAxisSize(plan.mesh, a.str());
    return n;
  };
  // Sequence-parallel MoE layers of a model that no input splits along the
  // count: the all_slice steps that cut the count's rows (their input's
  // size along the axis differs between the counts) give each rank its
  // block t of the count (moert::tokenSplitOf); what is computed from their
  // outputs up to the all_gather follows t, the rest (replicated) T.
  moert::Split rowSplit;
  std::vector<bool> rowSliceStep(plan.steps.size(), false);
  if (tokenSplit.axis < 0)
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      // all_slice, or reduce_scatter (attention folded onto other ranks).
      int32_t axis = -1;
      std::string axes;
      if (const auto *sl = plan.steps[i].attrs.Asall_slice())
        axis = sl->axis, axes = sl->axes;
      else if (const auto *rs = plan.steps[i].attrs.Asreduce_scatter())
        axis = rs->axis, axes = rs->axes;
      if (axis < 0 || groupRanks(axes) == 1)
        continue;
      int32_t x = plan.steps[i].inputs[0];
      int64_t n[3];
      for (int k = 0; k < 3; ++k)
        n[k] = plans[k]->values[size_t(x)].shape[size_t(axis)];
      if (n[0] == n[1] && n[1] == n[2])
        continue;
      // An even split (whole sequences per rank): the block follows T too.
      int32_t y = plan.steps[i].outputs[0];
      int64_t m[3];
      for (int k = 0; k < 3; ++k)
        m[k] = plans[k]->values[size_t(y)].shape[size_t(axis)];
      bool sym = false;
      int64_t a = 0, b = 0;
      if (fitDim(m, T, sym, a, b).empty())
        continue;
      std::vector<std::string> over;
      for (llvm::StringRef a : llvm::split(axes, ','))
        over.push_back(a.str());
      if (rowSplit.axis >= 0 && rowSplit.over != over) {
        error = stepName(plan, i) +
                ": slices the token count's rows over other mesh axes (" +
                axes + ") than an earlier step (" +
                llvm::join(rowSplit.over, ",") + ")";
        return false;
      }
      rowSplit.axis = 0;
      rowSplit.over = over;
      rowSliceStep[i] = true;
    }
  int64_t W = tokenSplit.axis >= 0 ? splitBlockCount(plan, tokenSplit)
              : rowSplit.axis >= 0 ? splitBlockCount(plan, rowSplit)
                                   : 1;
  int64_t X[3];
  for (int i = 0; i < 3; ++i) {
    if (T[i] % W != 0) {
      error = "the token count " + std::to_string(T[i]) +
              " is not a multiple of the " + std::to_string(W) +
              " ranks the tokens are split over";
      return false;
    }
    X[i] = T[i] / W;
  }

  // The rows a dispatch receives, and what is computed from them until the
  // combine, follow the block bound tb; the other values this rank's t.
  // tbRoots: root value -> the step index of its dispatch.
  std::map<int32_t, size_t> tbRoots;
  auto rootOf = [&](int32_t v) {
    return v >= 0 && size_t(v) < roots.size() ? roots[size_t(v)] : -1;
  };
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const moert::Step &s = plan.steps[i];
    std::optional<size_t> from;
    if (s.kind() == moert::StepKind::dispatch)
      from = i;
    else if (s.kind() != moert::StepKind::combine)
      for (int32_t v : s.inputs)
        if (auto it = tbRoots.find(rootOf(v)); it != tbRoots.end())
          from = it->second;
    if (from)
      for (int32_t v : s.outputs)
        if (rootOf(v) >= 0)
          tbRoots.emplace(rootOf(v), *from);
  }
  // The roots of the values inside the row slices (rowSplit).
  std::set<int32_t> slicedRoots;
  if (rowSplit.axis >= 0)
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      const moert::Step &s = plan.steps[i];
      bool sliced = rowSliceStep[i];
      // The all_gather over the row split's axes joins the rows (a tp
      // all_gather inside the region keeps them sliced).
      std::vector<std::string> gathered;
      if (const auto *g = s.attrs.Asall_gather())
        for (llvm::StringRef a : llvm::split(g->axes, ','))
          gathered.push_back(a.str());
      bool joins = !gathered.empty() && gathered == rowSplit.over;
      if (!sliced && !joins)
        for (int32_t v : s.inputs)
          sliced = sliced || slicedRoots.count(rootOf(v));
      if (sliced)
        for (int32_t v : s.outputs)
          if (rootOf(v) >= 0)
            slicedRoots.insert(rootOf(v));
    }
  for (size_t i = 0; i < plan.values.size(); ++i) {
    moert::Value &v = plan.values[i];
    const std::vector<int64_t> *shapes[3] = {
        &v.shape, &plans[1]->values[i].shape, &plans[2]->values[i].shape};
    if (rowSplit.axis >= 0 && !slicedRoots.count(rootOf(int32_t(i)))) {
      // Replicated, outside the row slices: every rank holds all T rows.
      if (std::string why = fitShape(shapes, T, SymKind::T, v.symDims);
          !why.empty()) {
        error =
            valueName(plan, int32_t(i)) + ": " + why + " (X: the token count)";
        return false;
      }
      continue;
    }
    auto tb = tbRoots.find(rootOf(int32_t(i)));
    SymKind kind = tb != tbRoots.end() ? SymKind::tb : SymKind::t;
    const moert::fb::DispatchT *cap =
        tb != tbRoots.end() ? plan.steps[tb->second].attrs.Asdispatch()
                            : nullptr;
    if (cap && cap->capacity >= 0) {
      // Rows a dispatch with a capacity receives: ceil(C tb k / E) per
      // source and slot is not affine in tb. Dim 0 holds the dropless
      // bound G min(k, S) tb, clamped by the maximum's shape (the runtime
      // takes the min); the other dims must not change.
      const moert::Step &d = plan.steps[tb->second];
      int64_t G = 1;
      for (llvm::StringRef axis : llvm::split(cap->axes, ','))
        G *= moert::meshAxisSize(plan.mesh, axis.str());
      int64_t k = plan.values[size_t(d.inputs[1])].shape[1];
      std::vector<int64_t> rest[3];
      for (int j = 0; j < 3; ++j) {
        rest[j] = *shapes[j];
        rest[j][0] = 0;
      }
      const std::vector<int64_t> *restShapes[3] = {&rest[0], &rest[1],
                                                   &rest[2]};
      std::string why = fitShape(restShapes, X, kind, v.symDims);
      if (!why.empty() || !v.symDims.empty()) {
        error = valueName(plan, int32_t(i)) +
                ": rows received under a capacity change in other dims than "
                "the rows" +
                (why.empty() ? std::string() : " (" + why + ")");
        return false;
      }
      v.symDims = {{0, SymKind::tb, G * std::min(k, cap->slots_per_rank), 0}};
      continue;
    }
    if (std::string why = fitShape(shapes, X, kind, v.symDims); !why.empty()) {
      error = valueName(plan, int32_t(i)) + ": " + why + " (X: " +
              (W > 1 ? "the token count / " + std::to_string(W) + " ranks"
                     : std::string("the token count")) +
              ")";
      return false;
    }
    // A constant cut at the count (structureDiff's boxDiff) is the same
    // box on every rank: a constant the tokens are split along is uniform
    // along them (TokenDims' isUniformAlong), so every rank's block of it
    // is the first block, which the samples checked.
  }

  // Collectives along the count, and each call's capacity.
  plan.symbols = {{name, max}};
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const moert::Step &s = plan.steps[i];
    // Sequence-parallel or folded MoE layers' row slices and gathers:
    // uneven blocks of the count (moert::rowBlockStep); other splits along
    // the count must be even.
    if (std::string why; moert::rowBlockStep(plan, s, &why)) {
      if (why.empty())
        continue;
      error = stepName(plan, i) +
              ": cuts or joins the token count's rows, "
              "but " +
              why;
      return false;
    }
    if (const auto *d = s.attrs.Asdispatch(); d && d->capacity >= 0) {
      if (!(capacityFactor > 0)) {
        error = stepName(plan, i) +
                ": a capacity without its factor (--capacity-factor)";
        return false;
      }
      // Each call's capacity, ceil(C tb k / E), at most the maximum's.
      plan.steps[i].attrs.Asdispatch()->capacity_factor = capacityFactor;
    }
  }
  return true;
}
