//===- PlanSymbols.cpp - dynamic token counts: rules and resolution -------===//
//
// A plan with a symbol (format version 8) runs at any token count 0..max:
// some dims of its values and model inputs/outputs follow the count
// (Value::symDims, ModelIO::symDims). This file holds verifyPlan's rules
// for them and the evaluation of a symbolic shape at one call's counts
// (docs/plan-format.md, "Dynamic token counts").
//
//===----------------------------------------------------------------------===//

#include "moert/Plan.h"

#include <algorithm>
#include <climits>
#include <cmath>

using namespace moert;

const char *moert::symKindName(SymKind k) {
  switch (k) {
  case SymKind::t:
    return "t";
  case SymKind::tb:
    return "tb";
  case SymKind::T:
    return "T";
  }
  return "?";
}

std::vector<int64_t> moert::resolveShape(const std::vector<int64_t> &shape,
                                         const std::vector<SymDim> &symDims,
                                         const SymValues &x) {
  std::vector<int64_t> r = shape;
  for (const SymDim &d : symDims) {
    int64_t v = d.a * x.of(d.sym) + d.b; // verified: no overflow up to max
    r[size_t(d.dim)] = std::min(v, shape[size_t(d.dim)]);
  }
  return r;
}

namespace {
/// The rules every symbolic dim list obeys (dims in range, each at most
/// once, a and b non-negative, the maximum shape within a * max + b unless
/// `boxed`: a box, which may reach past it); "" when they hold.
std::string symDimsError(const std::vector<SymDim> &dims,
                         const std::vector<int64_t> &shape, int64_t max,
                         bool boxed = false) {
  std::vector<bool> seen(shape.size(), false);
  for (const SymDim &d : dims) {
    std::string at = "symbolic dim " + std::to_string(d.dim);
    if (d.dim < 0 || size_t(d.dim) >= shape.size())
      return at + " is out of range for shape " + shapeString(shape);
    if (seen[size_t(d.dim)])
      return at + " is listed twice";
    seen[size_t(d.dim)] = true;
    if (int8_t(d.sym) < 0 || int8_t(d.sym) > int8_t(SymKind::T))
      return at + " follows unknown quantity " + std::to_string(int(d.sym)) +
             " (0: t, 1: tb, 2: T)";
    if (d.a < 0 || d.b < 0)
      return at + " has a negative coefficient (a=" + std::to_string(d.a) +
             ", b=" + std::to_string(d.b) + ")";
    // a * max + b without overflow.
    if ((max > 0 && d.a > (INT64_MAX - d.b) / max))
      return at + " overflows at the maximum (a=" + std::to_string(d.a) +
             ", b=" + std::to_string(d.b) + ")";
    int64_t top = d.a * max + d.b;
    if (!boxed && shape[size_t(d.dim)] > top)
      return at + " has size " + std::to_string(shape[size_t(d.dim)]) +
             ", more than " + std::to_string(d.a) + "*" + symKindName(d.sym) +
             "+" + std::to_string(d.b) + " at the maximum (" +
             std::to_string(top) + ")";
  }
  return "";
}
} // namespace

std::string moert::planSymbolsError(const Plan &plan) {
  if (plan.symbols.size() > 1)
    return "the plan has " + std::to_string(plan.symbols.size()) +
           " symbols, at most 1 is supported";
  bool hasSym = !plan.symbols.empty();
  int64_t max = hasSym ? plan.symbols[0].max : 0;
  if (hasSym) {
    const Symbol &s = plan.symbols[0];
    if (s.name.empty())
      return "the plan's symbol has no name";
    if (s.max < 0 || s.max > int64_t(kMaxTensorBytes))
      return "symbol '" + s.name + "' has maximum " + std::to_string(s.max);
    if (s.min < 0 || s.min > s.max)
      return "symbol '" + s.name + "' has minimum " + std::to_string(s.min) +
             " outside 0.." + std::to_string(s.max);
  }
  for (size_t i = 0; i < plan.values.size(); ++i) {
    const Value &v = plan.values[i];
    if (v.symDims.empty())
      continue;
    std::string what = "value " + std::to_string(i) + " ('" + v.name + "')";
    if (!hasSym)
      return what + " has symbolic dims, but the plan has no symbol";
    if (v.kind == ValueKind::constant) {
      // A constant cut at the count: a box of the maximum's. Steps read it
      // packed, its first bytes, which is the box when it has one symbolic
      // dim with only 1s before it; other boxes only kernels compiled for
      // the count read (at the maximum's strides).
      // Its first bytes when only 1s come before its first symbolic dim
      // and it has one.
      bool prefix = v.symDims.size() == 1;
      for (int32_t d = 0; d < v.symDims[0].dim && size_t(d) < v.shape.size();
           ++d)
        prefix = prefix && v.shape[size_t(d)] == 1;
      for (size_t j = 0; !prefix && j < plan.steps.size(); ++j) {
        const Step &s = plan.steps[j];
        if (std::find(s.inputs.begin(), s.inputs.end(), int32_t(i)) ==
            s.inputs.end())
          continue;
        const fb::KernelT *k = s.attrs.Askernel();
        bool symbolicKernel = false;
        for (const KernelCode &c : plan.kernels)
          symbolicKernel =
              symbolicKernel || (k && c.name == k->name && c.symbolic);
        if (!symbolicKernel)
          return what +
                 " is a constant cut at the count other than as its "
                 "first bytes (symbolic dim " +
                 std::to_string(v.symDims[0].dim) + " of " +
                 std::to_string(v.symDims.size()) +
                 ", after dims of size > 1 or with others), read by step " +
                 std::to_string(j) +
                 ", which is not a kernel compiled for the count (steps read "
                 "a constant's first bytes)";
      }
    }
    if (std::string why = symDimsError(v.symDims, v.shape, max, v.boxed);
        !why.empty())
      return what + ": " + why;
  }
  // The input whose split cuts the count (the executor's token split).
  const ModelIO *cutting = nullptr;
  for (const ModelIO &m : plan.inputs)
    for (const SymDim &d : m.symDims)
      if (!cutting && m.split.axis >= d.dim)
        cutting = &m;
  auto checkIO = [&](const ModelIO &m, bool out) -> std::string {
    if (m.symDims.empty())
      return "";
    std::string what = std::string(out ? "output '" : "input '") + m.name + "'";
    if (!hasSym)
      return what + " has symbolic dims, but the plan has no symbol";
    if (std::string why = symDimsError(m.symDims, m.shape, max); !why.empty())
      return what + ": " + why;
    for (const SymDim &d : m.symDims) {
      std::string at = what + ": symbolic dim " + std::to_string(d.dim);
      if (d.sym != SymKind::T)
        return at + " follows " + symKindName(d.sym) +
               "; a model input or output's dims follow the global count T";
      if (m.split.axis < 0)
        continue; // replicated: every rank holds all T rows
      // A split of whole dims before it (a batch of whole sequences):
      // equal blocks, every rank holds all T of its sequences; right while
      // no input's split cuts the count.
      if (d.dim > m.split.axis) {
        if (cutting)
          return at + " is not among the leading dims 0.." +
                 std::to_string(m.split.axis) +
                 " that its split cuts, but input '" + cutting->name +
                 "' is split along the count";
        continue;
      }
      // The rows of dims 0..axis are cut in blocks of T: the dim must be
      // one of them, with only 1s before it, and a whole multiple of T.
      for (int32_t j = 0; j < d.dim; ++j)
        if (m.shape[size_t(j)] != 1)
          return at + " follows dim " + std::to_string(j) + " of size " +
                 std::to_string(m.shape[size_t(j)]) +
                 " inside the split (only dims of size 1 may come first)";
      if (d.a < 1 || d.b != 0)
        return at + " is " + std::to_string(d.a) + "*T+" + std::to_string(d.b) +
               "; a split dim must be a*T with a >= 1";
    }
    return "";
  };
  for (const ModelIO &m : plan.inputs)
    if (std::string why = checkIO(m, false); !why.empty())
      return why;
  for (const ModelIO &m : plan.outputs)
    if (std::string why = checkIO(m, true); !why.empty())
      return why;
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const Step &s = plan.steps[i];
    if (const fb::DispatchT *d = s.attrs.Asdispatch()) {
      std::string what = "step " + std::to_string(i) + " (dispatch" +
                         (s.loc.empty() ? "" : " at '" + s.loc + "'") + ")";
      double c = d->capacity_factor;
      if (!(c >= 0) || std::isinf(c))
        return what + ": capacity_factor " + std::to_string(c) +
               " is not a finite number >= 0";
      if (c > 0 && !hasSym)
        return what + ": capacity_factor " + std::to_string(c) +
               " needs a dynamic token count (the plan has no symbol; a "
               "static plan gives `capacity`)";
    }
    if (std::string why; rowBlockStep(plan, s, &why) && !why.empty())
      return "step " + std::to_string(i) + " (" + stepKindName(s.kind()) +
             (s.loc.empty() ? "" : " at '" + s.loc + "'") +
             "): cuts or joins the token count's rows, but " + why;
    const fb::KernelT *kern = s.attrs.Askernel();
    if (!kern)
      continue;
    // A kernel with symbolic operands must be compiled for them (it reads
    // the counts from args[numArgs]).
    bool symbolic = false;
    for (const KernelCode &k : plan.kernels)
      if (k.name == kern->name)
        symbolic = k.symbolic;
    if (symbolic)
      continue;
    for (const std::vector<int32_t> *ops : {&s.inputs, &s.outputs})
      for (int32_t v : *ops)
        if (v >= 0 && size_t(v) < plan.values.size() &&
            !plan.values[size_t(v)].symDims.empty())
          return "step " + std::to_string(i) + " (kernel" +
                 (s.loc.empty() ? "" : " at '" + s.loc + "'") +
                 "): operand value " + std::to_string(v) + " ('" +
                 plan.values[size_t(v)].name +
                 "') has symbolic dims, but "
                 "kernel '" +
                 kern->name + "' was compiled for static shapes";
  }
  for (const KernelCode &k : plan.kernels) {
    if (!k.symbolic)
      continue;
    if (!hasSym)
      return "kernel '" + k.name +
             "' takes token counts, but the plan has no symbol";
    if (!k.launches.empty())
      return "kernel '" + k.name +
             "' takes token counts and has GPU launches; symbolic kernels "
             "are CPU code only";
  }
  return "";
}

namespace {
/// An all_slice, reduce_scatter or all_gather over more than one rank with
/// a symbolic dim along its axis that does not split evenly (whole
/// sequences per rank: the whole's dim G times the block's, of the same
/// kind, G copies at every count); its axis, mesh axes and operands.
struct RowCollective {
  int32_t axis = -1;
  std::string axes;
  const Value *whole = nullptr, *block = nullptr;
  const SymDim *w = nullptr, *b = nullptr; ///< their dims along the axis
};
bool unevenRows(const Plan &plan, const Step &step, RowCollective &r) {
  bool gather = false;
  if (const fb::AllSliceT *sl = step.attrs.Asall_slice())
    r.axis = sl->axis, r.axes = sl->axes;
  else if (const fb::ReduceScatterT *rs = step.attrs.Asreduce_scatter())
    r.axis = rs->axis, r.axes = rs->axes;
  else if (const fb::AllGatherT *g = step.attrs.Asall_gather())
    r.axis = g->axis, r.axes = g->axes, gather = true;
  else
    return false;
  if (plan.symbols.empty() || step.inputs.size() != 1 ||
      step.outputs.size() != 1)
    return false;
  for (int32_t v : {step.inputs[0], step.outputs[0]})
    if (v < 0 || size_t(v) >= plan.values.size())
      return false;
  int64_t ranks = 1;
  for (const std::string &a : splitAxes(r.axes))
    ranks *= meshAxisSize(plan.mesh, a);
  const Value &x = plan.values[size_t(step.inputs[0])];
  const Value &y = plan.values[size_t(step.outputs[0])];
  r.whole = gather ? &y : &x;
  r.block = gather ? &x : &y;
  auto at = [&](const Value &v) -> const SymDim * {
    for (const SymDim &d : v.symDims)
      if (d.dim == r.axis)
        return &d;
    return nullptr;
  };
  r.w = at(*r.whole);
  r.b = at(*r.block);
  if (ranks <= 1 || (!r.w && !r.b))
    return false;
  return !(r.w && r.b && r.w->sym == r.b->sym && r.w->a == ranks * r.b->a &&
           r.w->b == ranks * r.b->b);
}
} // namespace

Split moert::tokenSplitOf(const Plan &plan) {
  if (plan.symbols.empty())
    return {};
  for (const ModelIO &m : plan.inputs)
    for (const SymDim &d : m.symDims)
      if (m.split.axis >= d.dim)
        return m.split;
  for (const Step &s : plan.steps) {
    // The row slices: all_slice, or reduce_scatter (attention folded onto
    // other ranks than the MoE layers' rows).
    RowCollective r;
    if (s.attrs.Asall_gather() || !unevenRows(plan, s, r))
      continue;
    Split split;
    split.axis = 0;
    split.over = splitAxes(r.axes);
    return split;
  }
  return {};
}

bool moert::rowBlockStep(const Plan &plan, const Step &step,
                         std::string *rules) {
  RowCollective r;
  if (!unevenRows(plan, step, r))
    return false;
  if (!rules)
    return true;
  std::string &why = *rules;
  why.clear();
  const Value &whole = *r.whole, &block = *r.block;
  const SymDim *w = r.w, *b = r.b;
  int32_t axis = r.axis;
  std::string dim = "dim " + std::to_string(axis);
  if (!w || !b || w->sym != SymKind::T || b->sym != SymKind::t ||
      w->a != b->a || w->b != 0 || b->b != 0)
    why = dim + " of the whole must be a*T and of each block a*t";
  else if (tokenSplitOf(plan).over != splitAxes(r.axes))
    why = "its mesh axes (" + r.axes + ") are not the token split's";
  else if (whole.shape.size() != block.shape.size() || axis < 0 ||
           size_t(axis) >= whole.shape.size())
    why = "the operands' ranks differ";
  else
    for (size_t d = 0; d < whole.shape.size() && why.empty(); ++d)
      if (int32_t(d) < axis && whole.shape[d] != 1)
        why = dim + " has dim " + std::to_string(d) + " of size " +
              std::to_string(whole.shape[d]) + " before it";
      else if (int32_t(d) != axis && whole.shape[d] != block.shape[d])
        why = "the operands differ in dim " + std::to_string(d);
  return true;
}
