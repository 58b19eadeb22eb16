// RUN: moe-opt %s | moe-opt | FileCheck %s
// The generic form (operand segment sizes, default-valued attributes) too:
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s
// Round trip of every moe op, with and without optional operands/attributes.

// CHECK-LABEL: func.func @route_mixtral
func.func @route_mixtral(%logits: tensor<16x8xf32>) -> (tensor<16x2xf32>, tensor<16x2xi64>) {
  // CHECK: moe.route %{{.*}} top_k 2 {renormalize = true} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  %w, %i = moe.route %logits top_k 2 {renormalize = true} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return %w, %i : tensor<16x2xf32>, tensor<16x2xi64>
}

// CHECK-LABEL: func.func @route_deepseek_v3
func.func @route_deepseek_v3(%logits: tensor<?x16xf32>, %bias: tensor<16xf32>) -> (tensor<?x4xf32>, tensor<?x4xi64>) {
  // CHECK: moe.route %{{.*}} bias %{{.*}} top_k 4 {group_score = #moe<group_score top2_sum>, num_groups = 4 : i64, renormalize = true, scaling_factor = 2.500000e+00 : f64, score_func = #moe<score_func sigmoid>, topk_groups = 2 : i64} : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x4xf32>, tensor<?x4xi64>
  %w, %i = moe.route %logits bias %bias top_k 4 {score_func = #moe<score_func sigmoid>, renormalize = true, scaling_factor = 2.5 : f64, num_groups = 4 : i64, topk_groups = 2 : i64, group_score = #moe<group_score top2_sum>} : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x4xf32>, tensor<?x4xi64>
  return %w, %i : tensor<?x4xf32>, tensor<?x4xi64>
}

// CHECK-LABEL: func.func @experts_swiglu
func.func @experts_swiglu(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>,
                          %w1: tensor<8x64x128xf32>, %w3: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) -> tensor<16x64xf32> {
  // CHECK: moe.experts %{{.*}}, %{{.*}}, %{{.*}} gate %{{.*}} up %{{.*}} down %{{.*}} {activation = #moe<activation silu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 {activation = #moe<activation silu>}
      : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// CHECK-LABEL: func.func @experts_gelu_bias
func.func @experts_gelu_bias(%x: tensor<?x32xf32>, %i: tensor<?x1xi64>, %w: tensor<?x1xf32>,
                             %w1: tensor<2x32x64xf32>, %w2: tensor<2x64x32xf32>,
                             %b1: tensor<2x64xf32>, %b2: tensor<2x32xf32>) -> tensor<?x32xf32> {
  // CHECK: moe.experts {{.*}} gate %{{.*}} down %{{.*}} bias_gate %{{.*}} bias_down %{{.*}} {activation = #moe<activation gelu>, expert_offset = 4 : i64}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 bias_gate %b1 bias_down %b2 {activation = #moe<activation gelu>, expert_offset = 4 : i64}
      : (tensor<?x32xf32>, tensor<?x1xi64>, tensor<?x1xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>, tensor<2x64xf32>, tensor<2x32xf32>) -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// CHECK-LABEL: func.func @onnx_ops
func.func @onnx_ops(%x: tensor<4x8xf32>, %m: tensor<4x8xi1>, %d: tensor<16x8xf32>,
                    %idx: tensor<4x8xi64>, %upd: tensor<4x8xf32>, %nd: tensor<?x1xi64>, %ndu: tensor<?x8xf32>)
    -> (tensor<4x2xf32>, tensor<4x2xi64>, tensor<2x?xi64>, tensor<16x8xf32>, tensor<16x8xf32>) {
  // CHECK: moe.topk %{{.*}} k 2 axis 1 {largest = false, sorted = false} : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi64>
  %v, %i = moe.topk %x k 2 axis 1 {largest = false, sorted = false} : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi64>
  // CHECK: moe.nonzero %{{.*}} : tensor<4x8xi1> -> tensor<2x?xi64>
  %nz = moe.nonzero %m : tensor<4x8xi1> -> tensor<2x?xi64>
  // CHECK: moe.scatter_elements %{{.*}} axis 0 {reduction = #moe<reduction max>}
  %s = moe.scatter_elements %d, %idx, %upd axis 0 {reduction = #moe<reduction max>} : (tensor<16x8xf32>, tensor<4x8xi64>, tensor<4x8xf32>) -> tensor<16x8xf32>
  // CHECK: moe.scatter_nd %{{.*}} : (tensor<16x8xf32>, tensor<?x1xi64>, tensor<?x8xf32>) -> tensor<16x8xf32>
  %n = moe.scatter_nd %d, %nd, %ndu : (tensor<16x8xf32>, tensor<?x1xi64>, tensor<?x8xf32>) -> tensor<16x8xf32>
  return %v, %i, %nz, %s, %n : tensor<4x2xf32>, tensor<4x2xi64>, tensor<2x?xi64>, tensor<16x8xf32>, tensor<16x8xf32>
}

// CHECK-LABEL: func.func @route_defaults_i32
func.func @route_defaults_i32(%logits: tensor<?x?xbf16>) -> (tensor<?x1xbf16>, tensor<?x1xi32>) {
  // CHECK: moe.route %{{.*}} top_k 1 : tensor<?x?xbf16> -> tensor<?x1xbf16>, tensor<?x1xi32>
  %w, %i = moe.route %logits top_k 1 {score_func = #moe<score_func softmax>, renormalize = false, scaling_factor = 1.0 : f64, num_groups = 1 : i64, topk_groups = 1 : i64, group_score = #moe<group_score max>} : tensor<?x?xbf16> -> tensor<?x1xbf16>, tensor<?x1xi32>
  return %w, %i : tensor<?x1xbf16>, tensor<?x1xi32>
}

// CHECK-LABEL: func.func @experts_all_operands
func.func @experts_all_operands(%x: tensor<?x64xf16>, %i: tensor<?x2xi32>, %w: tensor<?x2xf16>,
                                %w1: tensor<?x64x128xf16>, %w3: tensor<4x64x128xf16>, %w2: tensor<4x128x64xf16>,
                                %b1: tensor<4x128xf16>, %b3: tensor<4x128xf16>, %b2: tensor<4x64xf16>) -> tensor<?x64xf16> {
  // CHECK: moe.experts %{{.*}}, %{{.*}}, %{{.*}} gate %{{.*}} up %{{.*}} down %{{.*}} bias_gate %{{.*}} bias_up %{{.*}} bias_down %{{.*}} {activation = #moe<activation gelu_tanh>, expert_offset = 8 : i64} : (tensor<?x64xf16>, tensor<?x2xi32>, tensor<?x2xf16>, tensor<?x64x128xf16>, tensor<4x64x128xf16>, tensor<4x128x64xf16>, tensor<4x128xf16>, tensor<4x128xf16>, tensor<4x64xf16>) -> tensor<?x64xf16>
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 bias_gate %b1 bias_up %b3 bias_down %b2 {activation = #moe<activation gelu_tanh>, expert_offset = 8 : i64}
      : (tensor<?x64xf16>, tensor<?x2xi32>, tensor<?x2xf16>, tensor<?x64x128xf16>, tensor<4x64x128xf16>, tensor<4x128x64xf16>, tensor<4x128xf16>, tensor<4x128xf16>, tensor<4x64xf16>) -> tensor<?x64xf16>
  return %y : tensor<?x64xf16>
}

// CHECK-LABEL: func.func @experts_identity_bias_up_only
func.func @experts_identity_bias_up_only(%x: tensor<2x8xf32>, %i: tensor<2x1xi64>, %w: tensor<2x1xf32>,
                                         %w1: tensor<2x8x4xf32>, %w3: tensor<2x8x4xf32>, %w2: tensor<2x4x8xf32>,
                                         %b3: tensor<2x4xf32>) -> tensor<2x8xf32> {
  // CHECK: moe.experts {{.*}} gate %{{.*}} up %{{.*}} down %{{.*}} bias_up %{{.*}} {activation = #moe<activation identity>}
  // CHECK-NOT: bias_gate
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 bias_up %b3 {activation = #moe<activation identity>}
      : (tensor<2x8xf32>, tensor<2x1xi64>, tensor<2x1xf32>, tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<2x4x8xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// CHECK-LABEL: func.func @onnx_ops_defaults
func.func @onnx_ops_defaults(%x: tensor<?x8xi32>, %m: tensor<3xf32>, %d: tensor<16x8xf32>,
                             %idx: tensor<4x8xi32>, %upd: tensor<4x8xf32>, %nd: tensor<2x2xi32>, %ndu: tensor<2xf32>)
    -> (tensor<?x8xi32>, tensor<?x8xi64>, tensor<1x3xi64>, tensor<16x8xf32>, tensor<16x8xf32>) {
  // CHECK: moe.topk %{{.*}} k 8 axis 1 : tensor<?x8xi32> -> tensor<?x8xi32>, tensor<?x8xi64>
  %v, %i = moe.topk %x k 8 axis 1 {largest = true, sorted = true} : tensor<?x8xi32> -> tensor<?x8xi32>, tensor<?x8xi64>
  // CHECK: moe.nonzero %{{.*}} : tensor<3xf32> -> tensor<1x3xi64>
  %nz = moe.nonzero %m : tensor<3xf32> -> tensor<1x3xi64>
  // CHECK: moe.scatter_elements %{{.*}}, %{{.*}}, %{{.*}} axis 1 : (tensor<16x8xf32>, tensor<4x8xi32>, tensor<4x8xf32>) -> tensor<16x8xf32>
  %s = moe.scatter_elements %d, %idx, %upd axis 1 : (tensor<16x8xf32>, tensor<4x8xi32>, tensor<4x8xf32>) -> tensor<16x8xf32>
  // CHECK: moe.scatter_nd %{{.*}}, %{{.*}}, %{{.*}} {reduction = #moe<reduction mul>} : (tensor<16x8xf32>, tensor<2x2xi32>, tensor<2xf32>) -> tensor<16x8xf32>
  %n = moe.scatter_nd %d, %nd, %ndu {reduction = #moe<reduction mul>} : (tensor<16x8xf32>, tensor<2x2xi32>, tensor<2xf32>) -> tensor<16x8xf32>
  return %v, %i, %nz, %s, %n : tensor<?x8xi32>, tensor<?x8xi64>, tensor<1x3xi64>, tensor<16x8xf32>, tensor<16x8xf32>
}

// Expert parallelism: placement, local weights, dispatch, compute, combine.
shard.grid @mesh(shape = 2x2) {moe.axes = ["ep", "tp"]}
// CHECK-LABEL: func.func @expert_parallel
func.func @expert_parallel(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %w: tensor<4x2xf32>,
                           %wg: tensor<3x16x32xf32>, %wd: tensor<3x32x16xf32>, %bd: tensor<3x16xf32>) -> tensor<4x16xf32> {
  // CHECK: moe.local_weights %{{.*}} on @mesh ep_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> {split_axes = array<i16: 1>, split_dim = 2 : i64} : tensor<3x16x32xf32> -> tensor<2x16x16xf32>
  %g = moe.local_weights %wg on @mesh ep_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> {split_axes = array<i16: 1>, split_dim = 2 : i64} : tensor<3x16x32xf32> -> tensor<2x16x16xf32>
  %d = moe.local_weights %wd on @mesh ep_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> {split_axes = array<i16: 1>, split_dim = 1 : i64} : tensor<3x32x16xf32> -> tensor<2x16x16xf32>
  // CHECK: {first_only = true, split_axes = array<i16: 1>, split_dim = 1 : i64}
  %b = moe.local_weights %bd on @mesh ep_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> {first_only = true, split_axes = array<i16: 1>, split_dim = 1 : i64} : tensor<3x16xf32> -> tensor<2x16xf32>
  // CHECK: %[[R:.*]], %[[H:.*]] = moe.dispatch %{{.*}}, %{{.*}} on @mesh grid_axes = [0] placement = <{{.*}}> max_rows = 16 {capacity = 3 : i64} : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> max_rows = 16 {capacity = 3 : i64} : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  // CHECK: moe.expert_compute %[[R]], %[[H]] gate %{{.*}} down %{{.*}} bias_down %{{.*}} {activation = #moe<activation gelu>}
  %y = moe.expert_compute %r, %h gate %g down %d bias_down %b {activation = #moe<activation gelu>}
      : (tensor<?x16xf32>, !moe.dispatch, tensor<2x16x16xf32>, tensor<2x16x16xf32>, tensor<2x16xf32>) -> tensor<?x16xf32>
  // CHECK: moe.combine %{{.*}}, %[[H]], %{{.*}} : tensor<?x16xf32>, !moe.dispatch, tensor<4x2xf32> -> tensor<4x16xf32>
  %o = moe.combine %y, %h, %w : tensor<?x16xf32>, !moe.dispatch, tensor<4x2xf32> -> tensor<4x16xf32>
  return %o : tensor<4x16xf32>
}

// Llama 4: the routing weight scales the experts' input (weight_input);
// sharded, the dispatch sends the scaled rows and the combine sums them.
// CHECK-LABEL: func.func @experts_weight_input
func.func @experts_weight_input(%x: tensor<16x64xf32>, %i: tensor<16x1xi64>, %w: tensor<16x1xf32>,
                                %w1: tensor<8x64x64xf32>, %w3: tensor<8x64x64xf32>, %w2: tensor<8x64x64xf32>) -> tensor<16x64xf32> {
  // CHECK: moe.experts {{.*}} {activation = #moe<activation silu>, weight_input}
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 {activation = #moe<activation silu>, weight_input}
      : (tensor<16x64xf32>, tensor<16x1xi64>, tensor<16x1xf32>, tensor<8x64x64xf32>, tensor<8x64x64xf32>, tensor<8x64x64xf32>) -> tensor<16x64xf32>
  return %y : tensor<16x64xf32>
}

// CHECK-LABEL: func.func @dispatch_weights
func.func @dispatch_weights(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %w: tensor<4x2xf32>,
                            %g: tensor<2x16x16xf32>, %d: tensor<2x16x16xf32>) -> tensor<4x16xf32> {
  // CHECK: %[[R:.*]], %[[H:.*]] = moe.dispatch %{{.*}}, %{{.*}} weights %{{.*}} on @mesh grid_axes = [0] placement = <{{.*}}> max_rows = 16 : tensor<4x16xf32>, tensor<4x2xi64>, tensor<4x2xf32> -> tensor<?x16xf32>, !moe.dispatch
  %r, %h = moe.dispatch %x, %i weights %w on @mesh grid_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> max_rows = 16 : tensor<4x16xf32>, tensor<4x2xi64>, tensor<4x2xf32> -> tensor<?x16xf32>, !moe.dispatch
  %y = moe.expert_compute %r, %h gate %g down %d {activation = #moe<activation relu>}
      : (tensor<?x16xf32>, !moe.dispatch, tensor<2x16x16xf32>, tensor<2x16x16xf32>) -> tensor<?x16xf32>
  // CHECK: moe.combine %{{.*}}, %[[H]] : tensor<?x16xf32>, !moe.dispatch -> tensor<4x16xf32>
  %o = moe.combine %y, %h : tensor<?x16xf32>, !moe.dispatch -> tensor<4x16xf32>
  return %o : tensor<4x16xf32>
}

// CHECK-LABEL: func.func @tp_slice
func.func @tp_slice(%w: tensor<64x96xf32>) -> tensor<64x48xf32> {
  // CHECK: moe.tp_slice %{{.*}} on @mesh grid_axes = [1] dim = 1 : tensor<64x96xf32> -> tensor<64x48xf32>
  %s = moe.tp_slice %w on @mesh grid_axes = [1] dim = 1 : tensor<64x96xf32> -> tensor<64x48xf32>
  return %s : tensor<64x48xf32>
}

// CHECK-LABEL: func.func @dequantize
func.func @dequantize(%q: tensor<24x2x16xui8>, %s: tensor<24x2xf32>, %z: tensor<24x2xf32>) -> (tensor<64x24xf32>, tensor<40x24xf32>) {
  // CHECK: moe.dequantize %{{.*}}, %{{.*}} bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
  %w = moe.dequantize %q, %s bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
  // CHECK: moe.dequantize %{{.*}}, %{{.*}} zero_points %{{.*}} bits 4 block_size 32 k 40 : tensor<24x2x16xui8>, tensor<24x2xf32>, tensor<24x2xf32> -> tensor<40x24xf32>
  %v = moe.dequantize %q, %s zero_points %z bits 4 block_size 32 k 40 : tensor<24x2x16xui8>, tensor<24x2xf32>, tensor<24x2xf32> -> tensor<40x24xf32>
  return %w, %v : tensor<64x24xf32>, tensor<40x24xf32>
}

// Stacked experts (QMoE): [E, N, blocks, blob] codes, one block per row.
// CHECK-LABEL: func.func @dequantize_stacked
func.func @dequantize_stacked(%q: tensor<8x24x1x20xui8>, %s: tensor<8x24x1xf32>) -> tensor<8x40x24xf32> {
  // CHECK: moe.dequantize %{{.*}}, %{{.*}} bits 4 block_size 40 k 40 : tensor<8x24x1x20xui8>, tensor<8x24x1xf32> -> tensor<8x40x24xf32>
  %w = moe.dequantize %q, %s bits 4 block_size 40 k 40 : tensor<8x24x1x20xui8>, tensor<8x24x1xf32> -> tensor<8x40x24xf32>
  return %w : tensor<8x40x24xf32>
}

// Stacked experts of an fp16 model expand to f16 (scales stay f32).
// CHECK-LABEL: func.func @dequantize_f16
func.func @dequantize_f16(%q: tensor<8x24x1x20xui8>, %s: tensor<8x24x1xf32>) -> tensor<8x40x24xf16> {
  // CHECK: moe.dequantize %{{.*}}, %{{.*}} bits 4 block_size 40 k 40 : tensor<8x24x1x20xui8>, tensor<8x24x1xf32> -> tensor<8x40x24xf16>
  %w = moe.dequantize %q, %s bits 4 block_size 40 k 40 : tensor<8x24x1x20xui8>, tensor<8x24x1xf32> -> tensor<8x40x24xf16>
  return %w : tensor<8x40x24xf16>
}

// A rank's 2 expert slots, expanded after their dispatch.
// CHECK-LABEL: func.func @dequantize_after_dispatch
func.func @dequantize_after_dispatch(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %q: tensor<2x16x1x8xui8>, %s: tensor<2x16x1xf32>) -> tensor<2x16x16xf32> {
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> max_rows = 16 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  // CHECK: moe.dequantize %{{.*}}, %{{.*}} after %{{.*}} bits 4 block_size 16 k 16 : tensor<2x16x1x8xui8>, tensor<2x16x1xf32> -> tensor<2x16x16xf32>
  %w = moe.dequantize %q, %s after %h bits 4 block_size 16 k 16 : tensor<2x16x1x8xui8>, tensor<2x16x1xf32> -> tensor<2x16x16xf32>
  return %w : tensor<2x16x16xf32>
}

// The count inside a generated kernel of a plan with a dynamic token count.
// CHECK-LABEL: func.func @token_count
func.func @token_count() -> index {
  // CHECK: moe.token_count 2
  %T = moe.token_count 2
  return %T : index
}
