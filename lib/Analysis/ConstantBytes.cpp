//===- ConstantBytes.cpp - the bytes of a constant tensor -----------------===//

#include "moec/Analysis/ConstantBytes.h"
#include "moec/Analysis/Weights.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectResourceBlobManager.h"

using namespace mlir;

FailureOr<std::vector<char>> moec::constantBytes(Attribute a) {
  if (auto r = dyn_cast<DenseResourceElementsAttr>(a)) {
    AsmResourceBlob *blob = r.getRawHandle().getBlob();
    if (!blob) {
      // A lazy weight: realized whole here (callers that stream read it in
      // windows with readConstant instead).
      if (!lazyWeightOf(a))
        return failure();
      auto t = cast<RankedTensorType>(r.getType());
      std::vector<char> out(size_t(t.getNumElements()) *
                            (t.getElementTypeBitWidth() / 8));
      if (failed(readConstant(a, 0, out.size(), out.data())))
        return failure();
      return out;
    }
    ArrayRef<char> d = blob->getData();
    return std::vector<char>(d.begin(), d.end());
  }
  auto d = dyn_cast<DenseElementsAttr>(a);
  if (!d)
    return failure();
  auto t = cast<RankedTensorType>(d.getType());
  std::vector<char> out;
  if (t.getElementType().isInteger(1)) {
    // i1 is bit-packed in the attribute; in memory (LLVM, the plan) each
    // element is one byte, 0 or 1.
    out.reserve(size_t(t.getNumElements()));
    for (bool b : d.getValues<bool>())
      out.push_back(char(b));
    return out;
  }
  unsigned bytes = t.getElementTypeBitWidth() / 8;
  if (bytes == 0) // other sub-byte types
    return failure();
  ArrayRef<char> raw = d.getRawData();
  for (int64_t k = 0; k < t.getNumElements(); ++k)
    out.insert(out.end(), raw.begin() + (d.isSplat() ? 0 : k * bytes),
               raw.begin() + (d.isSplat() ? 0 : k * bytes) + bytes);
  return out;
}

Value moec::makeBlobConstant(OpBuilder &b, Location loc, RankedTensorType type,
                             const std::vector<char> &bytes, StringRef name) {
  AsmResourceBlob blob = HeapAsmResourceBlob::allocateAndCopyWithAlign(
      ArrayRef<char>(bytes.data(), bytes.size()), alignof(uint64_t));
  auto attr = DenseResourceElementsAttr::get(type, name, std::move(blob));
  return arith::ConstantOp::create(b, loc, cast<TypedAttr>(attr)).getResult();
}
