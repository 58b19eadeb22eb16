//===- ToPlanBuilder.h - the plan writer's builder (private) ----*- C++ -*-===//
//
// Private to lib/Conversion: the class behind moec::buildPlan
// (moec/Conversion/ToPlan.h). Its members are defined by responsibility in
//   ToPlan.cpp       plan values, constants and weight slices, the memory
//                    plan, the model inputs and outputs, generated code
//   ToPlanSteps.cpp  the steps: one (or none, for views and inits) per op
//                    of @main
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_CONVERSION_TOPLANBUILDER_H
#define MOEC_CONVERSION_TOPLANBUILDER_H

#include "moec/Analysis/Mesh.h"
#include "moec/Conversion/ToPlan.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <map>
#include <string>
#include <vector>

namespace moec::toplan {

using namespace mlir;

/// The plan dtype of an element type; false when plans have none.
bool toDType(Type t, moert::DType &out);

/// Lowers one partitioned module to a plan and its data: the values of
/// @main (constants and weight slices into segments, temps into the arena
/// by liveness), one step per op, and the generated kernels' code.
class PlanBuilder {
public:
  PlanBuilder(ModuleOp module, moert::Plan &plan, moert::PlanData &data)
      : module(module), plan(plan), data(data) {}
  LogicalResult run(StringRef source, const PlanOptions &options);

private:
  /// A new plan value for `v` (not yet placed).
  int32_t addValue(Value v, moert::ValueKind kind, StringRef name);
  /// `v` shares the bytes of `of` (a reshape).
  LogicalResult alias(Value v, Value of, Operation *op);
  LogicalResult lookup(Value v, Operation *op, int32_t &id);
  int32_t optional(Value v, Operation *op, LogicalResult &ok);
  LogicalResult addConstant(arith::ConstantOp c);
  LogicalResult addLocalWeights(moe::LocalWeightsOp op);
  LogicalResult addTpSlice(moe::TpSliceOp op);
  /// The step(s) of `op` (ToPlanSteps.cpp); views alias, inits vanish.
  LogicalResult lowerOp(Operation *op);
  LogicalResult lowerTopK(moe::TopKOp op);
  LogicalResult lowerScatterElements(moe::ScatterElementsOp op);
  /// Appends a step of the kind of `attrs` (a plan.fbs step table).
  template <typename T> moert::Step &addStep(T attrs, Operation *op) {
    moert::Step s;
    s.attrs.Set(std::move(attrs));
    s.loc = nodeName(op->getLoc());
    plan.steps.push_back(std::move(s));
    return plan.steps.back();
  }
  std::string axesName(ArrayRef<int16_t> axes);
  uint64_t appendData(int32_t segment, ArrayRef<char> bytes);
  /// Bytes of a constant: `len` at byte offset `src`, or zeros (src -1).
  struct Run {
    int64_t src;
    uint64_t len;
    bool operator<(const Run &o) const {
      return src < o.src || (src == o.src && len < o.len);
    }
  };
  /// Constants of at least this many bytes are read while the plan is
  /// written; smaller ones copied when lowered.
  static constexpr uint64_t kDeferBytes = uint64_t(1) << 20;
  uint64_t appendRuns(int32_t segment, Attribute attr, std::vector<Run> runs);
  /// Sets constant `id`'s data: rank r's bytes are `runs[r]` of `attr`
  /// (`bytes` each), stored once per group of ranks with the same runs.
  LogicalResult appendPerRank(int32_t id, Attribute attr,
                              std::vector<std::vector<Run>> runs,
                              uint64_t bytes);
  /// The segment the ranks `ranks` (sorted) map: a rank's own, the shared
  /// one (every rank), or one made for the group.
  int32_t segmentFor(const std::vector<int32_t> &ranks);
  std::map<std::vector<int32_t>, int32_t> groupSegment;
  void planMemory(func::FuncOp func, bool cacheOutsideArena);

  ModuleOp module;
  moert::Plan &plan;
  moert::PlanData &data;
  MeshSpec spec;
  DenseMap<Value, int32_t> ids;
  /// Arena values: root value id of each (aliases share their root).
  std::map<int32_t, int32_t> root;
  /// Host data of constants seen (for local_weights slicing).
  DenseMap<Value, Attribute> constAttr;
  DenseMap<Value, int32_t> stepOf; // dispatch handle -> step index
  /// Op index of the definition and last use of each arena value.
  std::map<int32_t, std::pair<int64_t, int64_t>> live;
  int64_t opIndex = 0;
};

} // namespace moec::toplan

#endif // MOEC_CONVERSION_TOPLANBUILDER_H
