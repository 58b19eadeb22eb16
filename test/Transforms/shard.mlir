// moe-shard: the device grid, the token split, the annotations, and errors.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=tp=2,dp=2,ep=4" | FileCheck %s
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" | FileCheck %s --check-prefix=EP
// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-shard="mesh=ep=4,tp=3"
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=5" 2>&1 | FileCheck %s --check-prefix=SPLIT
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4,pp=2" 2>&1 | FileCheck %s --check-prefix=AXIS
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=x" 2>&1 | FileCheck %s --check-prefix=SIZE
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=2" --moe-shard="mesh=ep=2" 2>&1 | FileCheck %s --check-prefix=TWICE

// Axes are ordered dp, ep, tp whatever the spec's order; names are kept.
// CHECK: shard.grid @mesh(shape = 2x4x2) {moe.axes = ["dp", "ep", "tp"]}
// The model input and output carry tokens in dims 0-1 (2x12, split as one).
// CHECK: func.func @main(%{{.*}}: tensor<2x12x16xf32> {moe.token_split = array<i64: 0, 2>, onnx.name = "hidden_states"}) -> (tensor<2x12x16xf32> {moe.token_split = array<i64: 0, 2>, onnx.name = "output"})
// The tokens entering the MoE layer are split over dp and ep (grid axes 0, 1).
// CHECK: %[[S:.*]] = shard.sharding @mesh split_axes = {{\[\[}}0, 1]] : !shard.sharding
// CHECK: %[[L:.*]] = shard.shard %{{.*}} to %[[S]] annotate_for_users : tensor<24x8xf32>
// CHECK: moe.route %[[L]] top_k 2
// CHECK: shard.shard %{{.*}} to %{{.*}} annotate_for_users : tensor<24x16xf32>
// CHECK: moe.experts

// ep is always an axis; without dp only ep splits the tokens.
// EP: shard.grid @mesh(shape = 4) {moe.axes = ["ep"]}
// EP: shard.sharding @mesh split_axes = {{\[\[}}0]]

// 24 tokens do not split 5 ways.
// SPLIT: error: model input 'hidden_states': 24 tokens (dims 0..1) cannot be split into 5 equal contiguous blocks (mesh ep=5 splits tokens 5 ways)
// AXIS: error: mesh spec 'ep=4,pp=2': unknown axis 'pp' (expected dp, ep or tp)
// SIZE: error: mesh spec 'ep=x': axis 'ep' needs a size >= 1, got 'x'
// TWICE: error: the module already has a grid @mesh (moe-shard ran twice?)

// tp must divide the experts' FFN width.
func.func @tp(%t: tensor<8x16xf32>, %i: tensor<8x2xi64>, %w: tensor<8x2xf32>,
              %g: tensor<4x16x32xf32>, %d: tensor<4x32x16xf32>) -> tensor<8x16xf32> {
  // expected-error @+1 {{tp=3 does not divide the expert FFN width 32}}
  %y = moe.experts %t, %i, %w gate %g down %d {activation = #moe<activation relu>}
      : (tensor<8x16xf32>, tensor<8x2xi64>, tensor<8x2xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<8x16xf32>
  return %y : tensor<8x16xf32>
}

// -----

// A reduction over the tokens cannot be split.
func.func @reduce_tokens(%t: tensor<8x16xf32>, %i: tensor<8x2xi64>, %w: tensor<8x2xf32>,
                         %g: tensor<4x16x30xf32>, %d: tensor<4x30x16xf32>) -> tensor<16xf32> {
  %y = moe.experts %t, %i, %w gate %g down %d {activation = #moe<activation relu>}
      : (tensor<8x16xf32>, tensor<8x2xi64>, tensor<8x2xf32>, tensor<4x16x30xf32>, tensor<4x30x16xf32>) -> tensor<8x16xf32>
  %e = tensor.empty() : tensor<16xf32>
  // expected-error @+1 {{cannot split along tokens: the op reduces over the token dimension}}
  %s = linalg.reduce ins(%y : tensor<8x16xf32>) outs(%e : tensor<16xf32>) dimensions = [0]
    (%a: f32, %b: f32) {
      %r = arith.addf %a, %b : f32
      linalg.yield %r : f32
    }
  return %s : tensor<16xf32>
}
