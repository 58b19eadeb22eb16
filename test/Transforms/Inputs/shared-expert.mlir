// An MoE layer with a DeepSeek-style shared expert (silu(x Wg) * (x Wu)) Wd
// whose activation runs on [B, S, F] between reshapes, as DeepSeek's torch
// exports write it. Used by the tensor-parallel partition test.
#id3 = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @main(%x: tensor<2x12x16xf32> {onnx.name = "hidden_states"}) -> (tensor<2x12x16xf32> {onnx.name = "output"}) {
  %router = arith.constant dense<0.01> : tensor<16x8xf32>
  %wg = arith.constant dense<0.02> : tensor<8x16x32xf32>
  %wu = arith.constant dense<0.03> : tensor<8x16x32xf32>
  %wd = arith.constant dense<0.04> : tensor<8x32x16xf32>
  %sg = arith.constant dense<0.05> : tensor<16x32xf32>
  %su = arith.constant dense<0.06> : tensor<16x32xf32>
  %sd = arith.constant dense<0.07> : tensor<32x16xf32>
  %s3 = arith.constant dense<[2, 12, 32]> : tensor<3xi64>
  %s2 = arith.constant dense<[24, 32]> : tensor<2xi64>
  %zero = arith.constant 0.0 : f32
  %t = tensor.collapse_shape %x [[0, 1], [2]] : tensor<2x12x16xf32> into tensor<24x16xf32>
  %e = tensor.empty() : tensor<24x8xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<24x8xf32>) -> tensor<24x8xf32>
  %logits = linalg.matmul ins(%t, %router : tensor<24x16xf32>, tensor<16x8xf32>) outs(%f : tensor<24x8xf32>) -> tensor<24x8xf32>
  %w, %i = moe.route %logits top_k 2 {renormalize = true} : tensor<24x8xf32> -> tensor<24x2xf32>, tensor<24x2xi64>
  %y = moe.experts %t, %i, %w gate %wg up %wu down %wd {activation = #moe<activation silu>}
      : (tensor<24x16xf32>, tensor<24x2xi64>, tensor<24x2xf32>, tensor<8x16x32xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<24x16xf32>
  %e32 = tensor.empty() : tensor<24x32xf32>
  %f32 = linalg.fill ins(%zero : f32) outs(%e32 : tensor<24x32xf32>) -> tensor<24x32xf32>
  %g = linalg.matmul {moe.shared_expert = 0 : i64} ins(%t, %sg : tensor<24x16xf32>, tensor<16x32xf32>) outs(%f32 : tensor<24x32xf32>) -> tensor<24x32xf32>
  %u = linalg.matmul {moe.shared_expert = 0 : i64} ins(%t, %su : tensor<24x16xf32>, tensor<16x32xf32>) outs(%f32 : tensor<24x32xf32>) -> tensor<24x32xf32>
  %g3 = tensor.reshape %g(%s3) : (tensor<24x32xf32>, tensor<3xi64>) -> tensor<2x12x32xf32>
  %u3 = tensor.reshape %u(%s3) : (tensor<24x32xf32>, tensor<3xi64>) -> tensor<2x12x32xf32>
  %e3 = tensor.empty() : tensor<2x12x32xf32>
  %h3 = linalg.generic {indexing_maps = [#id3, #id3, #id3], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g3, %u3 : tensor<2x12x32xf32>, tensor<2x12x32xf32>) outs(%e3 : tensor<2x12x32xf32>) attrs = {moe.shared_expert = 0 : i64} {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %n = arith.negf %a : f32
    %ex = math.exp %n : f32
    %one = arith.constant 1.0 : f32
    %d = arith.addf %one, %ex : f32
    %s = arith.divf %a, %d : f32
    %p = arith.mulf %s, %b : f32
    linalg.yield %p : f32
  } -> tensor<2x12x32xf32>
  %h = tensor.reshape %h3(%s2) : (tensor<2x12x32xf32>, tensor<2xi64>) -> tensor<24x32xf32>
  %e16 = tensor.empty() : tensor<24x16xf32>
  %f16 = linalg.fill ins(%zero : f32) outs(%e16 : tensor<24x16xf32>) -> tensor<24x16xf32>
  %sh = linalg.matmul {moe.shared_expert = 0 : i64} ins(%h, %sd : tensor<24x32xf32>, tensor<32x16xf32>) outs(%f16 : tensor<24x16xf32>) -> tensor<24x16xf32>
  %sum = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%y, %sh : tensor<24x16xf32>, tensor<24x16xf32>) outs(%e16 : tensor<24x16xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %r = arith.addf %a, %b : f32
    linalg.yield %r : f32
  } -> tensor<24x16xf32>
  %out = tensor.expand_shape %sum [[0, 1], [2]] output_shape [2, 12, 16] : tensor<24x16xf32> into tensor<2x12x16xf32>
  return %out : tensor<2x12x16xf32>
}
