// moe-translate --moe-to-plan: the plan writer on a small per-rank program
// (one MoE layer, 2x12 tokens of width 16, 8 experts of width 32, top-2, on
// ep=2), as moe-compile-pipeline leaves it; moe-run --describe shows the
// plan. Then the same on the pipeline's output for the unsharded layer, and
// on moec's printed IR, whose plan is byte for byte the plan moec writes.

// RUN: moe-translate --moe-to-plan %s -o %t.moeplan
// RUN: moe-run --describe %t.moeplan | FileCheck %s
// CHECK:      moe plan v7 by moec 0.1 from {{.*}}to-plan.mlir
// CHECK-NEXT: mesh: ep=2 (2 ranks)
// CHECK-NEXT: input  hidden_states: f32[2x12x16] split over ep (rows of dims 0..0) -> v0
// CHECK-NEXT: output output: f32[2x12x16] split over ep (rows of dims 0..0) <- v12
// The router is shared; each rank holds 4 experts x 3 x 16 x 32 x 4 B.
// CHECK:        shared: 512 bytes, every rank
// CHECK-NEXT:   rank0: 24576 bytes, rank 0
// CHECK-NEXT:   rank1: 24576 bytes, rank 1
// CHECK:      steps:
// CHECK-NEXT:   0: matmul(v2, v1, -) -> v3 trans_b=0 @ /gate/MatMul
// CHECK-NEXT:   1: route(v3, -) -> v4, v5 {{.*}}top_k=2{{.*}} @ /TopK
// CHECK-NEXT:   2: dispatch(v2, v5) -> v9 axes=ep capacity=-1 num_experts=8 {{.*}}slots_per_rank=4 @ /moe/dispatch
// CHECK-NEXT:   3: experts(v9, v6, v7, v8, -, -, -) -> v10 activation=silu alpha=1 beta=0 dispatch=2 limit=inf @ /moe/experts
// CHECK-NEXT:   4: combine(v10, v4) -> v11 dispatch=2 @ /moe/combine
// CHECK-NOT:    5:

// The translation reads what the pipeline writes: the sharding test layer
// on ep=2 gives the plan above (without the node names).
// RUN: moe-opt %S/../Transforms/Inputs/moe-layer.mlir --moe-compile-pipeline="mesh=ep=2" | moe-translate --moe-to-plan -o %t.layer.moeplan
// RUN: moe-run --describe %t.layer.moeplan | FileCheck %s --check-prefix=LAYER
// LAYER:      moe plan v7 by moec 0.1 from <stdin>
// LAYER-NEXT: mesh: ep=2 (2 ranks)
// LAYER:        rank1: 24576 bytes, rank 1
// LAYER:        4: combine(v10, v4) -> v11 dispatch=2

// Experts with the routing weight on their input (weight_input): the
// dispatch takes the weights as its third operand, the combine none (-1).
// RUN: sed 's/activation silu>}/activation silu>, weight_input}/' %S/../Transforms/Inputs/moe-layer.mlir | moe-opt --moe-compile-pipeline="mesh=ep=2" | moe-translate --moe-to-plan -o %t.win.moeplan
// RUN: moe-run --describe %t.win.moeplan | FileCheck %s --check-prefix=WIN
// WIN:      1: route(v3, -) -> v4, v5
// WIN-NEXT: 2: dispatch(v2, v5, v4) -> v9
// WIN-NEXT: 3: experts(v9, v6, v7, v8, -, -, -) -> v10
// WIN-NEXT: 4: combine(v10, -) -> v11 dispatch=2

// Sequence-parallel MoE (24 tokens on 5 ranks, padded to 25): shard.all_slice
// and shard.all_gather lower to all_slice and all_gather steps over ep; the
// model input stays replicated.
// RUN: moe-opt %S/../Transforms/Inputs/moe-layer.mlir --moe-compile-pipeline="mesh=ep=5" 2>/dev/null | moe-translate --moe-to-plan -o %t.sliced.moeplan
// RUN: moe-run --describe %t.sliced.moeplan | FileCheck %s --check-prefix=SLICED
// SLICED: input  hidden_states: f32[2x12x16] replicated
// SLICED: all_slice(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0
// SLICED: all_slice(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0
// SLICED: all_slice(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0
// SLICED-NEXT: dispatch(
// SLICED: combine(
// SLICED-NEXT: all_gather(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0

// Sequence parallelism (attention tp=4 folded with MoE ep=4): shard.reduce_scatter
// lowers to a reduce_scatter step over the tp axis; dispatch reads its output
// rows directly.
// RUN: moe-opt %S/../Transforms/Inputs/sp-block.mlir --moe-compile-pipeline="mesh=ep=4 attention-mesh=tp=4" 2>/dev/null | moe-translate --moe-to-plan -o %t.sp.moeplan
// RUN: moe-run --describe %t.sp.moeplan | FileCheck %s --check-prefix=SPPLAN
// SPPLAN: all_slice(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0
// SPPLAN: reduce_scatter(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0 reduction=sum
// SPPLAN: route(
// SPPLAN-NEXT: dispatch(
// SPPLAN: combine(
// SPPLAN-NOT: all_reduce
// SPPLAN: all_gather(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0
// SPPLAN: reduce_scatter(v{{[0-9]+}}) -> v{{[0-9]+}} axes=ep axis=0 reduction=sum

// moec's per-rank IR, printed with its weights and locations, translates to
// the plan moec writes itself (generated kernels included: RMSNorm and the
// residual add of mixtral_layer).
// RUN: moec %moec_src/examples/mixtral_layer/model.onnx --mesh ep=2 --emit-weights --mlir-print-debuginfo -o %t.layer.mlir
// RUN: moe-translate --moe-to-plan %t.layer.mlir -o %t.translated.moeplan
// RUN: moec %moec_src/examples/mixtral_layer/model.onnx --mesh ep=2 -o %t.moec.moeplan
// RUN: cmp %t.translated.moeplan %t.moec.moeplan
// RUN: moe-run --describe %t.translated.moeplan | FileCheck %s --check-prefix=KERNELS
// KERNELS: moe plan v7 by moec 0.1 from {{.*}}mixtral_layer{{/|\\}}model.onnx
// KERNELS: kernels (generated): kernel_0/2 kernel_1/2 kernel_2/2 kernel_3/4 kernel_4/3
// KERNELS: code: cpu {{[1-9][0-9]*}} bytes, ptx 0 bytes

#placement = #moe.placement<num_experts = 8, ranks = 2, slots_per_rank = 4, slots = [0, 1, 2, 3, 4, 5, 6, 7], strategy = "contiguous">
module {
  shard.grid @mesh(shape = 2) {moe.axes = ["ep"], moe.partitioned}
  func.func @main(%x: tensor<1x12x16xf32> {moe.global_shape = array<i64: 2, 12, 16>, moe.token_split = array<i64: 0, 1>, onnx.name = "hidden_states"})
      -> (tensor<1x12x16xf32> {moe.global_shape = array<i64: 2, 12, 16>, moe.token_split = array<i64: 0, 1>, onnx.name = "output"}) {
    %router = arith.constant dense<0.01> : tensor<16x8xf32>
    %wg = arith.constant dense<0.02> : tensor<8x16x32xf32>
    %wu = arith.constant dense<0.03> : tensor<8x16x32xf32>
    %wd = arith.constant dense<0.04> : tensor<8x32x16xf32>
    %zero = arith.constant 0.0 : f32
    %t = tensor.collapse_shape %x [[0, 1], [2]] : tensor<1x12x16xf32> into tensor<12x16xf32>
    %e = tensor.empty() : tensor<12x8xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<12x8xf32>) -> tensor<12x8xf32>
    %logits = linalg.matmul ins(%t, %router : tensor<12x16xf32>, tensor<16x8xf32>) outs(%f : tensor<12x8xf32>) -> tensor<12x8xf32> loc("/gate/MatMul")
    %w, %i = moe.route %logits top_k 2 {renormalize = true} : tensor<12x8xf32> -> tensor<12x2xf32>, tensor<12x2xi64> loc("/TopK")
    %lg = moe.local_weights %wg on @mesh ep_axes = [0] placement = #placement {split_dim = 2 : i64} : tensor<8x16x32xf32> -> tensor<4x16x32xf32>
    %lu = moe.local_weights %wu on @mesh ep_axes = [0] placement = #placement {split_dim = 2 : i64} : tensor<8x16x32xf32> -> tensor<4x16x32xf32>
    %ld = moe.local_weights %wd on @mesh ep_axes = [0] placement = #placement {split_dim = 1 : i64} : tensor<8x32x16xf32> -> tensor<4x32x16xf32>
    %recv, %h = moe.dispatch %t, %i on @mesh grid_axes = [0] placement = #placement max_rows = 48 : tensor<12x16xf32>, tensor<12x2xi64> -> tensor<?x16xf32>, !moe.dispatch loc("/moe/dispatch")
    %y = moe.expert_compute %recv, %h gate %lg up %lu down %ld {activation = #moe<activation silu>} : (tensor<?x16xf32>, !moe.dispatch, tensor<4x16x32xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<?x16xf32> loc("/moe/experts")
    %c = moe.combine %y, %h, %w : tensor<?x16xf32>, !moe.dispatch, tensor<12x2xf32> -> tensor<12x16xf32> loc("/moe/combine")
    %out = tensor.expand_shape %c [[0, 1], [2]] output_shape [1, 12, 16] : tensor<12x16xf32> into tensor<1x12x16xf32>
    return %out : tensor<1x12x16xf32>
  }
}
