// A Mixtral-style MoE layer as moec imports and raises it: 2x12 tokens of
// width 16, 8 SwiGLU experts of width 32, top-2. Used by the sharding tests.
func.func @main(%x: tensor<2x12x16xf32> {onnx.name = "hidden_states"}) -> (tensor<2x12x16xf32> {onnx.name = "output"}) {
  %router = arith.constant dense<0.01> : tensor<16x8xf32>
  %wg = arith.constant dense<0.02> : tensor<8x16x32xf32>
  %wu = arith.constant dense<0.03> : tensor<8x16x32xf32>
  %wd = arith.constant dense<0.04> : tensor<8x32x16xf32>
  %zero = arith.constant 0.0 : f32
  %t = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x12x16xf32> into tensor<24x16xf32>
  %e = tensor.empty() : tensor<24x8xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<24x8xf32>) -> tensor<24x8xf32>
  %logits = linalg.matmul ins(%t, %router : tensor<24x16xf32>, tensor<16x8xf32>) outs(%f : tensor<24x8xf32>) -> tensor<24x8xf32>
  %w, %i = moe.route %logits top_k 2 {renormalize = true} : tensor<24x8xf32> -> tensor<24x2xf32>, tensor<24x2xi64>
  %y = moe.experts %t, %i, %w gate %wg up %wu down %wd {activation = #moe<activation silu>}
      : (tensor<24x16xf32>, tensor<24x2xi64>, tensor<24x2xf32>, tensor<8x16x32xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<24x16xf32>
  %out = tensor.expand_shape %y [[0, 1], [2]] output_shape [2, 12, 16] : tensor<24x16xf32> into tensor<2x12x16xf32>
  return %out : tensor<2x12x16xf32>
}
