// moe.dequantize (a MatMulNBits weight kept packed, docs/importer.md) through
// the passes: the canonicalizer does not fold it back into an f32 constant;
// with ep=2 it stays whole on every rank (dense weights are replicated); in
// a Megatron tensor-parallel region (tp-block's up projection, column
// parallel, made packed here) each rank dequantizes the whole weight and
// takes its block with shard.all_slice (no tp_slice of the codes yet).

// RUN: moe-opt %s --canonicalize | FileCheck %s --check-prefix=CANON
// CANON: %[[W:.*]] = moe.dequantize %{{.*}}, %{{.*}} bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
// CANON: linalg.matmul ins(%{{.*}}, %[[W]] : tensor<8x64xf32>, tensor<64x24xf32>)

// RUN: moe-opt %s --moe-shard="mesh=ep=2" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=EP2
// EP2: %[[W:.*]] = moe.dequantize %{{.*}}, %{{.*}} bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
// EP2: linalg.matmul ins(%{{.*}}, %[[W]] : tensor<{{[0-9]+}}x64xf32>, tensor<64x24xf32>)

// RUN: sed 's|%%cst_5 = arith.constant dense_resource<wu> : tensor<8x16xf32>|%%q5 = arith.constant dense<17> : tensor<16x1x8xui8> %%s5 = arith.constant dense<0.5> : tensor<16x1xf32> %%cst_5 = moe.dequantize %%q5, %%s5 bits 4 block_size 16 k 8 : tensor<16x1x8xui8>, tensor<16x1xf32> -> tensor<8x16xf32>|' %S/Inputs/tp-block.mlir | moe-opt --moe-shard="mesh=tp=2" --moe-place-experts --moe-insert-all-to-all --moe-partition | FileCheck %s --check-prefix=TP2
// TP2: %[[W:.*]] = moe.dequantize %{{.*}}, %{{.*}} bits 4 block_size 16 k 8 : tensor<16x1x8xui8>, tensor<16x1xf32> -> tensor<8x16xf32>
// TP2-NEXT: %[[UP:.*]] = shard.all_slice %[[W]] on @mesh grid_axes = [1] slice_axis = 1 {moe.tensor_parallel} : tensor<8x16xf32> -> tensor<8x8xf32>
// TP2: linalg.matmul ins(%{{.*}}, %[[UP]] : tensor<4x8xf32>, tensor<8x8xf32>)

module {
  func.func @main(%x: tensor<8x64xf32> {onnx.name = "x"}) -> (tensor<8x24xf32> {onnx.name = "y"}) {
    %q = arith.constant dense<90> : tensor<24x2x16xui8>
    %s = arith.constant dense<0.25> : tensor<24x2xf32>
    %w = moe.dequantize %q, %s bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
    %zero = arith.constant 0.0 : f32
    %e = tensor.empty() : tensor<8x24xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<8x24xf32>) -> tensor<8x24xf32>
    %y = linalg.matmul ins(%x, %w : tensor<8x64xf32>, tensor<64x24xf32>) outs(%f : tensor<8x24xf32>) -> tensor<8x24xf32>
    return %y : tensor<8x24xf32>
  }
}
