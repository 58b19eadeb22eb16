// moe-outline-kernels: dense linalg regions (not matmuls) become kernels;
// elementwise chains fuse first; inits are recreated inside the kernel.
// RUN: moe-opt %s --split-input-file --moe-outline-kernels | FileCheck %s
// RUN: moe-opt %s --split-input-file --moe-outline-kernels=batch-matmul-steps=false | FileCheck %s --check-prefix=OFF

#id = affine_map<(d0, d1) -> (d0, d1)>
#row = affine_map<(d0, d1) -> (d0)>
// CHECK-LABEL: func.func @main
func.func @main(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x8xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4x8xf32>) -> tensor<4x8xf32>
  // The matmul stays (a BLAS step in the plan), with its zero fill.
  // CHECK: %[[MM:.*]] = linalg.matmul
  %mm = linalg.matmul ins(%x, %w : tensor<4x8xf32>, tensor<8x8xf32>) outs(%f : tensor<4x8xf32>) -> tensor<4x8xf32>
  // exp, square and the row sum fuse into one kernel.
  %e1 = tensor.empty() : tensor<4x8xf32>
  %exp = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]} ins(%mm : tensor<4x8xf32>) outs(%e1 : tensor<4x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %r = math.exp %a : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %sq = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]} ins(%exp : tensor<4x8xf32>) outs(%e1 : tensor<4x8xf32>) {
  ^bb0(%a: f32, %o: f32):
    %r = arith.mulf %a, %a : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  // The row sum's zero init is rebuilt inside the kernel.
  %e2 = tensor.empty() : tensor<4xf32>
  %f2 = linalg.fill ins(%zero : f32) outs(%e2 : tensor<4xf32>) -> tensor<4xf32>
  %sum = linalg.generic {indexing_maps = [#id, #row], iterator_types = ["parallel", "reduction"]} ins(%sq : tensor<4x8xf32>) outs(%f2 : tensor<4xf32>) {
  ^bb0(%a: f32, %o: f32):
    %r = arith.addf %a, %o : f32
    linalg.yield %r : f32
  } -> tensor<4xf32>
  // CHECK: %[[K0:.*]] = call @kernel_0(%[[MM]]) : (tensor<4x8xf32>) -> tensor<4xf32>
  // CHECK-NEXT: return %[[K0]]
  return %sum : tensor<4xf32>
}
// CHECK: func.func @kernel_0(%{{.*}}: tensor<4x8xf32>) -> tensor<4xf32> attributes {moe.kernel}
// CHECK: linalg.fill
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "reduction"]
// CHECK: math.exp
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK-NOT: func.func @kernel_1

// -----

// Static slices and concatenations (attention's rotate_half: cat(-x2, x1))
// become generics over the result that read their operands with
// tensor.extract; the operands they read become kernel arguments.
// CHECK-LABEL: func.func @main
func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // CHECK: %[[LO:.*]] = call @kernel_0(%arg0) : (tensor<2x8xf32>) -> tensor<2x4xf32>
  // CHECK: %[[HI:.*]] = call @kernel_1(%arg0) : (tensor<2x8xf32>) -> tensor<2x4xf32>
  // CHECK: %[[CAT:.*]] = call @kernel_2(%[[LO]], %[[HI]]) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  // CHECK-NEXT: return %[[CAT]]
  %lo = tensor.extract_slice %x[0, 0] [2, 4] [1, 1] : tensor<2x8xf32> to tensor<2x4xf32>
  %hi = tensor.extract_slice %x[0, 4] [2, 4] [1, 1] : tensor<2x8xf32> to tensor<2x4xf32>
  %cat = tensor.concat dim(1) %hi, %lo : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  return %cat : tensor<2x8xf32>
}
// CHECK: func.func @kernel_0(%[[S:.*]]: tensor<2x8xf32>) -> tensor<2x4xf32> attributes {moe.kernel}
// CHECK: linalg.generic
// CHECK: tensor.extract %[[S]]
// CHECK: func.func @kernel_1(%[[S1:.*]]: tensor<2x8xf32>) -> tensor<2x4xf32> attributes {moe.kernel}
// CHECK: %[[C4:.*]] = arith.constant 4 : index
// CHECK: linalg.generic
// CHECK: arith.addi %{{.*}}, %[[C4]]
// CHECK: tensor.extract %[[S1]]
// CHECK: func.func @kernel_2(%[[A:.*]]: tensor<2x4xf32>, %[[B:.*]]: tensor<2x4xf32>) -> tensor<2x8xf32> attributes {moe.kernel}
// CHECK: linalg.generic
// CHECK: tensor.extract %[[A]]
// CHECK: tensor.extract %[[B]]
// CHECK: arith.cmpi slt, %{{.*}}, %c4
// CHECK: arith.select

// -----

// f32 batch matmuls (attention's scores and weighted values) stay too: the
// plan runs them as batch_matmul steps (BLAS / one strided-batched cuBLAS
// call) with their zero fill; the softmax between them has its own step.
// A batch matmul of other element types becomes a kernel, and so do all
// with batch-matmul-steps=false (moec --batch-matmul=kernel).
// OFF: func.func @main(%arg0: tensor<2x3x4xf32>
// OFF-NOT: linalg.batch_matmul
// OFF: call @kernel_{{[0-9]+}}(%arg0, %arg1)
// OFF-NOT: linalg.batch_matmul
// OFF: linalg.softmax
// OFF-NOT: linalg.batch_matmul
// OFF: return
// OFF-COUNT-3: linalg.batch_matmul
// CHECK-LABEL: func.func @main
// CHECK: %[[S:.*]] = linalg.batch_matmul ins(%arg0, %arg1 : tensor<2x3x4xf32>, tensor<2x4x3xf32>)
// CHECK: %[[P:.*]] = linalg.softmax dimension(2) ins(%[[S]]
// CHECK: linalg.batch_matmul ins(%[[P]], %arg2 : tensor<2x3x3xf32>, tensor<2x3x4xf32>)
// A kernel that reads one value twice takes it once.
// CHECK: call @kernel_{{[0-9]+}}(%arg3) :
// CHECK-NOT: linalg.batch_matmul
// CHECK: func.func @kernel_{{[0-9]+}}(%[[N:.*]]: tensor<2x3x3xi32>) -> tensor<2x3x3xi32> attributes {moe.kernel}
// CHECK: linalg.batch_matmul ins(%[[N]], %[[N]] : tensor<2x3x3xi32>, tensor<2x3x3xi32>)
func.func @main(%q: tensor<2x3x4xf32>, %kt: tensor<2x4x3xf32>, %v: tensor<2x3x4xf32>, %n: tensor<2x3x3xi32>) -> (tensor<2x3x4xf32>, tensor<2x3x3xi32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<2x3x3xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<2x3x3xf32>) -> tensor<2x3x3xf32>
  %s = linalg.batch_matmul ins(%q, %kt : tensor<2x3x4xf32>, tensor<2x4x3xf32>) outs(%f : tensor<2x3x3xf32>) -> tensor<2x3x3xf32>
  %p = linalg.softmax dimension(2) ins(%s : tensor<2x3x3xf32>) outs(%e : tensor<2x3x3xf32>) -> tensor<2x3x3xf32>
  %e2 = tensor.empty() : tensor<2x3x4xf32>
  %f2 = linalg.fill ins(%zero : f32) outs(%e2 : tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %o = linalg.batch_matmul ins(%p, %v : tensor<2x3x3xf32>, tensor<2x3x4xf32>) outs(%f2 : tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %izero = arith.constant 0 : i32
  %ei = tensor.empty() : tensor<2x3x3xi32>
  %fi = linalg.fill ins(%izero : i32) outs(%ei : tensor<2x3x3xi32>) -> tensor<2x3x3xi32>
  %i = linalg.batch_matmul ins(%n, %n : tensor<2x3x3xi32>, tensor<2x3x3xi32>) outs(%fi : tensor<2x3x3xi32>) -> tensor<2x3x3xi32>
  return %o, %i : tensor<2x3x4xf32>, tensor<2x3x3xi32>
}

// -----

// A residual stream (issue 15): each sum is read by the next sum and by a
// norm-like consumer. A producer that computes and that others read too is
// not copied into its consumers: along the chain the copies would nest, so
// that the last layer's kernels recomputed every earlier sum and took every
// earlier layer's output (a kernel's operands grew with the layers). Each
// shared sum is a kernel of its own (the last, read once, fuses into its
// reader), and no kernel takes more than two tensors. Every layer's sum and
// norm are the same kernel, called once per layer.
// CHECK-LABEL: func.func @main
// CHECK: %[[H1:.*]] = call @kernel_0(%arg0, %arg1) :
// CHECK: %[[N1:.*]] = call @kernel_1(%[[H1]]) :
// CHECK: %[[H2:.*]] = call @kernel_0(%[[H1]], %arg2) :
// CHECK: %[[N2:.*]] = call @kernel_1(%[[H2]]) :
// CHECK: %[[N3:.*]] = call @kernel_2(%[[H2]], %arg3) :
// CHECK-NEXT: return %[[N1]], %[[N2]], %[[N3]]
// CHECK-COUNT-3: func.func @kernel_
// CHECK-NOT: func.func
#id2 = affine_map<(d0, d1) -> (d0, d1)>
func.func @main(%x: tensor<4x8xf32>, %a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %c: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %e = tensor.empty() : tensor<4x8xf32>
  %h1 = linalg.generic {indexing_maps = [#id2, #id2, #id2], iterator_types = ["parallel", "parallel"]} ins(%x, %a : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %r = arith.addf %p, %q : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %n1 = linalg.generic {indexing_maps = [#id2, #id2], iterator_types = ["parallel", "parallel"]} ins(%h1 : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = arith.mulf %p, %p : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %h2 = linalg.generic {indexing_maps = [#id2, #id2, #id2], iterator_types = ["parallel", "parallel"]} ins(%h1, %b : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %r = arith.addf %p, %q : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %n2 = linalg.generic {indexing_maps = [#id2, #id2], iterator_types = ["parallel", "parallel"]} ins(%h2 : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = arith.mulf %p, %p : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %h3 = linalg.generic {indexing_maps = [#id2, #id2, #id2], iterator_types = ["parallel", "parallel"]} ins(%h2, %c : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %r = arith.addf %p, %q : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %n3 = linalg.generic {indexing_maps = [#id2, #id2], iterator_types = ["parallel", "parallel"]} ins(%h3 : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = arith.mulf %p, %p : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  return %n1, %n2, %n3 : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// A producer that only moves data (a slice, a gather) is copied into each
// kernel that reads it: the kernels read the slice's source.
// CHECK-LABEL: func.func @main
// CHECK: %[[E:.*]] = call @kernel_0(%arg0) : (tensor<4x8xf32>) -> tensor<4x4xf32>
// CHECK: %[[N:.*]] = call @kernel_1(%arg0) : (tensor<4x8xf32>) -> tensor<4x4xf32>
// CHECK: return %[[E]], %[[N]]
// CHECK: func.func @kernel_0
// CHECK: tensor.extract
// CHECK: math.exp
// CHECK: func.func @kernel_1
// CHECK: tensor.extract
// CHECK: arith.negf
#id3 = affine_map<(d0, d1) -> (d0, d1)>
func.func @main(%x: tensor<4x8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>) {
  %s = tensor.extract_slice %x[0, 4] [4, 4] [1, 1] : tensor<4x8xf32> to tensor<4x4xf32>
  %e = tensor.empty() : tensor<4x4xf32>
  %exp = linalg.generic {indexing_maps = [#id3, #id3], iterator_types = ["parallel", "parallel"]} ins(%s : tensor<4x4xf32>) outs(%e : tensor<4x4xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = math.exp %p : f32
    linalg.yield %r : f32
  } -> tensor<4x4xf32>
  %neg = linalg.generic {indexing_maps = [#id3, #id3], iterator_types = ["parallel", "parallel"]} ins(%s : tensor<4x4xf32>) outs(%e : tensor<4x4xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = arith.negf %p : f32
    linalg.yield %r : f32
  } -> tensor<4x4xf32>
  return %exp, %neg : tensor<4x4xf32>, tensor<4x4xf32>
}

// -----

// Identical regions share one kernel; regions that differ in a constant,
// a shape, an op or in which operands they read do not.
// CHECK-LABEL: func.func @main
// exp(x) and exp(y): one kernel, called twice.
// CHECK: %[[E1:.*]] = call @kernel_0(%arg0) : (tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK: %[[E2:.*]] = call @kernel_0(%arg1) : (tensor<4x8xf32>) -> tensor<4x8xf32>
// x * 2 and y * 3: the constant is part of the kernel.
// CHECK: %[[T2:.*]] = call @kernel_1(%arg0) :
// CHECK: %[[T3:.*]] = call @kernel_2(%arg1) :
// y * 2 again: the first one's kernel.
// CHECK: %[[T2B:.*]] = call @kernel_1(%arg1) :
// exp of a 2x8 tensor: another shape.
// CHECK: %[[E3:.*]] = call @kernel_3(%arg2) : (tensor<2x8xf32>) -> tensor<2x8xf32>
// x * x (one argument) and x * y (two).
// CHECK: %[[SQ:.*]] = call @kernel_4(%arg0) :
// CHECK: %[[XY:.*]] = call @kernel_5(%arg0, %arg1) :
// CHECK: return %[[E1]], %[[E2]], %[[T2]], %[[T3]], %[[T2B]], %[[E3]], %[[SQ]], %[[XY]]
// CHECK: func.func @kernel_0(
// CHECK: math.exp
// CHECK: func.func @kernel_1(
// CHECK: arith.constant 2.000000e+00 : f32
// CHECK: func.func @kernel_2(
// CHECK: arith.constant 3.000000e+00 : f32
// CHECK: func.func @kernel_3(%{{.*}}: tensor<2x8xf32>)
// CHECK: math.exp
// CHECK: func.func @kernel_4(%{{.*}}: tensor<4x8xf32>)
// CHECK: arith.mulf
// CHECK: func.func @kernel_5(%{{.*}}: tensor<4x8xf32>, %{{.*}}: tensor<4x8xf32>)
// CHECK: arith.mulf
// CHECK-NOT: func.func
#id4 = affine_map<(d0, d1) -> (d0, d1)>
func.func @main(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>, %z: tensor<2x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<2x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %e = tensor.empty() : tensor<4x8xf32>
  %c2 = arith.constant 2.0 : f32
  %c3 = arith.constant 3.0 : f32
  %ex = linalg.generic {indexing_maps = [#id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = math.exp %p : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %ey = linalg.generic {indexing_maps = [#id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%y : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = math.exp %p : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %x2 = linalg.generic {indexing_maps = [#id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = arith.mulf %p, %c2 : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %y3 = linalg.generic {indexing_maps = [#id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%y : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = arith.mulf %p, %c3 : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %y2 = linalg.generic {indexing_maps = [#id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%y : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = arith.mulf %p, %c2 : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %ez = tensor.empty() : tensor<2x8xf32>
  %expz = linalg.generic {indexing_maps = [#id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%z : tensor<2x8xf32>) outs(%ez : tensor<2x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %r = math.exp %p : f32
    linalg.yield %r : f32
  } -> tensor<2x8xf32>
  %sq = linalg.generic {indexing_maps = [#id4, #id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%x, %x : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %r = arith.mulf %p, %q : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  %xy = linalg.generic {indexing_maps = [#id4, #id4, #id4], iterator_types = ["parallel", "parallel"]} ins(%x, %y : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %r = arith.mulf %p, %q : f32
    linalg.yield %r : f32
  } -> tensor<4x8xf32>
  return %ex, %ey, %x2, %y3, %y2, %expz, %sq, %xy : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<2x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// Dynamic dims (the token count of an expert after NonZero, in a loop that
// was not raised): an init's size is a value of @main that the kernel does
// not have, so the kernel takes the init as an argument instead of making
// its own (a tensor.empty without its size is invalid IR).
#id = affine_map<(d0, d1) -> (d0, d1)>
#row = affine_map<(d0, d1) -> (d0)>
// CHECK-LABEL: func.func @main
func.func @main(%x: tensor<?x4xf32>) -> (tensor<?x4xf32>, tensor<?xf32>) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %n = tensor.dim %x, %c0 : tensor<?x4xf32>
  // CHECK: %[[E:.*]] = tensor.empty(%{{.*}}) : tensor<?x4xf32>
  // CHECK: %[[EXP:.*]] = call @kernel_0(%arg0, %[[E]]) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  %e = tensor.empty(%n) : tensor<?x4xf32>
  %exp = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<?x4xf32>) outs(%e : tensor<?x4xf32>) {
  ^bb0(%a: f32, %o: f32):
    %r = math.exp %a : f32
    linalg.yield %r : f32
  } -> tensor<?x4xf32>
  // CHECK: %[[F:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%{{.*}} : tensor<?xf32>)
  // CHECK: %[[SUM:.*]] = call @kernel_1(%[[EXP]], %[[F]]) : (tensor<?x4xf32>, tensor<?xf32>) -> tensor<?xf32>
  // CHECK-NEXT: return %[[EXP]], %[[SUM]]
  %e2 = tensor.empty(%n) : tensor<?xf32>
  %f2 = linalg.fill ins(%zero : f32) outs(%e2 : tensor<?xf32>) -> tensor<?xf32>
  %sum = linalg.generic {indexing_maps = [#id, #row], iterator_types = ["parallel", "reduction"]} ins(%exp : tensor<?x4xf32>) outs(%f2 : tensor<?xf32>) {
  ^bb0(%a: f32, %o: f32):
    %r = arith.addf %a, %o : f32
    linalg.yield %r : f32
  } -> tensor<?xf32>
  return %exp, %sum : tensor<?x4xf32>, tensor<?xf32>
}
// CHECK: func.func @kernel_0(%{{.*}}: tensor<?x4xf32>, %{{.*}}: tensor<?x4xf32>) -> tensor<?x4xf32> attributes {moe.kernel}
// CHECK-NOT: tensor.empty
// CHECK: math.exp
// CHECK: func.func @kernel_1(%{{.*}}: tensor<?x4xf32>, %{{.*}}: tensor<?xf32>) -> tensor<?xf32> attributes {moe.kernel}
// CHECK-NOT: tensor.empty
// CHECK: arith.addf

// -----

// A ScatterND of rows (indices [M, 1]) becomes the ScatterElements along dim
// 0 it is (a plan step), its row indices broadcast over each row by a
// kernel; other ScatterNDs stay.
// CHECK-LABEL: func.func @main
// CHECK: %[[B:.*]] = call @kernel_0(%arg1) : (tensor<3x1xi64>) -> tensor<3x4xi64>
// CHECK: %[[S:.*]] = moe.scatter_elements %arg0, %[[B]], %arg2 axis 0 {reduction = #moe<reduction add>} : (tensor<5x4xf32>, tensor<3x4xi64>, tensor<3x4xf32>) -> tensor<5x4xf32>
// CHECK: moe.scatter_nd %[[S]], %arg3, %arg4
// CHECK-NOT: moe.scatter_nd
// CHECK: func.func @kernel_0(%{{.*}}: tensor<3x1xi64>) -> tensor<3x4xi64> attributes {moe.kernel}
// CHECK: linalg.generic {indexing_maps = [#{{.*}}, #{{.*}}]
func.func @main(%d: tensor<5x4xf32>, %i: tensor<3x1xi64>, %u: tensor<3x4xf32>, %i2: tensor<2x2xi64>, %u2: tensor<2xf32>) -> tensor<5x4xf32> {
  %s = moe.scatter_nd %d, %i, %u {reduction = #moe<reduction add>} : (tensor<5x4xf32>, tensor<3x1xi64>, tensor<3x4xf32>) -> tensor<5x4xf32>
  %t = moe.scatter_nd %s, %i2, %u2 : (tensor<5x4xf32>, tensor<2x2xi64>, tensor<2xf32>) -> tensor<5x4xf32>
  return %t : tensor<5x4xf32>
}
