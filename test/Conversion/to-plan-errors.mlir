// moe-translate --moe-to-plan on modules the plan writer rejects: each error
// names the op (or the module) and why, and no plan is written.

// RUN: moe-translate --moe-to-plan %s --split-input-file --verify-diagnostics -o %t.moeplan
// Without --verify-diagnostics: exit status 1, the errors in order, and no
// output file.
// RUN: rm -f %t.all.moeplan
// RUN: %{exit1} moe-translate --moe-to-plan %s --split-input-file -o %t.all.moeplan 2>&1 | FileCheck %s
// CHECK: error: plan lowering needs a partitioned module
// CHECK: error: plan lowering: 'linalg.transpose' has no lowering to plan steps yet
// CHECK: error: plan lowering expects one function, @main
// CHECK: error: plan lowering: topk over axis 0, only the last axis is supported
// CHECK: error: plan lowering: topk of 'f16' values, only f32 and i64 are supported
// CHECK: error: plan lowering: scatter_elements of 'i64' data with reduction add, only f32 data (or i64 and i32 data without a reduction) is supported
// RUN: not test -e %t.all.moeplan

// Not sharded yet (moe-compile-pipeline without mesh=).
// expected-error@+1 {{plan lowering needs a partitioned module (moec --mesh ..., or moe-opt --moe-shard ... --moe-partition)}}
module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    return %x : tensor<4x8xf32>
  }
}

// -----

// A dense op that moe-outline-kernels would have moved into a kernel.
module {
  shard.grid @mesh(shape = 1) {moe.axes = ["ep"], moe.partitioned}
  func.func @main(%x: tensor<4x8xf32> {moe.global_shape = array<i64: 4, 8>, moe.token_split = array<i64: 0>, onnx.name = "x"})
      -> (tensor<8x4xf32> {onnx.name = "y"}) {
    %e = tensor.empty() : tensor<8x4xf32>
    // expected-error@+1 {{plan lowering: 'linalg.transpose' has no lowering to plan steps yet}}
    %t = linalg.transpose ins(%x : tensor<4x8xf32>) outs(%e : tensor<8x4xf32>) permutation = [1, 0]
    return %t : tensor<8x4xf32>
  }
}

// -----

// Two functions, neither of them a generated kernel.
// expected-error@+1 {{plan lowering expects one function, @main}}
module {
  shard.grid @mesh(shape = 1) {moe.axes = ["ep"], moe.partitioned}
  func.func private @helper(tensor<4x8xf32>) -> tensor<4x8xf32>
  func.func @main(%x: tensor<4x8xf32> {moe.global_shape = array<i64: 4, 8>, moe.token_split = array<i64: 0>, onnx.name = "x"})
      -> (tensor<4x8xf32> {onnx.name = "y"}) {
    %y = func.call @helper(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
    return %y : tensor<4x8xf32>
  }
}

// -----

// A topk over another axis than the last (the runtime reads rows of the
// last dim).
module {
  shard.grid @mesh(shape = 1) {moe.axes = ["ep"], moe.partitioned}
  func.func @main(%x: tensor<4x8xf32> {moe.global_shape = array<i64: 4, 8>, onnx.name = "x"})
      -> (tensor<2x8xf32> {onnx.name = "v"}, tensor<2x8xi64> {onnx.name = "i"}) {
    // expected-error@+1 {{plan lowering: topk over axis 0, only the last axis is supported}}
    %v, %i = moe.topk %x k 2 axis 0 : tensor<4x8xf32> -> tensor<2x8xf32>, tensor<2x8xi64>
    return %v, %i : tensor<2x8xf32>, tensor<2x8xi64>
  }
}

// -----

// The index steps compute in f32 (and move integers without a reduction).
module {
  shard.grid @mesh(shape = 1) {moe.axes = ["ep"], moe.partitioned}
  func.func @main(%x: tensor<4x8xf16> {moe.global_shape = array<i64: 4, 8>, onnx.name = "x"})
      -> (tensor<4x2xf16> {onnx.name = "v"}, tensor<4x2xi64> {onnx.name = "i"}) {
    // expected-error@+1 {{plan lowering: topk of 'f16' values, only f32 and i64 are supported}}
    %v, %i = moe.topk %x k 2 axis 1 : tensor<4x8xf16> -> tensor<4x2xf16>, tensor<4x2xi64>
    return %v, %i : tensor<4x2xf16>, tensor<4x2xi64>
  }
}

// -----

module {
  shard.grid @mesh(shape = 1) {moe.axes = ["ep"], moe.partitioned}
  func.func @main(%d: tensor<4x8xi64> {moe.global_shape = array<i64: 4, 8>, onnx.name = "d"},
                  %i: tensor<4x2xi64> {moe.global_shape = array<i64: 4, 2>, onnx.name = "i"})
      -> (tensor<4x8xi64> {onnx.name = "y"}) {
    %u = arith.constant dense<1> : tensor<4x2xi64>
    // expected-error@+1 {{plan lowering: scatter_elements of 'i64' data with reduction add, only f32 data (or i64 and i32 data without a reduction) is supported}}
    %y = moe.scatter_elements %d, %i, %u axis 1 {reduction = #moe<reduction add>} : (tensor<4x8xi64>, tensor<4x2xi64>, tensor<4x2xi64>) -> tensor<4x8xi64>
    return %y : tensor<4x8xi64>
  }
}
