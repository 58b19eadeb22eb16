// Generated: python3 test/moec/Inputs/make_tp_model.py DIR && moec DIR/tp-block.onnx --emit=mlir
// (one Llama-style decoder layer, GQA 4 query / 2 KV heads, SwiGLU MLP, LM head).
#map = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
#map1 = affine_map<(d0, d1) -> (d0, d1)>
#map2 = affine_map<(d0, d1, d2) -> ()>
#map3 = affine_map<(d0, d1, d2) -> (d0, d1, 0)>
#map4 = affine_map<(d0, d1, d2) -> (d2)>
#map5 = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, 0, d3, d4)>
#map6 = affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>
#map7 = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
#map8 = affine_map<(d0, d1, d2, d3) -> ()>
#map9 = affine_map<(d0, d1, d2, d3) -> (d0, 0, d2, d3)>
module attributes {moe.source = "tp-block.onnx"} {
  func.func @main(%arg0: tensor<1x4x8xf32> {onnx.name = "x"}) -> (tensor<1x4x16xf32> {onnx.name = "logits"}) {
    %cst = arith.constant 8.000000e+00 : f32
    %cst_0 = arith.constant dense_resource<lm_head> : tensor<8x16xf32>
    %cst_1 = arith.constant dense<[1.00363064, 0.874784827, 1.06520104, 0.998146116, 0.896392643, 0.848111152, 0.843441069, 1.00510335]> : tensor<8xf32>
    %cst_2 = arith.constant dense<[4, 16]> : tensor<2xi64>
    %cst_3 = arith.constant dense_resource<wd> : tensor<16x8xf32>
    %cst_4 = arith.constant 1.000000e+00 : f32
    %cst_5 = arith.constant dense_resource<wu> : tensor<8x16xf32>
    %cst_6 = arith.constant dense<[1, 4, 16]> : tensor<3xi64>
    %cst_7 = arith.constant dense_resource<wg> : tensor<8x16xf32>
    %cst_8 = arith.constant dense<[0.9336465, 0.938658237, 0.839485049, 1.07293499, 1.08061397, 0.952362298, 1.01633394, 0.870735407]> : tensor<8xf32>
    %cst_9 = arith.constant dense_resource<wo> : tensor<8x8xf32>
    %cst_10 = arith.constant dense<[1, 4, 4, 2]> : tensor<4xi64>
    %cst_11 = arith.constant dense<4> : tensor<3xi64>
    %cst_12 = arith.constant dense<[[[[0.000000e+00, -1.000000e+09, -1.000000e+09, -1.000000e+09], [0.000000e+00, 0.000000e+00, -1.000000e+09, -1.000000e+09], [0.000000e+00, 0.000000e+00, 0.000000e+00, -1.000000e+09], [0.000000e+00, 0.000000e+00, 0.000000e+00, 0.000000e+00]]]]> : tensor<1x1x4x4xf32>
    %cst_13 = arith.constant dense<0.707106769> : tensor<f32>
    %cst_14 = arith.constant dense<[1, 4, 4, 4]> : tensor<4xi64>
    %cst_15 = arith.constant dense<[4, 2, 4]> : tensor<3xi64>
    %cst_16 = arith.constant dense<[4, 4, 2]> : tensor<3xi64>
    %cst_17 = arith.constant dense_resource<wv> : tensor<8x4xf32>
    %cst_18 = arith.constant dense<[1, 4, 4]> : tensor<3xi64>
    %cst_19 = arith.constant dense_resource<wk> : tensor<8x4xf32>
    %cst_20 = arith.constant dense<[1, 4, 8]> : tensor<3xi64>
    %cst_21 = arith.constant dense<[4, 8]> : tensor<2xi64>
    %cst_22 = arith.constant dense_resource<wq> : tensor<8x8xf32>
    %cst_23 = arith.constant dense<[1.012573, 0.986789524, 1.06404221, 1.01049006, 0.946433067, 1.03615952, 1.13040006, 1.09470809]> : tensor<8xf32>
    %cst_24 = arith.constant dense<9.99999997E-7> : tensor<f32>
    %cst_25 = arith.constant dense<[1, 4, 1]> : tensor<3xi64>
    %cst_26 = arith.constant 0.000000e+00 : f32
    %0 = tensor.empty() : tensor<1x4x8xf32>
    %1 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%arg0, %arg0 : tensor<1x4x8xf32>, tensor<1x4x8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %2 = tensor.empty() : tensor<1x4xf32>
    %3 = linalg.fill ins(%cst_26 : f32) outs(%2 : tensor<1x4xf32>) -> tensor<1x4xf32>
    %reduced = linalg.reduce ins(%1 : tensor<1x4x8xf32>) outs(%3 : tensor<1x4xf32>) dimensions = [2] 
      (%in: f32, %init: f32) {
        %58 = arith.addf %in, %init : f32
        linalg.yield %58 : f32
      }
    %4 = linalg.generic {indexing_maps = [#map1, #map1], iterator_types = ["parallel", "parallel"]} ins(%reduced : tensor<1x4xf32>) outs(%2 : tensor<1x4xf32>) {
    ^bb0(%in: f32, %out: f32):
      %58 = arith.divf %in, %cst : f32
      linalg.yield %58 : f32
    } -> tensor<1x4xf32>
    %reshape = tensor.reshape %4(%cst_25) : (tensor<1x4xf32>, tensor<3xi64>) -> tensor<1x4x1xf32>
    %5 = tensor.empty() : tensor<1x4x1xf32>
    %6 = linalg.generic {indexing_maps = [#map, #map2, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%reshape, %cst_24 : tensor<1x4x1xf32>, tensor<f32>) outs(%5 : tensor<1x4x1xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.addf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x1xf32>
    %7 = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%6 : tensor<1x4x1xf32>) outs(%5 : tensor<1x4x1xf32>) {
    ^bb0(%in: f32, %out: f32):
      %58 = math.sqrt %in : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x1xf32>
    %8 = linalg.generic {indexing_maps = [#map, #map3, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%arg0, %7 : tensor<1x4x8xf32>, tensor<1x4x1xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.divf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %9 = linalg.generic {indexing_maps = [#map, #map4, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%8, %cst_23 : tensor<1x4x8xf32>, tensor<8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %reshape_27 = tensor.reshape %9(%cst_21) : (tensor<1x4x8xf32>, tensor<2xi64>) -> tensor<4x8xf32>
    %10 = tensor.empty() : tensor<4x8xf32>
    %11 = linalg.fill ins(%cst_26 : f32) outs(%10 : tensor<4x8xf32>) -> tensor<4x8xf32>
    %12 = linalg.matmul ins(%reshape_27, %cst_22 : tensor<4x8xf32>, tensor<8x8xf32>) outs(%11 : tensor<4x8xf32>) -> tensor<4x8xf32>
    %reshape_28 = tensor.reshape %12(%cst_20) : (tensor<4x8xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
    %expanded = tensor.expand_shape %reshape_28 [[0], [1], [2, 3]] output_shape [1, 4, 4, 2] : tensor<1x4x8xf32> into tensor<1x4x4x2xf32>
    %13 = tensor.empty() : tensor<1x4x4x2xf32>
    %transposed = linalg.transpose ins(%expanded : tensor<1x4x4x2xf32>) outs(%13 : tensor<1x4x4x2xf32>) permutation = [0, 2, 1, 3] 
    %14 = tensor.empty() : tensor<4x4xf32>
    %15 = linalg.fill ins(%cst_26 : f32) outs(%14 : tensor<4x4xf32>) -> tensor<4x4xf32>
    %16 = linalg.matmul ins(%reshape_27, %cst_19 : tensor<4x8xf32>, tensor<8x4xf32>) outs(%15 : tensor<4x4xf32>) -> tensor<4x4xf32>
    %reshape_29 = tensor.reshape %16(%cst_18) : (tensor<4x4xf32>, tensor<3xi64>) -> tensor<1x4x4xf32>
    %expanded_30 = tensor.expand_shape %reshape_29 [[0], [1], [2, 3]] output_shape [1, 4, 2, 2] : tensor<1x4x4xf32> into tensor<1x4x2x2xf32>
    %17 = tensor.empty() : tensor<1x2x4x2xf32>
    %transposed_31 = linalg.transpose ins(%expanded_30 : tensor<1x4x2x2xf32>) outs(%17 : tensor<1x2x4x2xf32>) permutation = [0, 2, 1, 3] 
    %expanded_32 = tensor.expand_shape %transposed_31 [[0], [1], [2, 3], [4]] output_shape [1, 2, 1, 4, 2] : tensor<1x2x4x2xf32> into tensor<1x2x1x4x2xf32>
    %18 = tensor.empty() : tensor<1x2x2x4x2xf32>
    %19 = linalg.generic {indexing_maps = [#map5, #map6], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]} ins(%expanded_32 : tensor<1x2x1x4x2xf32>) outs(%18 : tensor<1x2x2x4x2xf32>) {
    ^bb0(%in: f32, %out: f32):
      linalg.yield %in : f32
    } -> tensor<1x2x2x4x2xf32>
    %collapsed = tensor.collapse_shape %19 [[0], [1, 2], [3], [4]] : tensor<1x2x2x4x2xf32> into tensor<1x4x4x2xf32>
    %20 = linalg.matmul ins(%reshape_27, %cst_17 : tensor<4x8xf32>, tensor<8x4xf32>) outs(%15 : tensor<4x4xf32>) -> tensor<4x4xf32>
    %reshape_33 = tensor.reshape %20(%cst_18) : (tensor<4x4xf32>, tensor<3xi64>) -> tensor<1x4x4xf32>
    %expanded_34 = tensor.expand_shape %reshape_33 [[0], [1], [2, 3]] output_shape [1, 4, 2, 2] : tensor<1x4x4xf32> into tensor<1x4x2x2xf32>
    %transposed_35 = linalg.transpose ins(%expanded_34 : tensor<1x4x2x2xf32>) outs(%17 : tensor<1x2x4x2xf32>) permutation = [0, 2, 1, 3] 
    %expanded_36 = tensor.expand_shape %transposed_35 [[0], [1], [2, 3], [4]] output_shape [1, 2, 1, 4, 2] : tensor<1x2x4x2xf32> into tensor<1x2x1x4x2xf32>
    %21 = linalg.generic {indexing_maps = [#map5, #map6], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]} ins(%expanded_36 : tensor<1x2x1x4x2xf32>) outs(%18 : tensor<1x2x2x4x2xf32>) {
    ^bb0(%in: f32, %out: f32):
      linalg.yield %in : f32
    } -> tensor<1x2x2x4x2xf32>
    %collapsed_37 = tensor.collapse_shape %21 [[0], [1, 2], [3], [4]] : tensor<1x2x2x4x2xf32> into tensor<1x4x4x2xf32>
    %22 = tensor.empty() : tensor<1x4x2x4xf32>
    %transposed_38 = linalg.transpose ins(%collapsed : tensor<1x4x4x2xf32>) outs(%22 : tensor<1x4x2x4xf32>) permutation = [0, 1, 3, 2] 
    %reshape_39 = tensor.reshape %transposed(%cst_16) : (tensor<1x4x4x2xf32>, tensor<3xi64>) -> tensor<4x4x2xf32>
    %reshape_40 = tensor.reshape %transposed_38(%cst_15) : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<4x2x4xf32>
    %23 = tensor.empty() : tensor<4x4x4xf32>
    %24 = linalg.fill ins(%cst_26 : f32) outs(%23 : tensor<4x4x4xf32>) -> tensor<4x4x4xf32>
    %25 = linalg.batch_matmul ins(%reshape_39, %reshape_40 : tensor<4x4x2xf32>, tensor<4x2x4xf32>) outs(%24 : tensor<4x4x4xf32>) -> tensor<4x4x4xf32>
    %reshape_41 = tensor.reshape %25(%cst_14) : (tensor<4x4x4xf32>, tensor<4xi64>) -> tensor<1x4x4x4xf32>
    %26 = tensor.empty() : tensor<1x4x4x4xf32>
    %27 = linalg.generic {indexing_maps = [#map7, #map8, #map7], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%reshape_41, %cst_13 : tensor<1x4x4x4xf32>, tensor<f32>) outs(%26 : tensor<1x4x4x4xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x4x4xf32>
    %28 = linalg.generic {indexing_maps = [#map7, #map9, #map7], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%27, %cst_12 : tensor<1x4x4x4xf32>, tensor<1x1x4x4xf32>) outs(%26 : tensor<1x4x4x4xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.addf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x4x4xf32>
    %29 = linalg.softmax dimension(3) ins(%28 : tensor<1x4x4x4xf32>) outs(%26 : tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
    %reshape_42 = tensor.reshape %29(%cst_11) : (tensor<1x4x4x4xf32>, tensor<3xi64>) -> tensor<4x4x4xf32>
    %reshape_43 = tensor.reshape %collapsed_37(%cst_16) : (tensor<1x4x4x2xf32>, tensor<3xi64>) -> tensor<4x4x2xf32>
    %30 = tensor.empty() : tensor<4x4x2xf32>
    %31 = linalg.fill ins(%cst_26 : f32) outs(%30 : tensor<4x4x2xf32>) -> tensor<4x4x2xf32>
    %32 = linalg.batch_matmul ins(%reshape_42, %reshape_43 : tensor<4x4x4xf32>, tensor<4x4x2xf32>) outs(%31 : tensor<4x4x2xf32>) -> tensor<4x4x2xf32>
    %reshape_44 = tensor.reshape %32(%cst_10) : (tensor<4x4x2xf32>, tensor<4xi64>) -> tensor<1x4x4x2xf32>
    %transposed_45 = linalg.transpose ins(%reshape_44 : tensor<1x4x4x2xf32>) outs(%13 : tensor<1x4x4x2xf32>) permutation = [0, 2, 1, 3] 
    %collapsed_46 = tensor.collapse_shape %transposed_45 [[0], [1], [2, 3]] : tensor<1x4x4x2xf32> into tensor<1x4x8xf32>
    %reshape_47 = tensor.reshape %collapsed_46(%cst_21) : (tensor<1x4x8xf32>, tensor<2xi64>) -> tensor<4x8xf32>
    %33 = linalg.matmul ins(%reshape_47, %cst_9 : tensor<4x8xf32>, tensor<8x8xf32>) outs(%11 : tensor<4x8xf32>) -> tensor<4x8xf32>
    %reshape_48 = tensor.reshape %33(%cst_20) : (tensor<4x8xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
    %34 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%arg0, %reshape_48 : tensor<1x4x8xf32>, tensor<1x4x8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.addf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %35 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%34, %34 : tensor<1x4x8xf32>, tensor<1x4x8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %reduced_49 = linalg.reduce ins(%35 : tensor<1x4x8xf32>) outs(%3 : tensor<1x4xf32>) dimensions = [2] 
      (%in: f32, %init: f32) {
        %58 = arith.addf %in, %init : f32
        linalg.yield %58 : f32
      }
    %36 = linalg.generic {indexing_maps = [#map1, #map1], iterator_types = ["parallel", "parallel"]} ins(%reduced_49 : tensor<1x4xf32>) outs(%2 : tensor<1x4xf32>) {
    ^bb0(%in: f32, %out: f32):
      %58 = arith.divf %in, %cst : f32
      linalg.yield %58 : f32
    } -> tensor<1x4xf32>
    %reshape_50 = tensor.reshape %36(%cst_25) : (tensor<1x4xf32>, tensor<3xi64>) -> tensor<1x4x1xf32>
    %37 = linalg.generic {indexing_maps = [#map, #map2, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%reshape_50, %cst_24 : tensor<1x4x1xf32>, tensor<f32>) outs(%5 : tensor<1x4x1xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.addf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x1xf32>
    %38 = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%37 : tensor<1x4x1xf32>) outs(%5 : tensor<1x4x1xf32>) {
    ^bb0(%in: f32, %out: f32):
      %58 = math.sqrt %in : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x1xf32>
    %39 = linalg.generic {indexing_maps = [#map, #map3, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%34, %38 : tensor<1x4x8xf32>, tensor<1x4x1xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.divf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %40 = linalg.generic {indexing_maps = [#map, #map4, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%39, %cst_8 : tensor<1x4x8xf32>, tensor<8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %reshape_51 = tensor.reshape %40(%cst_21) : (tensor<1x4x8xf32>, tensor<2xi64>) -> tensor<4x8xf32>
    %41 = tensor.empty() : tensor<4x16xf32>
    %42 = linalg.fill ins(%cst_26 : f32) outs(%41 : tensor<4x16xf32>) -> tensor<4x16xf32>
    %43 = linalg.matmul ins(%reshape_51, %cst_7 : tensor<4x8xf32>, tensor<8x16xf32>) outs(%42 : tensor<4x16xf32>) -> tensor<4x16xf32>
    %reshape_52 = tensor.reshape %43(%cst_6) : (tensor<4x16xf32>, tensor<3xi64>) -> tensor<1x4x16xf32>
    %44 = linalg.matmul ins(%reshape_51, %cst_5 : tensor<4x8xf32>, tensor<8x16xf32>) outs(%42 : tensor<4x16xf32>) -> tensor<4x16xf32>
    %reshape_53 = tensor.reshape %44(%cst_6) : (tensor<4x16xf32>, tensor<3xi64>) -> tensor<1x4x16xf32>
    %45 = tensor.empty() : tensor<1x4x16xf32>
    %46 = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%reshape_52 : tensor<1x4x16xf32>) outs(%45 : tensor<1x4x16xf32>) {
    ^bb0(%in: f32, %out: f32):
      %58 = arith.negf %in : f32
      %59 = math.exp %58 : f32
      %60 = arith.addf %59, %cst_4 : f32
      %61 = arith.divf %cst_4, %60 : f32
      linalg.yield %61 : f32
    } -> tensor<1x4x16xf32>
    %47 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%reshape_52, %46 : tensor<1x4x16xf32>, tensor<1x4x16xf32>) outs(%45 : tensor<1x4x16xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x16xf32>
    %48 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%47, %reshape_53 : tensor<1x4x16xf32>, tensor<1x4x16xf32>) outs(%45 : tensor<1x4x16xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x16xf32>
    %reshape_54 = tensor.reshape %48(%cst_2) : (tensor<1x4x16xf32>, tensor<2xi64>) -> tensor<4x16xf32>
    %49 = linalg.matmul ins(%reshape_54, %cst_3 : tensor<4x16xf32>, tensor<16x8xf32>) outs(%11 : tensor<4x8xf32>) -> tensor<4x8xf32>
    %reshape_55 = tensor.reshape %49(%cst_20) : (tensor<4x8xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
    %50 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%34, %reshape_55 : tensor<1x4x8xf32>, tensor<1x4x8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.addf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %51 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%50, %50 : tensor<1x4x8xf32>, tensor<1x4x8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %reduced_56 = linalg.reduce ins(%51 : tensor<1x4x8xf32>) outs(%3 : tensor<1x4xf32>) dimensions = [2] 
      (%in: f32, %init: f32) {
        %58 = arith.addf %in, %init : f32
        linalg.yield %58 : f32
      }
    %52 = linalg.generic {indexing_maps = [#map1, #map1], iterator_types = ["parallel", "parallel"]} ins(%reduced_56 : tensor<1x4xf32>) outs(%2 : tensor<1x4xf32>) {
    ^bb0(%in: f32, %out: f32):
      %58 = arith.divf %in, %cst : f32
      linalg.yield %58 : f32
    } -> tensor<1x4xf32>
    %reshape_57 = tensor.reshape %52(%cst_25) : (tensor<1x4xf32>, tensor<3xi64>) -> tensor<1x4x1xf32>
    %53 = linalg.generic {indexing_maps = [#map, #map2, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%reshape_57, %cst_24 : tensor<1x4x1xf32>, tensor<f32>) outs(%5 : tensor<1x4x1xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.addf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x1xf32>
    %54 = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%53 : tensor<1x4x1xf32>) outs(%5 : tensor<1x4x1xf32>) {
    ^bb0(%in: f32, %out: f32):
      %58 = math.sqrt %in : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x1xf32>
    %55 = linalg.generic {indexing_maps = [#map, #map3, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%50, %54 : tensor<1x4x8xf32>, tensor<1x4x1xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.divf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %56 = linalg.generic {indexing_maps = [#map, #map4, #map], iterator_types = ["parallel", "parallel", "parallel"]} ins(%55, %cst_1 : tensor<1x4x8xf32>, tensor<8xf32>) outs(%0 : tensor<1x4x8xf32>) {
    ^bb0(%in: f32, %in_60: f32, %out: f32):
      %58 = arith.mulf %in, %in_60 : f32
      linalg.yield %58 : f32
    } -> tensor<1x4x8xf32>
    %reshape_58 = tensor.reshape %56(%cst_21) : (tensor<1x4x8xf32>, tensor<2xi64>) -> tensor<4x8xf32>
    %57 = linalg.matmul ins(%reshape_58, %cst_0 : tensor<4x8xf32>, tensor<8x16xf32>) outs(%42 : tensor<4x16xf32>) -> tensor<4x16xf32>
    %reshape_59 = tensor.reshape %57(%cst_6) : (tensor<4x16xf32>, tensor<3xi64>) -> tensor<1x4x16xf32>
    return %reshape_59 : tensor<1x4x16xf32>
  }
}

{-#
  dialect_resources: {
    builtin: {
      wo: "0x0800000088970F3FCE8DEB3E063572BF6AA2FB3EBD1B0B3EA6932D3E040E183EFFC61C3E02D5023ECA0213BE3ABA42BF267232BDB29AA4BEAC37DD3EBA8EECBD1AC4083DD2FFADBEA62651BE892A97BB381A18BF3D52F63DEDC92DBDDED5F2BE3C9475BF6A25523EE5C7F3BD691759BE3775C1BDD4013A3F1530A3BCC1EA0D3DB94618BF01B0283FCBE6BB3E1D82DA3EC9369C3C1CBBBB3E98F0173E89297B3E5A5A79BD17ED16BF99B5D23ECE2346BF5E8EC4BD798BA7BDE893D5BE9F227B3E2F1CA4BDF7F032BE5BED543EEF3443BE473B0E3FBCF40F3E6B4942BEBD1747BFF7E905BF3C95DE3EC4D1A5BCA1EFE7BDDB44283FE15703BFACE26FBE699241BEEC29703E",
      wv: "0x080000008DCCB23EC21C03BF4E0992BE715E7E3E1A6A66BFCA411E3E763D6EBE3A0B333D0B0FF8BC7692A53D9A2A8E3E6A509BBE3182113F3AB4943EE4CBAC3E6C90EE3E4E4CA13E08DEAC3E84B4F73C051A12BF05425DBDBB989DBE52B011BF7BB9D33DBBE068BE69E7D2BE4C9BD5BE24E3DB3D7BE9123E6E6B073FE161B6BB695ED53E",
      wk: "0x08000000809CCD3E40187DBEEF923A3F4E3607BF1F7B87BE8C7FBF3EFEBDA03C850B4D3F576F9A3D9BAD81BE67A61ABE7B77DFBE9ED502BFB81B813EA70B6E3E1590043F138B9ABEF0F62C3F926DEBBD2B38213FE34431BE82A096BECA9FCC3DD93DD33E28E6833D26D56FBE455709BF03840FBF1EE64D3E77B1CA3E139786BDA907DCBE",
      wq: "0x08000000FE1F90BE449401BF104B7FBEBE6A873C49156EBFF03BB3BD9E29FFBEE6F795BEB1ED5EBE7A8E01BE979A283EBA81D53E589752BD05ED0B3F5C3B88BE81FA0F3EDC07B93E9E071A3DC64498BEF5C4BCBE087C3BBE4462B43D12C5CEBE4C5BABBDE86F82BDC5875D3E48D9AF3D888F113E73E785BEE65B54BDE58EA03E67ED183FA6ED00BF9A061B3F51D1093F3803A03E5EA4D83D319500BE234D153FFFBA483FC77C383FA8AA063F0D62123EB276F7BE5D86E9BA3172863E9FED03BF8DD7213E7A12303EAF8C8E3EE281F2BE468487BE8DC332BE4F93EFBE7C1C323F02204BBEF7BE063E98D2D3BDCB25223F7934073FEBB5813EB0A361BF117DAA3CD9048C3E"
    }
  }
#-}
