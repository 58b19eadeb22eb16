// moe-insert-all-to-all: each placed moe.experts becomes local weights,
// dispatch, expert compute and combine (plus a tp all-reduce).
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts --moe-insert-all-to-all | FileCheck %s
// CHECK: %[[W:.*]], %[[I:.*]] = moe.route
// CHECK-DAG: %[[G:.*]] = moe.local_weights %{{.*}} on @mesh ep_axes = [0] placement = <num_experts = 8, ranks = 4, slots_per_rank = 2, slots = [0, 1, 2, 3, 4, 5, 6, 7], strategy = "contiguous"> {split_dim = 2 : i64} : tensor<8x16x32xf32> -> tensor<2x16x32xf32>
// CHECK-DAG: %[[U:.*]] = moe.local_weights %{{.*}} {split_dim = 2 : i64} : tensor<8x16x32xf32> -> tensor<2x16x32xf32>
// CHECK-DAG: %[[D:.*]] = moe.local_weights %{{.*}} {split_dim = 1 : i64} : tensor<8x32x16xf32> -> tensor<2x32x16xf32>
// 24 tokens / 4 ranks = 6 per rank; each of 4 sources sends a rank at most
// 6 x min(k=2, 2 slots) rows: 48.
// CHECK: %[[R:.*]], %[[H:.*]] = moe.dispatch %{{.*}}, %[[I]] on @mesh grid_axes = [0] placement = {{.*}} max_rows = 48 : tensor<24x16xf32>, tensor<24x2xi64> -> tensor<?x16xf32>, !moe.dispatch
// CHECK: %[[Y:.*]] = moe.expert_compute %[[R]], %[[H]] gate %[[G]] up %[[U]] down %[[D]] {activation = #moe<activation silu>}
// CHECK: %[[O:.*]] = moe.combine %[[Y]], %[[H]], %[[W]] : tensor<?x16xf32>, !moe.dispatch, tensor<24x2xf32> -> tensor<24x16xf32>
// CHECK: tensor.expand_shape %[[O]]
// CHECK-NOT: moe.experts

// Experts that take the routing weight on their input (weight_input, Llama
// 4): the dispatch sends scaled rows, the combine sums them unweighted.
// RUN: sed 's/activation silu>}/activation silu>, weight_input}/' %S/Inputs/moe-layer.mlir | moe-opt --moe-shard="mesh=ep=4" --moe-place-experts --moe-insert-all-to-all | FileCheck %s --check-prefix=WIN
// WIN: %[[W:.*]], %[[I:.*]] = moe.route
// WIN: %[[R:.*]], %[[H:.*]] = moe.dispatch %{{.*}}, %[[I]] weights %[[W]] on @mesh grid_axes = [0] placement = {{.*}} max_rows = 48 : tensor<24x16xf32>, tensor<24x2xi64>, tensor<24x2xf32> -> tensor<?x16xf32>, !moe.dispatch
// WIN: %[[Y:.*]] = moe.expert_compute %[[R]], %[[H]]
// WIN: moe.combine %[[Y]], %[[H]] : tensor<?x16xf32>, !moe.dispatch -> tensor<24x16xf32>

// Sequence-parallel MoE (moe-shard sliced the rows already): the dispatch's
// bound comes from the sliced rows, 5 of 25 per rank: 5 sources x 5 x
// min(k=2, 2 slots) = 50.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=5 token-split=moe" --moe-place-experts --moe-insert-all-to-all 2>/dev/null | FileCheck %s --check-prefix=SLICED
// SLICED: %[[T:.*]] = shard.all_slice
// SLICED: moe.dispatch %[[T]], %{{.*}} max_rows = 50 : tensor<5x16xf32>, tensor<5x2xi64> -> tensor<?x16xf32>, !moe.dispatch
// SLICED: %[[O:.*]] = moe.combine {{.*}} -> tensor<5x16xf32>
// SLICED: shard.all_gather %[[O]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<5x16xf32> -> tensor<25x16xf32>

// Tensor parallelism: FFN columns split over tp (grid axis 2), an
// all-reduce after the combine.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=2,tp=2" --moe-place-experts --moe-insert-all-to-all | FileCheck %s --check-prefix=TP
// TP: moe.local_weights %{{.*}} on @mesh ep_axes = [1] placement = <{{.*}}> {split_axes = array<i16: 2>, split_dim = 2 : i64} : tensor<8x16x32xf32> -> tensor<4x16x16xf32>
// TP: moe.local_weights %{{.*}} {split_axes = array<i16: 2>, split_dim = 1 : i64} : tensor<8x32x16xf32> -> tensor<4x16x16xf32>
// TP: moe.dispatch {{.*}} grid_axes = [1]
// TP: %[[C:.*]] = moe.combine
// TP: shard.all_reduce %[[C]] on @mesh grid_axes = [2] : tensor<24x16xf32> -> tensor<24x16xf32>

// GShard capacity: ceil(1.25 x 6 tokens x 2 / 8 experts) = 2 rows per
// expert replica and source; bound min(48, 4 ranks x 2 slots x 2) = 16.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts --moe-insert-all-to-all=capacity-factor=1.25 | FileCheck %s --check-prefix=CAP
// CAP: moe.dispatch {{.*}} max_rows = 16 {capacity = 2 : i64}

// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-insert-all-to-all 2>&1 | FileCheck %s --check-prefix=NOPLACE
// NOPLACE: error: moe.experts has no placement: run moe-place-experts first
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-insert-all-to-all 2>&1 | FileCheck %s --check-prefix=NOGRID
// NOGRID: error: moe-insert-all-to-all needs the device grid

// Packed experts (QMoE: moe.dequantize of stacked codes). Each rank gets
// the codes, scales and zero points of its own experts and dequantizes
// them after the dispatch (only the slots it gave rows); the whole-stack
// dequantize goes away.
// RUN: sed -e 's|%%wg = arith.constant dense<0.02> : tensor<8x16x32xf32>|%%qg = arith.constant dense<7> : tensor<8x32x1x8xui8> %%sg = arith.constant dense<0.5> : tensor<8x32x1xf32> %%wg = moe.dequantize %%qg, %%sg bits 4 block_size 16 k 16 : tensor<8x32x1x8xui8>, tensor<8x32x1xf32> -> tensor<8x16x32xf32>|' -e 's|%%wd = arith.constant dense<0.04> : tensor<8x32x16xf32>|%%qd = arith.constant dense<9> : tensor<8x16x2x8xui8> %%sd = arith.constant dense<0.25> : tensor<8x16x2xf32> %%zd = arith.constant dense<3.0> : tensor<8x16x2xf32> %%wd = moe.dequantize %%qd, %%sd zero_points %%zd bits 4 block_size 16 k 32 : tensor<8x16x2x8xui8>, tensor<8x16x2xf32>, tensor<8x16x2xf32> -> tensor<8x32x16xf32>|' %S/Inputs/moe-layer.mlir > %t.packed.mlir
// RUN: moe-opt %t.packed.mlir --moe-shard="mesh=ep=4" --moe-place-experts --moe-insert-all-to-all | FileCheck %s --check-prefix=PACKED
// PACKED-DAG: %[[QG:.*]] = moe.local_weights %{{.*}} {{.*}} : tensor<8x32x1x8xui8> -> tensor<2x32x1x8xui8>
// PACKED-DAG: %[[SG:.*]] = moe.local_weights %{{.*}} {{.*}} : tensor<8x32x1xf32> -> tensor<2x32x1xf32>
// PACKED-DAG: %{{.*}}, %[[H:.*]] = moe.dispatch
// PACKED-DAG: %[[G:.*]] = moe.dequantize %[[QG]], %[[SG]] after %[[H]] bits 4 block_size 16 k 16 : tensor<2x32x1x8xui8>, tensor<2x32x1xf32> -> tensor<2x16x32xf32>
// PACKED-DAG: %[[QD:.*]] = moe.local_weights %{{.*}} {{.*}} : tensor<8x16x2x8xui8> -> tensor<2x16x2x8xui8>
// PACKED-DAG: %[[SD:.*]] = moe.local_weights %{{.*}} {{.*}} : tensor<8x16x2xf32> -> tensor<2x16x2xf32>
// PACKED-DAG: %[[ZD:.*]] = moe.local_weights %{{.*}} {{.*}} : tensor<8x16x2xf32> -> tensor<2x16x2xf32>
// PACKED-DAG: %[[D:.*]] = moe.dequantize %[[QD]], %[[SD]] zero_points %[[ZD]] after %[[H]] bits 4 block_size 16 k 32 : {{.*}} -> tensor<2x32x16xf32>
// PACKED: moe.expert_compute %{{.*}}, %{{.*}} gate %[[G]] up %{{.*}} down %[[D]]
// PACKED-NOT: -> tensor<8x16x32xf32>
// PACKED-NOT: moe.experts

// With tp the block is cut from the codes: whole rows (N) of the gate,
// whole blocks of K (2 blocks, 1 per tp rank) of the down projection.
// RUN: moe-opt %t.packed.mlir --moe-shard="mesh=dp=2,ep=2,tp=2" --moe-place-experts --moe-insert-all-to-all | FileCheck %s --check-prefix=PACKEDTP
// PACKEDTP-DAG: moe.local_weights %{{.*}} {split_axes = array<i16: 2>, split_dim = 1 : i64} : tensor<8x32x1x8xui8> -> tensor<4x16x1x8xui8>
// PACKEDTP-DAG: moe.dequantize %{{.*}} bits 4 block_size 16 k 16 : tensor<4x16x1x8xui8>, tensor<4x16x1xf32> -> tensor<4x16x16xf32>
// PACKEDTP-DAG: moe.local_weights %{{.*}} {split_axes = array<i16: 2>, split_dim = 2 : i64} : tensor<8x16x2x8xui8> -> tensor<4x16x1x8xui8>
// PACKEDTP-DAG: moe.dequantize %{{.*}} bits 4 block_size 16 k 16 : tensor<4x16x1x8xui8>, tensor<4x16x1xf32>, tensor<4x16x1xf32> -> tensor<4x16x16xf32>
// PACKEDTP-NOT: shard.all_slice

// One block of K (block_size 32) does not split over tp=2: the rank
// dequantizes its experts' whole down projection and takes its rows.
// RUN: sed -e 's|%%wd = arith.constant dense<0.04> : tensor<8x32x16xf32>|%%qd = arith.constant dense<9> : tensor<8x16x1x16xui8> %%sd = arith.constant dense<0.25> : tensor<8x16x1xf32> %%wd = moe.dequantize %%qd, %%sd bits 4 block_size 32 k 32 : tensor<8x16x1x16xui8>, tensor<8x16x1xf32> -> tensor<8x32x16xf32>|' %S/Inputs/moe-layer.mlir | moe-opt --moe-shard="mesh=dp=2,ep=2,tp=2" --moe-place-experts --moe-insert-all-to-all | FileCheck %s --check-prefix=PACKEDSLICE
// PACKEDSLICE: moe.local_weights %{{.*}} {{.*}} : tensor<8x16x1x16xui8> -> tensor<4x16x1x16xui8>
// PACKEDSLICE: %[[W:.*]] = moe.dequantize %{{.*}} bits 4 block_size 32 k 32 : tensor<4x16x1x16xui8>, tensor<4x16x1xf32> -> tensor<4x32x16xf32>
// PACKEDSLICE: shard.all_slice %[[W]] on @mesh grid_axes = [2] slice_axis = 1 : tensor<4x32x16xf32> -> tensor<4x16x16xf32>
