//===- ImportReduction.cpp - reductions, contractions, normalization ------===//

#include "GraphImporter.h"

using namespace mlir;
using namespace moec::onnximport;

void moec::onnximport::addReductionOps(OpTable &) {}
