// moe-translate --moe-to-plan: moe.dequantize (a MatMulNBits weight kept
// packed) becomes a dequantize step whose codes (u8) and scales (f32) are
// constants of the plan and whose f32 [K, N] result is an arena temp read by
// the matmul; the zero points, when given, are a third constant. On ep=2
// both ranks hold the weight whole. The plan runs on 2 thread ranks and
// matches numpy on the same codes.

// RUN: moe-translate --moe-to-plan %s -o %t.moeplan
// RUN: moe-run --describe %t.moeplan | FileCheck %s
// CHECK:      v{{[0-9]+}} constant u8[2x1x16] {{.*}}
// CHECK:      steps:
// CHECK-NEXT:   0: dequantize(v{{[0-9]+}}, v{{[0-9]+}}, -) -> v[[W:[0-9]+]] bits=4 block_size=32 dispatch=-1 k=20 {{.*}}@ /nbits/w
// CHECK-NEXT:   1: matmul(v0, v[[W]], -) -> v{{[0-9]+}}
// CHECK-NEXT:   2: dequantize(v{{[0-9]+}}, v{{[0-9]+}}, v{{[0-9]+}}) -> v[[W2:[0-9]+]] bits=8 block_size=16 dispatch=-1 k=20 {{.*}}@ /nbits8/w
// CHECK-NEXT:   3: matmul(v0, v[[W2]], -) -> v{{[0-9]+}}
// CHECK-NOT:    4:

// RUN: %python -c "import numpy as np, sys; np.save(sys.argv[1], np.arange(4 * 20, dtype=np.float32).reshape(4, 20) / 10)" %t.x.npy
// RUN: moe-run -n 2 --threads %t.moeplan --input x=%t.x.npy -o %t.out.npz
// RUN: %python -c "import numpy as np, sys; x = np.load(sys.argv[1]); o = np.load(sys.argv[2]); q = np.tile(np.arange(16), 2)[:20]; w = np.stack([(q - 8) * 0.5, (q - 8) * -0.25], 1); q8 = np.arange(20) * 12 % 256; w8 = np.stack([(q8 - 3.0) * 0.125, (q8 - 7.0) * 0.0625], 1); print(np.allclose(o['y'], x @ w, atol=1e-5), np.allclose(o['y8'], x @ w8, atol=1e-5))" %t.x.npy %t.out.npz | FileCheck %s --check-prefix=NUMPY
// NUMPY: True True

module {
  shard.grid @mesh(shape = 2) {moe.axes = ["ep"], moe.partitioned}
  func.func @main(%x: tensor<2x20xf32> {moe.global_shape = array<i64: 4, 20>, moe.token_split = array<i64: 0, 1>, onnx.name = "x"})
      -> (tensor<2x2xf32> {moe.global_shape = array<i64: 4, 2>, moe.token_split = array<i64: 0, 1>, onnx.name = "y"},
          tensor<2x2xf32> {moe.global_shape = array<i64: 4, 2>, moe.token_split = array<i64: 0, 1>, onnx.name = "y8"}) {
    // 4 bits, block 32, K 20 (12 padding codes): both rows hold codes
    // 0, 1, .., 15 twice (bytes 0x10, 0x32, ..), scales 0.5 and -0.25.
    %q = arith.constant dense<[[[16, 50, 84, 118, 152, 186, 220, 254, 16, 50, 84, 118, 152, 186, 220, 254]], [[16, 50, 84, 118, 152, 186, 220, 254, 16, 50, 84, 118, 152, 186, 220, 254]]]> : tensor<2x1x16xui8>
    %s = arith.constant dense<[[0.5], [-0.25]]> : tensor<2x1xf32>
    %w = moe.dequantize %q, %s bits 4 block_size 32 k 20 : tensor<2x1x16xui8>, tensor<2x1xf32> -> tensor<20x2xf32> loc("/nbits/w")
    %zero = arith.constant 0.0 : f32
    %e = tensor.empty() : tensor<2x2xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<2x2xf32>) -> tensor<2x2xf32>
    %y = linalg.matmul ins(%x, %w : tensor<2x20xf32>, tensor<20x2xf32>) outs(%f : tensor<2x2xf32>) -> tensor<2x2xf32>
    // 8 bits, block 16, K 20: codes 12 k mod 256 in both rows, zero points
    // 3 and 7, scales 0.125 and 0.0625.
    %q8 = arith.constant dense<[[[0, 12, 24, 36, 48, 60, 72, 84, 96, 108, 120, 132, 144, 156, 168, 180], [192, 204, 216, 228, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], [[0, 12, 24, 36, 48, 60, 72, 84, 96, 108, 120, 132, 144, 156, 168, 180], [192, 204, 216, 228, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]]> : tensor<2x2x16xui8>
    %s8 = arith.constant dense<[[0.125, 0.125], [0.0625, 0.0625]]> : tensor<2x2xf32>
    %z8 = arith.constant dense<[[3.0, 3.0], [7.0, 7.0]]> : tensor<2x2xf32>
    %w8 = moe.dequantize %q8, %s8 zero_points %z8 bits 8 block_size 16 k 20 : tensor<2x2x16xui8>, tensor<2x2xf32>, tensor<2x2xf32> -> tensor<20x2xf32> loc("/nbits8/w")
    %y8 = linalg.matmul ins(%x, %w8 : tensor<2x20xf32>, tensor<20x2xf32>) outs(%f : tensor<2x2xf32>) -> tensor<2x2xf32>
    return %y, %y8 : tensor<2x2xf32>, tensor<2x2xf32>
  }
}
