// RUN: moe-opt %s -split-input-file -verify-diagnostics
// One case per verifier error of the moe dialect.

func.func @route_rank(%l: tensor<16xf32>) {
  // expected-error @+1 {{logits must be [tokens, experts], got rank 1}}
  %w, %i = moe.route %l top_k 2 : tensor<16xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_k_too_big(%l: tensor<16x4xf32>) {
  // expected-error @+1 {{top_k (5) exceeds the number of experts (4)}}
  %w, %i = moe.route %l top_k 5 : tensor<16x4xf32> -> tensor<16x5xf32>, tensor<16x5xi64>
  return
}

// -----

func.func @route_k_zero(%l: tensor<16x4xf32>) {
  // expected-error @+1 {{top_k must be >= 1, got 0}}
  %w, %i = moe.route %l top_k 0 : tensor<16x4xf32> -> tensor<16x0xf32>, tensor<16x0xi64>
  return
}

// -----

func.func @route_result_shape(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{results must be [tokens, top_k] = [16, 2]}}
  %w, %i = moe.route %l top_k 2 : tensor<16x8xf32> -> tensor<8x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_bias_shape(%l: tensor<16x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{bias must be [experts] = [8]}}
  %w, %i = moe.route %l bias %b top_k 2 : tensor<16x8xf32>, tensor<4xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_groups_order(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{need 1 <= topk_groups <= num_groups, got topk_groups=3 num_groups=2}}
  %w, %i = moe.route %l top_k 2 {num_groups = 2 : i64, topk_groups = 3 : i64} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_groups_divide(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{num_groups (3) must divide the number of experts (8)}}
  %w, %i = moe.route %l top_k 2 {num_groups = 3 : i64, topk_groups = 1 : i64} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_groups_k(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{top_k (3) exceeds the experts in the 1 selected groups}}
  %w, %i = moe.route %l top_k 3 {num_groups = 4 : i64, topk_groups = 1 : i64} : tensor<16x8xf32> -> tensor<16x3xf32>, tensor<16x3xi64>
  return
}

// -----

func.func @route_top2_sum(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{group_score top2_sum needs >= 2 experts per group}}
  %w, %i = moe.route %l top_k 2 {num_groups = 8 : i64, topk_groups = 2 : i64, group_score = #moe<group_score top2_sum>} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_scale(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{scaling_factor must be positive}}
  %w, %i = moe.route %l top_k 2 {scaling_factor = 0.0 : f64} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @experts_tokens_rank(%x: tensor<2x16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{tokens must be [tokens, hidden]}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<2x16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_idx_weights(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x3xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{indices and weights must both be [tokens, top_k]}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x3xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_rows(%x: tensor<16x64xf32>, %i: tensor<8x2xi64>, %w: tensor<8x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{indices have 8 rows but there are 16 tokens}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<8x2xi64>, tensor<8x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_weight_rank(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{w_gate must be [E, H, F] and w_down [E, F, H]}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_hidden(%x: tensor<16x32xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{w_gate hidden size 64 does not match the tokens' 32}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x32xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x32xf32>
  return
}

// -----

func.func @experts_down(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x64x128xf32>) {
  // expected-error @+1 {{w_down must be [E, F, H] = [8, 128, 64]}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x64x128xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_up(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w3: tensor<8x64x64xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{w_up must have the shape of w_gate}}
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 {activation = #moe<activation silu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x64x64xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_bias_up_alone(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>, %b: tensor<8x128xf32>) {
  // expected-error @+1 {{bias_up given without w_up}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 bias_up %b {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>, tensor<8x128xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_bias_shape(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>, %b: tensor<8x64xf32>) {
  // expected-error @+1 {{bias_gate must be [8, 128]}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 bias_gate %b {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>, tensor<8x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_result(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{result must be [tokens, hidden]}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x128xf32>
  return
}

// -----

func.func @experts_offset(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{expert_offset must be >= 0}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>, expert_offset = -1 : i64} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @topk_axis(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{axis 2 is out of range for rank 2}}
  %v, %i = moe.topk %x k 2 axis 2 : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi64>
  return
}

// -----

func.func @topk_k(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{k (9) exceeds the axis size 8}}
  %v, %i = moe.topk %x k 9 axis 1 : tensor<4x8xf32> -> tensor<4x9xf32>, tensor<4x9xi64>
  return
}

// -----

func.func @topk_k_zero(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{k must be >= 1, got 0}}
  %v, %i = moe.topk %x k 0 axis 1 : tensor<4x8xf32> -> tensor<4x0xf32>, tensor<4x0xi64>
  return
}

// -----

func.func @topk_result_rank(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{results must have rank 2}}
  %v, %i = moe.topk %x k 2 axis 1 : tensor<4x8xf32> -> tensor<8xf32>, tensor<4x2xi64>
  return
}

// -----

func.func @topk_result_shape(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{does not match input}}
  %v, %i = moe.topk %x k 2 axis 1 : tensor<4x8xf32> -> tensor<4x3xf32>, tensor<4x2xi64>
  return
}

// -----

func.func @topk_elt(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{values must have the input's element type}}
  %v, %i = moe.topk %x k 2 axis 1 : tensor<4x8xf32> -> tensor<4x2xf16>, tensor<4x2xi64>
  return
}

// -----

func.func @nonzero_shape(%x: tensor<4x8xi1>) {
  // expected-error @+1 {{result must be [2, N]}}
  %n = moe.nonzero %x : tensor<4x8xi1> -> tensor<3x?xi64>
  return
}

// -----

func.func @nonzero_too_many(%x: tensor<4x8xi1>) {
  // expected-error @+1 {{result has more columns than the input has elements}}
  %n = moe.nonzero %x : tensor<4x8xi1> -> tensor<2x33xi64>
  return
}

// -----

func.func @scatter_axis(%d: tensor<16x8xf32>, %i: tensor<4x8xi64>, %u: tensor<4x8xf32>) {
  // expected-error @+1 {{axis 2 is out of range for rank 2}}
  %r = moe.scatter_elements %d, %i, %u axis 2 : (tensor<16x8xf32>, tensor<4x8xi64>, tensor<4x8xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_rank(%d: tensor<16x8xf32>, %i: tensor<32xi64>, %u: tensor<32xf32>) {
  // expected-error @+1 {{data, indices and updates must have the same rank}}
  %r = moe.scatter_elements %d, %i, %u axis 0 : (tensor<16x8xf32>, tensor<32xi64>, tensor<32xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_shape(%d: tensor<16x8xf32>, %i: tensor<4x8xi64>, %u: tensor<4x4xf32>) {
  // expected-error @+1 {{must have the same shape}}
  %r = moe.scatter_elements %d, %i, %u axis 0 : (tensor<16x8xf32>, tensor<4x8xi64>, tensor<4x4xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_result(%d: tensor<16x8xf32>, %i: tensor<4x8xi64>, %u: tensor<4x8xf32>) {
  // expected-error @+1 {{updates and result must match data}}
  %r = moe.scatter_elements %d, %i, %u axis 0 : (tensor<16x8xf32>, tensor<4x8xi64>, tensor<4x8xf32>) -> tensor<16x8xf16>
  return
}

// -----

func.func @scatter_nd_q(%d: tensor<16x8xf32>, %i: tensor<4x3xi64>, %u: tensor<4xf32>) {
  // expected-error @+1 {{index tuples of length 3 exceed the data rank 2}}
  %r = moe.scatter_nd %d, %i, %u : (tensor<16x8xf32>, tensor<4x3xi64>, tensor<4xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_nd_dyn_q(%d: tensor<16x8xf32>, %i: tensor<4x?xi64>, %u: tensor<4xf32>) {
  // expected-error @+1 {{the last dimension of indices must be static}}
  %r = moe.scatter_nd %d, %i, %u : (tensor<16x8xf32>, tensor<4x?xi64>, tensor<4xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_nd_upd_rank(%d: tensor<16x8xf32>, %i: tensor<4x1xi64>, %u: tensor<4xf32>) {
  // expected-error @+1 {{updates must have rank 2}}
  %r = moe.scatter_nd %d, %i, %u : (tensor<16x8xf32>, tensor<4x1xi64>, tensor<4xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_nd_upd_shape(%d: tensor<16x8xf32>, %i: tensor<4x1xi64>, %u: tensor<4x7xf32>) {
  // expected-error @+1 {{do not match indices}}
  %r = moe.scatter_nd %d, %i, %u : (tensor<16x8xf32>, tensor<4x1xi64>, tensor<4x7xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @route_scale_nan(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{scaling_factor must be positive, got nan}}
  %w, %i = moe.route %l top_k 2 {scaling_factor = 0x7FF8000000000000 : f64} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_scale_negative(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{scaling_factor must be positive, got -1.5}}
  %w, %i = moe.route %l top_k 2 {scaling_factor = -1.5 : f64} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_indices_shape(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{results must be [tokens, top_k] = [16, 2], got 'tensor<16x3xi64>'}}
  %w, %i = moe.route %l top_k 2 : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x3xi64>
  return
}

// -----

func.func @route_int_logits(%l: tensor<16x8xi32>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of floating-point values}}
  %w, %i = moe.route %l top_k 2 : tensor<16x8xi32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @experts_up_rank(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w3: tensor<64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{w_up must have the shape of w_gate 'tensor<8x64x128xf32>', got 'tensor<64x128xf32>'}}
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 {activation = #moe<activation silu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_bias_up_shape(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w3: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>, %b: tensor<8x64xf32>) {
  // expected-error @+1 {{bias_up must be [8, 128], got 'tensor<8x64xf32>'}}
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 bias_up %b {activation = #moe<activation silu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>, tensor<8x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_bias_down_shape(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>, %b: tensor<4x64xf32>) {
  // expected-error @+1 {{bias_down must be [8, 64], got 'tensor<4x64xf32>'}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 bias_down %b {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>, tensor<4x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_result_elt(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{result must have the tokens' element type 'f32', got 'f16'}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf16>
  return
}

// -----

func.func @experts_float_indices(%x: tensor<16x64xf32>, %i: tensor<16x2xf32>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{operand #1 must be ranked tensor of 32-bit signless integer or 64-bit signless integer values}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation relu>} : (tensor<16x64xf32>, tensor<16x2xf32>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @topk_i32_indices(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{result #1 must be ranked tensor of 64-bit signless integer values}}
  %v, %i = moe.topk %x k 2 axis 1 : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi32>
  return
}

// -----

func.func @topk_negative_axis(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{axis -1 is out of range for rank 2}}
  %v, %i = moe.topk %x k 2 axis -1 : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xi64>
  return
}

// -----

func.func @scatter_negative_axis(%d: tensor<16x8xf32>, %i: tensor<4x8xi64>, %u: tensor<4x8xf32>) {
  // expected-error @+1 {{axis -1 is out of range for rank 2}}
  %r = moe.scatter_elements %d, %i, %u axis -1 : (tensor<16x8xf32>, tensor<4x8xi64>, tensor<4x8xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_indices_exceed_data(%d: tensor<16x8xf32>, %i: tensor<4x9xi64>, %u: tensor<4x9xf32>) {
  // expected-error @+1 {{indices dim 1 (9) exceeds data dim 1 (8) off the axis}}
  %r = moe.scatter_elements %d, %i, %u axis 0 : (tensor<16x8xf32>, tensor<4x9xi64>, tensor<4x9xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_updates_elt(%d: tensor<16x8xf32>, %i: tensor<4x8xi64>, %u: tensor<4x8xf16>) {
  // expected-error @+1 {{updates and result must match data 'tensor<16x8xf32>'}}
  %r = moe.scatter_elements %d, %i, %u axis 0 : (tensor<16x8xf32>, tensor<4x8xi64>, tensor<4x8xf16>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_nd_scalar_indices(%d: tensor<16x8xf32>, %i: tensor<i64>, %u: tensor<8xf32>) {
  // expected-error @+1 {{indices must have rank >= 1}}
  %r = moe.scatter_nd %d, %i, %u : (tensor<16x8xf32>, tensor<i64>, tensor<8xf32>) -> tensor<16x8xf32>
  return
}

// -----

func.func @scatter_nd_result(%d: tensor<16x8xf32>, %i: tensor<4x1xi64>, %u: tensor<4x8xf32>) {
  // expected-error @+1 {{updates and result must match data 'tensor<16x8xf32>'}}
  %r = moe.scatter_nd %d, %i, %u : (tensor<16x8xf32>, tensor<4x1xi64>, tensor<4x8xf32>) -> tensor<16x4xf32>
  return
}

// -----

// expected-error @+1 {{placement has 3 slots, expected ranks * slots_per_rank = 4}}
func.func @placement_size() attributes {p = #moe.placement<num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2], strategy = "contiguous">} {
  return
}

// -----

// expected-error @+1 {{placement slot holds expert 3, outside [-1, 3)}}
func.func @placement_range() attributes {p = #moe.placement<num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, 3], strategy = "contiguous">} {
  return
}

// -----

// expected-error @+1 {{placement holds no replica of expert 2}}
func.func @placement_missing() attributes {p = #moe.placement<num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 1, -1], strategy = "contiguous">} {
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @dispatch_rows(%x: tensor<4x16xf32>, %i: tensor<5x2xi64>) {
  // expected-error @+1 {{indices have 5 rows but there are 4 tokens}}
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<5x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @dispatch_width(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>) {
  // expected-error @+1 {{recv must hold rows of the tokens' type and width}}
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x8xf32>, !moe.dispatch
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @dispatch_axis(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>) {
  // expected-error @+1 {{grid axis 1 is out of range for grid @mesh of rank 1}}
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [1] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  return
}

// -----

func.func @dispatch_grid(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>) {
  // expected-error @+1 {{grid @nowhere is not defined}}
  %r, %h = moe.dispatch %x, %i on @nowhere grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @dispatch_capacity(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>) {
  // expected-error @+1 {{capacity must be -1 (dropless) or >= 0}}
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 {capacity = -2 : i64} : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @compute_slots(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %g: tensor<2x16x8xf32>, %d: tensor<2x8x16xf32>) {
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  // expected-error @+1 {{weights stack 2 experts but the dispatch's placement has 1 slots per rank}}
  %y = moe.expert_compute %r, %h gate %g down %d {activation = #moe<activation relu>} : (tensor<?x16xf32>, !moe.dispatch, tensor<2x16x8xf32>, tensor<2x8x16xf32>) -> tensor<?x16xf32>
  return
}

// -----

func.func @compute_down(%r: tensor<?x16xf32>, %h: !moe.dispatch, %g: tensor<1x16x8xf32>, %d: tensor<1x4x16xf32>) {
  // expected-error @+1 {{w_down must be [S, F, H] = [1, 8, 16], got 'tensor<1x4x16xf32>'}}
  %y = moe.expert_compute %r, %h gate %g down %d {activation = #moe<activation relu>} : (tensor<?x16xf32>, !moe.dispatch, tensor<1x16x8xf32>, tensor<1x4x16xf32>) -> tensor<?x16xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @combine_weights(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %y: tensor<?x16xf32>, %w: tensor<4x3xf32>) {
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  // expected-error @+1 {{weights must be shaped like the dispatch's indices 'tensor<4x2xi64>', got 'tensor<4x3xf32>'}}
  %o = moe.combine %y, %h, %w : tensor<?x16xf32>, !moe.dispatch, tensor<4x3xf32> -> tensor<4x16xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @dispatch_weights_shape(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %w: tensor<4x1xf32>) {
  // expected-error @+1 {{weights must be shaped like the indices 'tensor<4x2xi64>', got 'tensor<4x1xf32>'}}
  %r, %h = moe.dispatch %x, %i weights %w on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64>, tensor<4x1xf32> -> tensor<?x16xf32>, !moe.dispatch
  return
}

// -----

// The routing weight is applied once: by a dispatch with weights, or by
// its combine.
shard.grid @mesh(shape = 2)
func.func @combine_weights_twice(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %y: tensor<?x16xf32>, %w: tensor<4x2xf32>) {
  %r, %h = moe.dispatch %x, %i weights %w on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64>, tensor<4x2xf32> -> tensor<?x16xf32>, !moe.dispatch
  // expected-error @+1 {{takes weights, but its dispatch scaled the rows it sent by the routing weights already}}
  %o = moe.combine %y, %h, %w : tensor<?x16xf32>, !moe.dispatch, tensor<4x2xf32> -> tensor<4x16xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @combine_weights_never(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %y: tensor<?x16xf32>) {
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  // expected-error @+1 {{needs the routing weights: its dispatch sent unscaled rows}}
  %o = moe.combine %y, %h : tensor<?x16xf32>, !moe.dispatch -> tensor<4x16xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @combine_rows(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %w: tensor<4x2xf32>, %y: tensor<?x16xf32>) {
  %r, %h = moe.dispatch %x, %i weights %w on @mesh grid_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> max_rows = 8 : tensor<4x16xf32>, tensor<4x2xi64>, tensor<4x2xf32> -> tensor<?x16xf32>, !moe.dispatch
  // expected-error @+1 {{result has 3 rows but the dispatch has 4 tokens}}
  %o = moe.combine %y, %h : tensor<?x16xf32>, !moe.dispatch -> tensor<3x16xf32>
  return
}

// -----

func.func @combine_result(%y: tensor<?x16xf32>, %h: !moe.dispatch, %w: tensor<4x2xf32>) {
  // expected-error @+1 {{result must be [T, H] = [4, 16], got 'tensor<4x8xf32>'}}
  %o = moe.combine %y, %h, %w : tensor<?x16xf32>, !moe.dispatch, tensor<4x2xf32> -> tensor<4x8xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @local_slots(%w: tensor<2x16x8xf32>) {
  // expected-error @+1 {{result must have 1 slots, got 2}}
  %l = moe.local_weights %w on @mesh ep_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> : tensor<2x16x8xf32> -> tensor<2x16x8xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @local_experts(%w: tensor<3x16x8xf32>) {
  // expected-error @+1 {{weights stack 3 experts, the placement 2}}
  %l = moe.local_weights %w on @mesh ep_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> : tensor<3x16x8xf32> -> tensor<1x16x8xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @local_keep(%w: tensor<2x16x8xf32>) {
  // expected-error @+1 {{dim 2 must be kept, got 'tensor<1x16x4xf32>'}}
  %l = moe.local_weights %w on @mesh ep_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> : tensor<2x16x8xf32> -> tensor<1x16x4xf32>
  return
}

// -----

shard.grid @mesh(shape = 2x2)
func.func @tp_slice_blocks(%w: tensor<64x96xf32>) {
  // expected-error @+1 {{dim 1 of size 96 must split into 2 blocks of 32}}
  %s = moe.tp_slice %w on @mesh grid_axes = [1] dim = 1 : tensor<64x96xf32> -> tensor<64x32xf32>
  return
}

// -----

shard.grid @mesh(shape = 2x2)
func.func @tp_slice_keep(%w: tensor<64x96xf32>) {
  // expected-error @+1 {{dim 0 must be kept, got 'tensor<32x48xf32>'}}
  %s = moe.tp_slice %w on @mesh grid_axes = [1] dim = 1 : tensor<64x96xf32> -> tensor<32x48xf32>
  return
}

// -----

shard.grid @mesh(shape = 2x2)
func.func @local_group(%w: tensor<2x16x8xf32>) {
  // expected-error @+1 {{the placement is for 2 ranks, but the EP group over grid axes [0, 1] has 4}}
  %l = moe.local_weights %w on @mesh ep_axes = [0, 1] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> : tensor<2x16x8xf32> -> tensor<1x16x8xf32>
  return
}

// -----

shard.grid @mesh(shape = 2x2)
func.func @local_twice(%w: tensor<2x16x8xf32>) {
  // expected-error @+1 {{grid axis 1 is used twice}}
  %l = moe.local_weights %w on @mesh ep_axes = [1] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> {split_axes = array<i16: 1>, split_dim = 2 : i64} : tensor<2x16x8xf32> -> tensor<1x16x4xf32>
  return
}

// -----

shard.grid @mesh(shape = 2x2)
func.func @tp_slice_axes(%w: tensor<64x96xf32>) {
  // expected-error @+1 {{needs at least one grid axis}}
  %s = moe.tp_slice %w on @mesh grid_axes = [] dim = 1 : tensor<64x96xf32> -> tensor<64x48xf32>
  return
}

// -----

shard.grid @mesh(shape = 2x2)
func.func @tp_slice_two_axes(%w: tensor<64x96xf32>) {
  // expected-error @+1 {{dim 1 of size 96 must split into 4 blocks of 48}}
  %s = moe.tp_slice %w on @mesh grid_axes = [0, 1] dim = 1 : tensor<64x96xf32> -> tensor<64x48xf32>
  return
}

// -----

func.func @experts_params_other_activation(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w3: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{alpha, beta and limit are parameters of clamped_swiglu, not of silu}}
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 {activation = #moe<activation silu>, limit = 7.0 : f64} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_clamped_needs_up(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{clamped_swiglu needs w_up}}
  %y = moe.experts %x, %i, %w gate %w1 down %w2 {activation = #moe<activation clamped_swiglu>, alpha = 1.702 : f64, beta = 1.0 : f64, limit = 7.0 : f64} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @experts_clamped_bad_limit(%x: tensor<16x64xf32>, %i: tensor<16x2xi64>, %w: tensor<16x2xf32>, %w1: tensor<8x64x128xf32>, %w3: tensor<8x64x128xf32>, %w2: tensor<8x128x64xf32>) {
  // expected-error @+1 {{limit must be positive and finite, got -1}}
  %y = moe.experts %x, %i, %w gate %w1 up %w3 down %w2 {activation = #moe<activation clamped_swiglu>, limit = -1.0 : f64} : (tensor<16x64xf32>, tensor<16x2xi64>, tensor<16x2xf32>, tensor<8x64x128xf32>, tensor<8x64x128xf32>, tensor<8x128x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @compute_params_other_activation(%r: tensor<?x64xf32>, %h: !moe.dispatch, %w1: tensor<2x64x128xf32>, %w2: tensor<2x128x64xf32>) {
  // expected-error @+1 {{alpha, beta and limit are parameters of clamped_swiglu, not of relu}}
  %y = moe.expert_compute %r, %h gate %w1 down %w2 {activation = #moe<activation relu>, alpha = 2.0 : f64} : (tensor<?x64xf32>, !moe.dispatch, tensor<2x64x128xf32>, tensor<2x128x64xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @route_eps_without_renormalize(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{renorm_eps without renormalize}}
  %w, %i = moe.route %l top_k 2 {renorm_eps = 1.0e-6 : f64} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @route_eps_negative(%l: tensor<16x8xf32>) {
  // expected-error @+1 {{renorm_eps must be finite and >= 0, got -1}}
  %w, %i = moe.route %l top_k 2 {renormalize = true, renorm_eps = -1.0 : f64} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi64>
  return
}

// -----

func.func @dequantize_bits(%q: tensor<24x2x16xui8>, %s: tensor<24x2xf32>) {
  // expected-error @+1 {{bits 3 must be 2, 4 or 8}}
  %w = moe.dequantize %q, %s bits 3 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
  return
}

// -----

func.func @dequantize_block(%q: tensor<24x2x12xui8>, %s: tensor<24x2xf32>) {
  // expected-error @+1 {{block_size 3 must be positive and fill whole bytes}}
  %w = moe.dequantize %q, %s bits 2 block_size 3 k 6 : tensor<24x2x12xui8>, tensor<24x2xf32> -> tensor<6x24xf32>
  return
}

// -----

func.func @dequantize_codes(%q: tensor<24x3x16xui8>, %s: tensor<24x2xf32>) {
  // expected-error @+1 {{codes must be [..., N, 2, 16] for k 64, block_size 32 and bits 4}}
  %w = moe.dequantize %q, %s bits 4 block_size 32 k 64 : tensor<24x3x16xui8>, tensor<24x2xf32> -> tensor<64x24xf32>
  return
}

// -----

func.func @dequantize_scales(%q: tensor<24x2x16xui8>, %s: tensor<24x3xf32>) {
  // expected-error @+1 {{scales must be [24, 2]}}
  %w = moe.dequantize %q, %s bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x3xf32> -> tensor<64x24xf32>
  return
}

// -----

func.func @dequantize_zp(%q: tensor<24x2x16xui8>, %s: tensor<24x2xf32>, %z: tensor<24x1xf32>) {
  // expected-error @+1 {{zero_points must be shaped like the scales}}
  %w = moe.dequantize %q, %s zero_points %z bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32>, tensor<24x1xf32> -> tensor<64x24xf32>
  return
}

// -----

func.func @dequantize_result(%q: tensor<24x2x16xui8>, %s: tensor<24x2xf32>) {
  // expected-error @+1 {{result must be [64, 24]}}
  %w = moe.dequantize %q, %s bits 4 block_size 32 k 64 : tensor<24x2x16xui8>, tensor<24x2xf32> -> tensor<24x64xf32>
  return
}

// -----

// Stacked experts keep their leading dim in the scales and the result.
func.func @dequantize_stacked_scales(%q: tensor<8x24x2x16xui8>, %s: tensor<24x2xf32>) {
  // expected-error @+1 {{scales must be [8, 24, 2]}}
  %w = moe.dequantize %q, %s bits 4 block_size 32 k 64 : tensor<8x24x2x16xui8>, tensor<24x2xf32> -> tensor<8x64x24xf32>
  return
}

// -----

func.func @dequantize_stacked_result(%q: tensor<8x24x2x16xui8>, %s: tensor<8x24x2xf32>) {
  // expected-error @+1 {{result must be [8, 64, 24]}}
  %w = moe.dequantize %q, %s bits 4 block_size 32 k 64 : tensor<8x24x2x16xui8>, tensor<8x24x2xf32> -> tensor<64x24xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @local_weights_type(%w: tensor<2x16x8xui8>) {
  // expected-error @+1 {{result must have the weights' element type}}
  %l = moe.local_weights %w on @mesh ep_axes = [0] placement = <num_experts = 2, ranks = 2, slots_per_rank = 1, slots = [0, 1], strategy = "contiguous"> : tensor<2x16x8xui8> -> tensor<1x16x8xf32>
  return
}

// -----

shard.grid @mesh(shape = 2)
func.func @dequantize_after_slots(%x: tensor<4x16xf32>, %i: tensor<4x2xi64>, %q: tensor<3x16x1x8xui8>, %s: tensor<3x16x1xf32>) {
  %r, %h = moe.dispatch %x, %i on @mesh grid_axes = [0] placement = <num_experts = 3, ranks = 2, slots_per_rank = 2, slots = [0, 1, 2, -1], strategy = "contiguous"> max_rows = 16 : tensor<4x16xf32>, tensor<4x2xi64> -> tensor<?x16xf32>, !moe.dispatch
  // expected-error @+1 {{codes stack 3 experts; the dispatch's ranks hold 2}}
  %w = moe.dequantize %q, %s after %h bits 4 block_size 16 k 16 : tensor<3x16x1x8xui8>, tensor<3x16x1xf32> -> tensor<3x16x16xf32>
  return
}

// -----

func.func @dequantize_after_rank(%q: tensor<16x1x8xui8>, %s: tensor<16x1xf32>, %h: !moe.dispatch) {
  // expected-error @+1 {{with a dispatch, codes must be one rank's stacked experts [slots, N, blocks, blob]}}
  %w = moe.dequantize %q, %s after %h bits 4 block_size 16 k 16 : tensor<16x1x8xui8>, tensor<16x1xf32> -> tensor<16x16xf32>
  return
}

// -----

func.func @token_count_kind() -> index {
  // expected-error @+1 {{kind must be 0 (t), 1 (tb) or 2 (T), got 3}}
  %t = moe.token_count 3
  return %t : index
}
