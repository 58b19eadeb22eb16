//===- MoEDialect.td - moe dialect definition --------------*- tablegen -*-===//
//
// The `moe` dialect holds what upstream MLIR dialects lack for
// Mixture-of-Experts models: routing, the experts block, and the ONNX ops with
// no upstream equivalent (TopK, NonZero, ScatterElements, ScatterND).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_DIALECT_MOE_MOEDIALECT_TD
#define MOEC_DIALECT_MOE_MOEDIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let summary = "Mixture-of-Experts routing, experts and data-dependent ops";
  let description = [{
    The `moe` dialect is the part of moec's IR that upstream MLIR does not
    provide. Dense ONNX operators import into `linalg`, `tensor`, `arith` and
    `math`; what is left lives here:

    * routing (`moe.route`): scores, top-k selection, group-limited routing,
      renormalisation and scaling of the routing weights;
    * the experts block (`moe.experts`): stacked expert FFN weights `[E, ...]`
      applied to the tokens routed to each expert;
    * ONNX operators with data-dependent results or scatters: `moe.topk`,
      `moe.nonzero`, `moe.scatter_elements`, `moe.scatter_nd`;
    * expert parallelism after sharding: `moe.dispatch` and `moe.combine`
      (the ragged all-to-alls), `moe.expert_compute` (a rank's local
      experts), `moe.local_weights` (the rank's slice of the stacked
      weights), with placements `#moe.placement<...>`.
  }];
  let cppNamespace = "::moec::moe";
  let useDefaultAttributePrinterParser = 1;
  let useDefaultTypePrinterParser = 1;
}

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

#endif // MOEC_DIALECT_MOE_MOEDIALECT_TD
