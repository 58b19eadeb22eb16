func.func @main(%logits: tensor<16x8xf32>) -> (tensor<16x2xf32>, tensor<16x2xi64>) {
  %0 = tensor.empty() : tensor<16x8xf32>
  %p = linalg.softmax dimension(1) ins(%logits : tensor<16x8xf32>) outs(%0 : tensor<16x8xf32>) -> tensor<16x8xf32>
  // expected-error @+1 {{MoE-like region (top-k over router scores) not raised: no expert loop}}
  %v, %i = moe.topk %p k 2 axis 1 : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return %v, %i : tensor<16x2xf32>, tensor<16x2xi64>
}
