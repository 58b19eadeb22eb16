//===- ToPlan.cpp - lowering the per-rank program to a .moeplan -----------===//
//
// The plan's values (temps, views, constants and per-rank weight slices),
// the liveness memory plan, the model inputs and outputs and the generated
// kernels' code; the steps themselves are ToPlanSteps.cpp.
//
//===----------------------------------------------------------------------===//

#include "ToPlanBuilder.h"
#include "moec/Analysis/ConstantBytes.h"
#include "moec/Analysis/Weights.h"
#include "moec/Conversion/KernelCodegen.h"
#include "moec/Conversion/KernelSymbols.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>

using namespace mlir;
using namespace moec;
using namespace moec::toplan;

namespace {
constexpr uint64_t kAlign = 64;
uint64_t alignUp(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }
} // namespace

namespace moec::toplan {

bool toDType(Type t, moert::DType &out) {
  if (t.isF32())
    out = moert::DType::f32;
  else if (t.isF16())
    out = moert::DType::f16;
  else if (t.isBF16())
    out = moert::DType::bf16;
  else if (t.isInteger(64))
    out = moert::DType::i64;
  else if (t.isInteger(32))
    out = moert::DType::i32;
  else if (t.isUnsignedInteger(8))
    out = moert::DType::u8; // packed weight codes (moe.dequantize)
  else if (t.isInteger(1))
    out = moert::DType::u8; // i1: one byte, 0 or 1 (as LLVM stores it)
  else
    return false;
  return true;
}

int32_t PlanBuilder::addValue(Value v, moert::ValueKind kind, StringRef name) {
  auto t = cast<RankedTensorType>(v.getType());
  moert::Value pv;
  pv.id = plan.values.size();
  pv.name = name.str();
  toDType(t.getElementType(), pv.dtype);
  for (int64_t d : t.getShape())
    pv.shape.push_back(d);
  pv.kind = kind;
  plan.values.push_back(pv);
  ids[v] = pv.id;
  if (kind != moert::ValueKind::constant) {
    root[pv.id] = pv.id;
    live[pv.id] = {opIndex, opIndex};
  }
  return pv.id;
}

LogicalResult PlanBuilder::lookup(Value v, Operation *op, int32_t &id) {
  auto it = ids.find(v);
  if (it == ids.end())
    return op->emitError("plan lowering: an operand has no plan value "
                         "(produced by an op the plan cannot express)");
  id = it->second;
  auto r = root.find(id);
  if (r != root.end())
    live[r->second].second = std::max(live[r->second].second, opIndex);
  return success();
}

int32_t PlanBuilder::optional(Value v, Operation *op, LogicalResult &ok) {
  if (!v)
    return -1;
  int32_t id = -1;
  if (failed(lookup(v, op, id)))
    ok = failure();
  return id;
}

LogicalResult PlanBuilder::alias(Value v, Value of, Operation *op) {
  int32_t src;
  if (failed(lookup(of, op, src)))
    return failure();
  moert::Value copy = plan.values[src];
  auto t = cast<RankedTensorType>(v.getType());
  copy.id = plan.values.size();
  copy.shape.assign(t.getShape().begin(), t.getShape().end());
  if (copy.kind == moert::ValueKind::input ||
      copy.kind == moert::ValueKind::output)
    copy.kind = moert::ValueKind::temp;
  plan.values.push_back(copy);
  ids[v] = copy.id;
  if (copy.kind != moert::ValueKind::constant)
    root[copy.id] = root[src];
  return success();
}

uint64_t PlanBuilder::appendData(int32_t segment, ArrayRef<char> bytes) {
  return data.append(size_t(segment), bytes.data(), bytes.size());
}

/// Appends to `segment` the bytes of constant `attr` that `runs` name
/// (byte offset into the constant, or -1 for zeros; length), concatenated.
/// Small results are copied now; larger ones are read from the constant
/// (a mapped file, a lazy weight) only while the plan is written, in
/// windows, so that no weight is ever held whole (moec/Analysis/Weights.h).
int32_t PlanBuilder::segmentFor(const std::vector<int32_t> &ranks) {
  if (ranks.size() == 1)
    return 1 + ranks[0];
  if (int64_t(ranks.size()) == spec.worldSize())
    return 0;
  auto [it, fresh] = groupSegment.try_emplace(ranks, 0);
  if (fresh) {
    it->second = int32_t(plan.segments.size());
    moert::Segment seg;
    seg.name = "group" + std::to_string(groupSegment.size() - 1);
    seg.ranks = ranks;
    plan.segments.push_back(seg);
    data.segments.resize(plan.segments.size());
  }
  return it->second;
}

LogicalResult PlanBuilder::appendPerRank(int32_t id, Attribute attr,
                                         std::vector<std::vector<Run>> runs,
                                         uint64_t bytes) {
  // Ranks that hold the same bytes (the data-parallel replicas of an
  // expert-parallel slice) share one copy in a segment they all map.
  std::map<std::vector<Run>, std::vector<int32_t>> groups;
  for (size_t r = 0; r < runs.size(); ++r)
    groups[runs[r]].push_back(int32_t(r));
  std::vector<moert::DataRef> refs(runs.size());
  for (auto &[key, ranks] : groups) {
    moert::DataRef ref;
    ref.segment = segmentFor(ranks);
    ref.offset = appendRuns(ref.segment, attr, key);
    ref.bytes = bytes;
    if (ref.offset == uint64_t(-1))
      return failure();
    for (int32_t r : ranks)
      refs[size_t(r)] = ref;
  }
  plan.values[id].data = std::move(refs);
  return success();
}

uint64_t PlanBuilder::appendRuns(int32_t segment, Attribute attr,
                                 std::vector<Run> runs) {
  // Adjacent runs merge.
  std::vector<Run> merged;
  for (const Run &r : runs) {
    if (r.len == 0)
      continue;
    if (!merged.empty() && merged.back().src >= 0 && r.src >= 0 &&
        merged.back().src + int64_t(merged.back().len) == r.src) {
      merged.back().len += r.len;
      continue;
    }
    if (!merged.empty() && merged.back().src < 0 && r.src < 0) {
      merged.back().len += r.len;
      continue;
    }
    merged.push_back(r);
  }
  // Where each run starts in the output.
  auto starts = std::make_shared<std::vector<uint64_t>>();
  uint64_t total = 0;
  for (const Run &r : merged) {
    starts->push_back(total);
    total += r.len;
  }
  auto shared = std::make_shared<std::vector<Run>>(std::move(merged));
  auto fill = [attr, shared, starts](uint64_t off, uint64_t n, char *dst,
                                     std::string &err) {
    const std::vector<Run> &rs = *shared;
    size_t k = size_t(std::upper_bound(starts->begin(), starts->end(), off) -
                      starts->begin()) -
               1;
    while (n > 0 && k < rs.size()) {
      uint64_t in = off - (*starts)[k];
      uint64_t take = std::min(n, rs[k].len - in);
      if (rs[k].src < 0)
        std::memset(dst, 0, take);
      else if (failed(
                   readConstant(attr, uint64_t(rs[k].src) + in, take, dst))) {
        err = "cannot read the weight's bytes";
        return false;
      }
      dst += take;
      off += take;
      n -= take;
      ++k;
    }
    // The mapped weight pages read are dropped again: clean file pages.
    releaseMappedPages();
    return n == 0;
  };
  if (total < kDeferBytes) {
    std::vector<char> bytes(total);
    std::string err;
    if (total > 0 && !fill(0, total, bytes.data(), err))
      return uint64_t(-1);
    return appendData(segment, bytes);
  }
  return data.appendDeferred(size_t(segment), total, fill);
}

LogicalResult PlanBuilder::addConstant(arith::ConstantOp c) {
  auto t = dyn_cast<RankedTensorType>(c.getType());
  if (!t)
    return success(); // scalars: only fill values, handled by their users
  constAttr[c.getResult()] = c.getValue();
  // Constants read only by moe.local_weights are not stored whole.
  bool onlyLocal = !c->use_empty() && llvm::all_of(c->getUsers(), [](auto *u) {
    return isa<moe::LocalWeightsOp, moe::TpSliceOp>(u);
  });
  // Shapes of reshapes only (a reshaped weight is its source: stored).
  bool onlyShapes =
      !c->use_empty() && llvm::all_of(c->getUses(), [](OpOperand &u) {
        auto r = dyn_cast<tensor::ReshapeOp>(u.getOwner());
        return r && u.get() == r.getShape();
      });
  if (onlyLocal || onlyShapes || c->use_empty())
    return success();
  moert::DType dt;
  if (!toDType(t.getElementType(), dt))
    return c.emitError("plan lowering: unsupported constant of type ") << t;
  uint64_t size = uint64_t(t.getNumElements()) * moert::dtypeSize(dt);
  moert::DataRef ref;
  ref.segment = 0;
  if (constantView(c.getValue()) || lazyWeightOf(c.getValue())) {
    // A blob or a lazy weight: streamed when large.
    ref.offset = appendRuns(0, c.getValue(), {{0, size}});
  } else {
    FailureOr<std::vector<char>> read = constantBytes(c);
    if (failed(read) || read->size() != size)
      return c.emitError("plan lowering: unsupported constant of type ") << t;
    ref.offset = appendData(0, *read);
  }
  if (ref.offset == uint64_t(-1))
    return c.emitError("plan lowering: the constant's data is not readable");
  int32_t id =
      addValue(c.getResult(), moert::ValueKind::constant, nodeName(c.getLoc()));
  ref.bytes = size;
  plan.values[id].data.push_back(ref);
  return success();
}

LogicalResult PlanBuilder::addLocalWeights(moe::LocalWeightsOp op) {
  auto in = cast<RankedTensorType>(op.getWeights().getType());
  auto out = cast<RankedTensorType>(op.getType());
  Attribute attr = constAttr.lookup(op.getWeights());
  if (!attr)
    return op.emitError("plan lowering: moe.local_weights of a value that "
                        "is not a constant");
  moert::DType dt;
  if (!toDType(in.getElementType(), dt))
    return op.emitError("plan lowering: unsupported weight type ") << in;
  size_t elt = moert::dtypeSize(dt);
  int32_t id = addValue(op.getResult(), moert::ValueKind::constant,
                        nodeName(op.getLoc()));
  moe::PlacementAttr p = op.getPlacement();
  ArrayRef<int16_t> splitAxes = op.getSplitAxes();
  bool split = !splitAxes.empty();
  int64_t splitDim = op.getSplitDim();
  int64_t world = spec.worldSize();
  // Row-major strides of the global and local stacks.
  int64_t rank = in.getRank();
  auto strides = [&](ArrayRef<int64_t> shape) {
    SmallVector<int64_t> s(shape.size(), 1);
    for (int64_t d = shape.size() - 2; d >= 0; --d)
      s[d] = s[d + 1] * shape[d + 1];
    return s;
  };
  SmallVector<int64_t> gs = strides(in.getShape()),
                       ls = strides(out.getShape());
  int64_t localElems = out.getNumElements();
  std::vector<std::vector<Run>> perRank;
  for (int64_t r = 0; r < world; ++r) {
    SmallVector<int64_t> coords = spec.coords(r);
    int64_t epc = groupIndex(spec, coords, op.getEpAxes());
    int64_t part = split ? groupIndex(spec, coords, splitAxes) : 0;
    bool zero = op.getFirstOnly() && part != 0;
    // Contiguous runs of the innermost dim; `idx` is the local index of
    // the run's first element.
    int64_t run = out.getDimSize(rank - 1);
    std::vector<Run> runs;
    SmallVector<int64_t> idx(rank, 0);
    for (int64_t i = 0; i < localElems; i += run) {
      int64_t lin = i;
      for (int64_t d = 0; d < rank; ++d) {
        idx[d] = lin / ls[d];
        lin %= ls[d];
      }
      int64_t expert = zero ? -1 : p.expertAt(epc, idx[0]);
      if (expert < 0) {
        runs.push_back({-1, uint64_t(run * elt)});
        continue;
      }
      int64_t g = expert * gs[0];
      for (int64_t d = 1; d < rank; ++d) {
        int64_t x = idx[d];
        if (split && !op.getFirstOnly() && d == splitDim)
          x += part * out.getDimSize(d);
        g += x * gs[d];
      }
      runs.push_back({int64_t(g * elt), uint64_t(run * elt)});
    }
    perRank.push_back(std::move(runs));
  }
  if (failed(appendPerRank(id, attr, std::move(perRank),
                           uint64_t(localElems) * elt)))
    return op.emitError("plan lowering: the weights' data is not readable");
  return success();
}

LogicalResult PlanBuilder::addTpSlice(moe::TpSliceOp op) {
  auto in = cast<RankedTensorType>(op.getWeights().getType());
  auto out = cast<RankedTensorType>(op.getType());
  Attribute attr = constAttr.lookup(op.getWeights());
  moert::DType dt;
  if (!attr || !toDType(in.getElementType(), dt))
    return op.emitError("plan lowering: moe.tp_slice of a value that is not "
                        "a supported constant");
  size_t elt = moert::dtypeSize(dt);
  int32_t id = addValue(op.getResult(), moert::ValueKind::constant,
                        nodeName(op.getLoc()));
  int64_t dim = op.getDim();
  // Rows of the blocks: `outer` runs of `blockBytes` at stride `rowBytes`.
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d)
    outer *= in.getDimSize(d);
  for (int64_t d = dim + 1; d < in.getRank(); ++d)
    inner *= in.getDimSize(d);
  int64_t blockBytes = out.getDimSize(dim) * inner * elt;
  int64_t rowBytes = in.getDimSize(dim) * inner * elt;
  std::vector<std::vector<Run>> perRank;
  for (int64_t r = 0; r < spec.worldSize(); ++r) {
    int64_t coord = groupIndex(spec, spec.coords(r), op.getGridAxes());
    std::vector<Run> runs;
    for (int64_t o = 0; o < outer; ++o)
      runs.push_back({o * rowBytes + coord * blockBytes, uint64_t(blockBytes)});
    perRank.push_back(std::move(runs));
  }
  if (failed(appendPerRank(id, attr, std::move(perRank),
                           uint64_t(outer * blockBytes))))
    return op.emitError("plan lowering: the weights' data is not readable");
  return success();
}

/// First-fit offsets for the arena values by live range (aliases share
/// their root's bytes). With `cacheOutsideArena`, the roots of the cache
/// pairs get none (offset 0, Value::outside).
void PlanBuilder::planMemory(func::FuncOp func, bool cacheOutsideArena) {
  struct Buf {
    int32_t id;
    uint64_t size;
    int64_t from, to;
    uint64_t offset = 0;
  };
  std::set<int32_t> outside;
  if (cacheOutsideArena)
    for (auto [i, o] : moert::cachePairs(plan)) {
      int32_t ri = root[plan.inputs[i].value], ro = root[plan.outputs[o].value];
      if (ri != ro && !outside.count(ri) && !outside.count(ro)) {
        outside.insert(ri);
        outside.insert(ro);
      }
    }
  std::map<int32_t, uint64_t> rootSize;
  for (auto &[id, r] : root)
    rootSize[r] = std::max<uint64_t>(rootSize[r], plan.values[id].byteSize());
  std::vector<Buf> bufs;
  for (auto &[r, size] : rootSize)
    if (!outside.count(r))
      bufs.push_back({r, alignUp(std::max<uint64_t>(size, 1)), live[r].first,
                      live[r].second});
  std::sort(bufs.begin(), bufs.end(), [](const Buf &a, const Buf &b) {
    return a.size > b.size || (a.size == b.size && a.id < b.id);
  });
  std::vector<Buf *> placed;
  uint64_t arena = 0;
  for (Buf &b : bufs) {
    // Lowest offset that does not overlap a placed buffer alive at the
    // same time.
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (Buf *p : placed)
      if (!(p->to < b.from || b.to < p->from))
        busy.push_back({p->offset, p->offset + p->size});
    std::sort(busy.begin(), busy.end());
    uint64_t off = 0;
    for (auto &[s, e] : busy) {
      if (off + b.size <= s)
        break;
      off = std::max(off, e);
    }
    b.offset = off;
    arena = std::max(arena, off + b.size);
    placed.push_back(&b);
  }
  std::map<int32_t, uint64_t> offsetOf;
  for (Buf &b : bufs)
    offsetOf[b.id] = b.offset;
  for (auto &[id, r] : root)
    plan.values[id].offset = outside.count(r) ? 0 : offsetOf[r];
  for (int32_t r : outside)
    plan.values[size_t(r)].outside = true;
  plan.arenaBytes = arena;
}

LogicalResult PlanBuilder::run(StringRef source, const PlanOptions &options) {
  shard::GridOp grid = getMeshGrid(module);
  if (!grid || !grid->hasAttr("moe.partitioned"))
    return module.emitError("plan lowering needs a partitioned module "
                            "(moec --mesh ..., or moe-opt --moe-shard ... "
                            "--moe-partition)");
  spec = meshSpecOf(grid);
  plan.producer = "moec 0.1";
  plan.source = source.str();
  for (auto &[name, size] : spec.axes)
    plan.mesh.push_back({name, size});
  int64_t world = spec.worldSize();
  // Segment 0 is shared; segment 1 + r belongs to rank r.
  plan.segments.resize(1 + world);
  data.segments.resize(1 + world);
  plan.segments[0].name = "shared";
  for (int64_t r = 0; r < world; ++r) {
    plan.segments[1 + r].name = "rank" + std::to_string(r);
    plan.segments[1 + r].ranks = {int32_t(r)};
  }

  SmallVector<func::FuncOp> funcs;
  for (auto f : module.getOps<func::FuncOp>())
    if (!f->hasAttr("moe.kernel"))
      funcs.push_back(f);
  if (funcs.size() != 1 || funcs[0].isExternal())
    return module.emitError("plan lowering expects one function, @main");
  func::FuncOp func = funcs[0];
  // The axes the model inputs and outputs are split over (none with
  // sequence-parallel MoE, dp alone in the hybrid split).
  std::vector<std::string> tokenAxes;
  if (shard::GridOp grid = getMeshGrid(module))
    for (int16_t a : modelTokenAxes(grid))
      tokenAxes.push_back(spec.axes[size_t(a)].name);
  auto io = [&](DictionaryAttr attrs, Type localType, unsigned i, bool isOut,
                moert::ModelIO &m) -> LogicalResult {
    auto t = cast<RankedTensorType>(localType);
    auto name = attrs ? attrs.getAs<StringAttr>("onnx.name") : nullptr;
    m.name =
        name ? name.str() : (isOut ? "output" : "input") + std::to_string(i);
    if (!toDType(t.getElementType(), m.dtype))
      return func.emitError("plan lowering: unsupported dtype of ") << m.name;
    auto global =
        attrs ? attrs.getAs<DenseI64ArrayAttr>("moe.global_shape") : nullptr;
    ArrayRef<int64_t> shape = global ? global.asArrayRef() : t.getShape();
    m.shape.assign(shape.begin(), shape.end());
    if (auto split = attrs ? attrs.getAs<DenseI64ArrayAttr>("moe.token_split")
                           : nullptr) {
      if (split[0] != 0)
        return func.emitError("plan lowering: the token dims of ")
               << m.name << " must lead";
      m.split.axis = split[0] + split[1] - 1;
      m.split.over = tokenAxes;
    }
    return success();
  };
  for (BlockArgument a : func.getArguments()) {
    moert::ModelIO m;
    if (failed(io(func.getArgAttrDict(a.getArgNumber()), a.getType(),
                  a.getArgNumber(), false, m)))
      return failure();
    m.value = addValue(a, moert::ValueKind::input, m.name);
    plan.inputs.push_back(m);
  }
  for (Operation &op : func.getBody().front()) {
    ++opIndex;
    if (failed(lowerOp(&op)))
      return failure();
  }
  ++opIndex;
  auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
  for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
    moert::ModelIO m;
    if (failed(io(func.getResultAttrDict(i), v.getType(), i, true, m)))
      return failure();
    int32_t id;
    if (failed(lookup(v, ret, id)))
      return failure();
    if (plan.values[id].kind == moert::ValueKind::constant)
      return ret.emitError("plan lowering: output ")
             << m.name << " is a constant";
    plan.values[id].kind = moert::ValueKind::output;
    m.value = id;
    plan.outputs.push_back(m);
  }
  planMemory(func, options.cacheOutsideArena);
  if (options.valueRoots) {
    options.valueRoots->assign(plan.values.size(), -1);
    for (auto &[id, r] : root)
      (*options.valueRoots)[size_t(id)] = r;
  }
  if (failed(addKernelCode(module, options, {}, plan, data)))
    return failure();
  std::string err;
  if (options.verify && !moert::verifyPlan(plan, err))
    return module.emitError("plan lowering produced an invalid plan: ") << err;
  return success();
}

} // namespace moec::toplan

LogicalResult moec::addKernelCode(ModuleOp module, const PlanOptions &options,
                                  ArrayRef<KernelVariant> variants,
                                  moert::Plan &plan, moert::PlanData &data) {
  // The program that calls the kernels, for errors.
  Operation *func = module;
  for (auto f : module.getOps<func::FuncOp>())
    if (!f->hasAttr("moe.kernel"))
      func = f;
  std::string err;
  std::vector<KernelInfo> infos;
  if (options.cpuCode) {
    std::vector<char> so;
    if (failed(compileKernelsForCPU(module, variants, so, infos, err)))
      return module.emitError("kernel code generation (CPU): ") << err;
    if (!so.empty()) {
      plan.cpuCode.segment = 0;
      plan.cpuCode.offset = data.append(0, so.data(), so.size());
      plan.cpuCode.bytes = so.size();
    }
  }
  if (!options.cudaChip.empty()) {
    std::vector<std::string> ptx;
    infos.clear();
    if (failed(compileKernelsToPTX(module, options.cudaChip, ptx, infos, err)))
      return module.emitError("kernel code generation (CUDA ")
             << options.cudaChip << "): " << err;
    // CUDA's limit on a launch's parameters (moert/Limits.h), named by
    // the node that calls the kernel.
    for (const KernelInfo &k : infos)
      for (const moert::GpuLaunchCode &l : k.launches) {
        if (l.paramBytes() <= moert::kMaxLaunchParamBytes)
          continue;
        Operation *at = func;
        func->walk([&](func::CallOp c) {
          if (c.getCallee() == k.name && at == func)
            at = c;
        });
        return at->emitError("kernel code generation (CUDA ")
               << options.cudaChip << "): kernel '" << k.name << "' launches '"
               << l.function << "' with " << l.paramBytes()
               << " bytes of parameters, more than the limit of "
               << moert::kMaxLaunchParamBytes
               << " (moert::kMaxLaunchParamBytes)";
      }
    // PTX modules, each NUL-terminated.
    std::vector<char> blob;
    for (const std::string &m : ptx) {
      blob.insert(blob.end(), m.begin(), m.end());
      blob.push_back('\0');
    }
    if (!blob.empty()) {
      plan.ptxCode.segment = 0;
      plan.ptxCode.offset = data.append(0, blob.data(), blob.size());
      plan.ptxCode.bytes = blob.size();
    }
  }
  plan.kernels = std::move(infos);
  return success();
}

LogicalResult moec::buildPlan(ModuleOp module, StringRef source,
                              const PlanOptions &options, moert::Plan &plan,
                              moert::PlanData &data) {
  return PlanBuilder(module, plan, data).run(source, options);
}
