//===- RaiseExpertsInternal.h - moe-raise-experts' parts --------*- C++ -*-===//
//
// Private to lib/Transforms. moe-raise-experts (RaiseExperts.cpp) raises an
// exported MoE layer: a router (scores -> top-k -> optional
// renormalisation) and experts, either a loop over the experts or one
// batched computation, to moe.route + moe.experts. Its matchers, by family:
//   RaiseMatchers.cpp  views, element-wise generics, constants, slices
//   RaiseFFN.cpp       one expert's FFN and its weights
//   RaiseRouter.cpp    the router (top-k routers, Switch Transformer's)
//   RaiseLoops.cpp     the per-expert loop form (TorchScript exporter)
//   RaiseBatched.cpp   the batched form (dynamo exporter, batched_mm)
//   RaiseGrouped.cpp   the grouped form (JetMoE: pairs sorted by expert,
//                      split by the tokens per expert, one GEMM per chunk)
//   RaiseDense.cpp     the dense form (Llama 4: all experts on every token)
//   RaiseEmbedding.cpp product-key experts (Doge: rows of embedding tables)
//   RaiseShared.cpp    the shared experts added to a layer
//   RaiseActivations.cpp  GELU (erf, tanh), the clamped SwiGLU
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_TRANSFORMS_RAISEEXPERTSINTERNAL_H
#define MOEC_LIB_TRANSFORMS_RAISEEXPERTSINTERNAL_H

#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/SetVector.h"

#include <array>
#include <map>
#include <optional>
#include <string>

namespace moec::raising {

// A private header: its code names MLIR's types unqualified, as the
// matchers' files do.
using namespace mlir;

//===----------------------------------------------------------------------===//
// Shared matchers (RaiseMatchers.cpp)
//===----------------------------------------------------------------------===//

/// Looks through ops that only change the view of a tensor.
Value skipViews(Value v);

/// The body ops of a single-result linalg.generic, terminator excluded.
SmallVector<Operation *> bodyOps(linalg::GenericOp g);

/// A two-input element-wise generic whose body is a single `OpTy` of the
/// two block arguments: returns the two inputs.
template <typename OpTy>
std::optional<std::pair<Value, Value>> matchBinary(Value v) {
  auto g = v.getDefiningOp<linalg::GenericOp>();
  if (!g || g.getNumDpsInputs() != 2 || g.getNumResults() != 1)
    return std::nullopt;
  SmallVector<Operation *> ops = bodyOps(g);
  if (ops.size() != 1 || !isa<OpTy>(ops[0]))
    return std::nullopt;
  Block *b = g.getBody();
  Value y = b->getTerminator()->getOperand(0);
  if (y != ops[0]->getResult(0) || ops[0]->getOperand(0) != b->getArgument(0) ||
      ops[0]->getOperand(1) != b->getArgument(1))
    return std::nullopt;
  return std::make_pair(g.getDpsInputs()[0], g.getDpsInputs()[1]);
}

/// A one-input generic computing sigmoid (1 / (1 + exp(-x))): its input.
Value matchSigmoid(Value v);

/// The value of a scalar float constant (a rank-0 or splat tensor constant,
/// or a scalar constant).
std::optional<double> scalarFloat(Value v);

/// An element-wise binary generic `x OP c` (either order) with `c` a scalar
/// constant: returns x and the constant.
template <typename OpTy>
std::optional<std::pair<Value, double>> matchScalarBinary(Value v) {
  auto bin = matchBinary<OpTy>(v);
  if (!bin)
    return std::nullopt;
  if (std::optional<double> c = scalarFloat(bin->second))
    return std::make_pair(bin->first, *c);
  if (std::optional<double> c = scalarFloat(bin->first))
    return std::make_pair(bin->second, *c);
  return std::nullopt;
}

/// A reduction over `dim` of a single input with a single-op body `OpTy`:
/// returns the input.
template <typename OpTy> Value matchReduce(Value v, int64_t dim) {
  auto red = skipViews(v).getDefiningOp<linalg::ReduceOp>();
  if (!red || red.getInputs().size() != 1 ||
      red.getDimensions() != ArrayRef<int64_t>{dim})
    return {};
  Block &body = red.getCombiner().front();
  if (body.getOperations().size() != 2 || !isa<OpTy>(body.front()))
    return {};
  return red.getInputs()[0];
}

/// `v` reshaped to the static `shape` (tensor.reshape by a constant shape;
/// `v` itself when it has that shape already).
Value reshapeTo(OpBuilder &b, Location loc, Value v, ArrayRef<int64_t> shape);
/// `v` [d0, ..., dn-1, e] with its leading dims merged: [d0 * ... * dn-1, e]
/// (tensor.collapse_shape; `v` itself when it is 2-D).
Value collapseLeading(OpBuilder &b, Location loc, Value v);
/// True when `v` is a constant tensor of zeros.
bool isZeroConstant(Value v);

/// The backward slice of `v` (ops it depends on).
SetVector<Operation *> sliceOf(Value v);

//===----------------------------------------------------------------------===//
// Expert FFNs (RaiseFFN.cpp)
//===----------------------------------------------------------------------===//

/// Where a MatMul's right-hand side [K, N] comes from: a constant, or the
/// slab of a stacked [E, A, B] constant picked by the expert id (transformers
/// 5.x `gate_up_proj[expert_idx]`), possibly transposed, possibly a column
/// range of it (a fused gate/up projection split in two).
struct WeightRef {
  arith::ConstantOp src;
  bool stacked = false;
  bool transposed = false;
  /// Columns colBegin, colBegin + colStep, ... < colEnd of the [K, N]
  /// matrix (colEnd -1: all); a step of 2 de-interleaves a fused gate/up
  /// projection (GPT-OSS's `gate_up[..., ::2]`).
  int64_t colBegin = 0, colEnd = -1, colStep = 1;
  /// Batched form only: the [n] or [n, 1] expert ids that pick one slab per
  /// row (see matchBatchedLinear).
  Value ids;
  /// Dense form only (Llama 4): the stacked constant multiplies a
  /// batch_matmul over all E experts, expert e's matrix is slab e.
  bool dense = false;
};

/// A bias [N] added after a MatMul: a constant [N] (or [1, N]), or the row
/// of a stacked [E, N] constant picked by the expert id (transformers 5.x
/// `gate_up_proj_bias[expert_idx]`), or per token row by the batched
/// form's ids (`gate_up_proj_bias[expert_ids]`); possibly the columns colBegin,
/// colBegin + colStep, ... < colEnd of it (colEnd -1: all). Null when
/// absent.
struct BiasRef {
  arith::ConstantOp src;
  bool stacked = false;
  int64_t colBegin = 0, colEnd = -1, colStep = 1;
  /// Batched form only: the ids that pick one row per token row.
  Value ids;
  explicit operator bool() const { return bool(src); }
};

/// One expert's FFN, read back from its output.
struct ExpertFFN {
  Value input; // the gathered tokens [n, H]
  WeightRef gate, down;
  std::optional<WeightRef> up;
  moe::Activation act = moe::Activation::identity;
  /// clamped_swiglu's parameters (moe.experts); limit < 0: no clamping.
  double alpha = 1.0, beta = 0.0, limit = -1.0;
  /// Biases added after the gate, up and down MatMuls (nn.Linear with
  /// bias).
  BiasRef bGate, bUp, bDown;
};

/// GELU with erf as torch.onnx writes it: (u * (erf(u / sqrt(2)) + 1)) *
/// 0.5, or (u * 0.5) * (...): returns u (RaiseActivations.cpp).
Value matchGeluErf(Value v);
/// GELU with tanh as torch.onnx writes it: 0.5 * (x * (1 + tanh(sqrt(2/pi)
/// * (x + 0.044715 * x^3)))), or (x * 0.5) * (...): returns x.
Value matchGeluTanh(Value v);

/// GPT-OSS's clamped SwiGLU `(u' + beta) * (g' * sigmoid(alpha * g'))`,
/// g' = min(g, limit), u' = clamp(u, -limit, limit) (limit -1: no clamps).
struct ClampedSwiglu {
  Value gate, up;
  double alpha = 1.0, beta = 0.0, limit = -1.0;
};
std::optional<ClampedSwiglu> matchClampedSwiglu(Value h);

/// An expert activation of `u` (silu `u * sigmoid(u)`, GELU erf or tanh,
/// relu): returns u and sets `act`; null otherwise.
Value matchActivation(Value a, moe::Activation &act);
/// `linalg.matmul(x, W)` with a resolvable constant W: returns {x, W}.
std::optional<std::pair<Value, WeightRef>> matchLinear(Value v);

/// Matches down(act(gate(x)) [* up(x)]) on the FFN output `v`.
FailureOr<ExpertFFN> matchFFN(Value v, std::string &why);

/// Stacks the experts' [N] biases (expert id, bias) into one [E, N] blob,
/// expert e's times `scales[e]` when given (f32 only).
FailureOr<Value> stackBiases(OpBuilder &b, Location loc,
                             ArrayRef<std::pair<int64_t, BiasRef>> parts,
                             StringRef name,
                             const std::vector<float> *scales = nullptr);

/// Stacks the experts' [K, N] matrices into one [E, K, N] weight blob,
/// expert e's times `scales[e]` when given (f32 only, never lazy).
FailureOr<Value> stack(OpBuilder &b, Location loc,
                       ArrayRef<std::pair<int64_t, WeightRef>> parts,
                       StringRef name,
                       const std::vector<float> *scales = nullptr);

//===----------------------------------------------------------------------===//
// Routers (RaiseRouter.cpp)
//===----------------------------------------------------------------------===//

/// The router of one MoE layer, read from its selection top-k (or, for
/// Switch Transformer, its top-1 ArgMax).
struct Router {
  /// The op that selects the experts: a moe.topk, or the ArgMax generic.
  Operation *select = nullptr;
  int64_t k = 1;
  /// The expert mask the loop must read (Switch: the one-hot, or the one-hot
  /// times its expert-capacity mask); null when not checked.
  Value expertMask;
  /// [..., E]; leading dims are the tokens.
  Value logits;
  /// The scores s = score_func(logits) the weights are read from.
  Value scores;
  moe::ScoreFunc score = moe::ScoreFunc::softmax;
  /// Selection-only bias (DeepSeek-V3's e_score_correction_bias), [E].
  Value bias;
  int64_t numGroups = 1, topkGroups = 1;
  moe::GroupScore groupScore = moe::GroupScore::max;
  /// The routing weights the experts are scaled by: the top-k values (or
  /// the scores gathered at the top-k indices), possibly renormalised and
  /// scaled.
  Value weights;
  bool renormalize = false;
  double renormEps = 0.0; // added to the sum when renormalizing
  double scaling = 1.0;
  /// Llama 4: the top-k logits scattered into a -inf filled [T, E], then
  /// the sigmoid; `weights` is that dense [T, E] (0 where not selected).
  bool dense = false;
  /// The weights scale the experts' input (moe.experts weight_input).
  bool weightInput = false;
  /// A constant [E] the weights are multiplied by at the selected ids
  /// (Gemma 4's per_expert_scale): folded into expert e's w_down and
  /// b_down, since its output is linear in them.
  arith::ConstantOp expertScale;
  /// A router none of the matchers recognise (PhiMoE's sparsemixer, a
  /// hand-written one): its ops stay as they are and feed moe.experts
  /// directly. `ids` are the selected expert ids [..., k] (`select` is
  /// their producer: the top-k, the ArgMax or the concatenation of
  /// several picks); `weights` is unknown until the experts are matched:
  /// it is whatever [..., k] tensor they are scaled by.
  bool generic = false;
  Value ids;
};

/// The router of an MoE layer whose selection (a top-k or an ArgMax
/// picking expert ids) none of the matchers recognise, kept as dense ops:
/// `ids` ([..., k] or [...], int64) along the last dim of `scores`
/// ([..., E]), possibly concatenated with other picks along the last dim.
/// Null when the ids are not int64 or not along the scores' last dim.
std::optional<Router> genericRouter(Value ids, Value scores);

/// Matches the router that ends at the selection top-k `topk`. Returns
/// nullopt when `topk` is not over router scores at all; otherwise a Router,
/// or a failure with `why` set (a router that cannot be raised).
std::optional<FailureOr<Router>> matchRouter(moe::TopKOp topk,
                                             std::string &why);

/// True when `g` is the importer's ArgMax over the last dim of a single
/// input that picks the first of equal maxima (outputs: values, i64 indices).
bool isFirstArgMaxLastDim(linalg::GenericOp g);

/// Matches Switch Transformer's router (transformers
/// SwitchTransformersTop1Router) from its ArgMax `am`: probs =
/// softmax(logits); idx = argmax(probs); mask = one_hot(idx) [* (cumsum(
/// one_hot, tokens) <= capacity)]; weight = max(probs). Nullopt when `am`
/// is not such a router; a failure with `why` (and `diagOp`) when it cannot
/// be raised.
std::optional<FailureOr<Router>>
matchSwitchRouter(linalg::GenericOp am, std::string &why, Operation *&diagOp);

//===----------------------------------------------------------------------===//
// Layers
//===----------------------------------------------------------------------===//

/// Raises the MoE layers of one function, from their routers, to
/// moe.route + moe.experts.
class LayerRaiser {
public:
  LayerRaiser(func::FuncOp func, unsigned &layerCounter)
      : func(func), layerCounter(layerCounter) {}

  /// The per-expert loop form (RaiseLoops.cpp); falls back on the batched
  /// form when no loop uses the router.
  LogicalResult raise(Router &r, std::string &why);
  /// The batched form (RaiseBatched.cpp).
  LogicalResult raiseBatched(Router &r, std::string &why, bool &found);
  /// The grouped form (RaiseGrouped.cpp): the scatter `sc` adds `outputs`
  /// (the concatenated per-expert chunks, isGroupedExperts) times `scale`
  /// into `root`'s accumulator.
  LogicalResult raiseGrouped(Router &r, Operation *sc, Value root,
                             Value outputs, Value scale, std::string &why);
  /// The dense form, every token through every expert (RaiseDense.cpp).
  LogicalResult raiseDense(Router &r, std::string &why);
  /// The rewrite (RaiseExperts.cpp).
  LogicalResult emitLayer(Router &r, Value root, Value tokensV,
                          const std::map<int64_t, ExpertFFN> &experts,
                          std::string &why);

private:
  func::FuncOp func;
  /// The pass's count of raised layers, which names their weight blobs.
  unsigned &layerCounter;
};

/// Whether `v` is the outputs of grouped experts: the concatenation along
/// rows of chunks computed from a split by sizes known at run time
/// (RaiseGrouped.cpp).
bool isGroupedExperts(Value v);

/// Rewrites the grouped GEMMs no layer raised (JetMoE's mixture of
/// attention heads): a concatenation of `chunk_e(rows) @ W_e` over the
/// chunks of rows sorted by expert becomes E GEMMs over all rows and a
/// select of each row's own expert's result, static shapes that plans
/// run (RaiseGrouped.cpp).
void densifyGroupedGemms(func::FuncOp func);

/// Raises Doge's product-key experts (rows of [E, H] embedding tables
/// picked by the selected ids, FFNs of intermediate size 1) to moe.experts,
/// the router kept as the model's own ops (RaiseEmbedding.cpp).
/// The top-k ops whose ids reach the raised layers go to `routers`.
void raiseEmbeddingExperts(func::FuncOp func, unsigned &layerCounter,
                           SmallPtrSetImpl<Operation *> &routers);

/// Marks the ops of the shared experts added to the output of `ex`
/// (RaiseShared.cpp).
void markSharedExperts(moe::ExpertsOp ex, Value tokens);

} // namespace moec::raising

#endif // MOEC_LIB_TRANSFORMS_RAISEEXPERTSINTERNAL_H
