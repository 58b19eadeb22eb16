//===- PlanBoxed.cpp - a KV cache kept in place at the box's strides ------===//
//
// A decode plan's cache pair (moert::cachePairs) may share one buffer: both
// roots boxed (Value::boxed), their elements at the row-major strides of
// the plan's shape (the box) whatever the call's sizes, so that the step
// writes present's new rows after past's and nothing moves between steps.
// This file holds verifyPlan's rules for boxed values and the runs of
// contiguous bytes that every copy between packed bytes and a box goes
// through (docs/plan-format.md, "Dynamic token counts").
//
//===----------------------------------------------------------------------===//

#include "moert/Plan.h"

using namespace moert;

uint64_t Value::boxBytes() const {
  uint64_t n = dtypeSize(dtype);
  for (int64_t d : boxShape())
    n *= uint64_t(d);
  return n;
}

void moert::forEachBoxRun(
    const std::vector<int64_t> &shape, const std::vector<int64_t> &box,
    uint64_t elemBytes,
    const std::function<void(uint64_t, uint64_t, uint64_t)> &run) {
  int64_t total = 1;
  for (int64_t d : shape)
    total *= d;
  if (total == 0)
    return;
  // Dims after `last` agree with the box: a row along `last` is one run.
  int64_t last = int64_t(shape.size()) - 1;
  while (last >= 0 && shape[size_t(last)] == box[size_t(last)])
    --last;
  if (last < 0) {
    run(0, 0, uint64_t(total) * elemBytes);
    return;
  }
  uint64_t inner = elemBytes;
  for (size_t e = size_t(last) + 1; e < box.size(); ++e)
    inner *= uint64_t(box[e]);
  const uint64_t bytes = uint64_t(shape[size_t(last)]) * inner;
  // The box's strides of the outer dims 0..last-1, and an odometer over
  // them.
  std::vector<uint64_t> stride(size_t(last), 0);
  uint64_t s = inner * uint64_t(box[size_t(last)]);
  for (int64_t d = last - 1; d >= 0; --d) {
    stride[size_t(d)] = s;
    s *= uint64_t(box[size_t(d)]);
  }
  std::vector<int64_t> index(size_t(last), 0);
  uint64_t packed = 0, boxed = 0;
  for (;;) {
    run(packed, boxed, bytes);
    packed += bytes;
    int64_t d = last - 1;
    for (; d >= 0; --d) {
      boxed += stride[size_t(d)];
      if (++index[size_t(d)] < shape[size_t(d)])
        break;
      boxed -= stride[size_t(d)] * uint64_t(shape[size_t(d)]);
      index[size_t(d)] = 0;
    }
    if (d < 0)
      return;
  }
}

namespace {
/// "value N ('name')".
std::string valueName(const Value &v) {
  return "value " + std::to_string(v.id) + " ('" + v.name + "')";
}

/// The other root of the cache pair that `root` is a root of, or -1 when
/// it is none.
int32_t pairedRoot(const Plan &plan, int32_t root) {
  auto rootOf = [&](int32_t id) {
    return id >= 0 && size_t(id) < plan.values.size()
               ? plan.values[size_t(id)].rootId()
               : -1;
  };
  for (auto [i, o] : cachePairs(plan)) {
    int32_t past = rootOf(plan.inputs[i].value);
    int32_t present = rootOf(plan.outputs[o].value);
    if (past < 0 || present < 0 || past == present)
      continue;
    if (past == root)
      return present;
    if (present == root)
      return past;
  }
  return -1;
}

/// The rules of boxed root `v`: outside the arena, one root of a cache
/// pair whose other root is boxed alike.
std::string boxedRootError(const Plan &plan, const Value &v) {
  std::string what = valueName(v) + " kept in place (boxed)";
  if (!v.outside)
    return what + " is not outside the arena (only the two roots of a "
                  "cache pair kept outside the arena are boxed)";
  int32_t other = pairedRoot(plan, v.id);
  if (other < 0)
    return what + " is not a root of a cache pair (a past* input and its "
                  "present* output)";
  const Value &o = plan.values[size_t(other)];
  std::string pair = ": the other root of its cache pair, " + valueName(o);
  if (!o.boxed)
    return what + pair + ", is not boxed (both roots share one buffer)";
  if (o.shape != v.shape)
    return what + " has shape " + shapeString(v.shape) + pair + ", has " +
           shapeString(o.shape) + " (one box for both)";
  if (o.dtype != v.dtype)
    return what + " has dtype " + dtypeName(v.dtype) + pair + ", has " +
           dtypeName(o.dtype);
  return "";
}

/// The rule of views: boxed with their root, over the same box.
std::string boxedViewError(const Plan &plan, const Value &v) {
  if (v.root < 0 || size_t(v.root) >= plan.values.size())
    return "";
  const Value &r = plan.values[size_t(v.root)];
  std::string what = valueName(v) + " views " + valueName(r);
  if (v.boxed == r.boxed) {
    if (v.boxed && v.boxBytes() != r.boxBytes())
      return what + " boxed, but its box " + shapeString(v.boxShape()) +
             " holds other than the root's " + shapeString(r.boxShape());
    return "";
  }
  return v.boxed ? what + ", which is not boxed, but is boxed itself (a "
                          "view is boxed with its root)"
                 : what + ", which is boxed, but is not boxed itself (a "
                          "view is boxed with its root)";
}

/// The rule of steps: only kernels touch a boxed value, but for reads of
/// one that lies as packed (Value::boxLiesPacked) and batch_matmul's of a
/// batch of matrices with boxed rows (Value::boxRowsOfBatches).
std::string boxedStepError(const Plan &plan, size_t index) {
  const Step &s = plan.steps[index];
  if (s.kind() == StepKind::kernel)
    return "";
  for (const std::vector<int32_t> *ops : {&s.inputs, &s.outputs})
    for (int32_t id : *ops) {
      if (id < 0 || size_t(id) >= plan.values.size() ||
          !plan.values[size_t(id)].boxed ||
          (ops == &s.inputs && (plan.values[size_t(id)].boxLiesPacked() ||
                                (s.kind() == StepKind::batch_matmul &&
                                 plan.values[size_t(id)].boxRowsOfBatches()))))
        continue;
      return "step " + std::to_string(index) + " (" + s.op() +
             (s.loc.empty() ? "" : " at '" + s.loc + "'") +
             "): " + (ops == &s.inputs ? "operand " : "result ") +
             valueName(plan.values[size_t(id)]) +
             " is kept in place (boxed); only kernel steps, compiled for "
             "the box's strides, read or write it (other steps may read it "
             "only when every dim before its dynamic one is 1, batch_matmul "
             "also [h, rows, d])";
    }
  return "";
}
} // namespace

std::string moert::planBoxedError(const Plan &plan) {
  for (const Value &v : plan.values) {
    if (v.boxed && plan.symbols.empty())
      return valueName(v) + " kept in place (boxed) in a plan without a "
                            "symbol";
    std::string why = v.root >= 0 ? boxedViewError(plan, v)
                      : v.boxed   ? boxedRootError(plan, v)
                                  : "";
    if (!why.empty())
      return why;
  }
  for (size_t i = 0; i < plan.steps.size(); ++i)
    if (std::string why = boxedStepError(plan, i); !why.empty())
      return why;
  return "";
}
