//===- ImportIndexing.cpp - top-k, data-dependent and scatter ONNX ops ----===//

#include "GraphImporter.h"

using namespace mlir;
using namespace moec::onnximport;

void moec::onnximport::addIndexingOps(OpTable &) {}
