//===- ImportMicrosoft.cpp - com.microsoft contrib ops --------------------===//

#include "GraphImporter.h"

using namespace mlir;
using namespace moec::onnximport;

void moec::onnximport::addMicrosoftOps(OpTable &) {}
