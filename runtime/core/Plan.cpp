//===- Plan.cpp - the .moeplan format: types, mesh, verifier --------------===//
//
// The in-memory plan's helpers and verifyPlan, the consistency check every
// plan passes when it is written and when it is loaded. The file format
// (FlatBuffers manifest, header, data region) is PlanFile.cpp;
// `moe-run --describe` is PlanDescribe.cpp.
//
//===----------------------------------------------------------------------===//

#include "moert/Plan.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include <sstream>

using namespace moert;

namespace {
/// The number of inputs and outputs each step kind takes, indexed by
/// StepKind (NONE first); outs -1: one or more. Bit i of `optional`: input
/// i may be -1 (docs/plan-format.md, "Steps"); every other input must be a
/// value.
struct StepSig {
  int minIn, maxIn, outs;
  uint32_t optional = 0;
};
constexpr uint32_t kAnyOptional = ~0u;
constexpr StepSig kStepSigs[] = {
    {0, 0, 0},                                        // NONE
    {2, 3, 1, 1u << 2},                               // matmul: bias
    {1, 2, 2, 1u << 1},                               // route: bias
    {2, 3, 1, 1u << 2},                               // dispatch: weights
    {4, 7, 1, 1u << 2 | 1u << 4 | 1u << 5 | 1u << 6}, // experts: w_up, biases
    {2, 2, 1, 1u << 1},                               // combine: weights
    {1, 1, 1},                                        // unary
    {2, 2, 1},                                        // binary
    {1, 1, 1},                                        // softmax
    {1, 1, 1},                                        // copy
    {1, 1, 1},                                        // all_reduce
    {1, 1, 1},                                        // all_gather
    {2, 2, 1},                                        // batch_matmul
    {0, kMaxKernelOperands, -1, kAnyOptional},        // kernel (moert/Limits.h)
    {1, 1, 1},                                        // all_slice
    {1, 1, 1},                                        // reduce_scatter
    {1, 1, 2},                                        // topk
    {3, 3, 1},                                        // scatter_elements
    {2, 3, 1, 1u << 2},                               // dequantize: zero points
};
// A kind added to plan.fbs needs its operand counts here.
static_assert(sizeof(kStepSigs) / sizeof(kStepSigs[0]) ==
                  size_t(StepKind::MAX) + 1,
              "kStepSigs must list every StepAttrs member of plan.fbs");
} // namespace

const char *moert::dtypeName(DType t) { return fb::EnumNameDType(t); }

bool moert::parseDType(const std::string &name, DType &out) {
  for (DType t : fb::EnumValuesDType())
    if (name == dtypeName(t)) {
      out = t;
      return true;
    }
  return false;
}

size_t moert::dtypeSize(DType t) {
  switch (t) {
  case DType::f32:
  case DType::i32:
    return 4;
  case DType::f16:
  case DType::bf16:
    return 2;
  case DType::i64:
    return 8;
  case DType::u8:
    return 1;
  }
  return 0;
}

const ModelIO *moert::findIO(const std::vector<ModelIO> &ios,
                             const std::string &name) {
  for (const ModelIO &m : ios)
    if (m.name == name)
      return &m;
  return nullptr;
}

std::string moert::presentNameOf(const std::string &past) {
  if (past.rfind("past_key_values", 0) == 0)
    return "present" + past.substr(std::strlen("past_key_values"));
  if (past.rfind("past", 0) == 0)
    return "present" + past.substr(4);
  return "";
}

std::vector<std::pair<size_t, size_t>> moert::cachePairs(const Plan &plan) {
  std::vector<std::pair<size_t, size_t>> r;
  for (size_t i = 0; i < plan.inputs.size(); ++i) {
    std::string present = presentNameOf(plan.inputs[i].name);
    for (size_t o = 0; !present.empty() && o < plan.outputs.size(); ++o)
      if (plan.outputs[o].name == present &&
          plan.outputs[o].dtype == plan.inputs[i].dtype)
        r.push_back({i, o});
  }
  return r;
}

const char *moert::stepKindName(StepKind k) {
  return k <= StepKind::MAX ? fb::EnumNameStepAttrs(k) : "?";
}

std::string moert::shapeString(const std::vector<int64_t> &shape) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    r += (i ? "," : "") + std::to_string(shape[i]);
  return r + "]";
}

std::vector<std::string> moert::splitAxes(const std::string &axes) {
  std::vector<std::string> out;
  std::stringstream ss(axes);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty())
      out.push_back(item);
  return out;
}

int64_t Value::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::string Step::axes() const {
  if (const fb::DispatchT *d = attrs.Asdispatch())
    return d->axes;
  if (const fb::AllReduceT *a = attrs.Asall_reduce())
    return a->axes;
  if (const fb::AllGatherT *a = attrs.Asall_gather())
    return a->axes;
  if (const fb::AllSliceT *a = attrs.Asall_slice())
    return a->axes;
  if (const fb::ReduceScatterT *a = attrs.Asreduce_scatter())
    return a->axes;
  return "";
}

int64_t Step::dispatchStep() const {
  if (const fb::ExpertsT *e = attrs.Asexperts())
    return e->dispatch;
  if (const fb::CombineT *c = attrs.Ascombine())
    return c->dispatch;
  if (const fb::DequantizeT *q = attrs.Asdequantize())
    return q->dispatch;
  return -1;
}

int64_t GpuLaunchCode::paramBytes() const {
  int64_t bytes = 0;
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    int64_t size = args[i] == int64_t(LaunchArg::f32) ? 4 : 8;
    bytes = (bytes + size - 1) / size * size + size;
  }
  return bytes;
}

int64_t Plan::worldSize() const { return meshWorldSize(mesh); }

int64_t Plan::axisSize(const std::string &axis) const {
  return meshAxisSize(mesh, axis);
}

int64_t Plan::coord(int64_t rank, const std::string &axis) const {
  return meshCoord(mesh, rank, axis);
}

std::vector<int32_t> Plan::group(int64_t rank,
                                 const std::vector<std::string> &axes) const {
  return meshGroup(mesh, rank, axes);
}

/// Enum attributes inside their plan.fbs ranges (a manifest from another
/// build, or a corrupt one, may hold others).
static bool enumsInRange(const Step &s) {
  if (const fb::RouteT *r = s.attrs.Asroute())
    return r->score_func <= fb::ScoreFunc::MAX &&
           r->group_score <= fb::GroupScore::MAX;
  if (const fb::ExpertsT *e = s.attrs.Asexperts())
    return e->activation <= fb::Activation::MAX;
  if (const fb::UnaryT *u = s.attrs.Asunary())
    return u->fn <= fb::UnaryFn::MAX;
  if (const fb::BinaryT *b = s.attrs.Asbinary())
    return b->fn <= fb::BinaryFn::MAX;
  if (const fb::AllReduceT *a = s.attrs.Asall_reduce())
    return a->reduction <= fb::Reduction::MAX;
  if (const fb::ReduceScatterT *a = s.attrs.Asreduce_scatter())
    return a->reduction <= fb::Reduction::MAX;
  if (const fb::ScatterElementsT *a = s.attrs.Asscatter_elements())
    return a->reduction <= fb::ScatterReduction::MAX;
  return true;
}

/// The alignment of arena offsets and of constants in their (page-aligned)
/// segments (docs/plan-format.md): the kernels read and write every dtype
/// in place, and a misaligned int64 or float access is undefined behaviour.
constexpr uint64_t kValueAlign = 64;

/// Whether [offset, offset + bytes) lies inside [0, size), without overflow.
static bool inside(uint64_t offset, uint64_t bytes, uint64_t size) {
  return offset <= size && bytes <= size - offset;
}

/// The byte size of a tensor, false when its nonzero dims make more than
/// kMaxTensorBytes (checked without overflow; dims are non-negative). A
/// zero dim does not excuse the others: Value::numElements multiplies the
/// dims in order, and [2^62, 160, 0] overflowed before the 0.
static bool tensorBytes(const std::vector<int64_t> &shape, DType dtype,
                        uint64_t &bytes) {
  bytes = dtypeSize(dtype);
  bool empty = false;
  for (int64_t d : shape) {
    if (d == 0) {
      empty = true;
      continue;
    }
    if (d < 0 || bytes > kMaxTensorBytes / uint64_t(d))
      return false;
    bytes *= uint64_t(d);
  }
  if (empty)
    bytes = 0;
  return true;
}

/// "has more than N bytes" for a shape tensorBytes refused.
static std::string tooLarge(const std::vector<int64_t> &shape) {
  bool empty = std::find(shape.begin(), shape.end(), 0) != shape.end();
  return " has more than " + std::to_string(kMaxTensorBytes) + " bytes" +
         (empty ? " in its nonzero dims" : "");
}

/// Integer attributes that the backends use as int32 (counts, axes, step
/// indices) inside the range where they are used; "" when they are.
static std::string attrRangeError(const Step &s) {
  constexpr int64_t kInt32Max = INT32_MAX;
  auto check = [](const char *name, int64_t v, int64_t lo,
                  int64_t hi) -> std::string {
    if (v >= lo && v <= hi)
      return "";
    return std::string("attribute '") + name + "' = " + std::to_string(v) +
           " outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  };
  std::string e;
  auto all = [&](std::initializer_list<std::string> errs) {
    for (const std::string &x : errs)
      if (!x.empty())
        return x;
    return std::string();
  };
  if (const fb::RouteT *r = s.attrs.Asroute())
    e = all({check("top_k", r->top_k, 1, kInt32Max),
             check("num_groups", r->num_groups, 1, kInt32Max),
             check("topk_groups", r->topk_groups, 1, kInt32Max)});
  else if (const fb::DispatchT *d = s.attrs.Asdispatch())
    e = all({check("num_experts", d->num_experts, 1, kInt32Max),
             check("slots_per_rank", d->slots_per_rank, 1, kInt32Max),
             check("capacity", d->capacity, -1, kInt32Max)});
  else if (const fb::AllGatherT *a = s.attrs.Asall_gather())
    e = check("axis", a->axis, 0, kInt32Max);
  else if (const fb::AllSliceT *a = s.attrs.Asall_slice())
    e = check("axis", a->axis, 0, kInt32Max);
  else if (const fb::ReduceScatterT *a = s.attrs.Asreduce_scatter())
    e = check("axis", a->axis, 0, kInt32Max);
  else if (const fb::TopKT *a = s.attrs.Astopk())
    e = a->k > kInt32Max ? check("k", a->k, 1, kInt32Max) : ""; // k < 1 below
  else if (const fb::ScatterElementsT *a = s.attrs.Asscatter_elements())
    e = check("axis", a->axis, 0, kInt32Max);
  return e;
}

std::string moert::indexStepError(const Plan &plan, const Step &s) {
  auto val = [&](int32_t id) -> const Value * {
    return id >= 0 && id < int32_t(plan.values.size()) ? &plan.values[id]
                                                       : nullptr;
  };
  auto named = [](const char *role, const Value &v) {
    return std::string(role) + " " + dtypeName(v.dtype) + shapeString(v.shape);
  };
  if (const fb::TopKT *a = s.attrs.Astopk()) {
    const Value *x = val(s.inputs[0]), *vals = val(s.outputs[0]),
                *idx = val(s.outputs[1]);
    if (!x || !vals || !idx)
      return "x, values and indices must all be given";
    if (x->shape.empty())
      return named("x", *x) + " has no last dim";
    if (x->dtype != DType::f32 && x->dtype != DType::i64)
      return named("x", *x) + " is not f32 or i64 (the dtypes topk supports)";
    int64_t n = x->shape.back();
    if (a->k < 1 || a->k > n)
      return "k=" + std::to_string(a->k) + " outside [1, " + std::to_string(n) +
             "] for " + named("x", *x);
    std::vector<int64_t> want = x->shape;
    want.back() = a->k;
    if (vals->dtype != x->dtype || vals->shape != want)
      return named("values", *vals) + " is not " + dtypeName(x->dtype) +
             shapeString(want);
    if (idx->dtype != DType::i64 || idx->shape != want)
      return named("indices", *idx) + " is not i64" + shapeString(want);
    return "";
  }
  if (const fb::ScatterElementsT *a = s.attrs.Asscatter_elements()) {
    const Value *data = val(s.inputs[0]), *idx = val(s.inputs[1]),
                *upd = val(s.inputs[2]), *res = val(s.outputs[0]);
    if (!data || !idx || !upd || !res)
      return "data, indices, updates and result must all be given";
    int64_t rank = int64_t(data->shape.size());
    if (a->axis < 0 || a->axis >= rank)
      return "axis " + std::to_string(a->axis) + " outside [0, " +
             std::to_string(rank) + ") for " + named("data", *data);
    if (idx->dtype != DType::i64 && idx->dtype != DType::i32)
      return named("indices", *idx) + " is not i64 or i32";
    bool f32 = data->dtype == DType::f32;
    bool intCopy = (data->dtype == DType::i64 || data->dtype == DType::i32) &&
                   a->reduction == fb::ScatterReduction::none;
    if (!f32 && !intCopy)
      return named("data", *data) + " with reduction " +
             fb::EnumNameScatterReduction(a->reduction) +
             " (f32 data, or i64/i32 data without a reduction)";
    if (upd->dtype != data->dtype || res->dtype != data->dtype ||
        res->shape != data->shape)
      return named("updates", *upd) + " and " + named("result", *res) +
             " must have the dtype of " + named("data", *data) +
             ", the result its shape";
    if (int64_t(idx->shape.size()) != rank || upd->shape != idx->shape)
      return named("indices", *idx) + " and " + named("updates", *upd) +
             " must have one shape, of the rank of " + named("data", *data);
    for (int64_t d = 0; d < rank; ++d)
      if (d != a->axis && idx->shape[d] > data->shape[d])
        return named("indices", *idx) + " exceed " + named("data", *data) +
               " in dim " + std::to_string(d) + " (off the axis " +
               std::to_string(a->axis) + ")";
    return "";
  }
  if (const fb::DequantizeT *a = s.attrs.Asdequantize())
    return dequantizeStepError(plan, s, *a);
  return "";
}

std::string moert::dequantizeStepError(const Plan &plan, const Step &s,
                                       const fb::DequantizeT &a) {
  auto val = [&](int32_t id) -> const Value * {
    return id >= 0 && id < int32_t(plan.values.size()) ? &plan.values[id]
                                                       : nullptr;
  };
  auto named = [](const char *role, const Value &v) {
    return std::string(role) + " " + dtypeName(v.dtype) + shapeString(v.shape);
  };
  if (a.bits != 2 && a.bits != 4 && a.bits != 8)
    return "bits=" + std::to_string(a.bits) + " (2, 4 or 8)";
  if (a.block_size < 1 || a.block_size > (int64_t(1) << 30) ||
      a.block_size * a.bits % 8 != 0)
    return "block_size=" + std::to_string(a.block_size) +
           " (positive, whole bytes, at most 2^30)";
  if (a.k < 1 || a.k > INT32_MAX)
    return "k=" + std::to_string(a.k) + " outside [1, " +
           std::to_string(INT32_MAX) + "]";
  const Value *codes = val(s.inputs[0]), *scales = val(s.inputs[1]),
              *zp = s.inputs.size() > 2 ? val(s.inputs[2]) : nullptr,
              *out = val(s.outputs[0]);
  if (!codes || !scales || !out)
    return "codes, scales and the result must be given";
  int64_t blocks = (a.k + a.block_size - 1) / a.block_size;
  int64_t blob = a.block_size * a.bits / 8;
  size_t rank = codes->shape.size();
  if (codes->dtype != DType::u8 || rank < 3 ||
      codes->shape[rank - 2] != blocks || codes->shape[rank - 1] != blob)
    return named("codes", *codes) + " is not u8[..., N, " +
           std::to_string(blocks) + ", " + std::to_string(blob) + "]";
  // Leading dims (stacked experts) are kept.
  int64_t n = codes->shape[rank - 3];
  std::vector<int64_t> sShape(codes->shape.begin(), codes->shape.end() - 2);
  sShape.push_back(blocks);
  if (scales->dtype != DType::f32 || scales->shape != sShape)
    return named("scales", *scales) + " is not f32" + shapeString(sShape);
  if (zp && (zp->dtype != DType::f32 || zp->shape != sShape))
    return named("zero_points", *zp) + " is not f32" + shapeString(sShape);
  std::vector<int64_t> want(codes->shape.begin(), codes->shape.end() - 3);
  want.push_back(a.k);
  want.push_back(n);
  bool floatOut = out->dtype == DType::f32 || out->dtype == DType::f16 ||
                  out->dtype == DType::bf16;
  if (!floatOut || out->shape != want)
    return named("result", *out) + " is not f32, f16 or bf16" +
           shapeString(want);
  return "";
}

uint32_t moert::minPlanVersion(const Plan &plan) {
  for (const Step &s : plan.steps)
    if (const auto *m = s.attrs.Asbatch_matmul(); m && m->trans_b)
      return kPlanVersionBatchTransB;
  return plan.symbols.empty() ? kPlanVersion : kPlanVersionSymbols;
}

bool moert::verifyPlan(const Plan &plan, std::string &error) {
  auto fail = [&](const std::string &m) {
    error = m;
    return false;
  };
  if (plan.mesh.empty())
    return fail("the plan has no mesh axes");
  // The mesh bounds every loop over ranks below: its size is checked first,
  // without overflow.
  int64_t world = 1;
  for (const MeshAxis &a : plan.mesh) {
    if (a.size < 1)
      return fail("mesh axis '" + a.name + "' has size " +
                  std::to_string(a.size));
    if (a.size > kMaxRanks / world)
      return fail("mesh axis '" + a.name + "' has size " +
                  std::to_string(a.size) + ": the mesh has more than " +
                  std::to_string(kMaxRanks) + " ranks");
    world *= a.size;
  }
  // Each segment's ranks, sorted and unique, for the constants' checks.
  std::vector<std::vector<int32_t>> segRanks;
  for (const Segment &s : plan.segments) {
    for (int32_t r : s.ranks)
      if (r < 0 || r >= world)
        return fail("segment '" + s.name + "' lists rank " + std::to_string(r) +
                    " of a " + std::to_string(world) + "-rank mesh");
    std::vector<int32_t> sr = s.ranks;
    std::sort(sr.begin(), sr.end());
    sr.erase(std::unique(sr.begin(), sr.end()), sr.end());
    segRanks.push_back(std::move(sr));
  }
  for (size_t i = 0; i < plan.values.size(); ++i) {
    const Value &v = plan.values[i];
    std::string what = "value " + std::to_string(i) + " ('" + v.name + "')";
    if (v.id != int32_t(i))
      return fail(what + " has id " + std::to_string(v.id));
    if (v.dtype > DType::MAX || v.kind > ValueKind::MAX)
      return fail(what + " has an unknown dtype or kind");
    for (int64_t d : v.shape)
      if (d < 0)
        return fail(what + " has a negative dim");
    uint64_t bytes = 0;
    if (!tensorBytes(v.shape, v.dtype, bytes))
      return fail(what + " of shape " + shapeString(v.shape) +
                  tooLarge(v.shape));
    if (v.kind == ValueKind::constant) {
      if (v.data.size() != 1 && int64_t(v.data.size()) != world)
        return fail(what + " has " + std::to_string(v.data.size()) +
                    " data entries; expected 1 or one per rank (" +
                    std::to_string(world) + ")");
      for (const DataRef &d : v.data) {
        if (d.segment < 0 || d.segment >= int32_t(plan.segments.size()))
          return fail(what + " points to segment " + std::to_string(d.segment) +
                      ", which does not exist");
        if (d.bytes != v.byteSize())
          return fail(what + " has " + std::to_string(d.bytes) +
                      " bytes of data for " + std::to_string(v.byteSize()) +
                      " bytes of tensor");
        const Segment &s = plan.segments[d.segment];
        if (s.size && !inside(d.offset, d.bytes, s.size))
          return fail(what + " lies outside segment '" + s.name + "'");
        if (d.offset % kValueAlign)
          return fail(what + " at offset " + std::to_string(d.offset) +
                      " of segment '" + s.name + "' is not " +
                      std::to_string(kValueAlign) + "-byte aligned");
      }
      // Rank r reads data[r] (or the one shared entry): its segment must be
      // one that rank maps. A shared entry in a segment of n ranks misses a
      // rank in [0, n] when n < world: the loop is bounded by the manifest.
      int64_t check = world;
      if (v.data.size() == 1 && !segRanks[v.data[0].segment].empty())
        check = std::min<int64_t>(
            world, int64_t(segRanks[v.data[0].segment].size()) + 1);
      else if (v.data.size() == 1)
        check = 0;
      for (int64_t r = 0; r < check; ++r) {
        const DataRef &d = v.data.size() == 1 ? v.data[0] : v.data[r];
        const Segment &s = plan.segments[d.segment];
        const std::vector<int32_t> &sr = segRanks[d.segment];
        bool mapped =
            sr.empty() || std::binary_search(sr.begin(), sr.end(), int32_t(r));
        if (!mapped)
          return fail(what + ": rank " + std::to_string(r) +
                      " reads segment '" + s.name +
                      "', which that rank does not map");
      }
    } else if (v.outside ||
               (v.root >= 0 && v.root < int32_t(plan.values.size()) &&
                plan.values[size_t(v.root)].outside)) {
      if (v.offset != 0)
        return fail(what + " lies outside the arena at offset " +
                    std::to_string(v.offset) + " (0 expected)");
    } else if (!inside(v.offset, bytes, plan.arenaBytes)) {
      return fail(what + " at arena offset " + std::to_string(v.offset) +
                  " + " + std::to_string(bytes) +
                  " bytes lies outside the arena of " +
                  std::to_string(plan.arenaBytes) + " bytes");
    } else if (v.offset % kValueAlign) {
      return fail(what + " at arena offset " + std::to_string(v.offset) +
                  " is not " + std::to_string(kValueAlign) + "-byte aligned");
    }
  }
  // Views: a reshape of a root, at its offset and of its size, in plans
  // with a symbol (a backend binds a root with every view of it). Roots
  // outside the arena: arena values of such a plan.
  for (const Value &v : plan.values) {
    if (!v.outside)
      continue;
    std::string what = "value " + std::to_string(v.id) + " ('" + v.name +
                       "') outside the arena";
    if (plan.symbols.empty())
      return fail(what + " in a plan without a symbol");
    if (v.kind == ValueKind::constant || v.root >= 0)
      return fail(what + " is " +
                  (v.root >= 0 ? "a view" : std::string("a constant")) +
                  " (only roots of arena values are)");
  }
  for (const Value &v : plan.values) {
    if (v.root < 0)
      continue;
    std::string what = "value " + std::to_string(v.id) + " ('" + v.name +
                       "') views value " + std::to_string(v.root);
    if (plan.symbols.empty())
      return fail(what + " in a plan without a symbol (roots are recorded "
                         "only in version 8)");
    if (v.root >= int32_t(plan.values.size()) || v.root == v.id)
      return fail(what + ", which is not another value of the plan");
    const Value &r = plan.values[size_t(v.root)];
    if (r.root >= 0)
      return fail(what + ", which is itself a view");
    if (v.kind == ValueKind::constant || r.kind == ValueKind::constant)
      return fail(what + ": constants have no views");
    if (v.offset != r.offset || v.byteSize() != r.byteSize())
      return fail(what + " at offset " + std::to_string(v.offset) + ", " +
                  std::to_string(v.byteSize()) + " bytes; the root has " +
                  std::to_string(r.offset) + ", " +
                  std::to_string(r.byteSize()));
  }
  auto checkIO = [&](const ModelIO &m, bool out) -> bool {
    std::string what = std::string(out ? "output '" : "input '") + m.name + "'";
    if (m.value < 0 || m.value >= int32_t(plan.values.size()))
      return fail(what + " refers to value " + std::to_string(m.value));
    // The executor copies inputs into and outputs out of the arena at the
    // value's offset, which only arena values have (checked above).
    if (plan.values[m.value].kind == ValueKind::constant)
      return fail(what + " refers to value " + std::to_string(m.value) +
                  ", a constant (not in the arena)");
    if (m.dtype > DType::MAX)
      return fail(what + " has an unknown dtype");
    uint64_t bytes = 0;
    for (int64_t d : m.shape)
      if (d < 0)
        return fail(what + " has a negative dim");
    if (!tensorBytes(m.shape, m.dtype, bytes))
      return fail(what + " of shape " + shapeString(m.shape) +
                  tooLarge(m.shape));
    if (m.split.axis >= int(m.shape.size()))
      return fail(what + " is split along axis " +
                  std::to_string(m.split.axis) + " of a rank-" +
                  std::to_string(m.shape.size()) + " tensor");
    for (const std::string &a : m.split.over) {
      bool found = false;
      for (const MeshAxis &x : plan.mesh)
        found |= x.name == a;
      if (!found)
        return fail(what + " is split over unknown mesh axis '" + a + "'");
    }
    return true;
  };
  for (const ModelIO &m : plan.inputs)
    if (!checkIO(m, false))
      return false;
  for (const ModelIO &m : plan.outputs)
    if (!checkIO(m, true))
      return false;
  for (const DataRef *code : {&plan.cpuCode, &plan.ptxCode})
    if (code->segment >= 0 && (code->segment >= int32_t(plan.segments.size()) ||
                               !plan.segments[code->segment].ranks.empty() ||
                               (plan.segments[code->segment].size &&
                                !inside(code->offset, code->bytes,
                                        plan.segments[code->segment].size))))
      return fail("generated code lies outside a segment every rank maps");
  for (const KernelCode &k : plan.kernels) {
    if (k.numArgs < 0 || k.numArgs > kMaxKernelOperands)
      return fail("kernel '" + k.name + "' takes " + std::to_string(k.numArgs) +
                  " pointers, at most " + std::to_string(kMaxKernelOperands) +
                  " are supported");
    for (const GpuLaunchCode &l : k.launches)
      if (l.paramBytes() > kMaxLaunchParamBytes)
        return fail("kernel '" + k.name + "' launches '" + l.function +
                    "' with " + std::to_string(l.paramBytes()) +
                    " bytes of parameters, at most " +
                    std::to_string(kMaxLaunchParamBytes) + " are supported");
  }
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const Step &s = plan.steps[i];
    std::string what = "step " + std::to_string(i) + " (" + s.op() +
                       (s.loc.empty() ? "" : " at '" + s.loc + "'") + ")";
    if (s.kind() == StepKind::NONE || s.kind() > StepKind::MAX)
      return fail(what + ": unknown step kind");
    const StepSig *sig = &kStepSigs[size_t(s.kind())];
    if (!enumsInRange(s))
      return fail(what + ": an attribute has an unknown enum value");
    if (std::string why = attrRangeError(s); !why.empty())
      return fail(what + ": " + why);
    if (int(s.inputs.size()) < sig->minIn || int(s.inputs.size()) > sig->maxIn)
      return fail(
          what + ": " + std::to_string(s.inputs.size()) +
          " operands, expected " + std::to_string(sig->minIn) +
          (sig->minIn == sig->maxIn ? "" : ".." + std::to_string(sig->maxIn)));
    if (sig->outs >= 0 ? int(s.outputs.size()) != sig->outs : s.outputs.empty())
      return fail(what + ": " + std::to_string(s.outputs.size()) +
                  " results, expected " + std::to_string(sig->outs));
    for (size_t i = 0; i < s.inputs.size(); ++i) {
      int32_t v = s.inputs[i];
      if (v < -1 || v >= int32_t(plan.values.size()))
        return fail(what + ": operand value " + std::to_string(v) +
                    " does not exist");
      if (v == -1 && i < 32 && !(sig->optional >> i & 1))
        return fail(what + ": operand " + std::to_string(i) +
                    " is required, but absent (-1)");
    }
    for (int32_t v : s.outputs)
      if (v < 0 || v >= int32_t(plan.values.size()) ||
          plan.values[v].kind == ValueKind::constant)
        return fail(what + ": result value " + std::to_string(v) +
                    " does not exist or is a constant");
    if (std::string why = indexStepError(plan, s); !why.empty())
      return fail(what + ": " + why);
    if (const fb::KernelT *kern = s.attrs.Askernel()) {
      const std::string &name = kern->name;
      if (s.inputs.size() + s.outputs.size() > size_t(kMaxKernelOperands))
        return fail(what + ": " +
                    std::to_string(s.inputs.size() + s.outputs.size()) +
                    " operands and results, at most " +
                    std::to_string(kMaxKernelOperands) + " are supported");
      const KernelCode *k = nullptr;
      for (const KernelCode &c : plan.kernels)
        if (c.name == name)
          k = &c;
      if (!k)
        return fail(what + ": calls kernel '" + name +
                    "', which the plan does not define");
      if (k->numArgs != int(s.inputs.size() + s.outputs.size()))
        return fail(what + ": kernel '" + name + "' takes " +
                    std::to_string(k->numArgs) + " pointers, the step passes " +
                    std::to_string(s.inputs.size() + s.outputs.size()));
    }
    if (const fb::ExpertsT *ex = s.attrs.Asexperts()) {
      bool clamped = ex->activation == fb::Activation::clamped_swiglu;
      if (clamped && (s.inputs.size() < 3 || s.inputs[2] < 0))
        return fail(what + ": clamped_swiglu needs w_up");
      // NaN fails these comparisons too.
      if (!std::isfinite(ex->alpha) || !std::isfinite(ex->beta) ||
          !(ex->limit > 0.0f) ||
          (!clamped &&
           (ex->alpha != 1.0f || ex->beta != 0.0f || !std::isinf(ex->limit))))
        return fail(
            what + ": activation parameters alpha=" +
            std::to_string(ex->alpha) + " beta=" + std::to_string(ex->beta) +
            " limit=" + std::to_string(ex->limit) + " are invalid for " +
            fb::EnumNameActivation(ex->activation));
    }
    if (s.kind() == StepKind::dequantize && s.dispatchStep() != -1) {
      // Only the slots the dispatch gave rows: one rank's stacked experts.
      int64_t d = s.dispatchStep();
      if (d < 0 || d >= int64_t(i) ||
          plan.steps[d].kind() != StepKind::dispatch)
        return fail(what + ": attribute 'dispatch' must name an earlier "
                           "dispatch step");
      const Value &codes = plan.values[size_t(s.inputs[0])];
      int64_t slots = plan.steps[d].attrs.Asdispatch()->slots_per_rank;
      if (codes.shape.size() != 4 || codes.shape[0] != slots)
        return fail(what + ": codes " + shapeString(codes.shape) +
                    " are not the " + std::to_string(slots) +
                    " slots of its dispatch step " + std::to_string(d));
    }
    if (s.kind() == StepKind::experts || s.kind() == StepKind::combine) {
      int64_t d = s.dispatchStep();
      if (d < 0 || d >= int64_t(i) ||
          plan.steps[d].kind() != StepKind::dispatch)
        return fail(what + ": attribute 'dispatch' must name an earlier "
                           "dispatch step");
      // The routing weights scale the rows the dispatch sends (its
      // optional third operand) or the rows the combine sums, not both.
      if (s.kind() == StepKind::combine &&
          dispatchScalesRows(plan.steps[d]) == (s.inputs[1] >= 0))
        return fail(what + (s.inputs[1] >= 0
                                ? ": takes routing weights, but its dispatch "
                                  "scaled the rows it sent already"
                                : ": has no routing weights, and its dispatch "
                                  "sent unscaled rows"));
    }
  }
  if (std::string why = planSymbolsError(plan); !why.empty())
    return fail(why);
  if (std::string why = planBoxedError(plan); !why.empty())
    return fail(why);
  return true;
}
