//===- Passes.td - moec transformation passes --------------*- tablegen -*-===//
//
// Passes on the imported IR, alphabetical within each banner.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_TRANSFORMS_PASSES_TD
#define MOEC_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Raising
//===----------------------------------------------------------------------===//

def MoERaiseExperts : Pass<"moe-raise-experts", "mlir::func::FuncOp"> {
  let summary = "Raise exported MoE layers into moe.route + moe.experts";
  let description = [{
    Finds the MoE layers that exporters write as a router, a top-k and a loop
    over the experts (torch.onnx of Hugging Face style blocks: one-hot expert
    mask, NonZero, Gather, the expert FFN, scaling by the routing weight,
    ScatterElements/ScatterND accumulation) and replaces each with one
    `moe.route` and one `moe.experts` whose weights are the experts' weights
    stacked into `[E, ...]` tensors. The loop's ops become dead and are
    removed.

    A region that looks like an MoE layer (a top-k over softmax or sigmoid
    router scores) but cannot be raised gets a warning that names the op and
    the reason; with `strict` it is an error.
  }];
  let dependentDialects = ["moec::moe::MoEDialect", "mlir::tensor::TensorDialect",
                           "mlir::arith::ArithDialect"];
  let options = [
    Option<"strict", "strict", "bool", /*default=*/"false",
           "Fail when an MoE-like region cannot be raised">
  ];
}

#endif // MOEC_TRANSFORMS_PASSES_TD
