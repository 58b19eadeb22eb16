//===- PlanManifest.h - plan <-> FlatBuffers manifest (internal) -*- C++
//-*-===//
//
// The in-memory Plan to and from the FlatBuffer of runtime/schema/plan.fbs
// (PlanManifest.cpp), for PlanFile.cpp's writer and loader.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_CORE_PLANMANIFEST_H
#define MOERT_CORE_PLANMANIFEST_H

#include "moert/Plan.h"

#include <string>

namespace moert::manifest {

/// The manifest of `plan` in `b` (not finished).
flatbuffers::Offset<fb::Plan> toFb(const Plan &plan,
                                   flatbuffers::FlatBufferBuilder &b);

/// The first vector of 8-byte elements in `f` that is not 8-byte aligned
/// (FlatBuffers' verifier checks only a vector's 4-byte length), named for
/// the message; "" when there is none.
std::string misalignedVector(const fb::Plan &f);

/// `f` (verified) into `p`; false with `error` set when a field is out of
/// range.
bool fromFb(const fb::Plan &f, Plan &p, std::string &error);

} // namespace moert::manifest

#endif // MOERT_CORE_PLANMANIFEST_H
