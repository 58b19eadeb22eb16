//===- Passes.td - moec transformation passes --------------*- tablegen -*-===//
//
// Passes on the imported IR, alphabetical within each banner.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_TRANSFORMS_PASSES_TD
#define MOEC_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Raising
//===----------------------------------------------------------------------===//

def MoERaiseExperts : Pass<"moe-raise-experts", "mlir::func::FuncOp"> {
  let summary = "Raise exported MoE layers into moe.route + moe.experts";
  let description = [{
    Finds the MoE layers that exporters write as a router, a top-k and a loop
    over the experts (torch.onnx of Hugging Face style blocks: one-hot expert
    mask, NonZero, Gather, the expert FFN, scaling by the routing weight,
    ScatterElements/ScatterND accumulation) and replaces each with one
    `moe.route` and one `moe.experts` whose weights are the experts' weights
    stacked into `[E, ...]` tensors. The loop's ops become dead and are
    removed. Also the batched form of torch.onnx's dynamo exporter and the
    dense form of Llama 4 (every token through every expert, its input
    scaled by the router score: `moe.experts` with `weight_input`); see
    docs/raising.md.

    A region that looks like an MoE layer (a top-k over softmax or sigmoid
    router scores) but cannot be raised gets a warning that names the op and
    the reason; with `strict` it is an error.
  }];
  let dependentDialects = ["moec::moe::MoEDialect", "mlir::tensor::TensorDialect",
                           "mlir::arith::ArithDialect"];
  let options = [
    Option<"strict", "strict", "bool", /*default=*/"false",
           "Fail when an MoE-like region cannot be raised">
  ];
}

//===----------------------------------------------------------------------===//
// Precision
//===----------------------------------------------------------------------===//

def MoELowerPrecision : Pass<"moe-lower-precision", "mlir::ModuleOp"> {
  let summary = "Store GEMM weights in bf16/fp16 and run the GEMMs on 16-bit rows";
  let description = [{
    Mixed precision for the GEMMs, which hold nearly all of an MoE model's
    weights and FLOPs (moec `--precision=bf16|fp16`):

    * every `moe.experts`: its weights and biases become constants of the
      16-bit type (rounded to nearest even), its tokens are narrowed by an
      elementwise `linalg.generic` (arith.truncf) before it and its result
      widened back to the original type (arith.extf) after it. Once sharded,
      the dispatch and combine all-to-alls therefore move 16-bit rows: half
      the bytes of fp32.
    * every `linalg.matmul` whose right operand is a constant (dense and
      shared-expert FFN weights), except the router's: the weight becomes a
      16-bit constant, the left operand is narrowed, and the result stays in
      the accumulator's type (fp32): `linalg.matmul ins(bf16, bf16)
      outs(f32)`.
    * routers (the matmuls that produce a `moe.route`'s logits, through
      reshapes and elementwise ops) stay in fp32, so the expert selection
      is that of the fp32 model; routing, norms, activations outside the
      experts and residuals stay in fp32 as well.

    Accumulation is fp32 everywhere (cuBLAS CUBLAS_COMPUTE_32F on the GPU;
    the CPU runtime widens 16-bit operands and uses fp32 BLAS). The casts
    are ordinary elementwise linalg ops: the token analysis follows them and
    `moe-outline-kernels` fuses them into the neighbouring kernels.

    Packed weights (`moe.dequantize`, from MatMulNBits and QMoE) are left
    as they are: they stay packed in the plan and their GEMMs run in fp32.

    Errors: a `moe.experts` weight that is neither a constant nor packed; a
    precision other than bf16, f16 or f32 (f32 leaves the module unchanged).
  }];
  let dependentDialects = ["mlir::linalg::LinalgDialect",
                           "mlir::tensor::TensorDialect",
                           "mlir::arith::ArithDialect"];
  let options = [
    Option<"precision", "precision", "std::string", /*default=*/"\"bf16\"",
           "The 16-bit type of GEMM weights and rows: bf16, f16 (or f32: "
           "no change)">
  ];
}

//===----------------------------------------------------------------------===//
// Sharding
//===----------------------------------------------------------------------===//

def MoEShard : Pass<"moe-shard", "mlir::ModuleOp"> {
  let summary = "Create the device grid and annotate the token split";
  let description = [{
    Turns a mesh spec such as `dp=2,ep=4,tp=2` into an upstream `shard.grid
    @mesh` (axes ordered dp, ep, tp: tensor parallelism innermost, inside a
    node; the names are kept in the grid's `moe.axes` attribute) and decides
    how every tensor is split: tokens are split over dp x ep (attention and
    dense parts are replicated per rank, each rank working on its own
    tokens), experts over ep, expert FFN columns over tp. The token
    dimension is found from the MoE ops (`moe.route`, `moe.experts`) and
    followed through the dense ops; the model inputs and outputs get a
    `moe.token_split` argument attribute, the tokens entering each MoE
    layer a `shard.shard` annotation.

    `token-split` chooses where the tokens are split:
    - `model`: the whole model runs on each rank's own tokens (data-parallel
      attention). Needs every value that carries tokens to split dp x ep
      ways (with attention: whole sequences per rank, a batch divisible by
      dp x ep); errors otherwise.
    - `moe`: sequence-parallel MoE. The dense part (attention, embeddings,
      the LM head) is replicated over dp x ep and works on all tokens; each
      MoE layer takes this rank's block of rows (`shard.all_slice` of the
      tokens, indices and routing weights over dp x ep, zero rows padded to
      a multiple of dp x ep, routed to expert 0 with weight 0) and the
      combined rows are put back together with `shard.all_gather`. Any
      batch and token count compiles. The grid gets
      `moe.token_split_mode = "moe"`.
    - `auto` (default): `model` when the model splits that way; else, with
      dp > 1 and ep > 1, hybrid when whole sequences split over dp (the
      model annotated over dp alone, `moe.token_split_mode = "hybrid"`;
      moe-partition slices each dp group's MoE rows over ep); else `moe`.
      A remark says why (`moe.token_split_reason` on the grid).

    Errors: a malformed spec, a tp degree that does not divide an expert
    FFN's width, with `token-split=model` a token count that cannot be split
    dp x ep ways or an op that needs all tokens (a reduction over them).

    Folding (`attention-mesh`, Megatron-Core's MoE parallel folding): the
    attention and dense layers get their own layout of the same ranks,
    `dp=A,tp=B` with A x B = the mesh's ranks, while the MoE layers keep
    `mesh` (dp: expert replicas, ep, tp: expert tensor parallelism). The
    grid's axes are the coarsest refinement of both (an `ep=8` MoE with
    attention `dp=2,tp=4` gets axes `ep0 = 2, ep1 = 4`), recorded with
    what each is for in `moe.roles`. The whole model is split over the
    attention's dp (an error when it does not split so); the ranks of an
    attention tp group hold the same tokens, and each MoE layer's rows are
    sliced over those among the MoE's dp x ep ranks (moe-partition), the
    combined rows all-gathered. Errors: rank counts that differ, foldings
    that do not nest, attention dp over the MoE's tp ranks.
  }];
  let dependentDialects = ["mlir::shard::ShardDialect",
                           "mlir::tensor::TensorDialect",
                           "mlir::arith::ArithDialect"];
  let options = [
    Option<"mesh", "mesh", "std::string", /*default=*/"\"ep=1\"",
           "Device mesh: comma-separated dp=D, ep=E, tp=T (any subset)">,
    Option<"tokenSplit", "token-split", "std::string", /*default=*/"\"auto\"",
           "Where tokens are split over dp x ep: auto, model (the whole "
           "model on each rank's tokens) or moe (sequence-parallel MoE "
           "layers, the rest replicated)">,
    Option<"attentionMesh", "attention-mesh", "std::string",
           /*default=*/"\"\"",
           "Attention/dense folding of the same ranks: dp=A,tp=B (empty: "
           "attention over the mesh's dp x ep tokens and its tp)">
  ];
}

def MoEPlaceExperts : Pass<"moe-place-experts", "mlir::ModuleOp"> {
  let summary = "Assign each MoE layer's experts to expert-parallel ranks";
  let description = [{
    Adds a `moe.placement` attribute (`#moe.placement<...>`) to every
    `moe.experts`, mapping experts to the slots of the EP ranks of the grid
    made by `moe-shard`. Strategies: `contiguous` (rank r holds experts
    r*S .. r*S+S-1), `round-robin` (expert e on rank e mod EP), `balanced`
    (from per-expert token counts in a JSON file such as `moe-run
    --record-routing` writes: heaviest first onto the least loaded rank).
    `redundant-experts=N` adds N replicas of the hottest experts (by the
    load file, or all equal without one), packed so that every rank
    carries nearly the same load (EPLB-style). When the experts do not
    divide evenly the placement is uneven and a warning says so; more EP
    ranks than experts (plus replicas) is an error.
  }];
  let options = [
    Option<"strategy", "strategy", "std::string", /*default=*/"\"contiguous\"",
           "contiguous, round-robin or balanced">,
    Option<"loadFile", "load", "std::string", /*default=*/"\"\"",
           "JSON of per-expert token counts (for balanced / redundant)">,
    Option<"redundantExperts", "redundant-experts", "int64_t",
           /*default=*/"0", "Extra replicas of the hottest experts">
  ];
}

def MoEInsertAllToAll : Pass<"moe-insert-all-to-all", "mlir::ModuleOp"> {
  let summary = "Rewrite placed MoE layers into dispatch, local experts, "
                "combine";
  let description = [{
    Each `moe.experts` with a placement becomes `moe.local_weights` (the
    rank's slice of every stacked weight, its FFN columns split over tp),
    `moe.dispatch` (ragged all-to-all of the tokens to the ranks of their
    experts, after the count exchange), `moe.expert_compute` (grouped GEMMs
    over the local experts) and `moe.combine` (ragged all-to-all back and
    the routing-weighted sum in token order), followed by a
    `shard.all_reduce` over tp when the FFN columns are split. A
    `moe.experts` with `weight_input` gives its routing weights to the
    dispatch, which sends the rows scaled, and none to the combine, which
    sums them unweighted. A packed stacked weight (`moe.dequantize` of
    [E, N, blocks, blob] codes, QMoE) is cut before it is dequantized: the
    rank's slice of the codes, scales and zero points, then a
    `moe.dequantize` of that slice; its tp block is cut from the codes
    when it is whole rows or whole blocks of K, else from the dequantized
    slice by `shard.all_slice`. Dropless by default; `capacity-factor=C` gives
    each expert replica ceil(C * T * k / E) rows per source rank (GShard)
    and drops the rest.
  }];
  let dependentDialects = ["mlir::shard::ShardDialect"];
  let options = [
    Option<"capacityFactor", "capacity-factor", "double", /*default=*/"0.0",
           "GShard capacity factor (0: dropless)">
  ];
}

def MoEPartition : Pass<"moe-partition", "mlir::ModuleOp"> {
  let summary = "Make the program SPMD: local shapes on every rank";
  let description = [{
    Applies the token split found by `moe-shard`: every tensor that carries
    tokens gets its local shape (the token dims divided by dp x ep), static
    shape attributes follow, the `shard.shard` annotations are dropped. The
    result is the per-rank program; rank-dependent data (which experts a
    rank holds, its weight slices) stays in `moe.local_weights` and
    `moe.dispatch` attributes and is resolved per rank by the plan writer.

    With tp > 1 and `dense-tp=megatron` (the default), the dense layers are
    split Megatron-style over tp: every linalg.matmul with a weight whose
    columns divide by tp seeds a region grown through the ops that can run
    on a split of their dims (attention by heads, an MLP by its hidden
    columns, the LM head by vocab). A region is kept when it closes in
    row-parallel matmuls (partial sums, all-reduced over tp) or only at the
    results (the logits, all-gathered); ops it reaches that need whole
    values (a norm over a split dim, GQA's repeat of fewer KV heads than
    tp) all-gather their operands or slice their results. Regions that
    split the most weight bytes go first. `dense-tp=replicated` keeps them
    whole on every tp rank (only the experts split).

    Sequence parallelism (`sequence-parallel=auto`, the default): when the
    MoE layers' rows are sliced over the same ranks as the dense layers'
    tp (attention tp folded with MoE ep, `--attention-mesh`) and the token
    count splits evenly, the ops between attention blocks (residual adds,
    norms, routers, the MoE layers' rows) run on this rank's block of the
    rows, as in Megatron-LM's sequence parallelism: the all-reduces they
    read become reduce-scatters, the MoE row slices and all-gathers go
    away, and an all-gather of the rows feeds the ops that need them whole
    (attention's projections, the LM head). Applied only when that moves
    fewer bytes; `sequence-parallel=off` keeps the all-reduces.
  }];
  let options = [
    Option<"denseTp", "dense-tp", "std::string", /*default=*/"\"megatron\"",
           "Dense layers over tp: megatron (split) or replicated">,
    Option<"sequenceParallel", "sequence-parallel", "std::string",
           /*default=*/"\"auto\"",
           "Megatron sequence parallelism between the tensor-parallel "
           "regions: auto (where it moves fewer bytes) or off">,
  ];
}

//===----------------------------------------------------------------------===//
// Lowering
//===----------------------------------------------------------------------===//

def MoEFoldKVRepeat : Pass<"moe-fold-kv-repeat", "mlir::func::FuncOp"> {
  let summary = "Attention's products read each KV head for its query heads";
  let description = [{
    Grouped-query attention as exporters write it (Hugging Face's
    `repeat_kv`, then `k.transpose(-1, -2)`) copies every key and value
    head once per query head of its group (a broadcast linalg.generic) and
    the keys once more transposed, before the two f32 batch matmuls read
    them: at decode, three copies of the whole KV cache per layer and step.
    This pass rewrites such a `linalg.batch_matmul` to read the source
    directly: the query rows of one KV head's group are one batch of the
    product (a reshape of [B*h, S, D] to [B*kv, g*S, D]), the keys are
    read transposed (the batch matmul's indexing maps: a `batch_matmul`
    plan step with `trans_b`), and the result is reshaped back. The copies
    are left without readers and vanish. Applied when the operand is,
    through reshapes that keep the row-major order, a transpose of its
    last two dims and/or a broadcast that repeats one dim before the last
    two (its size g) of a tensor whose last two dims are the operand's
    rows and columns; otherwise the product is left as it is.
  }];
  let dependentDialects = ["mlir::linalg::LinalgDialect",
                           "mlir::tensor::TensorDialect"];
}

def MoEOutlineKernels : Pass<"moe-outline-kernels", "mlir::ModuleOp"> {
  let summary = "Outline dense elementwise/reduction regions into kernels";
  let description = [{
    Every linalg op of the per-rank program except matmuls (and the zero
    fills that initialise them) moves into its own `func.func @kernel_N`
    marked `moe.kernel`, replaced by a `func.call`; structurally identical
    regions (the same ops, types, attributes and constants reading their
    arguments in the same order: every layer's norms and residual adds)
    share one kernel, so that moec compiles each distinct kernel once.
    Elementwise producers
    are first fused into their linalg.generic consumers (upstream fusion
    patterns, without reshape propagation, which would turn matmuls into
    generics), so that each kernel is a fused region: a producer only into
    its one reader, or into each of its readers when it only moves data (a
    slice, a gather); a producer that computes and that several kernels
    read is a kernel of its own (copies of it would nest along a residual
    stream, each layer's kernels recomputing every earlier layer's sums).
    No fusion makes a kernel take more than moert::kMaxKernelOperands
    pointers (moert/Limits.h). Static `tensor.extract_slice`s and
    `tensor.concat`s (attention's rotary halves) first become
    linalg.generics over their result that read the operands with
    `tensor.extract` (a concatenation of more inputs than a kernel may take
    first becomes a tree of concatenations); tensors a kernel body reads
    that way become kernel arguments, each value once. moec compiles the kernels ahead of time (LLVM for CPU, NVVM/PTX
    for CUDA) and embeds them in the plan, where each call is a `kernel`
    step. f32 `linalg.batch_matmul`s (attention's two products) stay in
    @main as well, as `batch_matmul` plan steps (BLAS on CPU ranks, one
    strided-batched cuBLAS call on GPUs), unless `batch-matmul-steps=false`.
  }];
  let dependentDialects = ["mlir::func::FuncDialect",
                           "mlir::linalg::LinalgDialect"];
  let options = [
    Option<"batchMatmulSteps", "batch-matmul-steps", "bool",
           /*default=*/"true",
           "Keep f32 linalg.batch_matmul ops in @main (plan batch_matmul "
           "steps); false: outline them into generated kernels like any "
           "other linalg op">
  ];
}

#endif // MOEC_TRANSFORMS_PASSES_TD
