// moe-shard: the device grid, the token split, the annotations, and errors.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=tp=2,dp=2,ep=4" | FileCheck %s
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" | FileCheck %s --check-prefix=EP
// RUN: moe-opt %s --split-input-file --verify-diagnostics --moe-shard="mesh=ep=4,tp=3 token-split=model"
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=5 token-split=model" 2>&1 | FileCheck %s --check-prefix=SPLIT
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=5" 2>&1 | FileCheck %s --check-prefix=AUTO
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=4,tp=2 token-split=moe" | FileCheck %s --check-prefix=MOE
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4 token-split=model" | FileCheck %s --check-prefix=EP
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=5" 2>&1 | FileCheck %s --check-prefix=HYBRID
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=8 attention-mesh=dp=2,tp=4" | FileCheck %s --check-prefix=FOLD
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=2,tp=2 attention-mesh=tp=4" | FileCheck %s --check-prefix=FOLDTP
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4 attention-mesh=dp=4" | FileCheck %s --check-prefix=FOLDDP
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4 attention-mesh=tp=8" 2>&1 | FileCheck %s --check-prefix=FOLDN
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=2,tp=3 attention-mesh=dp=3,tp=2" 2>&1 | FileCheck %s --check-prefix=NEST
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=2,tp=2 attention-mesh=dp=4" 2>&1 | FileCheck %s --check-prefix=FOLDETP
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=5 attention-mesh=dp=5" 2>&1 | FileCheck %s --check-prefix=FOLDSEQ
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4 attention-mesh=tp=4 token-split=moe" 2>&1 | FileCheck %s --check-prefix=FOLDMODE
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4 token-split=tokens" 2>&1 | FileCheck %s --check-prefix=MODE
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4,pp=2" 2>&1 | FileCheck %s --check-prefix=AXIS
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=x" 2>&1 | FileCheck %s --check-prefix=SIZE
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=2" --moe-shard="mesh=ep=2" 2>&1 | FileCheck %s --check-prefix=TWICE

// Axes are ordered dp, ep, tp whatever the spec's order; names are kept.
// CHECK: shard.grid @mesh(shape = 2x4x2) {moe.axes = ["dp", "ep", "tp"]}
// The model input and output carry tokens in dims 0-1 (2x12, split as one).
// CHECK: func.func @main(%{{.*}}: tensor<2x12x16xf32> {moe.token_split = array<i64: 0, 2>, onnx.name = "hidden_states"}) -> (tensor<2x12x16xf32> {moe.token_split = array<i64: 0, 2>, onnx.name = "output"})
// The tokens entering the MoE layer are split over dp and ep (grid axes 0, 1).
// CHECK: %[[S:.*]] = shard.sharding @mesh split_axes = {{\[\[}}0, 1]] : !shard.sharding
// CHECK: %[[L:.*]] = shard.shard %{{.*}} to %[[S]] annotate_for_users : tensor<24x8xf32>
// CHECK: moe.route %[[L]] top_k 2
// CHECK: shard.shard %{{.*}} to %{{.*}} annotate_for_users : tensor<24x16xf32>
// CHECK: moe.experts

// ep is always an axis; without dp only ep splits the tokens.
// EP: shard.grid @mesh(shape = 4) {moe.axes = ["ep"]}
// EP: shard.sharding @mesh split_axes = {{\[\[}}0]]

// 24 tokens do not split 5 ways: with token-split=model an error; by
// default (auto) a remark that says why, and sequence-parallel MoE: the
// model input stays whole (no moe.token_split), the routed rows are padded
// to 25 with zero rows (expert 0, weight 0), each rank takes its 5, the
// experts' rows are all-gathered back and the padding is cut off.
// AUTO: remark: the whole model does not split 5 ways over tokens (model input 'hidden_states': 24 tokens (dims 0..1) cannot be split into 5 equal contiguous blocks {{.*}}); MoE layers are sequence-parallel instead
// AUTO: shard.grid @mesh(shape = 5) {moe.axes = ["ep"], moe.token_split_mode = "moe", moe.token_split_reason = "model input 'hidden_states': 24 tokens
// AUTO: func.func @main(%{{.*}}: tensor<2x12x16xf32> {onnx.name = "hidden_states"})
// AUTO: %[[W:.*]], %[[I:.*]] = moe.route
// AUTO: %[[Z:.*]] = arith.constant dense<0.000000e+00> : tensor<1x16xf32>
// AUTO: %[[C:.*]] = tensor.concat dim(0) %collapsed, %[[Z]] : (tensor<24x16xf32>, tensor<1x16xf32>) -> tensor<25x16xf32>
// AUTO: %[[T:.*]] = shard.all_slice %[[C]] on @mesh grid_axes = [0] slice_axis = 0 : tensor<25x16xf32> -> tensor<5x16xf32>
// AUTO: arith.constant dense<{{\[\[}}0, 1]]> : tensor<1x2xi64>
// AUTO: %[[IS:.*]] = shard.all_slice %{{.*}} on @mesh grid_axes = [0] slice_axis = 0 : tensor<25x2xi64> -> tensor<5x2xi64>
// AUTO: %[[WS:.*]] = shard.all_slice %{{.*}} on @mesh grid_axes = [0] slice_axis = 0 : tensor<25x2xf32> -> tensor<5x2xf32>
// AUTO: %[[E:.*]] = moe.experts %[[T]], %[[IS]], %[[WS]] {{.*}} -> tensor<5x16xf32>
// AUTO: %[[G:.*]] = shard.all_gather %[[E]] on @mesh grid_axes = [0] gather_axis = 0 : tensor<5x16xf32> -> tensor<25x16xf32>
// AUTO: tensor.extract_slice %[[G]][0, 0] [24, 16] [1, 1] : tensor<25x16xf32> to tensor<24x16xf32>
// AUTO-NOT: shard.shard

// token-split=moe even where the whole model would split: over dp and ep
// (grid axes 0, 1), 24 rows 8 ways, no padding.
// MOE: shard.grid @mesh(shape = 2x4x2) {moe.axes = ["dp", "ep", "tp"], moe.token_split_mode = "moe"}
// MOE-NOT: tensor.concat
// MOE: shard.all_slice %collapsed on @mesh grid_axes = [0, 1] slice_axis = 0 : tensor<24x16xf32> -> tensor<3x16xf32>
// MOE: moe.experts {{.*}} -> tensor<3x16xf32>
// MOE-NEXT: shard.all_gather %{{.*}} on @mesh grid_axes = [0, 1] gather_axis = 0 : tensor<3x16xf32> -> tensor<24x16xf32>
// MOE-NOT: tensor.extract_slice
// MOE-NOT: shard.shard

// Hybrid (auto): 24 tokens do not split 10 ways, but the 2 sequences split
// over dp: the model is annotated over dp alone (token dims: the batch);
// moe-partition slices each dp group's rows over ep (partition.mlir).
// HYBRID: remark: the whole model does not split 10 ways over tokens ({{.*}}); it splits whole sequences 2 ways over dp, and each MoE layer's rows are sliced 5 ways over ep within each dp group
// HYBRID: shard.grid @mesh(shape = 2x5) {moe.axes = ["dp", "ep"], moe.token_split_mode = "hybrid"
// HYBRID: func.func @main(%{{.*}}: tensor<2x12x16xf32> {moe.token_split = array<i64: 0, 1>, onnx.name = "hidden_states"})
// HYBRID: shard.sharding @mesh split_axes = {{\[\[}}0]]
// HYBRID-NOT: shard.all_slice

// MODE: error: token-split 'tokens': expected auto, model or moe
// SPLIT: error: model input 'hidden_states': 24 tokens (dims 0..1) cannot be split into 5 equal contiguous blocks (mesh ep=5 splits tokens 5 ways)
// AXIS: error: mesh spec 'ep=4,pp=2': unknown axis 'pp' (expected dp, ep or tp)
// SIZE: error: mesh spec 'ep=x': axis 'ep' needs a size >= 1, got 'x'
// TWICE: error: the module already has a grid @mesh (moe-shard ran twice?)

// tp must divide the experts' FFN width.
func.func @tp(%t: tensor<8x16xf32>, %i: tensor<8x2xi64>, %w: tensor<8x2xf32>,
              %g: tensor<4x16x32xf32>, %d: tensor<4x32x16xf32>) -> tensor<8x16xf32> {
  // expected-error @+1 {{tp=3 does not divide the expert FFN width 32}}
  %y = moe.experts %t, %i, %w gate %g down %d {activation = #moe<activation relu>}
      : (tensor<8x16xf32>, tensor<8x2xi64>, tensor<8x2xf32>, tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<8x16xf32>
  return %y : tensor<8x16xf32>
}

// -----

// A reduction over the tokens cannot be split.
func.func @reduce_tokens(%t: tensor<8x16xf32>, %i: tensor<8x2xi64>, %w: tensor<8x2xf32>,
                         %g: tensor<4x16x30xf32>, %d: tensor<4x30x16xf32>) -> tensor<16xf32> {
  %y = moe.experts %t, %i, %w gate %g down %d {activation = #moe<activation relu>}
      : (tensor<8x16xf32>, tensor<8x2xi64>, tensor<8x2xf32>, tensor<4x16x30xf32>, tensor<4x30x16xf32>) -> tensor<8x16xf32>
  %e = tensor.empty() : tensor<16xf32>
  // expected-error @+1 {{cannot split along tokens: the op reduces over the token dimension}}
  %s = linalg.reduce ins(%y : tensor<8x16xf32>) outs(%e : tensor<16xf32>) dimensions = [0]
    (%a: f32, %b: f32) {
      %r = arith.addf %a, %b : f32
      linalg.yield %r : f32
    }
  return %s : tensor<16xf32>
}

// Folding (attention-mesh): the MoE's ep=8 with attention dp=2 x tp=4 of
// the same 8 ranks gives grid axes ep0 = 2 (attention dp) and ep1 = 4
// (attention tp), their roles in moe.roles. The whole model splits over
// attention dp (grid axis 0, one sequence each) only; the MoE rows are sliced over ep1 later,
// in moe-partition ("hybrid").
// FOLD: shard.grid @mesh(shape = 2x4) {moe.axes = ["ep0", "ep1"], moe.roles = {attn_dp = array<i16: 0>, attn_tp = array<i16: 1>, dp = array<i16>, ep = array<i16: 0, 1>, tp = array<i16>}, moe.token_split_mode = "hybrid"}
// FOLD: func.func @main(%{{.*}}: tensor<2x12x16xf32> {moe.token_split = array<i64: 0, 1>, onnx.name = "hidden_states"})
// FOLD: shard.sharding @mesh split_axes = {{\[\[}}0]]
// FOLD-NOT: shard.all_slice

// vLLM's layout with expert tensor parallelism: attention tp over all 4
// ranks, the MoE's ep and tp axes both inside it; no whole-model split.
// FOLDTP: shard.grid @mesh(shape = 2x2) {moe.axes = ["ep", "tp"], moe.roles = {attn_dp = array<i16>, attn_tp = array<i16: 0, 1>, dp = array<i16>, ep = array<i16: 0>, tp = array<i16: 1>}, moe.token_split_mode = "hybrid"}
// FOLDTP: shard.sharding @mesh split_axes = {{\[\[}}]]

// DP attention with EP MoE (SGLang): the whole model splits over every
// rank, as with --mesh ep=4 alone; nothing to slice.
// FOLDDP: shard.grid @mesh(shape = 4) {moe.axes = ["ep"], moe.roles = {attn_dp = array<i16: 0>, attn_tp = array<i16>, dp = array<i16>, ep = array<i16: 0>, tp = array<i16>}}
// FOLDDP: shard.sharding @mesh split_axes = {{\[\[}}0]]

// FOLDN: error: --attention-mesh tp=8 and --mesh ep=4: the attention mesh has 8 ranks, the MoE mesh 4; they must fold the same ranks
// NEST: error: --attention-mesh dp=3,tp=2 and --mesh ep=2,tp=3 do not nest
// FOLDETP: error: --attention-mesh dp=4 and --mesh ep=2,tp=2: attention dp would split the tokens over the MoE's tp ranks
// 24 tokens do not split 5 ways.
// FOLDSEQ: error: attention dp=5 runs attention on whole sequences: the model's tokens must split 5 ways by sequence (a batch divisible by 5); fold attention as tp instead (e.g. --attention-mesh tp=5), which takes any batch
// FOLDMODE: error: token-split 'moe' and an attention mesh: the attention mesh decides where tokens are split

// -----

// A data-dependent shape (NonZero's token count) outside a raised MoE layer:
// one error up front at the op that makes it, not one per op later.
func.func @nonzero_loop(%x: tensor<8x4xf32>, %m: tensor<8x2xi1>) -> tensor<?x4xf32> {
  %c0 = arith.constant 0 : index
  // expected-error @+1 {{a data-dependent shape (NonZero: tensor<2x?xi64>) outside a raised MoE layer cannot be partitioned (mesh ep=4,tp=3): plans need static shapes; it is not in an MoE layer that moe-raise-experts recognised}}
  %nz = moe.nonzero %m : tensor<8x2xi1> -> tensor<2x?xi64>
  %n = tensor.dim %nz, %c0 : tensor<2x?xi64>
  %e = tensor.empty(%n) : tensor<?x4xf32>
  return %e : tensor<?x4xf32>
}

// -----

// The same in a layer whose router moe-raise-experts left (moe.not_raised):
// the error names the router and the reason. The mask reads the router's
// indices from inside its region (as an imported OneHot does).
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @unraised(%p: tensor<8x4xf32>) -> tensor<2x?xi64> {
  %v, %i = moe.topk %p k 2 axis 1 {moe.not_raised = "found 3 of 4 experts"} : tensor<8x4xf32> -> tensor<8x2xf32>, tensor<8x2xi64>
  %e = tensor.empty() : tensor<8x2xi1>
  %mask = linalg.generic {indexing_maps = [#id], iterator_types = ["parallel", "parallel"]} outs(%e : tensor<8x2xi1>) {
  ^bb0(%o: i1):
    %r = linalg.index 0 : index
    %c = linalg.index 1 : index
    %x = tensor.extract %i[%r, %c] : tensor<8x2xi64>
    %zero = arith.constant 0 : i64
    %b = arith.cmpi eq, %x, %zero : i64
    linalg.yield %b : i1
  } -> tensor<8x2xi1>
  // expected-error @+1 {{a data-dependent shape (NonZero: tensor<2x?xi64>) outside a raised MoE layer cannot be partitioned (mesh ep=4,tp=3): plans need static shapes; the MoE layer routed by 'moe.topk' was not raised: found 3 of 4 experts}}
  %nz = moe.nonzero %mask : tensor<8x2xi1> -> tensor<2x?xi64>
  return %nz : tensor<2x?xi64>
}
