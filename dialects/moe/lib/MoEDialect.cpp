//===- MoEDialect.cpp - moe dialect registration --------------------------===//

#include "moec/Dialect/MoE/MoEDialect.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace moec::moe;

#include "moec/Dialect/MoE/MoEOpsDialect.cpp.inc"

#include "moec/Dialect/MoE/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "moec/Dialect/MoE/MoEAttrs.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "moec/Dialect/MoE/MoETypes.cpp.inc"

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "moec/Dialect/MoE/MoEOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "moec/Dialect/MoE/MoEAttrs.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "moec/Dialect/MoE/MoETypes.cpp.inc"
      >();
}
