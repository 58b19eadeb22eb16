//===- OutlineKernels.cpp - moe-outline-kernels ---------------------------===//
//
// Moves every dense elementwise/reduction region of the per-rank program (a
// linalg op other than a matmul, after upstream elementwise fusion) into its
// own `func.func @kernel_N` marked `moe.kernel`, called from @main. The
// kernels are what moec compiles to machine code (CPU) or PTX (CUDA) and
// embeds in the plan; the calls become `kernel` steps.
//
//===----------------------------------------------------------------------===//

#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/RegionUtils.h"

namespace moec {
#define GEN_PASS_DEF_MOEOUTLINEKERNELS
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// Ops that stay in @main: matmuls have plan steps of their own; fills
/// that only initialise other linalg ops go with them (into the matmul
/// step, or recreated inside the kernel).
bool keepsOwnStep(Operation *op) {
  if (isa<linalg::MatmulOp>(op))
    return true;
  if (auto f = dyn_cast<linalg::FillOp>(op))
    return llvm::all_of(f->getUsers(),
                        [](Operation *u) { return isa<linalg::LinalgOp>(u); });
  return false;
}

/// A tensor.empty, possibly reshaped: its contents are undefined, so the
/// kernel can make its own.
bool isEmpty(Value v) {
  while (Operation *def = v.getDefiningOp()) {
    if (isa<tensor::EmptyOp>(def))
      return true;
    if (!isa<tensor::ExpandShapeOp, tensor::CollapseShapeOp>(def))
      return false;
    v = def->getOperand(0);
  }
  return false;
}

/// True when `v` can be recreated inside the kernel: an empty tensor, or a
/// fill of a constant into one.
bool isRecreatableInit(Value v) {
  if (isEmpty(v))
    return true;
  if (auto f = v.getDefiningOp<linalg::FillOp>())
    return isEmpty(f.getOutputs()[0]) &&
           f.getInputs()[0].getDefiningOp<arith::ConstantOp>();
  return false;
}

struct MoEOutlineKernelsPass
    : moec::impl::MoEOutlineKernelsBase<MoEOutlineKernelsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Fuse elementwise producers into their linalg.generic consumers (but
    // move no reshapes: matmuls must stay named ops for the BLAS).
    RewritePatternSet patterns(&getContext());
    linalg::populateElementwiseOpsFusionPatterns(
        patterns, [](OpOperand *operand) {
          Operation *producer = operand->get().getDefiningOp();
          return producer && isa<linalg::GenericOp>(producer) &&
                 isa<linalg::GenericOp>(operand->getOwner());
        });
    if (failed(applyPatternsGreedily(module, std::move(patterns))))
      return signalPassFailure();
    int64_t next = 0;
    SmallVector<func::FuncOp> funcs;
    for (auto f : module.getOps<func::FuncOp>())
      if (!f->hasAttr("moe.kernel") && !f.isExternal())
        funcs.push_back(f);
    for (func::FuncOp func : funcs) {
      SmallVector<linalg::LinalgOp> targets;
      for (Operation &op : func.getBody().front())
        if (auto l = dyn_cast<linalg::LinalgOp>(&op); l && !keepsOwnStep(&op))
          targets.push_back(l);
      for (linalg::LinalgOp op : targets)
        if (failed(outline(module, func, op, next++)))
          return signalPassFailure();
      // Inits recreated inside kernels may now be dead.
      bool erased = true;
      while (erased) {
        erased = false;
        for (Operation &op : llvm::make_early_inc_range(
                 llvm::reverse(func.getBody().front())))
          if (isa<tensor::EmptyOp, linalg::FillOp, tensor::ExpandShapeOp,
                  tensor::CollapseShapeOp>(&op) &&
              op.use_empty()) {
            op.erase();
            erased = true;
          }
      }
    }
  }

  LogicalResult outline(ModuleOp module, func::FuncOp func,
                        linalg::LinalgOp op, int64_t index) {
    // Arguments: the op's inputs, and inits that cannot be recreated.
    SmallVector<Value> args;
    for (Value v : op.getDpsInputs())
      args.push_back(v);
    for (Value v : op.getDpsInits())
      if (!isRecreatableInit(v))
        args.push_back(v);
    llvm::SetVector<Value> captured;
    getUsedValuesDefinedAbove(op->getRegions(), captured);
    for (Value v : captured)
      if (!v.getDefiningOp<arith::ConstantOp>())
        return op->emitError("cannot outline into a kernel: the region uses "
                             "a non-constant value from outside");

    OpBuilder b(module.getContext());
    b.setInsertionPointToEnd(module.getBody());
    SmallVector<Type> argTypes;
    for (Value v : args)
      argTypes.push_back(v.getType());
    std::string name = "kernel_" + std::to_string(index);
    auto kernel = func::FuncOp::create(
        b, op.getLoc(), name,
        b.getFunctionType(argTypes, op->getResultTypes()));
    kernel->setAttr("moe.kernel", b.getUnitAttr());
    Block *body = kernel.addEntryBlock();
    b.setInsertionPointToStart(body);
    IRMapping map;
    for (auto [v, a] : llvm::zip(args, body->getArguments()))
      map.map(v, a);
    for (Value v : captured)
      b.clone(*v.getDefiningOp(), map);
    for (Value v : op.getDpsInits()) {
      if (map.contains(v))
        continue;
      auto type = cast<RankedTensorType>(v.getType());
      Value empty = tensor::EmptyOp::create(b, op.getLoc(), type.getShape(),
                                            type.getElementType());
      if (auto f = v.getDefiningOp<linalg::FillOp>()) {
        Operation *c = b.clone(*f.getInputs()[0].getDefiningOp());
        empty = linalg::FillOp::create(b, op.getLoc(), c->getResult(0), empty)
                    .getResult(0);
      }
      map.map(v, empty);
    }
    Operation *clone = b.clone(*op, map);
    func::ReturnOp::create(b, op.getLoc(), clone->getResults());

    b.setInsertionPoint(op);
    auto call = func::CallOp::create(b, op.getLoc(), kernel, args);
    op->replaceAllUsesWith(call.getResults());
    op->erase();
    return success();
  }
};
} // namespace
