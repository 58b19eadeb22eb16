// moe-lower-precision: expert and dense GEMM weights become 16-bit constants
// (round to nearest even), the rows going into them are narrowed by an
// elementwise linalg.generic, expert results are widened back; the router
// and activation x activation matmuls keep fp32.
// RUN: moe-opt %S/Inputs/precision-layer.mlir --moe-lower-precision --canonicalize --cse | FileCheck %s
// CHECK-DAG: %[[ROUTER:.*]] = arith.constant dense<5.000000e-01> : tensor<2x4xf32>
// CHECK-DAG: %[[WG:.*]] = arith.constant dense_resource<[[RG:.*]]> : tensor<4x2x3xbf16>
// CHECK-DAG: %[[WD:.*]] = arith.constant dense_resource<[[RD:.*]]> : tensor<4x3x2xbf16>
// CHECK-DAG: %[[WS:.*]] = arith.constant dense_resource<[[RS:.*]]> : tensor<2x2xbf16>
// The router stays fp32, through the bias add.
// CHECK: linalg.matmul ins(%arg0, %[[ROUTER]] : tensor<4x2xf32>, tensor<2x4xf32>)
// CHECK: moe.route
// CHECK: %[[XB:.*]] = linalg.generic {{.*}} ins(%arg0 : tensor<4x2xf32>) outs(%{{.*}} : tensor<4x2xbf16>)
// CHECK-NEXT: ^bb0(%[[IN:.*]]: f32, %{{.*}}: bf16):
// CHECK-NEXT: arith.truncf %[[IN]] : f32 to bf16
// CHECK: %[[Y:.*]] = moe.experts %[[XB]], %{{.*}}, %{{.*}} gate %[[WG]] down %[[WD]] {{.*}} : (tensor<4x2xbf16>, tensor<4x2xi64>, tensor<4x2xf32>, tensor<4x2x3xbf16>, tensor<4x3x2xbf16>) -> tensor<4x2xbf16>
// CHECK: %[[YF:.*]] = linalg.generic {{.*}} ins(%[[Y]] : tensor<4x2xbf16>) outs(%{{.*}} : tensor<4x2xf32>)
// CHECK: arith.extf %{{.*}} : bf16 to f32
// The shared expert: bf16 x bf16 accumulated into f32; its attributes kept.
// CHECK: %[[S:.*]] = linalg.matmul {moe.shared_expert = 0 : i64} ins(%[[XB]], %[[WS]] : tensor<4x2xbf16>, tensor<2x2xbf16>) outs(%{{.*}} : tensor<4x2xf32>)
// CHECK: %[[A:.*]] = linalg.matmul ins(%arg0, %arg1 : tensor<4x2xf32>, tensor<2x4xf32>)
// CHECK: return %[[YF]], %[[S]], %[[A]]
// 0.1 -> 0x3DCD; [1.0, 0.1, 65520, 1e-8] -> 0x3F80, 0x3DCD, 0x4780, 0x322C.
// CHECK: [[RG]]: "0x08000000CD3DCD3D
// CHECK: [[RS]]: "0x08000000803FCD3D80472C32"

// fp16: 0.1 -> 0x2E66; 65520 overflows to inf (0x7C00), 1e-8 underflows to 0.
// RUN: moe-opt %S/Inputs/precision-layer.mlir --moe-lower-precision=precision=f16 --canonicalize --cse | FileCheck %s --check-prefix=F16
// F16: moe.experts {{.*}} -> tensor<4x2xf16>
// F16: linalg.matmul {moe.shared_expert = 0 : i64} ins(%{{.*}}, %{{.*}} : tensor<4x2xf16>, tensor<2x2xf16>) outs(%{{.*}} : tensor<4x2xf32>)
// F16: "0x08000000662E662E
// F16: "0x08000000003C662E007C0000"

// f32 changes nothing.
// RUN: moe-opt %S/Inputs/precision-layer.mlir --moe-lower-precision=precision=f32 | FileCheck %s --check-prefix=F32
// F32-NOT: bf16
// F32-NOT: f16

// Errors: an unknown type; an expert weight that is not a constant.
// RUN: not moe-opt %S/Inputs/precision-layer.mlir --moe-lower-precision=precision=f8 2>&1 | FileCheck %s --check-prefix=BADTYPE
// BADTYPE: error: moe-lower-precision: unknown precision 'f8' (expected bf16, f16 or f32)
// RUN: not moe-opt %s --moe-lower-precision 2>&1 | FileCheck %s --check-prefix=NOTCONST
// NOTCONST: error: moe-lower-precision: w_gate is not a constant; only constant weights are stored in 16 bits
func.func @not_const(%x: tensor<4x2xf32>, %i: tensor<4x2xi64>, %w: tensor<4x2xf32>, %wg: tensor<4x2x3xf32>) -> tensor<4x2xf32> {
  %wd = arith.constant dense<0.1> : tensor<4x3x2xf32>
  %out = moe.experts %x, %i, %w gate %wg down %wd {activation = #moe<activation relu>}
      : (tensor<4x2xf32>, tensor<4x2xi64>, tensor<4x2xf32>, tensor<4x2x3xf32>, tensor<4x3x2xf32>) -> tensor<4x2xf32>
  return %out : tensor<4x2xf32>
}
