// moe-lower-precision input: a router (matmul + bias add), experts, a
// shared-expert matmul with a constant weight (1.0, 0.1, 65520, 1e-8: exact,
// rounded, overflowing fp16, underflowing fp16) and an activation x
// activation matmul.
func.func @main(%x: tensor<4x2xf32>, %y: tensor<2x4xf32>) -> (tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x4xf32>) {
  %router = arith.constant dense<0.5> : tensor<2x4xf32>
  %bias = arith.constant dense<0.25> : tensor<4xf32>
  %wg = arith.constant dense<0.1> : tensor<4x2x3xf32>
  %wd = arith.constant dense<0.1> : tensor<4x3x2xf32>
  %ws = arith.constant dense<[[1.0, 0.1], [65520.0, 1.0e-8]]> : tensor<2x2xf32>
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x4xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4x4xf32>) -> tensor<4x4xf32>
  %mm = linalg.matmul ins(%x, %router : tensor<4x2xf32>, tensor<2x4xf32>) outs(%f : tensor<4x4xf32>) -> tensor<4x4xf32>
  %logits = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%mm, %bias : tensor<4x4xf32>, tensor<4xf32>) outs(%e : tensor<4x4xf32>) {
  ^bb0(%a: f32, %b: f32, %o: f32):
    %s = arith.addf %a, %b : f32
    linalg.yield %s : f32
  } -> tensor<4x4xf32>
  %w, %i = moe.route %logits top_k 2 : tensor<4x4xf32> -> tensor<4x2xf32>, tensor<4x2xi64>
  %out = moe.experts %x, %i, %w gate %wg down %wd {activation = #moe<activation relu>}
      : (tensor<4x2xf32>, tensor<4x2xi64>, tensor<4x2xf32>, tensor<4x2x3xf32>, tensor<4x3x2xf32>) -> tensor<4x2xf32>
  %e2 = tensor.empty() : tensor<4x2xf32>
  %f2 = linalg.fill ins(%zero : f32) outs(%e2 : tensor<4x2xf32>) -> tensor<4x2xf32>
  %shared = linalg.matmul {moe.shared_expert = 0 : i64} ins(%x, %ws : tensor<4x2xf32>, tensor<2x2xf32>) outs(%f2 : tensor<4x2xf32>) -> tensor<4x2xf32>
  %act = linalg.matmul ins(%x, %y : tensor<4x2xf32>, tensor<2x4xf32>) outs(%f : tensor<4x4xf32>) -> tensor<4x4xf32>
  return %out, %shared, %act : tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x4xf32>
}
