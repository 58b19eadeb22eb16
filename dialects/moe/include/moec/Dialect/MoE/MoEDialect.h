//===- MoEDialect.h - moe dialect -------------------------------*- C++ -*-===//
//
// Declares the `moe` dialect. Ops are in MoEOps.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_DIALECT_MOE_MOEDIALECT_H
#define MOEC_DIALECT_MOE_MOEDIALECT_H

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"

#include "moec/Dialect/MoE/MoEOpsDialect.h.inc"

#include "moec/Dialect/MoE/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "moec/Dialect/MoE/MoEAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "moec/Dialect/MoE/MoETypes.h.inc"

#endif // MOEC_DIALECT_MOE_MOEDIALECT_H
