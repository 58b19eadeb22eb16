// Two tensor-parallel MLP blocks (up projection by columns, down by rows,
// as attention's Q/K/V and output projections) around a Mixtral-style MoE
// layer, each with its residual add: 2x8 tokens of width 16, 8 SwiGLU
// experts of width 32, top-2. Used by the sequence-parallel tests.
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @main(%x: tensor<2x8x16xf32> {onnx.name = "hidden_states"}) -> (tensor<2x8x16xf32> {onnx.name = "output"}) {
  %wa = arith.constant dense<0.01> : tensor<16x32xf32>
  %wo = arith.constant dense<0.02> : tensor<32x16xf32>
  %wa2 = arith.constant dense<0.03> : tensor<16x32xf32>
  %wo2 = arith.constant dense<0.04> : tensor<32x16xf32>
  %router = arith.constant dense<0.01> : tensor<16x8xf32>
  %wg = arith.constant dense<0.02> : tensor<8x16x32xf32>
  %wu = arith.constant dense<0.03> : tensor<8x16x32xf32>
  %wd = arith.constant dense<0.04> : tensor<8x32x16xf32>
  %zero = arith.constant 0.0 : f32
  %t = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x8x16xf32> into tensor<16x16xf32>
  %e0 = tensor.empty() : tensor<16x32xf32>
  %f0 = linalg.fill ins(%zero : f32) outs(%e0 : tensor<16x32xf32>) -> tensor<16x32xf32>
  %h = linalg.matmul ins(%t, %wa : tensor<16x16xf32>, tensor<16x32xf32>) outs(%f0 : tensor<16x32xf32>) -> tensor<16x32xf32>
  %e1 = tensor.empty() : tensor<16x16xf32>
  %f1 = linalg.fill ins(%zero : f32) outs(%e1 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %o = linalg.matmul ins(%h, %wo : tensor<16x32xf32>, tensor<32x16xf32>) outs(%f1 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %e2 = tensor.empty() : tensor<16x16xf32>
  %r = linalg.add ins(%t, %o : tensor<16x16xf32>, tensor<16x16xf32>) outs(%e2 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %e3 = tensor.empty() : tensor<16x8xf32>
  %f3 = linalg.fill ins(%zero : f32) outs(%e3 : tensor<16x8xf32>) -> tensor<16x8xf32>
  %logits = linalg.matmul ins(%r, %router : tensor<16x16xf32>, tensor<16x8xf32>) outs(%f3 : tensor<16x8xf32>) -> tensor<16x8xf32>
  %w, %i = moe.route %logits top_k 2 {renormalize = true} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  %y = moe.experts %r, %i, %w gate %wg up %wu down %wd {activation = #moe<activation silu>}
      : (tensor<16x16xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x16x32xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<16x16xf32>
  %e4 = tensor.empty() : tensor<16x16xf32>
  %r2 = linalg.add ins(%r, %y : tensor<16x16xf32>, tensor<16x16xf32>) outs(%e4 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %e5 = tensor.empty() : tensor<16x32xf32>
  %f5 = linalg.fill ins(%zero : f32) outs(%e5 : tensor<16x32xf32>) -> tensor<16x32xf32>
  %h2 = linalg.matmul ins(%r2, %wa2 : tensor<16x16xf32>, tensor<16x32xf32>) outs(%f5 : tensor<16x32xf32>) -> tensor<16x32xf32>
  %e6 = tensor.empty() : tensor<16x16xf32>
  %f6 = linalg.fill ins(%zero : f32) outs(%e6 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %o2 = linalg.matmul ins(%h2, %wo2 : tensor<16x32xf32>, tensor<32x16xf32>) outs(%f6 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %e7 = tensor.empty() : tensor<16x16xf32>
  %r3 = linalg.add ins(%r2, %o2 : tensor<16x16xf32>, tensor<16x16xf32>) outs(%e7 : tensor<16x16xf32>) -> tensor<16x16xf32>
  %out = tensor.expand_shape %r3 [[0, 1], [2]] output_shape [2, 8, 16] : tensor<16x16xf32> into tensor<2x8x16xf32>
  return %out : tensor<2x8x16xf32>
}
