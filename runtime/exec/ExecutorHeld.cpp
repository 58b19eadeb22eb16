//===- ExecutorHeld.cpp - outputs kept on the device as later inputs ------===//
//
// A decode loop feeds each step's KV cache (outputs present*) to the next
// step (inputs past*). Executor::holdOutputs keeps every rank's block of
// those outputs in device memory of the consuming executor's backend, and
// the next setInputs takes them from there: the cache never goes to rank
// 0, through the host or over the network between steps. A block stays a
// block only when both plans split the array the same way on every rank
// (holdError). For an input in the arena the held memory is allocated
// once, at the input's maximum (the plan's shape, which a dynamic count
// bounds); the next setInputs copies it into the arena.
//
// Plans with a symbol keep their KV cache outside the arena: moec gives
// the roots of each past*/present* pair (moert::cachePairs) no arena bytes
// (Value::outside), and the executor allocates them once, both at the
// larger of the two maxima, and binds them (Backend::bindValue; views
// follow their root, Value::root). holdOutputs from this executor then
// swaps the pair's two buffers: the step read its past from one and wrote
// its present into the other, and nothing is copied. Only the hand-over
// from another executor (prefill to decode) copies, into the past's
// buffer. Inputs of plans without such roots are copied as above.
//
// A pair kept in place (Value::boxed) is one buffer of the box (the pair's
// shape at the maximum), at whose strides the step's kernel writes only
// present's new rows: holdOutputs from this executor copies and swaps
// nothing, swapping on or off. The hand-over of another plan's packed
// present goes through held scratch memory into the box at its strides
// (Backend::loadHeld of the past resolved at the held count).
//
//===----------------------------------------------------------------------===//

#include "moert/Executor.h"

using namespace moert;

namespace {
/// Whether `m`'s split cuts one of its symbolic dims (then a rank's block
/// depends on how the count falls over the ranks).
bool splitCutsCount(const ModelIO &m) {
  for (const SymDim &d : m.symDims)
    if (m.split.axis >= d.dim)
      return true;
  return false;
}
} // namespace

std::string moert::holdError(const Plan &from, const std::string &output,
                             const Plan &to, const std::string &input) {
  const ModelIO *o = findIO(from.outputs, output);
  if (!o)
    return "the plan has no output '" + output + "'";
  const ModelIO *i = findIO(to.inputs, input);
  if (!i)
    return "the plan has no input '" + input + "'";
  std::string pair = "output '" + output + "' as input '" + input + "': ";
  if (o->dtype != i->dtype)
    return pair + "dtype " + dtypeName(o->dtype) + " is not " +
           dtypeName(i->dtype);
  if (o->shape.size() != i->shape.size())
    return pair + "rank " + std::to_string(o->shape.size()) + " is not " +
           std::to_string(i->shape.size());
  if (from.worldSize() != to.worldSize())
    return pair + "the plans are for " + std::to_string(from.worldSize()) +
           " and " + std::to_string(to.worldSize()) + " ranks";
  if (splitCutsCount(*o) || splitCutsCount(*i))
    return pair + "a split cuts the dynamic dim (each rank's block follows "
                  "the count)";
  // A split into one block (mesh axes of size 1) is the whole array.
  auto axisOf = [](const Plan &p, const Split &s) {
    int64_t n = 1;
    if (s.axis >= 0)
      splitBlock(p, s, 0, n);
    return n > 1 ? s.axis : -1;
  };
  if (axisOf(from, o->split) != axisOf(to, i->split))
    return pair + "split along dim " + std::to_string(axisOf(from, o->split)) +
           " and dim " + std::to_string(axisOf(to, i->split)) +
           " (-1: not split)";
  for (int64_t r = 0; r < from.worldSize(); ++r) {
    int64_t nf = 1, nt = 1;
    int64_t bf = o->split.axis < 0 ? 0 : splitBlock(from, o->split, r, nf);
    int64_t bt = i->split.axis < 0 ? 0 : splitBlock(to, i->split, r, nt);
    if (bf != bt || nf != nt)
      return pair + "rank " + std::to_string(r) + " holds block " +
             std::to_string(bf) + " of " + std::to_string(nf) +
             " of the one and block " + std::to_string(bt) + " of " +
             std::to_string(nt) + " of the other";
  }
  return "";
}

void Executor::bindOutside() {
  if (!outside_.empty())
    return;
  std::map<int32_t, size_t> bytes;
  for (const Value &v : plan_.values)
    if (v.outside)
      bytes[v.id] = v.byteSize();
  if (bytes.empty())
    return;
  // A boxed pair's present root shares its past root's buffer (verifyPlan:
  // both boxed, one box).
  std::map<int32_t, int32_t> shares;
  for (auto [i, o] : cachePairs(plan_)) {
    int32_t ri = plan_.values[size_t(plan_.inputs[i].value)].rootId();
    int32_t ro = plan_.values[size_t(plan_.outputs[o].value)].rootId();
    if (!bytes.count(ri) || !bytes.count(ro) || ri == ro)
      continue;
    if (plan_.values[size_t(ri)].boxed)
      shares[ro] = ri;
    else
      bytes[ri] = bytes[ro] = std::max(bytes[ri], bytes[ro]);
  }
  for (auto [root, n] : bytes) {
    if (shares.count(root))
      continue;
    Outside &b = outside_[root];
    b.capacity = n;
    b.p = backend_->allocateHeld(std::max<size_t>(n, 1));
    backend_->bindValue(root, b.p, n);
  }
  for (auto [root, of] : shares) {
    outside_[root] = outside_.at(of);
    backend_->bindValue(root, outside_[root].p, outside_[root].capacity);
  }
}

void Executor::loadHeld(const ModelIO &m, const Value &v, Held &h) {
  if (!h.valid)
    return; // given: uploaded where the value lives
  if (v.byteSize() != h.bytes)
    throw RunError("rank " + std::to_string(rank_) + ": input '" + m.name +
                   "': the held block of " + std::to_string(h.bytes) +
                   " bytes is not the local value " + shapeString(v.shape));
  if (outside_.count(v.rootId()))
    return; // holdOutputs left it in the input's own memory
  if (h.bytes) {
    backend_->loadHeld(v, h.memory, h.bytes);
    heldCopyBytes_ += h.bytes;
  }
}

Value Executor::inputValueAt(const ModelIO &in,
                             const std::vector<int64_t> &global) const {
  Value v = plan_.values[size_t(in.value)];
  if (v.boxed)
    v.box = v.shape;
  if (plan_.symbols.empty())
    return v;
  int64_t T = plan_.symbols[0].max;
  for (const SymDim &d : in.symDims) {
    int64_t n = global[size_t(d.dim)]; // holdError: the ranks agree
    if (d.a > 0 && n >= d.b && (n - d.b) % d.a == 0)
      T = (n - d.b) / d.a;
  }
  v.shape = resolveShape(v.shape, v.symDims, symValuesAt(T, rank_));
  return v;
}

void Executor::holdBoxed(Executor &from, const Value &v, const ModelIO &o,
                         const ModelIO &in, Held &h) {
  int32_t ri = plan_.values[size_t(in.value)].rootId();
  if (&from == this && outside_.count(v.rootId()) &&
      outside_.at(v.rootId()).p == outside_.at(ri).p)
    return; // the step wrote its present where the next step reads
  // Packed into scratch memory, then into the box at its strides.
  Value at = inputValueAt(in, o.shape);
  size_t bytes = v.byteSize();
  if (at.byteSize() != bytes)
    throw RunError("rank " + std::to_string(rank_) + ": output '" + o.name +
                   "' " + shapeString(o.shape) + ": this rank's block of " +
                   std::to_string(bytes) + " bytes is not input '" + in.name +
                   "''s local value " + shapeString(at.shape) +
                   " kept in place (box " + shapeString(at.box) + ")");
  if (!bytes)
    return;
  if (!h.memory) {
    h.capacity = at.boxBytes();
    h.memory = backend_->allocateHeld(h.capacity);
  }
  from.backend_->saveHeld(v, h.memory, bytes);
  backend_->loadHeld(at, h.memory, bytes);
  heldCopyBytes_ += bytes;
}

void Executor::holdOutputs(
    Executor &from,
    const std::vector<std::pair<std::string, std::string>> &outputToInput) {
  ExecContext ctx(*this);
  prepare(ctx); // the backend allocates on its device
  const Plan &fp = from.resolved_ ? *from.resolved_ : from.plan_;
  const bool self = &from == this;
  for (const auto &[out, in] : outputToInput) {
    if (std::string why = holdError(from.plan_, out, plan_, in); !why.empty())
      throw RunError("rank " + std::to_string(rank_) + ": " + why);
    const ModelIO &o = *findIO(fp.outputs, out);
    const ModelIO &i = *findIO(plan_.inputs, in);
    const Value &v = fp.values[size_t(o.value)];
    const Value &iv = plan_.values[size_t(i.value)];
    size_t bytes = v.byteSize();
    Held &h = held_[in];
    int32_t ri = iv.rootId();
    auto mine = outside_.find(ri);
    if (mine == outside_.end() && !h.memory) {
      h.capacity = iv.byteSize();
      h.memory = backend_->allocateHeld(h.capacity);
    }
    size_t capacity =
        mine != outside_.end() ? mine->second.capacity : h.capacity;
    if (bytes > capacity)
      throw RunError("rank " + std::to_string(rank_) + ": output '" + out +
                     "' " + shapeString(o.shape) + ": this rank's block of " +
                     std::to_string(bytes) + " bytes exceeds the " +
                     std::to_string(capacity) + " bytes of input '" + in +
                     "' at the plan's maximum " + shapeString(i.shape));
    // A boxed present shares its buffer with its past: never swapped.
    auto theirs = self && !plan_.values[size_t(v.rootId())].boxed
                      ? outside_.find(v.rootId())
                      : outside_.end();
    if (iv.boxed) {
      holdBoxed(from, v, o, i, h);
    } else if (mine != outside_.end() && theirs != outside_.end() &&
               bindHeld_ && theirs->second.capacity == mine->second.capacity) {
      // The step wrote its present where the next one reads its past.
      std::swap(mine->second.p, theirs->second.p);
      backend_->bindValue(ri, mine->second.p, mine->second.capacity);
      backend_->bindValue(v.rootId(), theirs->second.p,
                          theirs->second.capacity);
    } else if (bytes) {
      from.backend_->saveHeld(
          v, mine != outside_.end() ? mine->second.p : h.memory, bytes);
      heldCopyBytes_ += bytes;
    }
    h.bytes = bytes;
    h.shape = o.shape;
    h.valid = true;
  }
}

void Executor::dropHeld() {
  for (auto &[name, h] : held_)
    h.valid = false;
}
