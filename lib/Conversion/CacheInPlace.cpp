//===- CacheInPlace.cpp - a decode plan's KV cache grown in place ---------===//
//
// See CacheInPlace.h.
//
//===----------------------------------------------------------------------===//

#include "moec/Conversion/CacheInPlace.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"

#include <algorithm>
#include <set>

using namespace mlir;
using namespace moec;

namespace {

bool isIndex(Value v, int64_t d) {
  auto i = v.getDefiningOp<linalg::IndexOp>();
  return i && int64_t(i.getDim()) == d;
}

bool isConstant(Value v, int64_t k) {
  APInt c;
  return matchPattern(v, m_ConstantInt(&c)) && c.getSExtValue() == k;
}

/// `x` of min(max(x, 0), hi) or of max(min(x, hi), 0), else `v` itself.
Value unclamped(Value v) {
  for (int round = 0; round < 2; ++round) {
    Operation *op = v.getDefiningOp();
    if (!op || !isa<arith::MinSIOp, arith::MaxSIOp>(op))
      return v;
    Value a = op->getOperand(0), b = op->getOperand(1);
    // max(x, 0): the other bound is the min's (any hi: an unselected
    // read's bound; a selected read's index is in range).
    if (isa<arith::MaxSIOp>(op) && !isConstant(b, 0))
      return v;
    v = a;
  }
  return v;
}

/// Whether `v` is the size of dim `dim` of argument `arg` (tensor.dim, as
/// checkKernelConstants rewrites a concat's offset).
bool isSizeOf(Value v, BlockArgument arg, int64_t dim) {
  auto d = v.getDefiningOp<tensor::DimOp>();
  return d && d.getSource() == arg && isConstant(d.getIndex(), dim);
}

/// Whether tensor.extract `x` reads `arg` at the loop's own indices in
/// every dim but `dim` (0 in a dim of size 1); `at` gets the index along
/// `dim`.
bool readsAlong(Value x, BlockArgument arg, int64_t dim, Value &at) {
  auto e = x.getDefiningOp<tensor::ExtractOp>();
  if (!e || e.getTensor() != arg)
    return false;
  auto type = cast<RankedTensorType>(arg.getType());
  for (auto [d, i] : llvm::enumerate(e.getIndices())) {
    if (int64_t(d) == dim)
      at = i;
    else if (!isIndex(i, int64_t(d)) &&
             !(type.getDimSize(int64_t(d)) == 1 && isConstant(i, 0)))
      return false;
  }
  return bool(at);
}

/// Whether kernel `f` is result = concat(arg `past`, arg `rows`) along
/// `dim`, as OutlineKernels writes a concatenation: one linalg.generic over
/// the result yielding select(i < size(past), past[.., i, ..],
/// rows[.., i - size(past), ..]) with clamped reads.
bool isAppend(func::FuncOp f, int past, int rows, int64_t dim) {
  if (!f || f.getNumArguments() != 2 || f.getNumResults() != 1)
    return false;
  auto ret = cast<func::ReturnOp>(f.getBody().front().getTerminator());
  auto g = ret.getOperand(0).getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 0 || g.getNumDpsInits() != 1 ||
      !g.getIndexingMapsArray()[0].isIdentity() ||
      g.getNumParallelLoops() != g.getNumLoops())
    return false;
  BlockArgument p = f.getArgument(unsigned(past));
  BlockArgument r = f.getArgument(unsigned(rows));
  auto yield = cast<linalg::YieldOp>(g.getBody()->getTerminator());
  auto sel = yield.getOperand(0).getDefiningOp<arith::SelectOp>();
  if (!sel)
    return false;
  auto cmp = sel.getCondition().getDefiningOp<arith::CmpIOp>();
  if (!cmp || cmp.getPredicate() != arith::CmpIPredicate::slt ||
      !isIndex(cmp.getLhs(), dim) || !isSizeOf(cmp.getRhs(), p, dim))
    return false;
  Value atPast, atRows;
  if (!readsAlong(sel.getTrueValue(), p, dim, atPast) ||
      !readsAlong(sel.getFalseValue(), r, dim, atRows))
    return false;
  Value i = unclamped(atPast);
  if (auto sub = i.getDefiningOp<arith::SubIOp>();
      sub && isConstant(sub.getRhs(), 0))
    i = sub.getLhs();
  if (!isIndex(i, dim))
    return false;
  auto sub = unclamped(atRows).getDefiningOp<arith::SubIOp>();
  return sub && isIndex(sub.getLhs(), dim) && sub.getRhs() == cmp.getRhs();
}

/// `shape` without its dims of size 1, and the position there of dim
/// `dim` (-1 when it is one of them).
std::vector<int64_t> squeezed(const std::vector<int64_t> &shape, int64_t dim,
                              int64_t &at) {
  std::vector<int64_t> s;
  at = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (int64_t(d) == dim)
      at = int64_t(s.size());
    if (shape[d] != 1 || int64_t(d) == dim)
      s.push_back(shape[d]);
  }
  return s;
}

/// Whether a view whose squeezed shape is `view` (its length at `at`)
/// lies in its box as the root (`root`, length at `rootAt`) does in its
/// own: the same dims after the length, any dims of the same product
/// before it (attention's [B*kv, P, D] of a [B, kv, P, D] cache), so that
/// the box's strides of both address the same element.
bool sameBoxRows(const std::vector<int64_t> &view, int64_t at,
                 const std::vector<int64_t> &root, int64_t rootAt) {
  if (at < 0 || rootAt < 0 || view[size_t(at)] != root[size_t(rootAt)] ||
      !std::equal(view.begin() + at, view.end(), root.begin() + rootAt,
                  root.end()))
    return false;
  int64_t a = 1, b = 1;
  for (int64_t d = 0; d < at; ++d)
    a *= view[size_t(d)];
  for (int64_t d = 0; d < rootAt; ++d)
    b *= root[size_t(d)];
  return a == b;
}

/// Whether step `s` (not a kernel: it reads its operands packed at the
/// call's sizes) reads every value of the pair (`dims`) as it lies in the
/// box: moert::Value::boxLiesPacked ([1, 1, P, D], one head), or a
/// batch_matmul's batch of matrices with boxed rows ([h, P, D]).
bool readsAsPacked(const moert::Plan &plan, const moert::Step &s,
                   const std::map<int32_t, int64_t> &dims) {
  for (int32_t v : s.inputs)
    if (v >= 0 && dims.count(v) && !plan.values[size_t(v)].boxLiesPacked() &&
        !(s.kind() == moert::StepKind::batch_matmul &&
          plan.values[size_t(v)].boxRowsOfBatches()))
      return false;
  return true;
}

/// Why the pair of roots `pr` (past) and `qr` (present) cannot be boxed,
/// or "" (then `writer` is the kernel step that appends, `dims` the
/// length dim of every value of the pair).
std::string whyNot(const moert::Plan &plan, mlir::ModuleOp module, int32_t pr,
                   int32_t qr, int &writer, std::map<int32_t, int64_t> &dims) {
  const moert::Value &p = plan.values[size_t(pr)];
  const moert::Value &q = plan.values[size_t(qr)];
  if (!p.outside || !q.outside || pr == qr)
    return "its past and present are not two roots outside the arena";
  if (p.symDims.size() != 1 || q.symDims.size() != 1 ||
      p.symDims[0].dim != q.symDims[0].dim ||
      p.symDims[0].sym != q.symDims[0].sym ||
      p.symDims[0].a != q.symDims[0].a || q.symDims[0].b <= p.symDims[0].b ||
      p.shape.size() != q.shape.size() || p.dtype != q.dtype)
    return "present is not past longer along one dynamic dim";
  int64_t dim = p.symDims[0].dim;
  for (size_t d = 0; d < p.shape.size(); ++d)
    if (int64_t(d) != dim && p.shape[d] != q.shape[d])
      return "past and present differ in dim " + std::to_string(d);
  // The values of the pair, with their length dim in the root's terms.
  int64_t rootAt;
  const std::map<int32_t, std::vector<int64_t>> rootSq = {
      {pr, squeezed(p.shape, dim, rootAt)},
      {qr, squeezed(q.shape, dim, rootAt)}};
  for (const moert::Value &v : plan.values) {
    int32_t r = v.rootId();
    if (r != pr && r != qr)
      continue;
    if (v.id == pr || v.id == qr) {
      dims[v.id] = dim;
      continue;
    }
    if (v.symDims.size() != 1)
      return "view v" + std::to_string(v.id) + " has no single dynamic dim";
    int64_t at;
    std::vector<int64_t> sq = squeezed(v.shape, v.symDims[0].dim, at);
    if (!sameBoxRows(sq, at, rootSq.at(r), rootAt))
      return "view v" + std::to_string(v.id) +
             " merges the cache's length with another dim";
    dims[v.id] = v.symDims[0].dim;
  }
  writer = -1;
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const moert::Step &s = plan.steps[i];
    bool touches = false, writes = false;
    for (int32_t v : s.inputs)
      touches |= v >= 0 && dims.count(v);
    for (int32_t v : s.outputs)
      writes |= v >= 0 && dims.count(v);
    if (!touches && !writes)
      continue;
    if (s.kind() != moert::StepKind::kernel &&
        (writes || !readsAsPacked(plan, s, dims)))
      return std::string("step ") + std::to_string(i) + " (" +
             moert::stepKindName(s.kind()) + ") reads or writes it";
    if (!writes)
      continue;
    if (writer >= 0 || s.outputs.size() != 1 || s.outputs[0] != qr ||
        s.inputs.size() != 2)
      return "step " + std::to_string(i) +
             " writes it otherwise than by "
             "appending rows";
    writer = int(i);
  }
  if (writer < 0)
    return "no step writes present";
  const moert::Step &w = plan.steps[size_t(writer)];
  int past = w.inputs[0] == pr ? 0 : w.inputs[1] == pr ? 1 : -1;
  if (past < 0)
    return "the step that writes present does not read past itself";
  const moert::Value &rows = plan.values[size_t(w.inputs[size_t(1 - past)])];
  std::vector<int64_t> want = q.shape;
  want[size_t(dim)] = q.symDims[0].b - p.symDims[0].b;
  if (!rows.symDims.empty() || rows.shape != want || rows.dtype != q.dtype)
    return "the rows appended are not " + moert::shapeString(want);
  auto f = module.lookupSymbol<func::FuncOp>(w.attrs.Askernel()->name);
  if (!isAppend(f, past, 1 - past, dim))
    return "kernel '" + w.attrs.Askernel()->name +
           "' is not a concatenation of past and the new rows";
  return "";
}

} // namespace

void moec::boxCachePairs(moert::Plan &plan, ModuleOp module,
                         std::vector<std::string> *skipped) {
  for (auto [i, o] : moert::cachePairs(plan)) {
    int32_t pr = plan.values[size_t(plan.inputs[i].value)].rootId();
    int32_t qr = plan.values[size_t(plan.outputs[o].value)].rootId();
    int writer;
    std::map<int32_t, int64_t> dims;
    std::string why = whyNot(plan, module, pr, qr, writer, dims);
    if (!why.empty()) {
      if (skipped)
        skipped->push_back(plan.inputs[i].name + ": " + why);
      continue;
    }
    int64_t box = plan.values[size_t(qr)].shape[size_t(dims[qr])];
    for (auto [v, d] : dims) {
      plan.values[size_t(v)].boxed = true;
      plan.values[size_t(v)].shape[size_t(d)] = box;
    }
  }
}

bool moec::appendsToCache(const moert::Plan &plan, const moert::Step &s,
                          int &past, int &rows) {
  if (s.kind() != moert::StepKind::kernel || s.outputs.size() != 1 ||
      s.inputs.size() != 2 || s.outputs[0] < 0)
    return false;
  const moert::Value &q = plan.values[size_t(s.outputs[0])];
  if (!q.boxed || q.root >= 0)
    return false;
  for (int k = 0; k < 2; ++k)
    if (s.inputs[size_t(k)] >= 0 &&
        plan.values[size_t(s.inputs[size_t(k)])].boxed) {
      past = k;
      rows = 1 - k;
      return true;
    }
  return false;
}
