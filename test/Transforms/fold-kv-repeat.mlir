// moe-fold-kv-repeat: attention's batch matmuls read the KV heads as they
// lie instead of their repeated (GQA) and transposed copies.
// RUN: moe-opt %s --split-input-file --pass-pipeline='builtin.module(func.func(moe-fold-kv-repeat),canonicalize)' | FileCheck %s

// Keys: 2 sequences x 2 KV heads, repeated 3 times (6 query heads), then
// transposed: q [12, 1, 4] . k^T. The query rows of one KV head's group
// become one batch [4, 3, 4]; the keys [2, 2, 6, 4] are read as [4, 6, 4]
// transposed; the broadcast and the transpose are gone.
#in5 = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, 0, d3, d4)>
#id5 = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>
// CHECK-DAG: #[[A:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>
// CHECK-DAG: #[[B:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d2, d3)>
// CHECK-DAG: #[[C:.*]] = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>
// CHECK-LABEL: func.func @keys
// CHECK-SAME: (%[[Q:.*]]: tensor<12x1x4xf32>, %[[K:.*]]: tensor<2x2x6x4xf32>)
func.func @keys(%q: tensor<12x1x4xf32>, %k: tensor<2x2x6x4xf32>) -> tensor<12x1x6xf32> {
  %zero = arith.constant 0.0 : f32
  %k5 = tensor.expand_shape %k [[0], [1], [2, 3], [4]] output_shape [2, 2, 1, 6, 4] : tensor<2x2x6x4xf32> into tensor<2x2x1x6x4xf32>
  %e = tensor.empty() : tensor<2x2x3x6x4xf32>
  %rep = linalg.generic {indexing_maps = [#in5, #id5], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]} ins(%k5 : tensor<2x2x1x6x4xf32>) outs(%e : tensor<2x2x3x6x4xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  } -> tensor<2x2x3x6x4xf32>
  %heads = tensor.collapse_shape %rep [[0], [1, 2], [3], [4]] : tensor<2x2x3x6x4xf32> into tensor<2x6x6x4xf32>
  %et = tensor.empty() : tensor<2x6x4x6xf32>
  %kt = linalg.transpose ins(%heads : tensor<2x6x6x4xf32>) outs(%et : tensor<2x6x4x6xf32>) permutation = [0, 1, 3, 2]
  %b = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<2x6x4x6xf32> into tensor<12x4x6xf32>
  %ec = tensor.empty() : tensor<12x1x6xf32>
  %f = linalg.fill ins(%zero : f32) outs(%ec : tensor<12x1x6xf32>) -> tensor<12x1x6xf32>
  // CHECK-NOT: linalg.generic
  // CHECK-NOT: linalg.transpose
  // CHECK-DAG: %[[K5:.*]] = tensor.expand_shape %[[K]]
  // CHECK-DAG: %[[KB:.*]] = tensor.collapse_shape %[[K5]] {{\[\[}}0, 1, 2], [3], [4]] : tensor<2x2x1x6x4xf32> into tensor<4x6x4xf32>
  // CHECK-DAG: %[[QB:.*]] = tensor.collapse_shape %{{.*}} {{\[\[}}0], [1, 2], [3]] : tensor<4x3x1x4xf32> into tensor<4x3x4xf32>
  // CHECK: %[[P:.*]] = linalg.batch_matmul indexing_maps = [#[[A]], #[[B]], #[[C]]] ins(%[[QB]], %[[KB]] : tensor<4x3x4xf32>, tensor<4x6x4xf32>) outs(%{{.*}} : tensor<4x3x6xf32>)
  // CHECK: tensor.expand_shape %[[P]] {{\[\[}}0], [1, 2], [3]] output_shape [4, 3, 1, 6] : tensor<4x3x6xf32> into tensor<4x3x1x6xf32>
  // CHECK: tensor.collapse_shape %{{.*}} {{\[\[}}0, 1], [2], [3]] : tensor<4x3x1x6xf32> into tensor<12x1x6xf32>
  %s = linalg.batch_matmul ins(%q, %b : tensor<12x1x4xf32>, tensor<12x4x6xf32>) outs(%f : tensor<12x1x6xf32>) -> tensor<12x1x6xf32>
  return %s : tensor<12x1x6xf32>
}

// -----

// Values: the same repeat, no transpose: p [12, 1, 6] . v, read as
// [4, 3, 6] . [4, 6, 4] with B as it lies (no indexing maps).
#in4 = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3, d4)>
#id5 = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>
// CHECK-LABEL: func.func @values
// CHECK-SAME: (%[[P:.*]]: tensor<12x1x6xf32>, %[[V:.*]]: tensor<2x2x6x4xf32>)
func.func @values(%p: tensor<12x1x6xf32>, %v: tensor<2x2x6x4xf32>) -> tensor<12x1x4xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<2x2x3x6x4xf32>
  %rep = linalg.generic {indexing_maps = [#in4, #id5], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]} ins(%v : tensor<2x2x6x4xf32>) outs(%e : tensor<2x2x3x6x4xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  } -> tensor<2x2x3x6x4xf32>
  %b = tensor.collapse_shape %rep [[0, 1, 2], [3], [4]] : tensor<2x2x3x6x4xf32> into tensor<12x6x4xf32>
  %ec = tensor.empty() : tensor<12x1x4xf32>
  %f = linalg.fill ins(%zero : f32) outs(%ec : tensor<12x1x4xf32>) -> tensor<12x1x4xf32>
  // CHECK-NOT: linalg.generic
  // CHECK-DAG: %[[VB:.*]] = tensor.collapse_shape %[[V]] {{\[\[}}0, 1], [2], [3]] : tensor<2x2x6x4xf32> into tensor<4x6x4xf32>
  // CHECK: linalg.batch_matmul ins(%{{.*}}, %[[VB]] : tensor<4x3x6xf32>, tensor<4x6x4xf32>) outs(%{{.*}} : tensor<4x3x4xf32>)
  %o = linalg.batch_matmul ins(%p, %b : tensor<12x1x6xf32>, tensor<12x6x4xf32>) outs(%f : tensor<12x1x4xf32>) -> tensor<12x1x4xf32>
  return %o : tensor<12x1x4xf32>
}

// -----

// Keys of as many KV heads as query heads: only the transpose goes.
// CHECK-LABEL: func.func @transpose_only
// CHECK-SAME: (%[[Q:.*]]: tensor<6x1x4xf32>, %[[K:.*]]: tensor<2x3x6x4xf32>)
func.func @transpose_only(%q: tensor<6x1x4xf32>, %k: tensor<2x3x6x4xf32>) -> tensor<6x1x6xf32> {
  %zero = arith.constant 0.0 : f32
  %et = tensor.empty() : tensor<2x3x4x6xf32>
  %kt = linalg.transpose ins(%k : tensor<2x3x6x4xf32>) outs(%et : tensor<2x3x4x6xf32>) permutation = [0, 1, 3, 2]
  %b = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<2x3x4x6xf32> into tensor<6x4x6xf32>
  %ec = tensor.empty() : tensor<6x1x6xf32>
  %f = linalg.fill ins(%zero : f32) outs(%ec : tensor<6x1x6xf32>) -> tensor<6x1x6xf32>
  // CHECK-NOT: linalg.transpose
  // CHECK: %[[KB:.*]] = tensor.collapse_shape %[[K]] {{\[\[}}0, 1], [2], [3]] : tensor<2x3x6x4xf32> into tensor<6x6x4xf32>
  // CHECK: linalg.batch_matmul indexing_maps = [{{.*}}] ins(%[[Q]], %[[KB]] : tensor<6x1x4xf32>, tensor<6x6x4xf32>) outs(%{{.*}} : tensor<6x1x6xf32>)
  %s = linalg.batch_matmul ins(%q, %b : tensor<6x1x4xf32>, tensor<6x4x6xf32>) outs(%f : tensor<6x1x6xf32>) -> tensor<6x1x6xf32>
  return %s : tensor<6x1x6xf32>
}

// -----

// Left alone: the repeat comes before the KV heads (query head r*kv + p
// would read KV head p, not p*g + r's), and a transpose of other dims.
#rin = affine_map<(d0, d1, d2, d3, d4) -> (d0, d2, d3, d4)>
#id5 = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>
// CHECK-LABEL: func.func @repeat_outside
func.func @repeat_outside(%q: tensor<12x1x6xf32>, %v: tensor<2x2x6x4xf32>) -> tensor<12x1x4xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<2x3x2x6x4xf32>
  // CHECK: linalg.generic
  %rep = linalg.generic {indexing_maps = [#rin, #id5], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]} ins(%v : tensor<2x2x6x4xf32>) outs(%e : tensor<2x3x2x6x4xf32>) {
  ^bb0(%a: f32, %o: f32):
    linalg.yield %a : f32
  } -> tensor<2x3x2x6x4xf32>
  %b = tensor.collapse_shape %rep [[0, 1, 2], [3], [4]] : tensor<2x3x2x6x4xf32> into tensor<12x6x4xf32>
  %ec = tensor.empty() : tensor<12x1x4xf32>
  %f = linalg.fill ins(%zero : f32) outs(%ec : tensor<12x1x4xf32>) -> tensor<12x1x4xf32>
  // CHECK: linalg.batch_matmul ins(%{{.*}}, %{{.*}} : tensor<12x1x6xf32>, tensor<12x6x4xf32>)
  %o = linalg.batch_matmul ins(%q, %b : tensor<12x1x6xf32>, tensor<12x6x4xf32>) outs(%f : tensor<12x1x4xf32>) -> tensor<12x1x4xf32>
  return %o : tensor<12x1x4xf32>
}

// CHECK-LABEL: func.func @other_transpose
func.func @other_transpose(%q: tensor<6x1x4xf32>, %k: tensor<2x4x3x6xf32>) -> tensor<6x1x6xf32> {
  %zero = arith.constant 0.0 : f32
  %et = tensor.empty() : tensor<2x3x4x6xf32>
  // CHECK: linalg.transpose
  %kt = linalg.transpose ins(%k : tensor<2x4x3x6xf32>) outs(%et : tensor<2x3x4x6xf32>) permutation = [0, 2, 1, 3]
  %b = tensor.collapse_shape %kt [[0, 1], [2], [3]] : tensor<2x3x4x6xf32> into tensor<6x4x6xf32>
  %ec = tensor.empty() : tensor<6x1x6xf32>
  %f = linalg.fill ins(%zero : f32) outs(%ec : tensor<6x1x6xf32>) -> tensor<6x1x6xf32>
  // CHECK: linalg.batch_matmul ins
  %s = linalg.batch_matmul ins(%q, %b : tensor<6x1x4xf32>, tensor<6x4x6xf32>) outs(%f : tensor<6x1x6xf32>) -> tensor<6x1x6xf32>
  return %s : tensor<6x1x6xf32>
}
