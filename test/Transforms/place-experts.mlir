// moe-place-experts: every strategy, uneven and redundant placements, errors.
// The seed's example: 8 experts on 4 GPUs, two each.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts | FileCheck %s --check-prefix=CONTIG
// CONTIG: moe.experts {{.*}}moe.placement = #moe.placement<num_experts = 8, ranks = 4, slots_per_rank = 2, slots = [0, 1, 2, 3, 4, 5, 6, 7], strategy = "contiguous">

// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts=strategy=round-robin | FileCheck %s --check-prefix=RR
// RR: slots = [0, 4, 1, 5, 2, 6, 3, 7], strategy = "round-robin"

// Balanced from token counts [100, 10 x 6, 50]: heaviest first onto the least
// loaded rank with a free slot: e0->r0, e7->r1, e1->r2, e2->r3, e3->r2,
// e4->r3, e5->r1, e6->r0; loads 110, 60, 20, 20.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts="strategy=balanced load=%S/Inputs/load-skewed.json" | FileCheck %s --check-prefix=BAL
// BAL: slots = [0, 6, 5, 7, 1, 3, 2, 4], strategy = "balanced"

// Two redundant experts: both go to the hottest, e0 (3 replicas of 33.3);
// 10 slots on 4 ranks = 3 per rank; no rank holds e0 twice; loads 50, 53.3,
// 53.3, 53.3.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts="redundant-experts=2 load=%S/Inputs/load-skewed.json" 2>&1 | FileCheck %s --check-prefix=RED
// RED: warning: uneven placement: 10 expert slots on 4 EP ranks, which hold 1, 3, 3, 3 experts
// RED: slots_per_rank = 3, slots = [7, -1, -1, 0, 1, 4, 0, 2, 5, 0, 3, 6], strategy = "redundant"

// More EP ranks than experts, filled with replicas (all loads equal).
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=12" --moe-place-experts=redundant-experts=4 | FileCheck %s --check-prefix=RED12
// RED12: ranks = 12, slots_per_rank = 1, slots = [4, 5, 6, 7, 0, 0, 1, 1, 2, 2, 3, 3]

// Uneven: 8 experts on 3 ranks hold 3, 3, 2; the last slot is empty.
// RUN: moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=dp=2,ep=3" --moe-place-experts 2>&1 | FileCheck %s --check-prefix=UNEVEN
// UNEVEN: warning: uneven placement: 8 expert slots on 3 EP ranks, which hold 3, 3, 2 experts
// UNEVEN: slots_per_rank = 3, slots = [0, 1, 2, 3, 4, 5, 6, 7, -1], strategy = "contiguous"

// Errors.
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=12" --moe-place-experts 2>&1 | FileCheck %s --check-prefix=TOOMANY
// TOOMANY: error: ep=12 exceeds the 8 experts of MoE layer 0: some EP ranks would hold no expert
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-place-experts 2>&1 | FileCheck %s --check-prefix=NOGRID
// NOGRID: error: moe-place-experts needs the device grid: run moe-shard first
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts=strategy=balanced 2>&1 | FileCheck %s --check-prefix=NOLOAD
// NOLOAD: error: placement strategy 'balanced' needs a load file
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts=strategy=bogus 2>&1 | FileCheck %s --check-prefix=BOGUS
// BOGUS: error: unknown placement strategy 'bogus' (expected contiguous, round-robin or balanced)
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts=load=%S/Inputs/load-two-layers.json 2>&1 | FileCheck %s --check-prefix=LAYERS
// LAYERS: error: expert load file '{{.*}}load-two-layers.json' has 2 layers, the model has 1 MoE layers
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts=load=%S/Inputs/load-three-experts.json 2>&1 | FileCheck %s --check-prefix=COUNTS
// COUNTS: error: expert load file '{{.*}}load-three-experts.json' gives 3 expert counts for layer 0, which has 8 experts
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts=load=%S/Inputs/load-bad.json 2>&1 | FileCheck %s --check-prefix=JSON
// JSON: error: expert load file '{{.*}}load-bad.json' is not valid JSON
// RUN: not moe-opt %S/Inputs/moe-layer.mlir --moe-shard="mesh=ep=4" --moe-place-experts=load=%t.missing.json 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: error: cannot read expert load file '{{.*}}missing.json'
