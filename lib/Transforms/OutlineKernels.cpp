//===- OutlineKernels.cpp - moe-outline-kernels ---------------------------===//
//
// Moves every dense elementwise/reduction region of the per-rank program (a
// linalg op other than a matmul, after upstream elementwise fusion) into its
// own `func.func @kernel_N` marked `moe.kernel`, called from @main. Static
// slices and concatenations (attention's rotary halves) first become
// linalg.generic copies, so that they are kernels too; a ScatterND of rows
// becomes the ScatterElements it is (a plan step). The
// kernels are what moec compiles to machine code (CPU) or PTX (CUDA) and
// embeds in the plan; the calls become `kernel` steps. Structurally
// identical regions (every layer's norms, rotary halves, residual adds)
// share one kernel, so that the code compiled grows with the number of
// distinct regions, not with the number of layers.
//
//===----------------------------------------------------------------------===//

#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"
#include "moert/Limits.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/StringMap.h"

namespace moec {
#define GEN_PASS_DEF_MOEOUTLINEKERNELS
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// Ops that stay in @main: matmuls and (with `batchMatmuls`) f32 batch
/// matmuls have plan steps of their own (BLAS/cuBLAS); fills that only
/// initialise other linalg ops go with them (into the matmul step, or
/// recreated inside the kernel).
bool keepsOwnStep(Operation *op, bool batchMatmuls) {
  if (isa<linalg::MatmulOp>(op))
    return true;
  if (auto bm = dyn_cast<linalg::BatchMatmulOp>(op))
    return batchMatmuls &&
           (!bm.hasUserDefinedMaps() || isBatchMatmulTransB(bm)) &&
           llvm::all_of(bm->getOperandTypes(), [](Type t) {
             return cast<ShapedType>(t).getElementType().isF32();
           });
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
/// fill of a constant into one, of a static shape (a dynamic dim's size is
/// a value of @main, which the kernel does not have: such an init is passed
/// in like any other).
bool isRecreatableInit(Value v) {
  if (!cast<RankedTensorType>(v.getType()).hasStaticShape())
    return false;
  if (isEmpty(v))
    return true;
  if (auto f = v.getDefiningOp<linalg::FillOp>())
    return isEmpty(f.getOutputs()[0]) &&
           f.getInputs()[0].getDefiningOp<arith::ConstantOp>();
  return false;
}

/// The tensors a kernel outlined from `op` takes as arguments, each once:
/// its inputs, the inits it cannot recreate, and the tensors its body reads
/// from outside (a gather's table, a concatenation's inputs). Scalar
/// constants the body reads go into `constants` (cloned into the kernel);
/// false if the body reads another kind of value from outside.
bool kernelArgs(linalg::LinalgOp op, llvm::SetVector<Value> &args,
                llvm::SetVector<Value> &constants) {
  for (Value v : op.getDpsInputs())
    args.insert(v);
  for (Value v : op.getDpsInits())
    if (!isRecreatableInit(v))
      args.insert(v);
  llvm::SetVector<Value> captured;
  getUsedValuesDefinedAbove(op->getRegions(), captured);
  // Scalar constants are cloned into the kernel; tensors the body reads
  // become arguments, so that weights stay plan constants (uploaded once,
  // not compiled into the kernel's code).
  for (Value v : captured) {
    if (v.getDefiningOp<arith::ConstantOp>() &&
        !isa<RankedTensorType>(v.getType()))
      constants.insert(v);
    else if (isa<RankedTensorType>(v.getType()))
      args.insert(v);
    else
      return false;
  }
  return true;
}

/// True when `g` only moves data: its body reads elements (its operands,
/// tensor.extract) at computed positions and computes nothing on them
/// but a choice (a slice, a gather, a concatenation, a broadcast).
bool movesDataOnly(linalg::GenericOp g) {
  return llvm::all_of(g.getBody()->getOperations(), [](Operation &op) {
    if (isa<linalg::IndexOp, linalg::YieldOp, tensor::ExtractOp,
            arith::SelectOp>(op))
      return true;
    return op.getDialect() == op.getContext()->getLoadedDialect("arith") &&
           llvm::all_of(op.getResultTypes(),
                        [](Type t) { return t.isIntOrIndex(); });
  });
}

/// Whether elementwise fusion may fuse the producer of `operand` into its
/// consumer: a producer whose every use is in that consumer, or one that
/// only moves data (a slice or gather several kernels read: each reads its
/// own copy). A producer that computes and that others read too is not
/// copied into each of them: along a chain (the residual stream, where
/// every layer adds to the previous sum and several kernels read each sum)
/// the copies would nest, so that a layer's kernels recomputed every
/// earlier layer's additions and took every earlier layer's outputs as
/// operands, more with each layer. And only while the fused kernel's
/// pointers stay within the runtime's limit (moert::kMaxKernelOperands).
bool fusesInto(OpOperand *operand) {
  auto producer = operand->get().getDefiningOp<linalg::GenericOp>();
  auto consumer = dyn_cast<linalg::GenericOp>(operand->getOwner());
  if (!producer || !consumer)
    return false;
  if (!movesDataOnly(producer) &&
      llvm::any_of(producer->getUsers(),
                   [&](Operation *u) { return u != consumer; }))
    return false;
  llvm::SetVector<Value> args, constants;
  if (!kernelArgs(producer, args, constants) ||
      !kernelArgs(consumer, args, constants))
    return false;
  int64_t pointers = int64_t(consumer->getNumResults());
  for (Value v : args)
    if (v.getDefiningOp() != producer.getOperation())
      ++pointers;
  return pointers <= moert::kMaxKernelOperands;
}

/// A ScatterND of rows (indices [M, 1]: updates [M, ...] replace or
/// reduce into rows of data) as the ScatterElements along dim 0 it is,
/// the row index broadcast over each row (a generic: a kernel), since
/// plans have a scatter_elements step (JetMoE's index_add over sorted
/// pairs, left by moe-raise-experts where no layer raised).
LogicalResult scatterRowsToElements(moe::ScatterNDOp op) {
  auto idxT = cast<RankedTensorType>(op.getIndices().getType());
  auto updT = cast<RankedTensorType>(op.getUpdates().getType());
  auto dataT = cast<RankedTensorType>(op.getData().getType());
  if (idxT.getRank() != 2 || idxT.getDimSize(1) != 1 ||
      !updT.hasStaticShape() || updT.getRank() != dataT.getRank() ||
      updT.getDimSize(0) != idxT.getDimSize(0) ||
      updT.getShape().drop_front() != dataT.getShape().drop_front())
    return failure();
  OpBuilder b(op);
  Location loc = op.getLoc();
  MLIRContext *ctx = b.getContext();
  int64_t rank = updT.getRank();
  auto bT = RankedTensorType::get(updT.getShape(), idxT.getElementType());
  Value init =
      tensor::EmptyOp::create(b, loc, bT.getShape(), bT.getElementType());
  AffineMap rowMap = AffineMap::get(
      rank, 0, {getAffineDimExpr(0, ctx), getAffineConstantExpr(0, ctx)}, ctx);
  SmallVector<utils::IteratorType> par(rank, utils::IteratorType::parallel);
  Value idx =
      linalg::GenericOp::create(
          b, loc, TypeRange{bT}, ValueRange{op.getIndices()}, ValueRange{init},
          ArrayRef<AffineMap>{rowMap, b.getMultiDimIdentityMap(rank)}, par,
          [&](OpBuilder &bb, Location l, ValueRange a) {
            linalg::YieldOp::create(bb, l, a[0]);
          })
          .getResult(0);
  auto se = moe::ScatterElementsOp::create(
      b, loc, op.getType(), op.getData(), idx, op.getUpdates(),
      b.getI64IntegerAttr(0), op.getReductionAttr());
  op.replaceAllUsesWith(se.getResult());
  op.erase();
  return success();
}

/// A static tensor.extract_slice (constant strides, no dropped dims) as a
/// linalg.generic over the result reading src at offset + stride * index
/// (tensor.extract in the body: an input indexing map would make linalg
/// infer the loop bounds from the source).
LogicalResult sliceToGeneric(tensor::ExtractSliceOp s) {
  auto st = s.getSourceType(), rt = s.getResultType();
  if (st.getRank() != rt.getRank() || !rt.hasStaticShape() ||
      llvm::any_of(s.getStaticOffsets(), ShapedType::isDynamic) ||
      llvm::any_of(s.getStaticStrides(), ShapedType::isDynamic))
    return failure();
  OpBuilder b(s);
  int64_t r = rt.getRank();
  Value init = tensor::EmptyOp::create(b, s.getLoc(), rt.getShape(),
                                       rt.getElementType());
  Value src = s.getSource();
  SmallVector<int64_t> offs(s.getStaticOffsets()),
      strides(s.getStaticStrides());
  auto g = linalg::GenericOp::create(
      b, s.getLoc(), TypeRange{rt}, ValueRange{}, ValueRange{init},
      SmallVector<AffineMap>{b.getMultiDimIdentityMap(r)},
      SmallVector<utils::IteratorType>(r, utils::IteratorType::parallel),
      [&](OpBuilder &bb, Location l, ValueRange) {
        SmallVector<Value> idx;
        for (int64_t d = 0; d < r; ++d) {
          Value i = linalg::IndexOp::create(bb, l, d);
          if (strides[d] != 1)
            i = arith::MulIOp::create(
                bb, l, i, arith::ConstantIndexOp::create(bb, l, strides[d]));
          if (offs[d] != 0)
            i = arith::AddIOp::create(
                bb, l, i, arith::ConstantIndexOp::create(bb, l, offs[d]));
          idx.push_back(i);
        }
        linalg::YieldOp::create(
            bb, l, Value(tensor::ExtractOp::create(bb, l, src, idx)));
      });
  s.replaceAllUsesWith(g.getResult(0));
  s.erase();
  return success();
}

/// A tensor.concat of more inputs than a kernel may take (with its result,
/// moert::kMaxKernelOperands pointers) as a tree of concatenations that
/// each may (a scatter of many rows imports as one concatenation of its
/// pieces).
void splitWideConcat(tensor::ConcatOp c) {
  const size_t most = size_t(moert::kMaxKernelOperands) - 1;
  SmallVector<Value> inputs(c.getInputs());
  if (inputs.size() <= most)
    return;
  OpBuilder b(c);
  while (inputs.size() > most) {
    SmallVector<Value> next;
    for (size_t i = 0; i < inputs.size(); i += most) {
      ArrayRef<Value> part =
          ArrayRef<Value>(inputs).slice(i, std::min(most, inputs.size() - i));
      next.push_back(part.size() == 1 ? part[0]
                                      : tensor::ConcatOp::create(
                                            b, c.getLoc(), c.getDim(), part)
                                            .getResult());
    }
    inputs = std::move(next);
  }
  c->setOperands(inputs);
}

/// A static tensor.concat as a linalg.generic over the result that reads
/// the input holding each position (tensor.extract from the inputs, which
/// the kernel takes as arguments).
LogicalResult concatToGeneric(tensor::ConcatOp c) {
  auto rt = c.getResultType();
  if (!rt.hasStaticShape() || llvm::any_of(c.getInputs(), [](Value v) {
        return !cast<RankedTensorType>(v.getType()).hasStaticShape();
      }))
    return failure();
  OpBuilder b(c);
  int64_t r = rt.getRank(), dim = int64_t(c.getDim());
  Value init = tensor::EmptyOp::create(b, c.getLoc(), rt.getShape(),
                                       rt.getElementType());
  SmallVector<Value> inputs(c.getInputs());
  auto g = linalg::GenericOp::create(
      b, c.getLoc(), TypeRange{rt}, ValueRange{}, ValueRange{init},
      SmallVector<AffineMap>{b.getMultiDimIdentityMap(r)},
      SmallVector<utils::IteratorType>(r, utils::IteratorType::parallel),
      [&](OpBuilder &bb, Location l, ValueRange) {
        SmallVector<Value> idx;
        for (int64_t d = 0; d < r; ++d)
          idx.push_back(linalg::IndexOp::create(bb, l, d));
        // From the last input back: select(i >= start_j, x_j[i - start_j],
        // ...).
        SmallVector<int64_t> starts;
        int64_t at = 0;
        for (Value v : inputs) {
          starts.push_back(at);
          at += cast<RankedTensorType>(v.getType()).getDimSize(dim);
        }
        Value result;
        for (int64_t j = int64_t(inputs.size()) - 1; j >= 0; --j) {
          SmallVector<Value> ij = idx;
          Value start = arith::ConstantIndexOp::create(bb, l, starts[j]);
          // Clamped, so that the unselected reads stay in bounds.
          Value off = arith::SubIOp::create(bb, l, idx[dim], start);
          Value zero = arith::ConstantIndexOp::create(bb, l, 0);
          Value size = arith::ConstantIndexOp::create(
              bb, l,
              cast<RankedTensorType>(inputs[j].getType()).getDimSize(dim) - 1);
          off = arith::MaxSIOp::create(bb, l, off, zero);
          off = arith::MinSIOp::create(bb, l, off, size);
          ij[dim] = off;
          Value x = tensor::ExtractOp::create(bb, l, inputs[j], ij);
          if (!result) {
            result = x;
            continue;
          }
          Value end = arith::ConstantIndexOp::create(bb, l, starts[j + 1]);
          Value before = arith::CmpIOp::create(bb, l, arith::CmpIPredicate::slt,
                                               idx[dim], end);
          result = arith::SelectOp::create(bb, l, before, x, result);
        }
        linalg::YieldOp::create(bb, l, result);
      });
  c.replaceAllUsesWith(g.getResult(0));
  c.erase();
  return success();
}

struct MoEOutlineKernelsPass
    : moec::impl::MoEOutlineKernelsBase<MoEOutlineKernelsPass> {
  using Base::Base;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<tensor::ConcatOp> concats;
    module.walk([&](tensor::ConcatOp c) {
      if (!c->getParentOfType<func::FuncOp>()->hasAttr("moe.kernel"))
        concats.push_back(c);
    });
    for (tensor::ConcatOp c : concats)
      splitWideConcat(c);
    SmallVector<moe::ScatterNDOp> scatters;
    module.walk([&](moe::ScatterNDOp s) { scatters.push_back(s); });
    for (moe::ScatterNDOp s : scatters)
      (void)scatterRowsToElements(s);
    SmallVector<Operation *> copies;
    module.walk([&](Operation *op) {
      if (isa<tensor::ExtractSliceOp, tensor::ConcatOp>(op) &&
          !op->getParentOfType<func::FuncOp>()->hasAttr("moe.kernel"))
        copies.push_back(op);
    });
    for (Operation *op : copies) {
      if (auto s = dyn_cast<tensor::ExtractSliceOp>(op))
        (void)sliceToGeneric(s);
      else if (auto c = dyn_cast<tensor::ConcatOp>(op))
        (void)concatToGeneric(c);
    }
    // Fuse elementwise producers into their linalg.generic consumers (but
    // move no reshapes: matmuls must stay named ops for the BLAS).
    RewritePatternSet patterns(&getContext());
    linalg::populateElementwiseOpsFusionPatterns(patterns, fusesInto);
    if (failed(applyPatternsGreedily(module, std::move(patterns))))
      return signalPassFailure();
    int64_t next = 0;
    kernels.clear();
    SmallVector<func::FuncOp> funcs;
    for (auto f : module.getOps<func::FuncOp>())
      if (!f->hasAttr("moe.kernel") && !f.isExternal())
        funcs.push_back(f);
    for (func::FuncOp func : funcs) {
      SmallVector<linalg::LinalgOp> targets;
      for (Operation &op : func.getBody().front())
        if (auto l = dyn_cast<linalg::LinalgOp>(&op);
            l && !keepsOwnStep(&op, batchMatmulSteps))
          targets.push_back(l);
      for (linalg::LinalgOp op : targets)
        if (failed(outline(module, func, op, next)))
          return signalPassFailure();
      // Inits recreated inside kernels may now be dead.
      bool erased = true;
      while (erased) {
        erased = false;
        for (Operation &op :
             llvm::make_early_inc_range(llvm::reverse(func.getBody().front())))
          if (isa<tensor::EmptyOp, linalg::FillOp, tensor::ExpandShapeOp,
                  tensor::CollapseShapeOp>(&op) &&
              op.use_empty()) {
            op.erase();
            erased = true;
          }
      }
    }
  }

  /// The kernels made so far, by their text without their name (see
  /// kernelKey).
  llvm::StringMap<func::FuncOp> kernels;

  /// `kernel` in generic form, without locations and with its name replaced
  /// by a placeholder: two kernels with the same text compute the same
  /// function of their arguments (same ops, types, attributes and
  /// constants, same argument order).
  static std::string kernelKey(func::FuncOp kernel) {
    MLIRContext *ctx = kernel.getContext();
    StringAttr name = kernel.getSymNameAttr();
    kernel.setSymNameAttr(StringAttr::get(ctx, "kernel"));
    std::string key;
    llvm::raw_string_ostream os(key);
    // Local scope: printing a nested op would otherwise number the values
    // of the whole module (quadratic in the number of kernels).
    kernel->print(os, OpPrintingFlags()
                          .printGenericOpForm()
                          .useLocalScope()
                          .assumeVerified()
                          .enableDebugInfo(false));
    kernel.setSymNameAttr(name);
    return key;
  }

  /// Outlines `op` into a new kernel `kernel_<next>` (then increments
  /// `next`), or into the kernel made earlier for an identical region.
  LogicalResult outline(ModuleOp module, func::FuncOp func, linalg::LinalgOp op,
                        int64_t &next) {
    // Arguments: the op's inputs, inits that cannot be recreated and the
    // tensors the body reads, each once.
    llvm::SetVector<Value> args, constants;
    if (!kernelArgs(op, args, constants))
      return op->emitError("cannot outline into a kernel: the region uses "
                           "a non-tensor value from outside");

    OpBuilder b(module.getContext());
    b.setInsertionPointToEnd(module.getBody());
    SmallVector<Type> argTypes;
    for (Value v : args)
      argTypes.push_back(v.getType());
    std::string name = "kernel_" + std::to_string(next);
    auto kernel =
        func::FuncOp::create(b, op.getLoc(), name,
                             b.getFunctionType(argTypes, op->getResultTypes()));
    kernel->setAttr("moe.kernel", b.getUnitAttr());
    Block *body = kernel.addEntryBlock();
    b.setInsertionPointToStart(body);
    IRMapping map;
    for (auto [v, a] : llvm::zip(args, body->getArguments()))
      map.map(v, a);
    for (Value v : constants)
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
    auto [it, added] = kernels.try_emplace(kernelKey(kernel), kernel);
    if (added) {
      ++next;
    } else {
      kernel.erase();
      kernel = it->second;
    }

    b.setInsertionPoint(op);
    auto call =
        func::CallOp::create(b, op.getLoc(), kernel, args.getArrayRef());
    op->replaceAllUsesWith(call.getResults());
    op->erase();
    return success();
  }
};
} // namespace
