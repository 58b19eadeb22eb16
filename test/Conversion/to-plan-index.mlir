// moe-translate --moe-to-plan: moe.topk and moe.scatter_elements (routers
// left as dense ops) become topk and scatter_elements steps; a topk of a
// rank-3 tensor and one of a view read rows of the last dim, the scatters
// keep their axis (any), reduction and i32 or i64 indices. The plan runs on
// 2 ranks (the rows of x split over ep) and matches numpy.

// RUN: moe-translate --moe-to-plan %s -o %t.moeplan
// RUN: moe-run --describe %t.moeplan | FileCheck %s
// CHECK:      moe plan v7 by moec 0.1 from {{.*}}to-plan-index.mlir
// CHECK:      input  x: f32[2x3x8] split over ep (rows of dims 0..0) -> v0
// CHECK:      v0 input f32[1x3x8]
// CHECK:      v4 temp f32[1x3x8] @[[M:[0-9]+]]
// CHECK-NEXT: v5 temp f32[3x8] @[[M]]
// CHECK:      steps:
// CHECK-NEXT:   0: topk(v0) -> v1, v2 k=2 largest=1  @ /router/TopK
// CHECK-NEXT:   1: scatter_elements(v0, v2, v3) -> v4 axis=2 reduction=none  @ /router/Scatter
// CHECK-NEXT:   2: topk(v5) -> v6, v7 k=3 largest=0  @ /low/TopK
// CHECK-NEXT:   3: scatter_elements(v5, v8, v9) -> v10 axis=0 reduction=add  @ /acc/Scatter
// CHECK-NOT:    4:

// RUN: %python %S/Inputs/index_steps.py input %t.x.npy
// RUN: moe-run -n 2 --threads %t.moeplan --input x=%t.x.npy -o %t.out.npz
// RUN: %python %S/Inputs/index_steps.py check %t.x.npy %t.out.npz | FileCheck %s --check-prefix=NUMPY
// NUMPY-COUNT-4: ok
// NUMPY-NOT: FAIL

module {
  shard.grid @mesh(shape = 2) {moe.axes = ["ep"], moe.partitioned}
  func.func @main(%x: tensor<1x3x8xf32> {moe.global_shape = array<i64: 2, 3, 8>, moe.token_split = array<i64: 0, 1>, onnx.name = "x"})
      -> (tensor<1x3x2xf32> {moe.global_shape = array<i64: 2, 3, 2>, moe.token_split = array<i64: 0, 1>, onnx.name = "top"},
          tensor<1x3x2xi64> {moe.global_shape = array<i64: 2, 3, 2>, moe.token_split = array<i64: 0, 1>, onnx.name = "ids"},
          tensor<3x3xf32> {moe.global_shape = array<i64: 6, 3>, moe.token_split = array<i64: 0, 1>, onnx.name = "low"},
          tensor<3x8xf32> {moe.global_shape = array<i64: 6, 8>, moe.token_split = array<i64: 0, 1>, onnx.name = "acc"}) {
    %v, %i = moe.topk %x k 2 axis 2 : tensor<1x3x8xf32> -> tensor<1x3x2xf32>, tensor<1x3x2xi64> loc("/router/TopK")
    %ninf = arith.constant dense<0xFF800000> : tensor<1x3x2xf32>
    %m = moe.scatter_elements %x, %i, %ninf axis 2 : (tensor<1x3x8xf32>, tensor<1x3x2xi64>, tensor<1x3x2xf32>) -> tensor<1x3x8xf32> loc("/router/Scatter")
    %c = tensor.collapse_shape %m [[0, 1], [2]] : tensor<1x3x8xf32> into tensor<3x8xf32>
    %lv, %li = moe.topk %c k 3 axis 1 {largest = false} : tensor<3x8xf32> -> tensor<3x3xf32>, tensor<3x3xi64> loc("/low/TopK")
    %rows = arith.constant dense<[[0, -1, 2, 2, -3, 1, 0, 2]]> : tensor<1x8xi32>
    %upd = arith.constant dense<0.5> : tensor<1x8xf32>
    %acc = moe.scatter_elements %c, %rows, %upd axis 0 {reduction = #moe<reduction add>} : (tensor<3x8xf32>, tensor<1x8xi32>, tensor<1x8xf32>) -> tensor<3x8xf32> loc("/acc/Scatter")
    return %v, %i, %lv, %acc : tensor<1x3x2xf32>, tensor<1x3x2xi64>, tensor<3x3xf32>, tensor<3x8xf32>
  }
}
