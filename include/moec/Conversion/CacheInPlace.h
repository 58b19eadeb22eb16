//===- CacheInPlace.h - a decode plan's KV cache grown in place -*- C++ -*-===//
//
// A decode step reads its cache `past` [B, kv, P, D] and writes `present`
// [B, kv, P + c, D], past with the step's c new rows appended (an ONNX
// Concat). Step 1 of docs/design/dynamic-tokens.md §2.9 keeps the two
// outside the arena, in two buffers the executor swaps. Here (step 2) the
// pair becomes one buffer: past and present are both stored at the strides
// of the box (present's maximum), so past's rows are already where present
// needs them, and the Concat's kernel writes only the c new rows.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_CONVERSION_CACHEINPLACE_H
#define MOEC_CONVERSION_CACHEINPLACE_H

#include "moert/Plan.h"

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace moec {

/// Boxes (moert::Value::boxed) each cache pair of `plan` (moert::cachePairs)
/// whose two roots lie outside the arena, when
///  - one kernel step writes present, from past and one static operand of
///    c rows, and its kernel in `module` is a concatenation of the two along
///    the cache's symbolic dim (OutlineKernels' form of tensor.concat);
///  - every other step that reads past, present or a view of them is a
///    kernel step, and the views keep the length dim apart (reshapes that
///    only add or drop dims of size 1).
/// Past, present and their views then get present's maximum along that dim
/// (the box). Other pairs stay as they are (swapped); `skipped` says why
/// for each, by input name.
void boxCachePairs(moert::Plan &plan, mlir::ModuleOp module,
                   std::vector<std::string> *skipped = nullptr);

/// Whether kernel step `s` of a plan after boxCachePairs appends rows to a
/// boxed cache: its one output is a boxed root and input `past` (set) is
/// boxed; `rows` is the other input.
bool appendsToCache(const moert::Plan &plan, const moert::Step &s, int &past,
                    int &rows);

} // namespace moec

#endif // MOEC_CONVERSION_CACHEINPLACE_H
