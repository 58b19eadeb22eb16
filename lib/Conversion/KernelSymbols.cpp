//===- KernelSymbols.cpp - generated kernels at a dynamic token count -----===//
//
// See KernelSymbols.h.
//
//===----------------------------------------------------------------------===//

#include "moec/Conversion/KernelSymbols.h"
#include "moec/Conversion/CacheInPlace.h"
#include "moec/Conversion/SymbolCheck.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <set>
#include <tuple>

using namespace mlir;
using namespace moec;

bool KernelVariant::symbolic() const {
  if (readsCount)
    return true;
  for (const std::vector<moert::SymDim> &o : operands)
    if (!o.empty())
      return true;
  return false;
}

namespace {
/// The symbolic dims of a kernel step's operands, inputs then outputs,
/// which are boxed (constants cut at the count, a KV cache kept in place)
/// and their boxes.
std::vector<std::vector<moert::SymDim>>
signatureOf(const moert::Plan &plan, const moert::Step &s,
            std::vector<bool> &boxed, std::vector<std::vector<int64_t>> &box) {
  std::vector<std::vector<moert::SymDim>> sig;
  boxed.clear();
  box.clear();
  for (const std::vector<int32_t> *ops : {&s.inputs, &s.outputs})
    for (int32_t v : *ops) {
      const moert::Value *x = v >= 0 ? &plan.values[size_t(v)] : nullptr;
      sig.push_back(x ? x->symDims : std::vector<moert::SymDim>{});
      bool b = x && !x->symDims.empty() &&
               (x->kind == moert::ValueKind::constant || x->boxed);
      boxed.push_back(b);
      box.push_back(b ? x->shape : std::vector<int64_t>{});
    }
  return sig;
}

std::string printed(Attribute a) {
  std::string s;
  llvm::raw_string_ostream os(s);
  a.print(os);
  return s;
}

/// `a` for an error: a splat as its value, at most 80 characters.
std::string show(Attribute a) {
  if (auto d = dyn_cast<DenseElementsAttr>(a); d && d.isSplat())
    a = d.getSplatValue<Attribute>();
  std::string s = printed(a);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

/// Whether attributes `a` and `b` of the same op at two counts (in two
/// MLIR contexts: compared as text) agree in everything but types: splats
/// compare by value, other dense data by shape and bytes.
bool sameConstant(Attribute a, Attribute b) {
  if (isa<TypeAttr>(a) && isa<TypeAttr>(b))
    return true;
  auto da = dyn_cast<DenseElementsAttr>(a);
  auto db = dyn_cast<DenseElementsAttr>(b);
  if (da && db) {
    if (da.isSplat() && db.isSplat())
      return printed(da.getSplatValue<Attribute>()) ==
             printed(db.getSplatValue<Attribute>());
    return !da.isSplat() && !db.isSplat() &&
           da.getType().getShape() == db.getType().getShape() &&
           da.getRawData() == db.getRawData();
  }
  return printed(a) == printed(b);
}

std::vector<Operation *> opsOf(func::FuncOp f) {
  std::vector<Operation *> ops;
  f.walk<WalkOrder::PreOrder>([&](Operation *op) {
    if (op != f.getOperation())
      ops.push_back(op);
  });
  return ops;
}
} // namespace

std::vector<KernelVariant> moec::kernelVariants(moert::Plan &plan,
                                                ModuleOp module) {
  std::vector<KernelVariant> variants;
  std::map<std::string, std::vector<size_t>> byKernel; // -> variants
  for (moert::Step &s : plan.steps) {
    moert::fb::KernelT *k = s.attrs.Askernel();
    if (!k)
      continue;
    std::vector<bool> boxed;
    std::vector<std::vector<int64_t>> box;
    std::vector<std::vector<moert::SymDim>> sig =
        signatureOf(plan, s, boxed, box);
    int past = -1, rows = -1;
    appendsToCache(plan, s, past, rows);
    std::vector<size_t> &known = byKernel[k->name];
    const KernelVariant *match = nullptr;
    for (size_t i : known)
      if (variants[i].operands == sig && variants[i].boxed == boxed &&
          variants[i].box == box && variants[i].appendPast == past &&
          variants[i].appendRows == rows)
        match = &variants[i];
    if (match) {
      k->name = match->name;
      continue;
    }
    KernelVariant v;
    v.source = k->name;
    v.name =
        known.empty() ? k->name : k->name + "_t" + std::to_string(known.size());
    v.operands = std::move(sig);
    v.boxed = std::move(boxed);
    v.box = std::move(box);
    v.appendPast = past;
    v.appendRows = rows;
    if (auto f = module ? module.lookupSymbol<func::FuncOp>(v.source)
                        : func::FuncOp())
      v.readsCount = f.walk([](moe::TokenCountOp) {
                        return WalkResult::interrupt();
                      }).wasInterrupted();
    k->name = v.name;
    known.push_back(variants.size());
    variants.push_back(std::move(v));
  }
  return variants;
}

namespace {
/// Kernels fold equal sizes into one constant and drop dims of size 1, so
/// a per-rank count equal to another size of the model (heads, the
/// sequence length) or to 1 at one of the three counts changes their ops.
const char *kCollisionHint =
    "; if the rows per rank equal another size of the model or 1 at one of "
    "the counts compared, another --max-tokens avoids that";

/// An integer constant of a kernel that is the size of dim `dim` of
/// argument `arg` plus `offset` at every count (a concat's offset, a clamp
/// at `size - 1`, a negative index's wrap, a position).
struct SizeConstant {
  Operation *op;
  unsigned arg;
  int64_t dim, offset;
};

/// The integer values of `ops` (one constant per count), or none.
std::optional<SmallVector<int64_t>> integerValues(ArrayRef<Operation *> ops) {
  SmallVector<int64_t> c;
  for (Operation *op : ops) {
    auto k = dyn_cast<arith::ConstantOp>(op);
    auto v = k ? dyn_cast<IntegerAttr>(k.getValue()) : IntegerAttr();
    if (!v || (!v.getType().isIndex() && !v.getType().isInteger(64) &&
               !v.getType().isInteger(32)))
      return std::nullopt;
    c.push_back(v.getValue().getSExtValue());
  }
  return c;
}

/// The (arg, dim, offset) with c[i] = size of `dim` of `arg` in funcs[i] +
/// offset for every i, over a dim whose size differs between the funcs.
std::optional<SizeConstant> sizeConstant(ArrayRef<func::FuncOp> funcs,
                                         ArrayRef<Operation *> ops) {
  std::optional<SmallVector<int64_t>> values = integerValues(ops);
  if (!values)
    return std::nullopt;
  SmallVector<int64_t> &c = *values;
  func::FuncOp f = funcs[0];
  for (unsigned arg = 0; arg < f.getNumArguments(); ++arg) {
    SmallVector<RankedTensorType> types;
    for (func::FuncOp g : funcs)
      if (auto t = dyn_cast<RankedTensorType>(g.getArgument(arg).getType());
          t && t.hasStaticShape())
        types.push_back(t);
    if (types.size() != funcs.size())
      continue;
    for (int64_t d = 0; d < types[0].getRank(); ++d) {
      bool varies = false, fits = true;
      int64_t offset = c[0] - types[0].getDimSize(d);
      for (size_t i = 1; i < types.size(); ++i) {
        varies |= types[i].getDimSize(d) != types[0].getDimSize(d);
        fits &= c[i] - types[i].getDimSize(d) == offset;
      }
      if (varies && fits)
        return SizeConstant{ops[0], arg, d, offset};
    }
  }
  return std::nullopt;
}
/// An integer constant of a kernel that is a * X + b at every count, X the
/// count of kind `kind` (a position computed from the sequence length that
/// no operand's size gives).
struct CountConstant {
  Operation *op;
  moert::SymKind kind;
  int64_t a, b;
};

/// The constant of `ops` as a * X + b (a >= 1) over the counts `T` (the
/// global counts the plans were compiled at): X = T when the token split
/// has W = 1 block, else X = t = T / W (this rank's rows: kernels compute
/// from their operands, which hold a rank's block).
std::optional<CountConstant> countConstant(ArrayRef<Operation *> ops,
                                           ArrayRef<int64_t> T, int64_t W) {
  std::optional<SmallVector<int64_t>> c = integerValues(ops);
  if (!c || T.size() != c->size() || T.size() < 3)
    return std::nullopt;
  SmallVector<int64_t> X;
  for (int64_t n : T)
    X.push_back(n / W);
  int64_t dx = X[0] - X[1], dc = (*c)[0] - (*c)[1];
  if (dx == 0 || dc % dx != 0 || dc / dx < 1)
    return std::nullopt;
  int64_t a = dc / dx, b = (*c)[0] - a * X[0];
  for (size_t i = 0; i < X.size(); ++i)
    if (a * X[i] + b != (*c)[i])
      return std::nullopt;
  return CountConstant{ops[0], W == 1 ? moert::SymKind::T : moert::SymKind::t,
                       a, b};
}

/// Replaces integer constant `op` by index `v` (cast to an i64 or i32
/// position where `op` is one).
void replaceConstant(OpBuilder &b, Operation *op, Value v) {
  Type t = op->getResult(0).getType();
  if (!t.isIndex())
    v = arith::IndexCastOp::create(b, op->getLoc(), t, v);
  op->getResult(0).replaceAllUsesWith(v);
  op->erase();
}

/// The blocks of the plan's token split (the first input whose split cuts
/// one of its symbolic dims), as inferPlanSymbols finds them.
int64_t tokenBlocks(const moert::Plan &plan) {
  for (const moert::ModelIO &m : plan.inputs)
    for (const moert::SymDim &d : m.symDims)
      if (m.split.axis >= d.dim && splitBlockCount(plan, m.split) > 1)
        return splitBlockCount(plan, m.split);
  return 1;
}

/// The least X (of a symbolic dim or count) with a * X + b >= 0, as a
/// global count: X itself for T, X blocks of W for a rank's count.
int64_t leastCount(int64_t a, int64_t b, moert::SymKind kind, int64_t W) {
  if (b >= 0 || a < 1)
    return 0;
  return (-b + a - 1) / a * (kind == moert::SymKind::T ? 1 : W);
}
} // namespace

bool moec::checkKernelConstants(ModuleOp max, const moert::Plan &plan,
                                int64_t maxTokens, ArrayRef<ModuleOp> others,
                                ArrayRef<const moert::Plan *> otherPlans,
                                ArrayRef<int64_t> counts, int64_t &minCount,
                                std::string &error) {
  std::set<std::vector<std::string>> done;
  std::vector<SizeConstant> sizes;
  std::vector<CountConstant> countConstants;
  SmallVector<int64_t> allCounts = {maxTokens};
  allCounts.append(counts.begin(), counts.end());
  int64_t W = tokenBlocks(plan);
  minCount = 0;
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const moert::fb::KernelT *k = plan.steps[i].attrs.Askernel();
    if (!k)
      continue;
    std::string where =
        "step " + std::to_string(i) + " (kernel '" + k->name + "'" +
        (plan.steps[i].loc.empty() ? "" : " at '" + plan.steps[i].loc + "'") +
        ")";
    // The kernel at the maximum, then at each other count.
    std::vector<std::string> names = {k->name};
    SmallVector<func::FuncOp> funcs = {max.lookupSymbol<func::FuncOp>(k->name)};
    for (size_t o = 0; o < others.size(); ++o) {
      const moert::fb::KernelT *ko = otherPlans[o]->steps[i].attrs.Askernel();
      names.push_back(ko ? ko->name : "");
      ModuleOp other = others[o];
      funcs.push_back(ko ? other.lookupSymbol<func::FuncOp>(ko->name)
                         : func::FuncOp());
    }
    if (!done.insert(names).second)
      continue;
    std::vector<std::vector<Operation *>> ops;
    for (func::FuncOp f : funcs)
      ops.push_back(f ? opsOf(f) : std::vector<Operation *>{});
    for (size_t o = 1; o < funcs.size(); ++o) {
      std::string at = "at " + std::to_string(maxTokens) + " and " +
                       std::to_string(counts[o - 1]) + " tokens";
      if (!funcs[0] || !funcs[o] || ops[o].size() != ops[0].size() ||
          funcs[o].getNumArguments() != funcs[0].getNumArguments()) {
        error = where + " compiles differently " + at +
                " (shape-dependent structure: not supported with a dynamic "
                "token count yet" +
                kCollisionHint + ")";
        return false;
      }
    }
    for (size_t j = 0; j < ops[0].size(); ++j) {
      SmallVector<Operation *> at;
      for (auto &list : ops)
        at.push_back(list[j]);
      Operation *a = at[0];
      std::optional<SizeConstant> size;
      std::optional<CountConstant> count;
      for (size_t o = 1; o < at.size(); ++o) {
        Operation *b = at[o];
        std::string when = std::to_string(maxTokens) + " and " +
                           std::to_string(counts[o - 1]) + " tokens";
        if (a->getName().getStringRef() != b->getName().getStringRef() ||
            a->getAttrs().size() != b->getAttrs().size()) {
          error = where + " compiles differently at " + when + " at its " +
                  a->getName().getStringRef().str() + " (" +
                  b->getName().getStringRef().str() +
                  " there; shape-dependent structure: not supported with a "
                  "dynamic token count yet" +
                  kCollisionHint + ")";
          return false;
        }
        for (size_t n = 0; n < a->getAttrs().size(); ++n) {
          NamedAttribute na = a->getAttrs()[n], nb = b->getAttrs()[n];
          if (na.getName().strref() == nb.getName().strref() &&
              sameConstant(na.getValue(), nb.getValue()))
            continue;
          // An index that follows an operand's size: read at run time.
          if (!size)
            size = sizeConstant(funcs, at);
          if (size)
            continue;
          // A value computed from the count itself: read at run time.
          if (!count)
            count = countConstant(at, allCounts, W);
          if (count)
            continue;
          error = where + ": " + a->getName().getStringRef().str() + " holds " +
                  na.getName().str() + " " + show(na.getValue()) + " at " +
                  std::to_string(maxTokens) + " tokens, but " +
                  show(nb.getValue()) + " at " + std::to_string(counts[o - 1]) +
                  " tokens (a constant computed from the token count, e.g. "
                  "a scale by the sequence length: not supported with a "
                  "dynamic token count yet)";
          return false;
        }
      }
      // The least count at which the constant is not negative (an index
      // below 0 reads outside its operand): count - 4 is a sliding
      // window's start, valid from 4 tokens on.
      if (size) {
        sizes.push_back(*size);
        const moert::Step &st = plan.steps[i];
        size_t nIn = st.inputs.size(), arg = size->arg;
        int32_t id = arg < nIn                       ? st.inputs[arg]
                     : arg - nIn < st.outputs.size() ? st.outputs[arg - nIn]
                                                     : -1;
        if (id >= 0)
          for (const moert::SymDim &d : plan.values[size_t(id)].symDims)
            if (d.dim == size->dim)
              minCount = std::max(
                  minCount, leastCount(d.a, d.b + size->offset, d.sym, W));
      } else if (count) {
        countConstants.push_back(*count);
        minCount =
            std::max(minCount, leastCount(count->a, count->b, count->kind, W));
      }
    }
  }
  // Each such constant becomes the operand's size (plus its offset), which
  // dynamizeKernel's views make the actual one.
  std::set<Operation *> rewritten;
  for (const SizeConstant &s : sizes) {
    if (!rewritten.insert(s.op).second)
      continue;
    auto f = s.op->getParentOfType<func::FuncOp>();
    OpBuilder b = OpBuilder::atBlockBegin(&f.getBody().front());
    Location loc = s.op->getLoc();
    Value v = tensor::DimOp::create(b, loc, f.getArgument(s.arg), s.dim);
    if (s.offset)
      v = arith::AddIOp::create(
          b, loc, v, arith::ConstantIndexOp::create(b, loc, s.offset));
    replaceConstant(b, s.op, v);
  }
  // The others read the count (moe.token_count, from the counts operand
  // dynamizeKernel adds).
  for (const CountConstant &c : countConstants) {
    if (!rewritten.insert(c.op).second)
      continue;
    auto f = c.op->getParentOfType<func::FuncOp>();
    OpBuilder b = OpBuilder::atBlockBegin(&f.getBody().front());
    Location loc = c.op->getLoc();
    Value v = moe::TokenCountOp::create(b, loc, b.getIndexType(),
                                        b.getI64IntegerAttr(int64_t(c.kind)));
    if (c.a != 1)
      v = arith::MulIOp::create(b, loc, v,
                                arith::ConstantIndexOp::create(b, loc, c.a));
    if (c.b)
      v = arith::AddIOp::create(b, loc, v,
                                arith::ConstantIndexOp::create(b, loc, c.b));
    replaceConstant(b, c.op, v);
  }
  return true;
}

namespace {
/// An append variant's body (KernelVariant::appendPast): its output is its
/// past operand's buffer (one boxed buffer, past's rows already in place),
/// so of the concatenation `original` only the new rows remain to write,
/// at position size(past) along the cache's dim.
LogicalResult appendInPlace(func::FuncOp f, const KernelVariant &variant,
                            ArrayRef<Operation *> original,
                            const std::map<size_t, Value> &views,
                            std::string &error) {
  size_t past = size_t(variant.appendPast), rows = size_t(variant.appendRows);
  size_t out = variant.operands.size() - 1;
  auto pv = views.find(past), ov = views.find(out);
  if (variant.operands.size() != 3 || pv == views.end() || ov == views.end() ||
      !variant.operands[rows].empty() || variant.operands[past].size() != 1) {
    error = "kernel '" + variant.name +
            "': an in-place cache append needs a dynamic past and present "
            "and static rows";
    return failure();
  }
  for (Operation *op : llvm::reverse(original)) {
    op->dropAllUses();
    op->erase();
  }
  Block &entry = f.getBody().front();
  OpBuilder b(entry.getTerminator());
  Location loc = f.getLoc();
  Value src = f.getArgument(unsigned(rows));
  auto rowsType = cast<MemRefType>(src.getType());
  int64_t rank = rowsType.getRank(), dim = variant.operands[past][0].dim;
  SmallVector<OpFoldResult> offsets(rank, b.getIndexAttr(0)), sizes,
      strides(rank, b.getIndexAttr(1));
  for (int64_t d = 0; d < rank; ++d)
    sizes.push_back(b.getIndexAttr(rowsType.getDimSize(d)));
  offsets[size_t(dim)] =
      memref::DimOp::create(b, loc, pv->second, dim).getResult();
  Value at =
      memref::SubViewOp::create(b, loc, ov->second, offsets, sizes, strides);
  linalg::CopyOp::create(b, loc, src, at);
  return success();
}
} // namespace

LogicalResult moec::dynamizeKernel(func::FuncOp f, const KernelVariant &variant,
                                   std::string &error) {
  std::string who = "kernel '" + variant.name + "'";
  if (f.getNumArguments() != variant.operands.size() ||
      f.getNumResults() != 0) {
    error = who + ": " + std::to_string(f.getNumArguments()) +
            " buffer operands after bufferization, the plan passes " +
            std::to_string(variant.operands.size());
    return failure();
  }
  MLIRContext *ctx = f.getContext();
  Location loc = f.getLoc();
  Block &entry = f.getBody().front();
  auto countsType = MemRefType::get({3}, IntegerType::get(ctx, 64));
  if (failed(f.insertArgument(f.getNumArguments(), countsType, {}, loc))) {
    error = who + ": cannot add the token-count operand";
    return failure();
  }
  Value counts = entry.getArguments().back();
  // The kernel's own ops (an append variant replaces them).
  std::vector<Operation *> original;
  for (Operation &op : entry.without_terminator())
    original.push_back(&op);
  std::map<size_t, Value> views; // operand -> its view
  OpBuilder b = OpBuilder::atBlockBegin(&entry);
  std::map<int, Value> xs; // SymKind -> index
  auto countOf = [&](moert::SymKind k) {
    auto it = xs.find(int(k));
    if (it != xs.end())
      return it->second;
    Value i = arith::ConstantIndexOp::create(b, loc, int64_t(k));
    Value x = memref::LoadOp::create(b, loc, counts, ValueRange{i});
    Value idx = arith::IndexCastOp::create(b, loc, b.getIndexType(), x);
    xs[int(k)] = idx;
    return idx;
  };
  auto cst = [&](int64_t v) -> Value {
    return arith::ConstantIndexOp::create(b, loc, v);
  };

  for (size_t i = 0; i < variant.operands.size(); ++i) {
    const std::vector<moert::SymDim> &syms = variant.operands[i];
    if (syms.empty())
      continue;
    BlockArgument arg = f.getArgument(unsigned(i));
    auto type = dyn_cast<MemRefType>(arg.getType());
    if (!type || !type.getLayout().isIdentity() || !type.hasStaticShape()) {
      error = who + ": operand " + std::to_string(i) +
              " is not a static packed buffer after bufferization";
      return failure();
    }
    int64_t rank = type.getRank();
    SmallVector<OpFoldResult> sizes;
    SmallVector<int64_t> shape(type.getShape());
    for (int64_t d = 0; d < rank; ++d)
      sizes.push_back(b.getIndexAttr(shape[size_t(d)]));
    for (const moert::SymDim &s : syms) {
      if (s.dim < 0 || s.dim >= rank) {
        error = who + ": operand " + std::to_string(i) + " has no dim " +
                std::to_string(s.dim);
        return failure();
      }
      Value x = countOf(s.sym);
      Value v = s.a == 1 ? x : arith::MulIOp::create(b, loc, x, cst(s.a));
      if (s.b)
        v = arith::AddIOp::create(b, loc, v, cst(s.b));
      v = arith::MinSIOp::create(b, loc, v, cst(shape[size_t(s.dim)]));
      sizes[size_t(s.dim)] = v;
      shape[size_t(s.dim)] = ShapedType::kDynamic;
    }
    // Packed strides of the actual sizes; a boxed operand keeps its box's.
    bool boxed = i < variant.boxed.size() && variant.boxed[i];
    const std::vector<int64_t> *box =
        boxed && i < variant.box.size() && variant.box[i].size() == size_t(rank)
            ? &variant.box[i]
            : nullptr;
    SmallVector<OpFoldResult> strides(rank, OpFoldResult());
    SmallVector<int64_t> staticStrides(rank, 0);
    OpFoldResult run = b.getIndexAttr(1);
    for (int64_t d = rank - 1; d >= 0; --d) {
      strides[size_t(d)] = run;
      std::optional<int64_t> r = getConstantIntValue(run);
      staticStrides[size_t(d)] = r ? *r : ShapedType::kDynamic;
      std::optional<int64_t> sz =
          boxed ? std::optional<int64_t>(box ? (*box)[size_t(d)]
                                             : type.getDimSize(d))
                : getConstantIntValue(sizes[size_t(d)]);
      if (r && sz)
        run = b.getIndexAttr(*r * *sz);
      else
        run = arith::MulIOp::create(
                  b, loc, getValueOrCreateConstantIndexOp(b, loc, run),
                  getValueOrCreateConstantIndexOp(b, loc, sizes[size_t(d)]))
                  .getResult();
    }
    auto viewType = MemRefType::get(
        shape, type.getElementType(),
        StridedLayoutAttr::get(ctx, 0, staticStrides), type.getMemorySpace());
    auto view = memref::ReinterpretCastOp::create(
        b, loc, viewType, arg, b.getIndexAttr(0), sizes, strides);
    arg.replaceAllUsesExcept(view.getResult(), view);
    views[i] = view.getResult();
    for (Operation *user : view->getUsers())
      if (!isa<linalg::LinalgOp, memref::LoadOp, memref::StoreOp,
               memref::DimOp>(user)) {
        error = who + ": operand " + std::to_string(i) +
                " follows the token count and is used by " +
                user->getName().getStringRef().str() +
                ", which kernels with a dynamic token count do not take yet";
        return failure();
      }
  }

  if (variant.appendPast >= 0 &&
      failed(appendInPlace(f, variant, original, views, error)))
    return failure();

  // Counts the kernel computes with (checkKernelConstants).
  SmallVector<moe::TokenCountOp> reads;
  f.walk([&](moe::TokenCountOp op) { reads.push_back(op); });
  for (moe::TokenCountOp op : reads) {
    op.getResult().replaceAllUsesWith(countOf(moert::SymKind(op.getKind())));
    op.erase();
  }

  // Each linalg loop runs over dims that are all symbolic or all fixed:
  // the loop bound comes from one of them.
  WalkResult r = f.walk([&](linalg::LinalgOp op) {
    SmallVector<int> kind(op.getNumLoops(), 0); // 1 fixed, 2 symbolic
    for (OpOperand &o : op->getOpOperands()) {
      auto t = dyn_cast<ShapedType>(o.get().getType());
      if (!t || (!op.isDpsInput(&o) && !op.isDpsInit(&o)))
        continue;
      AffineMap m = op.getMatchingIndexingMap(&o);
      for (unsigned d = 0; d < m.getNumResults(); ++d) {
        auto e = dyn_cast<AffineDimExpr>(m.getResult(d));
        if (!e)
          continue;
        int k = t.isDynamicDim(d) ? 2 : 1;
        int &seen = kind[e.getPosition()];
        if (seen && seen != k) {
          error = who + ": a loop of its " +
                  op->getName().getStringRef().str() +
                  " runs over a dim that follows the token count in one "
                  "operand and a fixed dim in another";
          return WalkResult::interrupt();
        }
        seen = k;
      }
    }
    return WalkResult::advance();
  });
  return failure(r.wasInterrupted());
}
