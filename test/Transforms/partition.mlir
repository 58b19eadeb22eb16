// moe-partition: the per-rank program with local shapes.
// dp=2 x ep=3 split 24 tokens (2x12) six ways: 4 per rank, as [1, 4, 16].
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=3" --moe-place-experts --moe-insert-all-to-all --moe-partition 2>/dev/null | FileCheck %s
// CHECK: shard.grid @mesh(shape = 2x3) {moe.axes = ["dp", "ep"], moe.partitioned}
// The global shapes are kept for the plan writer.
// CHECK: func.func @main(%[[X:.*]]: tensor<1x4x16xf32> {moe.global_shape = array<i64: 2, 12, 16>, moe.token_split = array<i64: 0, 2>, onnx.name = "hidden_states"}) -> (tensor<1x4x16xf32> {moe.global_shape = array<i64: 2, 12, 16>, moe.token_split = array<i64: 0, 2>, onnx.name = "output"})
// CHECK: tensor.collapse_shape %[[X]] {{\[\[}}0, 1], [2]] : tensor<1x4x16xf32> into tensor<4x16xf32>
// CHECK: tensor.empty() : tensor<4x8xf32>
// CHECK: linalg.matmul ins(%{{.*}}, %{{.*}} : tensor<4x16xf32>, tensor<16x8xf32>) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: moe.route %{{.*}} top_k 2 {renormalize = true} : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi64>
// Uneven: 8 experts on 3 ranks, 3 slots each, the last one empty.
// CHECK: moe.local_weights {{.*}} : tensor<8x16x32xf32> -> tensor<3x16x32xf32>
// CHECK: moe.dispatch {{.*}} max_rows = 24 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
// CHECK: moe.combine {{.*}} : tensor<?x16xf32>, !moe.dispatch, tensor<4x2xf32> -> tensor<4x16xf32>
// CHECK: tensor.expand_shape %{{.*}} {{\[\[}}0, 1], [2]] output_shape [1, 4, 16] : tensor<4x16xf32> into tensor<1x4x16xf32>
// CHECK-NOT: shard.shard

// The dp=2,ep=4,tp=2 mesh on 16 ranks: 24 tokens / 8 = 3 per rank; tp ranks
// hold the same tokens.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=4,tp=2" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=MESH16
// MESH16: shard.grid @mesh(shape = 2x4x2)
// MESH16: func.func @main(%{{.*}}: tensor<1x3x16xf32>
// MESH16: moe.local_weights {{.*}} : tensor<8x16x32xf32> -> tensor<2x16x16xf32>
// MESH16: moe.dispatch {{.*}} : tensor<3x16xf32>, tensor<3x2xi64>
// MESH16: shard.all_reduce {{.*}} grid_axes = [2] : tensor<3x16xf32> -> tensor<3x16xf32>

// Partitioning twice is an error.
// Sequence-parallel MoE: nothing outside the MoE layer is split (the model
// input keeps its global shape), the sliced rows stay as moe-shard made them.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=4 token-split=moe" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=SLICED
// SLICED: func.func @main(%{{.*}}: tensor<2x12x16xf32> {moe.global_shape = array<i64: 2, 12, 16>, onnx.name = "hidden_states"})
// SLICED: linalg.matmul {{.*}} -> tensor<24x8xf32>
// SLICED: shard.all_slice %{{.*}} on @mesh grid_axes = [0, 1] slice_axis = 0 : tensor<24x16xf32> -> tensor<3x16xf32>
// SLICED: moe.dispatch {{.*}} : tensor<3x16xf32>, tensor<3x2xi64>
// SLICED: shard.all_gather %{{.*}} : tensor<3x16xf32> -> tensor<24x16xf32>
// SLICED: return %{{.*}} : tensor<2x12x16xf32>

// Hybrid: each dp rank holds one sequence (12 tokens); its MoE rows are
// padded to 15 and sliced 5 ways over ep (grid axis 1), the combined rows
// all-gathered over ep and cut back to 12.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=5" --moe-place-experts --moe-insert-all-to-all --moe-partition 2>/dev/null | FileCheck %s --check-prefix=HYBRID
// HYBRID: func.func @main(%{{.*}}: tensor<1x12x16xf32> {moe.global_shape = array<i64: 2, 12, 16>, moe.token_split = array<i64: 0, 1>
// HYBRID: tensor.concat dim(0) %{{.*}}, %{{.*}} : (tensor<12x16xf32>, tensor<3x16xf32>) -> tensor<15x16xf32>
// HYBRID: shard.all_slice %{{.*}} on @mesh grid_axes = [1] slice_axis = 0 : tensor<15x16xf32> -> tensor<3x16xf32>
// HYBRID: moe.dispatch {{.*}} max_rows = 30 : tensor<3x16xf32>, tensor<3x2xi64>
// HYBRID: shard.all_slice %{{.*}} on @mesh grid_axes = [1] slice_axis = 0 : tensor<15x2xf32> -> tensor<3x2xf32>
// HYBRID: moe.combine {{.*}} -> tensor<3x16xf32>
// HYBRID: shard.all_gather %{{.*}} on @mesh grid_axes = [1] gather_axis = 0 : tensor<3x16xf32> -> tensor<15x16xf32>
// HYBRID: tensor.extract_slice %{{.*}}[0, 0] [12, 16] [1, 1] : tensor<15x16xf32> to tensor<12x16xf32>

// The same with the routing weight on the expert input (weight_input): the
// dispatch's weights are sliced with its tokens; the combine has none.
// RUN: sed 's/activation silu>}/activation silu>, weight_input}/' %S/Inputs/moe-layer.mlir | moe-opt --moe-shard="mesh=dp=2,ep=5" --moe-place-experts --moe-insert-all-to-all --moe-partition 2>/dev/null | FileCheck %s --check-prefix=HYBRIDW
// HYBRIDW: %[[T:.*]] = shard.all_slice %{{.*}} : tensor<15x16xf32> -> tensor<3x16xf32>
// HYBRIDW: %[[I:.*]] = shard.all_slice %{{.*}} : tensor<15x2xi64> -> tensor<3x2xi64>
// HYBRIDW: %[[W:.*]] = shard.all_slice %{{.*}} : tensor<15x2xf32> -> tensor<3x2xf32>
// HYBRIDW: moe.dispatch %[[T]], %[[I]] weights %[[W]] on @mesh {{.*}} max_rows = 30 : tensor<3x16xf32>, tensor<3x2xi64>, tensor<3x2xf32>
// HYBRIDW: moe.combine %{{.*}}, %{{.*}} : tensor<?x16xf32>, !moe.dispatch -> tensor<3x16xf32>
// HYBRIDW: shard.all_gather %{{.*}} on @mesh grid_axes = [1] gather_axis = 0 : tensor<3x16xf32> -> tensor<15x16xf32>

// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=2" --moe-partition --moe-partition 2>&1 | FileCheck %s --check-prefix=TWICE
// TWICE: error: the module is partitioned already

// Tensor parallelism of a shared expert whose activation runs between
// reshapes ([T, F] -> [B, S, F] -> [T, F], as DeepSeek's exports): ep=2,tp=2
// gives each rank 12 tokens and half of F=32; the gate/up weights are cut by
// columns, the down weight by rows (splat weights: resized), the reshapes
// get the local shapes, and the partial sums are all-reduced over tp. The
// router stays whole.
// RUN: moe-opt %S/Inputs/shared-expert.mlir --moe-shard="mesh=ep=2,tp=2" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=SHARED
// SHARED-DAG: %[[G:.*]] = arith.constant dense<5.000000e-02> : tensor<16x16xf32>
// SHARED-DAG: %[[U:.*]] = arith.constant dense<6.000000e-02> : tensor<16x16xf32>
// SHARED-DAG: %[[D:.*]] = arith.constant dense<7.000000e-02> : tensor<16x16xf32>
// SHARED: linalg.matmul ins(%{{.*}}, %{{.*}} : tensor<12x16xf32>, tensor<16x8xf32>)
// SHARED: %[[GM:.*]] = linalg.matmul {moe.shared_expert = 0 : i64} ins(%{{.*}}, %[[G]] : tensor<12x16xf32>, tensor<16x16xf32>)
// SHARED: %[[UM:.*]] = linalg.matmul {moe.shared_expert = 0 : i64} ins(%{{.*}}, %[[U]] : tensor<12x16xf32>, tensor<16x16xf32>)
// SHARED: tensor.reshape %[[GM]](%{{.*}}) : (tensor<12x16xf32>, tensor<3xi64>) -> tensor<1x12x16xf32>
// SHARED: %[[H3:.*]] = linalg.generic {{.*}} outs(%{{.*}} : tensor<1x12x16xf32>) attrs = {moe.shared_expert = 0 : i64}
// SHARED: %[[H:.*]] = tensor.reshape %[[H3]](%{{.*}}) : (tensor<1x12x16xf32>, tensor<2xi64>) -> tensor<12x16xf32>
// SHARED: %[[P:.*]] = linalg.matmul {moe.shared_expert = 0 : i64} ins(%[[H]], %[[D]] : tensor<12x16xf32>, tensor<16x16xf32>)
// SHARED: shard.all_reduce %[[P]] on @mesh grid_axes = [1] {moe.tensor_parallel} : tensor<12x16xf32> -> tensor<12x16xf32>

// Megatron tensor parallelism of a whole decoder layer (tp-block.mlir: GQA
// attention with 4 query and 2 KV heads, a SwiGLU MLP, an LM head), tp=2:
// Q/K/V cut by columns (heads), the output projection by rows, then an
// all-reduce; gate/up by columns, down by rows, an all-reduce; the LM head
// by columns (vocab) with an all-gather of the logits at the result. The
// norms stay whole (they read the all-reduced residual stream).
// RUN: moe-opt %S/Inputs/tp-block.mlir --moe-shard="mesh=tp=2" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=TP2
// TP2-DAG: %[[LM:.*]] = moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 1 : tensor<8x16xf32> -> tensor<8x8xf32>
// TP2-DAG: %[[DOWN:.*]] = moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 0 : tensor<16x8xf32> -> tensor<8x8xf32>
// TP2-DAG: %[[O:.*]] = moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 0 : tensor<8x8xf32> -> tensor<4x8xf32>
// TP2-DAG: %[[K:.*]] = moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 1 : tensor<8x4xf32> -> tensor<8x2xf32>
// TP2-DAG: %[[Q:.*]] = moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 1 : tensor<8x8xf32> -> tensor<8x4xf32>
// TP2: linalg.reduce ins(%{{.*}} : tensor<1x4x8xf32>)
// TP2: linalg.matmul ins(%{{.*}}, %[[Q]] : tensor<4x8xf32>, tensor<8x4xf32>)
// TP2: linalg.matmul ins(%{{.*}}, %[[K]] : tensor<4x8xf32>, tensor<8x2xf32>)
// TP2: linalg.batch_matmul ins(%{{.*}}, %{{.*}} : tensor<2x4x2xf32>, tensor<2x2x4xf32>)
// TP2: linalg.batch_matmul ins(%{{.*}}, %{{.*}} : tensor<2x4x4xf32>, tensor<2x4x2xf32>)
// TP2: %[[OP:.*]] = linalg.matmul ins(%{{.*}}, %[[O]] : tensor<4x4xf32>, tensor<4x8xf32>)
// TP2-NEXT: shard.all_reduce %[[OP]] on @mesh grid_axes = [1] {moe.tensor_parallel} : tensor<4x8xf32> -> tensor<4x8xf32>
// TP2: linalg.reduce ins(%{{.*}} : tensor<1x4x8xf32>)
// TP2: %[[DP:.*]] = linalg.matmul ins(%{{.*}}, %[[DOWN]] : tensor<4x8xf32>, tensor<8x8xf32>)
// TP2-NEXT: shard.all_reduce %[[DP]] on @mesh grid_axes = [1] {moe.tensor_parallel}
// TP2: linalg.matmul ins(%{{.*}}, %[[LM]] : tensor<4x8xf32>, tensor<8x8xf32>)
// TP2: %[[LOGITS:.*]] = shard.all_gather %{{.*}} on @mesh grid_axes = [1] gather_axis = 2 {moe.tensor_parallel} : tensor<1x4x8xf32> -> tensor<1x4x16xf32>
// TP2-NEXT: return %[[LOGITS]]

// tp=4 with 2 KV heads: as vLLM, the K/V projections stay whole (each rank
// computes both KV heads) and each rank takes its query heads' copy after
// repeat_kv (shard.all_slice: no data moves); Q and the output projection
// are cut 4 ways.
// RUN: moe-opt %S/Inputs/tp-block.mlir --moe-shard="mesh=tp=4" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=GQA
// GQA-DAG: %[[O:.*]] = moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 0 : tensor<8x8xf32> -> tensor<2x8xf32>
// GQA-DAG: %[[Q:.*]] = moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 1 : tensor<8x8xf32> -> tensor<8x2xf32>
// GQA: linalg.matmul ins(%{{.*}}, %[[Q]] : tensor<4x8xf32>, tensor<8x2xf32>)
// GQA: linalg.matmul ins(%{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8x4xf32>)
// GQA: shard.all_slice %{{.*}} on @mesh grid_axes = [1] slice_axis = 0 {moe.tensor_parallel} : tensor<4x4x2xf32> -> tensor<1x4x2xf32>
// GQA: linalg.matmul ins(%{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8x4xf32>)
// GQA: shard.all_slice %{{.*}} on @mesh grid_axes = [1] slice_axis = 0 {moe.tensor_parallel} : tensor<4x4x2xf32> -> tensor<1x4x2xf32>
// GQA: linalg.batch_matmul ins(%{{.*}}, %{{.*}} : tensor<1x4x2xf32>, tensor<1x2x4xf32>)
// GQA: %[[OP:.*]] = linalg.matmul ins(%{{.*}}, %[[O]] : tensor<4x2xf32>, tensor<2x8xf32>)
// GQA-NEXT: shard.all_reduce %[[OP]] on @mesh grid_axes = [1] {moe.tensor_parallel} : tensor<4x8xf32> -> tensor<4x8xf32>

// dense-tp=replicated: every tp rank runs the layer whole.
// RUN: moe-opt %S/Inputs/tp-block.mlir --moe-shard="mesh=tp=2" --moe-place-experts --moe-insert-all-to-all --moe-partition="dense-tp=replicated" | FileCheck %s --check-prefix=REPL
// REPL-NOT: moe.tp_slice
// REPL-NOT: shard.all_reduce
// REPL: linalg.matmul ins(%{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<8x16xf32>)
// REPL-NOT: shard.all_gather
// REPL: return
// RUN: not moe-opt %S/Inputs/tp-block.mlir --moe-shard="mesh=tp=2" --moe-partition="dense-tp=columns" 2>&1 | FileCheck %s --check-prefix=BADTP
// BADTP: error: moe-partition: dense-tp 'columns': expected megatron or replicated

// Sequence parallelism (Megatron; sequence-parallel=auto, the default): the
// MoE layer's rows are sliced over the same 4 ranks as the dense layers' tp
// (attention tp=4 folded with MoE ep=4), so the residual adds, the router
// and the MoE rows run on this rank's block of the 16 rows: the row-parallel
// partial sums are reduce-scattered (no all-reduce), dispatch reads the
// rank's rows directly (no slice, no all-gather after combine), and the
// rows are all-gathered where whole rows are needed (the next block's
// column-parallel projection, the result).
// RUN: moe-opt %S/Inputs/sp-block.mlir --moe-shard="mesh=ep=4 attention-mesh=tp=4" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=SP
// SP: %[[T:.*]] = tensor.collapse_shape %{{.*}} : tensor<2x8x16xf32> into tensor<16x16xf32>
// SP: %[[TS:.*]] = shard.all_slice %[[T]] on @mesh grid_axes = [0] slice_axis = 0 {moe.sequence_parallel} : tensor<16x16xf32> -> tensor<4x16xf32>
// SP: linalg.matmul ins(%[[T]], %{{.*}} : tensor<16x16xf32>, tensor<16x8xf32>)
// SP: %[[RS:.*]] = shard.reduce_scatter %{{.*}} on @mesh grid_axes = [0] scatter_axis = 0 {moe.sequence_parallel} : tensor<16x16xf32> -> tensor<4x16xf32>
// SP: %[[R:.*]] = linalg.add ins(%[[TS]], %[[RS]] : tensor<4x16xf32>, tensor<4x16xf32>)
// SP: linalg.matmul ins(%[[R]], %{{.*}} : tensor<4x16xf32>, tensor<16x8xf32>) outs(%{{.*}} : tensor<4x8xf32>)
// SP: moe.route %{{.*}} : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi64>
// SP-NOT: shard.all_slice
// SP: moe.dispatch %[[R]], %{{.*}} : tensor<4x16xf32>, tensor<4x2xi64>
// SP: %[[Y:.*]] = moe.combine {{.*}} -> tensor<4x16xf32>
// SP-NOT: shard.all_gather %[[Y]]
// SP: %[[R2:.*]] = linalg.add ins(%[[R]], %[[Y]] : tensor<4x16xf32>, tensor<4x16xf32>)
// SP: %[[G:.*]] = shard.all_gather %[[R2]] on @mesh grid_axes = [0] gather_axis = 0 {moe.sequence_parallel} : tensor<4x16xf32> -> tensor<16x16xf32>
// SP: linalg.matmul ins(%[[G]], %{{.*}} : tensor<16x16xf32>, tensor<16x8xf32>)
// SP: shard.reduce_scatter
// SP: shard.all_gather {{.*}} {moe.sequence_parallel} : tensor<4x16xf32> -> tensor<16x16xf32>
// SP-NOT: shard.all_reduce
// SP: return %{{.*}} : tensor<2x8x16xf32>

// sequence-parallel=off: the all-reduces stay, each MoE layer slices its
// rows and all-gathers them after combine.
// RUN: moe-opt %S/Inputs/sp-block.mlir --moe-shard="mesh=ep=4 attention-mesh=tp=4" --moe-place-experts --moe-insert-all-to-all --moe-partition="sequence-parallel=off" | FileCheck %s --check-prefix=SPOFF
// SPOFF-NOT: shard.reduce_scatter
// SPOFF: shard.all_reduce %{{.*}} {moe.tensor_parallel} : tensor<16x16xf32> -> tensor<16x16xf32>
// SPOFF: moe.route %{{.*}} : tensor<16x8xf32>
// SPOFF: shard.all_slice %{{.*}} slice_axis = 0 : tensor<16x16xf32> -> tensor<4x16xf32>
// SPOFF: moe.combine {{.*}} -> tensor<4x16xf32>
// SPOFF: shard.all_gather %{{.*}} gather_axis = 0 : tensor<4x16xf32> -> tensor<16x16xf32>
// SPOFF: shard.all_reduce
// SPOFF-NOT: shard.reduce_scatter

// A block without a residual add (MoE output plus a tensor-parallel shared
// expert, as the TorchScript DeepSeek/Qwen2 exports write it): the region
// grows from the MoE layer's row all-gather too, so the shared expert's
// partial sums are reduce-scattered and added to the rank's combined rows;
// the result is all-gathered once.
// RUN: moe-opt %S/Inputs/shared-expert.mlir --moe-shard="mesh=ep=2 attention-mesh=tp=2" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=SPSHARED
// SPSHARED: moe.route %{{.*}} : tensor<12x8xf32> -> tensor<12x2xf32>, tensor<12x2xi64>
// SPSHARED: moe.combine {{.*}} -> tensor<12x16xf32>
// SPSHARED-NOT: shard.all_reduce
// SPSHARED: shard.reduce_scatter %{{.*}} grid_axes = [0] scatter_axis = 0 {moe.sequence_parallel} : tensor<24x16xf32> -> tensor<12x16xf32>
// SPSHARED: shard.all_gather %{{.*}} {moe.sequence_parallel} : tensor<1x12x16xf32> -> tensor<2x12x16xf32>
// SPSHARED-NEXT: return

// A bad value is an error naming the option.
// RUN: not moe-opt %S/Inputs/sp-block.mlir --moe-shard="mesh=ep=4 attention-mesh=tp=4" --moe-partition="sequence-parallel=yes" 2>&1 | FileCheck %s --check-prefix=BADSP
// BADSP: moe-partition: sequence-parallel 'yes': expected auto or off
