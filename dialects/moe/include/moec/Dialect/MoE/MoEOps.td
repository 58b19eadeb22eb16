//===- MoEOps.td - moe dialect operations ------------------*- tablegen -*-===//
//
// Operations of the `moe` dialect. Every op has a verifier; shapes are ranked.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_DIALECT_MOE_MOEOPS_TD
#define MOEC_DIALECT_MOE_MOEOPS_TD

include "moec/Dialect/MoE/MoEDialect.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/OpBase.td"

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def MoE_ScoreFunc : I32EnumAttr<"ScoreFunc", "routing score function", [
    I32EnumAttrCase<"softmax", 0>,
    I32EnumAttrCase<"sigmoid", 1>
  ]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::moec::moe";
}
def MoE_ScoreFuncAttr : EnumAttr<MoE_Dialect, MoE_ScoreFunc, "score_func">;

def MoE_GroupScore : I32EnumAttr<"GroupScore",
    "how a group of experts is scored in group-limited routing", [
    I32EnumAttrCase<"max", 0>,
    I32EnumAttrCase<"top2_sum", 1>
  ]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::moec::moe";
}
def MoE_GroupScoreAttr : EnumAttr<MoE_Dialect, MoE_GroupScore, "group_score">;

def MoE_Activation : I32EnumAttr<"Activation", "expert FFN activation", [
    I32EnumAttrCase<"identity", 0>,
    I32EnumAttrCase<"relu", 1>,
    I32EnumAttrCase<"gelu", 2>,
    I32EnumAttrCase<"gelu_tanh", 3>,
    I32EnumAttrCase<"silu", 4>,
    I32EnumAttrCase<"clamped_swiglu", 5>
  ]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::moec::moe";
}
def MoE_ActivationAttr : EnumAttr<MoE_Dialect, MoE_Activation, "activation">;

def MoE_Reduction : I32EnumAttr<"Reduction", "scatter reduction", [
    I32EnumAttrCase<"none", 0>,
    I32EnumAttrCase<"add", 1>,
    I32EnumAttrCase<"mul", 2>,
    I32EnumAttrCase<"max", 3>,
    I32EnumAttrCase<"min", 4>
  ]> {
  let genSpecializedAttr = 0;
  let cppNamespace = "::moec::moe";
}
def MoE_ReductionAttr : EnumAttr<MoE_Dialect, MoE_Reduction, "reduction">;

def MoE_FloatTensor : RankedTensorOf<[AnyFloat]>;
def MoE_IndexTensor : RankedTensorOf<[I32, I64]>;

//===----------------------------------------------------------------------===//
// Routing and experts
//===----------------------------------------------------------------------===//

def MoE_RouteOp : MoE_Op<"route", [Pure]> {
  let summary = "token routing: scores, top-k experts and their weights";
  let description = [{
    Computes, for each token `t`, the `top_k` experts it is sent to and the
    weight of each. With `s = score_func(logits[t])` (softmax over the experts
    or an element-wise sigmoid):

    1. Selection scores are `s + bias` when `bias` is given (DeepSeek-V3's
       score-correction bias: it changes which experts win, never the weights),
       else `s`.
    2. With `num_groups > 1`, the experts split into `num_groups` equal
       groups; each group is scored by `group_score` (`max`: its best
       selection score, DeepSeek-V2; `top2_sum`: the sum of its best two,
       DeepSeek-V3), and only experts in the best `topk_groups` groups compete.
    3. The `top_k` largest selection scores win (ties: lower expert id).
    4. The weights are `s` at the winners, divided by their sum (plus
       `renorm_eps`, LFM2's 1e-6; default 0) when `renormalize` is set, then
       multiplied by `scaling_factor`.

    Example (Mixtral: softmax, top-2, renormalised):

    ```mlir
    %w, %idx = moe.route %logits top_k 2 {score_func = #moe.score_func<softmax>,
        renormalize = true} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$logits,
    Optional<MoE_FloatTensor>:$bias,
    I64Attr:$top_k,
    DefaultValuedAttr<MoE_ScoreFuncAttr, "ScoreFunc::softmax">:$score_func,
    DefaultValuedAttr<BoolAttr, "false">:$renormalize,
    DefaultValuedAttr<F64Attr, "1.0">:$scaling_factor,
    DefaultValuedAttr<I64Attr, "1">:$num_groups,
    DefaultValuedAttr<I64Attr, "1">:$topk_groups,
    DefaultValuedAttr<MoE_GroupScoreAttr, "GroupScore::max">:$group_score,
    DefaultValuedAttr<F64Attr, "0.0">:$renorm_eps
  );
  let results = (outs MoE_FloatTensor:$weights, MoE_IndexTensor:$indices);
  let assemblyFormat = [{
    $logits (`bias` $bias^)? `top_k` $top_k attr-dict `:` type($logits)
    (`,` type($bias)^)? `->` type($weights) `,` type($indices)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertsOp : MoE_Op<"experts", [Pure, AttrSizedOperandSegments]> {
  let summary = "a block of E expert FFNs with stacked weights";
  let description = [{
    Applies the experts chosen by routing to every token and sums the results
    weighted by the routing weights:

    ```
    out[t] = sum_j weights[t, j] * FFN_{indices[t, j]}(tokens[t])
    FFN_e(x) = (act(x @ w_gate[e] + b_gate[e]) * (x @ w_up[e] + b_up[e]))
               @ w_down[e] + b_down[e]
    ```

    `w_up` (and `b_up`) are present for gated FFNs (SwiGLU: `silu`, GeGLU:
    `gelu`); without them `FFN_e(x) = act(x @ w_gate[e] + b_gate[e]) @
    w_down[e] + b_down[e]`. Weights are stacked over the experts: `w_gate` and
    `w_up` are `[E, H, F]`, `w_down` is `[E, F, H]`, biases `[E, F]` and
    `[E, H]`. Indices are global expert ids; the op holds experts
    `expert_offset .. expert_offset + E - 1`, and an index outside that range
    contributes nothing (after expert-parallel sharding each rank holds a
    slice of the experts). Activations: `silu` x*sigmoid(x), `gelu` with erf,
    `gelu_tanh` the tanh approximation, `relu`, `identity`.

    `clamped_swiglu` (GPT-OSS, onnxruntime's `swiglu` with `swiglu_limit`)
    needs `w_up` and replaces `act(g) * u` by
    ```
    g' = min(g, limit), u' = clamp(u, -limit, limit)
    g' * sigmoid(alpha * g') * (u' + beta)
    ```
    with `g = x @ w_gate[e] + b_gate[e]` and `u = x @ w_up[e] + b_up[e]`
    (no `limit`: no clamping). `alpha`, `beta` and `limit` belong to this
    activation only (GPT-OSS: alpha 1.702, beta 1, limit 7).

    With `weight_input` the routing weight scales the expert's input instead
    of its output (Llama 4, whose experts run on `x * sigmoid(logit)`):

    ```
    out[t] = sum_j FFN_{indices[t, j]}(weights[t, j] * tokens[t])
    ```

    ```mlir
    %y = moe.experts %x, %idx, %w gate %w1 up %w3 down %w2
        {activation = #moe.activation<silu>}
        : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>,
           tensor<8x64x128xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>)
        -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$tokens,
    MoE_IndexTensor:$indices,
    MoE_FloatTensor:$weights,
    MoE_FloatTensor:$w_gate,
    Optional<MoE_FloatTensor>:$w_up,
    MoE_FloatTensor:$w_down,
    Optional<MoE_FloatTensor>:$b_gate,
    Optional<MoE_FloatTensor>:$b_up,
    Optional<MoE_FloatTensor>:$b_down,
    MoE_ActivationAttr:$activation,
    DefaultValuedAttr<I64Attr, "0">:$expert_offset,
    DefaultValuedAttr<F64Attr, "1.0">:$alpha,
    DefaultValuedAttr<F64Attr, "0.0">:$beta,
    OptionalAttr<F64Attr>:$limit,
    UnitAttr:$weight_input
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $tokens `,` $indices `,` $weights `gate` $w_gate (`up` $w_up^)?
    `down` $w_down (`bias_gate` $b_gate^)? (`bias_up` $b_up^)?
    (`bias_down` $b_down^)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumExperts() {
      return mlir::cast<mlir::RankedTensorType>(getWGate().getType()).getDimSize(0);
    }
  }];
}

//===----------------------------------------------------------------------===//
// Expert parallelism: placement, dispatch, local experts, combine
//===----------------------------------------------------------------------===//

def MoE_PlacementAttr : AttrDef<MoE_Dialect, "Placement"> {
  let mnemonic = "placement";
  let summary = "which experts each expert-parallel rank holds";
  let description = [{
    `slots` has `ranks * slots_per_rank` entries: slot `s` of EP rank `r`
    holds expert `slots[r * slots_per_rank + s]`, or nothing when it is -1
    (uneven placements). An expert held by several slots is replicated
    (redundant experts); every expert is held at least once. `strategy`
    records how the placement was chosen (contiguous, round-robin,
    balanced).

    ```mlir
    #moe.placement<num_experts = 8, ranks = 4, slots_per_rank = 2,
                   slots = [0, 1, 2, 3, 4, 5, 6, 7], strategy = "contiguous">
    ```
  }];
  let parameters = (ins "int64_t":$num_experts, "int64_t":$ranks,
                        "int64_t":$slots_per_rank,
                        ArrayRefParameter<"int64_t">:$slots,
                        StringRefParameter<>:$strategy);
  let assemblyFormat = [{
    `<` `num_experts` `=` $num_experts `,` `ranks` `=` $ranks `,`
    `slots_per_rank` `=` $slots_per_rank `,` `slots` `=` `[` $slots `]` `,`
    `strategy` `=` $strategy `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Expert held by `slot` of EP rank `rank` (-1: empty).
    int64_t expertAt(int64_t rank, int64_t slot) const {
      return getSlots()[rank * getSlotsPerRank() + slot];
    }
    /// Experts (not counting empty slots) held by EP rank `rank`.
    int64_t numHeld(int64_t rank) const;
  }];
}

def MoE_DispatchType : TypeDef<MoE_Dialect, "Dispatch"> {
  let mnemonic = "dispatch";
  let summary = "the routing state of one dispatch, used by its combine";
  let description = [{
    Links `moe.dispatch` to the `moe.expert_compute` and `moe.combine` of the
    same MoE layer: which rows went to which rank and slot, and how many rows
    each rank received. It has no storage of its own in IR terms; the
    runtime keeps the layout between the two all-to-alls.
  }];
}

def MoE_DispatchOp : MoE_Op<"dispatch", []> {
  let summary = "ragged all-to-all of tokens to the ranks of their experts";
  let description = [{
    Collective over the ranks of `grid` along `grid_axes` (the EP group).
    Every (token, choice) of `indices` is sent to a rank holding its expert
    (by `placement`; replicated experts take turns); the ranks first
    exchange their per-(rank, slot) row counts, then the rows. `recv` holds
    the rows this rank received, grouped by local slot; its row count is
    data-dependent, at most `max_rows`. With `capacity` >= 0 each expert
    replica accepts at most `capacity` rows from each source rank (GShard);
    the rest are dropped. -1 is dropless. With `weights` ([T, k], a
    `moe.experts` with `weight_input`), the row sent for choice `j` of token
    `t` is `weights[t, j] * tokens[t]`, and the layer's `moe.combine` takes
    no weights (the routing weight is applied exactly once).

    ```mlir
    %recv, %h = moe.dispatch %x, %ids on @mesh grid_axes = [0]
        placement = #moe.placement<...> max_rows = 64
        : tensor<16x64xf32>, tensor<16x2xi64> -> tensor<?x64xf32>, !moe.dispatch
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$tokens,
    MoE_IndexTensor:$indices,
    Optional<MoE_FloatTensor>:$weights,
    FlatSymbolRefAttr:$grid,
    DenseI16ArrayAttr:$grid_axes,
    MoE_PlacementAttr:$placement,
    I64Attr:$max_rows,
    DefaultValuedAttr<I64Attr, "-1">:$capacity
  );
  let results = (outs MoE_FloatTensor:$recv, MoE_DispatchType:$handle);
  let assemblyFormat = [{
    $tokens `,` $indices (`weights` $weights^)? `on` $grid `grid_axes` `=`
    $grid_axes `placement` `=` $placement `max_rows` `=` $max_rows attr-dict
    `:` type($tokens) `,` type($indices) (`,` type($weights)^)? `->`
    type($recv) `,` type($handle)
  }];
  let hasVerifier = 1;
}

def MoE_ExpertComputeOp : MoE_Op<"expert_compute",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "this rank's experts applied to the rows it received";
  let description = [{
    Runs the FFN of each local slot on that slot's rows of `recv` (grouped
    GEMMs): `y = (act(x Wg + bg) [* (x Wu + bu)]) Wd + bd` (`clamped_swiglu`
    with `alpha`, `beta`, `limit` as in `moe.experts`). Weights are the
    rank's local stack `[slots, H, F]` / `[slots, F, H]` (from
    `moe.local_weights`); with tensor parallelism F is this rank's slice and
    `y` a partial sum.

    ```mlir
    %y = moe.expert_compute %recv, %h gate %g up %u down %d
        {activation = #moe<activation silu>}
        : (tensor<?x64xf32>, !moe.dispatch, tensor<2x64x128xf32>,
           tensor<2x64x128xf32>, tensor<2x128x64xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    MoE_FloatTensor:$recv,
    MoE_DispatchType:$handle,
    MoE_FloatTensor:$w_gate,
    Optional<MoE_FloatTensor>:$w_up,
    MoE_FloatTensor:$w_down,
    Optional<MoE_FloatTensor>:$b_gate,
    Optional<MoE_FloatTensor>:$b_up,
    Optional<MoE_FloatTensor>:$b_down,
    MoE_ActivationAttr:$activation,
    DefaultValuedAttr<F64Attr, "1.0">:$alpha,
    DefaultValuedAttr<F64Attr, "0.0">:$beta,
    OptionalAttr<F64Attr>:$limit
  );
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $recv `,` $handle `gate` $w_gate (`up` $w_up^)? `down` $w_down
    (`bias_gate` $b_gate^)? (`bias_up` $b_up^)? (`bias_down` $b_down^)?
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_CombineOp : MoE_Op<"combine", []> {
  let summary = "ragged all-to-all of expert outputs back, weighted sum";
  let description = [{
    The inverse of the `moe.dispatch` that produced `handle`: each row of
    `y` goes back to the rank and token it came from, and each token's
    output is the sum of its returned rows weighted by `weights` (rows
    dropped by capacity contribute nothing). `weights` is absent exactly
    when the dispatch scaled the rows it sent (its `weights` operand): the
    returned rows are then summed with weight 1.

    ```mlir
    %out = moe.combine %y, %h, %w
        : tensor<?x64xf32>, !moe.dispatch, tensor<16x2xf32> -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$y, MoE_DispatchType:$handle,
                       Optional<MoE_FloatTensor>:$weights);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $y `,` $handle (`,` $weights^)? attr-dict `:` type($y) `,` type($handle)
    (`,` type($weights)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_LocalWeightsOp : MoE_Op<"local_weights", [Pure]> {
  let summary = "the slice of stacked expert weights one rank holds";
  let description = [{
    A rank-dependent value: on the rank with index `r` in its group along
    grid axes `ep_axes` (row-major over them), slot `s` of the result is
    expert `placement.slots[r * S + s]` of `weights` (zeros for an empty
    slot). With non-empty `split_axes` (tensor parallelism) dimension
    `split_dim` is further cut into equal blocks over those grid axes and
    the rank keeps its block; with `first_only` (a bias added after a
    tensor-parallel reduction) ranks other than the first along
    `split_axes` hold zeros instead. The plan writer resolves it into
    per-rank weight segments. Packed expert weights (`ui8` codes, their
    scales and zero points, all stacked [E, ...]) are cut the same way
    before their `moe.dequantize`.

    ```mlir
    %g = moe.local_weights %w_gate on @mesh ep_axes = [0]
        placement = #moe.placement<...>
        : tensor<8x64x128xf32> -> tensor<2x64x128xf32>
    ```
  }];
  let arguments = (ins
    RankedTensorOf<[AnyFloat, UI8]>:$weights,
    FlatSymbolRefAttr:$grid,
    DenseI16ArrayAttr:$ep_axes,
    MoE_PlacementAttr:$placement,
    DefaultValuedAttr<DenseI16ArrayAttr, "{}">:$split_axes,
    DefaultValuedAttr<I64Attr, "0">:$split_dim,
    DefaultValuedAttr<BoolAttr, "false">:$first_only
  );
  let results = (outs RankedTensorOf<[AnyFloat, UI8]>:$result);
  let assemblyFormat = [{
    $weights `on` $grid `ep_axes` `=` $ep_axes `placement` `=` $placement
    attr-dict `:` type($weights) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_TpSliceOp : MoE_Op<"tp_slice", [Pure]> {
  let summary = "the tensor-parallel block of a dense weight one rank holds";
  let description = [{
    A rank-dependent value for Megatron-style tensor parallelism of dense
    layers (shared experts): dimension `dim` of `weights` is cut into equal
    blocks over grid axes `grid_axes` and the rank keeps the block of its
    group index (row-major over them; columns of the first FFN matmuls, rows of the last). The
    plan writer resolves it into per-rank weight segments.

    ```mlir
    %w = moe.tp_slice %w_up on @mesh grid_axes = [1] dim = 1
        : tensor<64x96xf32> -> tensor<64x48xf32>
    ```
  }];
  let arguments = (ins MoE_FloatTensor:$weights, FlatSymbolRefAttr:$grid,
                       DenseI16ArrayAttr:$grid_axes, I64Attr:$dim);
  let results = (outs MoE_FloatTensor:$result);
  let assemblyFormat = [{
    $weights `on` $grid `grid_axes` `=` $grid_axes `dim` `=` $dim attr-dict `:`
    type($weights) `->` type($result)
  }];
  let hasVerifier = 1;
}

def MoE_DequantizeOp : MoE_Op<"dequantize", [Pure, AttrSizedOperandSegments]> {
  let summary = "block-wise integer weight codes to a float [K, N] weight";
  let description = [{
    A weight kept packed (com.microsoft.MatMulNBits and QMoE, issue 18):
    `codes` [..., N, blocks, block_size * bits / 8] holds `bits`-wide
    unsigned codes packed LSB first into bytes along K; `scales` and the
    optional `zero_points` are [..., N, blocks] (zero point 2^(bits - 1)
    when absent), blocks = ceil(K / block_size). The result is the
    transposed, ready for `linalg.matmul` (or `moe.experts`) weight:

        result[..., k, n] = (code(..., n, k) - zp[..., n, k / block_size])
                            * scales[..., n, k / block_size]

    Leading dims are kept as they are: stacked experts [E, N, blocks, blob]
    give [E, K, N]. `block_size` is any positive size that fills whole
    bytes (one block per row: block_size = K). The result is f32, or f16 /
    bf16 for a model computing in that type (each weight computed exactly,
    then rounded once to it); scales and zero points are f32 either way.

    With `after %handle` (a rank's stacked experts, [slots, N, blocks,
    blob], after moe-insert-all-to-all) only the slots that the dispatch
    gave rows are written; the others are left undefined, and the
    `moe.expert_compute` of that dispatch, the only reader, never reads
    them. A decode step that routes one token to k experts then expands k
    experts, not all the rank holds.

    It is not folded into a float constant: plans keep the packed bytes and
    run it as a `dequantize` step. With a mesh a dense weight is replicated
    (tensor-parallel regions slice the result); stacked expert weights are
    cut per rank before it (`moe.local_weights` of the codes, scales and
    zero points).

    ```mlir
    %w = moe.dequantize %codes, %scales bits 4 block_size 32 k 64
        : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
    ```
  }];
  let arguments = (ins RankedTensorOf<[UI8]>:$codes,
                   RankedTensorOf<[F32]>:$scales,
                   Optional<RankedTensorOf<[F32]>>:$zero_points,
                   Optional<MoE_DispatchType>:$dispatch,
                   I64Attr:$bits, I64Attr:$block_size, I64Attr:$k);
  let results = (outs RankedTensorOf<[F32, F16, BF16]>:$result);
  let assemblyFormat = [{
    $codes `,` $scales (`zero_points` $zero_points^)? (`after` $dispatch^)?
    `bits` $bits
    `block_size` $block_size `k` $k attr-dict `:` type($codes) `,`
    type($scales) (`,` type($zero_points)^)? `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// ONNX operators with no upstream equivalent
//===----------------------------------------------------------------------===//

def MoE_TopKOp : MoE_Op<"topk", [Pure]> {
  let summary = "the k largest (or smallest) elements along an axis (ONNX TopK)";
  let description = [{
    ONNX `TopK` with a constant `k`: values and int64 indices of the `k`
    largest (`largest = true`) or smallest elements along `axis`, sorted when
    `sorted` is set. Ties go to the lower index, as in ONNX.

    ```mlir
    %v, %i = moe.topk %x k 2 axis 1 : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$k, I64Attr:$axis,
                   DefaultValuedAttr<BoolAttr, "true">:$largest,
                   DefaultValuedAttr<BoolAttr, "true">:$sorted);
  let results = (outs AnyRankedTensor:$values,
                      RankedTensorOf<[I64]>:$indices);
  let assemblyFormat = [{
    $input `k` $k `axis` $axis attr-dict `:` type($input) `->` type($values)
    `,` type($indices)
  }];
  let hasVerifier = 1;
}

def MoE_NonZeroOp : MoE_Op<"nonzero", [Pure]> {
  let summary = "indices of the non-zero elements (ONNX NonZero)";
  let description = [{
    ONNX `NonZero`: a `[rank, N]` int64 tensor holding, column by column in
    row-major order, the coordinates of the `N` non-zero elements. `N` is data
    dependent, so the result's second dimension is normally dynamic.

    ```mlir
    %nz = moe.nonzero %mask : tensor<4x8xi1> -> tensor<2x?xi64>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input);
  let results = (outs RankedTensorOf<[I64]>:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def MoE_ScatterElementsOp : MoE_Op<"scatter_elements", [Pure]> {
  let summary = "ONNX ScatterElements";
  let description = [{
    Returns a copy of `data` where, for every position `p` of `indices`,
    the element at `p` with `p[axis]` replaced by `indices[p]` is set to (or,
    with a `reduction`, combined with) `updates[p]`. Negative indices count
    from the end of `axis`.

    ```mlir
    %r = moe.scatter_elements %data, %idx, %upd axis 0
        {reduction = #moe.reduction<add>}
        : (tensor<16x64xf32>, tensor<4x64xi64>, tensor<4x64xf32>) -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$data, MoE_IndexTensor:$indices,
                   AnyRankedTensor:$updates, I64Attr:$axis,
                   DefaultValuedAttr<MoE_ReductionAttr, "Reduction::none">:$reduction);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $data `,` $indices `,` $updates `axis` $axis attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def MoE_ScatterNDOp : MoE_Op<"scatter_nd", [Pure]> {
  let summary = "ONNX ScatterND";
  let description = [{
    Returns a copy of `data` where the slices addressed by the last dimension
    of `indices` (of length `q <= rank(data)`) are set to (or, with a
    `reduction`, combined with) the matching slices of `updates`, whose shape
    is `indices.shape[:-1] ++ data.shape[q:]`.

    ```mlir
    %r = moe.scatter_nd %data, %idx, %upd {reduction = #moe.reduction<add>}
        : (tensor<16x64xf32>, tensor<?x1xi64>, tensor<?x64xf32>) -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$data, MoE_IndexTensor:$indices,
                   AnyRankedTensor:$updates,
                   DefaultValuedAttr<MoE_ReductionAttr, "Reduction::none">:$reduction);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $data `,` $indices `,` $updates attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Plans with a dynamic token count
//===----------------------------------------------------------------------===//

def MoE_TokenCountOp : MoE_Op<"token_count", [Pure]> {
  let summary = "the token count of the current call, inside a generated kernel";
  let description = [{
    A generated kernel of a plan with a dynamic token count that computes
    something from the count itself, rather than from its operands' sizes
    (e.g. the position `T + 3` that onnxruntime-genai's GroupQueryAttention
    derives from the sequence length): `kind` selects the count as the
    plan's symbolic dims name it, 0 `t` (this rank's rows), 1 `tb` (the
    block bound of the token split) or 2 `T` (the global count). The kernel
    lowering reads it from the counts operand such kernels take
    (docs/plan-format.md, "Dynamic token counts"); moec inserts it where a
    kernel constant is `a * X + b` at every count it compiled.

    ```mlir
    %T = moe.token_count 2
    ```
  }];
  let arguments = (ins I64Attr:$kind);
  let results = (outs Index:$count);
  let assemblyFormat = "$kind attr-dict";
  let hasVerifier = 1;
}

#endif // MOEC_DIALECT_MOE_MOEOPS_TD
