//===- ExecutorHeld.cpp - outputs kept on the device as later inputs ------===//
//
// A decode loop feeds each step's KV cache (outputs present*) to the next
// step (inputs past*). Executor::holdOutputs keeps every rank's block of
// those outputs in device memory of the consuming executor's backend, and
// the next setInputs takes them from there: the cache never goes to rank
// 0, through the host or over the network between steps. A block stays a
// block only when both plans split the array the same way on every rank
// (holdError); the held memory is allocated once per input, for the
// larger of the input's maximum (the plan's shape, which a dynamic count
// bounds) and the maximum of this plan's output of the same name as the
// one held.
//
// Plans with a symbol record each view's root (Value::root), and there the
// cache is bound in place rather than copied: setInputs binds the past
// input to its held memory (Backend::bindValue, with every view of it),
// and, from the first holdOutputs on, binds this plan's output of the
// held output's name to a second held buffer, which the run writes;
// holdOutputs from this executor then swaps the two buffers. Only the
// hand-over from another executor (prefill to decode) copies.
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

bool Executor::recordsRoots() {
  if (recordsRoots_ < 0) {
    std::vector<char> written(plan_.values.size(), 0);
    for (const Step &s : plan_.steps)
      for (int32_t o : s.outputs)
        if (o >= 0 && size_t(o) < written.size())
          written[size_t(o)] = 1;
    bool all = !plan_.symbols.empty();
    for (const Value &v : plan_.values)
      if (v.kind != ValueKind::constant && v.kind != ValueKind::input &&
          v.root < 0 && !written[size_t(v.id)])
        all = false; // a view without its root (a plan from an older moec)
    recordsRoots_ = all;
  }
  return recordsRoots_ == 1;
}

bool Executor::bindableOutput(const ModelIO &o, const std::string &in) {
  if (!bindHeld_ || !recordsRoots())
    return false;
  const Value &ov = plan_.values[size_t(o.value)];
  int32_t r = ov.rootId();
  if (ov.byteSize() > held_.at(in).capacity)
    return false;
  for (const ModelIO &i : plan_.inputs)
    if (plan_.values[size_t(i.value)].rootId() == r)
      return false; // the output views an input
  for (const auto &[name, h] : held_)
    if (name != in && !h.output.empty() &&
        plan_.values[size_t(findIO(plan_.outputs, h.output)->value)].rootId() ==
            r)
      return false; // bound for another input
  return true;
}

void Executor::loadHeld(const ModelIO &m, const Value &v, Held &h) {
  // The output paired in place is written into spare, held input or not.
  if (!h.output.empty())
    backend_->bindValue(
        plan_.values[size_t(findIO(plan_.outputs, h.output)->value)].rootId(),
        bindHeld_ ? h.spare : nullptr, h.capacity);
  if (!h.valid) {
    backend_->bindValue(v.rootId(), nullptr, 0); // given: into the arena
    return;
  }
  if (v.byteSize() != h.bytes)
    throw RunError("rank " + std::to_string(rank_) + ": input '" + m.name +
                   "': the held block of " + std::to_string(h.bytes) +
                   " bytes is not the local value " + shapeString(v.shape));
  if (bindHeld_ && recordsRoots()) {
    backend_->bindValue(v.rootId(), h.memory, h.capacity);
    return;
  }
  backend_->bindValue(v.rootId(), nullptr, 0);
  if (h.bytes) {
    backend_->loadHeld(v, h.memory, h.bytes);
    heldCopyBytes_ += h.bytes;
  }
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
    size_t bytes = v.byteSize();
    Held &h = held_[in];
    if (!h.memory) {
      h.capacity = plan_.values[size_t(i.value)].byteSize();
      // The output of this plan that a decode loop pairs with the input.
      if (const ModelIO *same = findIO(plan_.outputs, out);
          same && holdError(plan_, out, plan_, in).empty())
        h.capacity = std::max<size_t>(
            h.capacity, plan_.values[size_t(same->value)].byteSize());
      h.memory = backend_->allocateHeld(h.capacity);
    }
    if (bytes > h.capacity)
      throw RunError("rank " + std::to_string(rank_) + ": output '" + out +
                     "' " + shapeString(o.shape) + ": this rank's block of " +
                     std::to_string(bytes) + " bytes exceeds the " +
                     std::to_string(h.capacity) + " bytes of input '" + in +
                     "' at the plan's maximum " + shapeString(i.shape));
    if (self && h.output == out && bindHeld_ &&
        backend_->boundTo(v.rootId(), h.spare)) {
      // The run wrote the output where the input is to be read next.
      std::swap(h.memory, h.spare);
      backend_->bindValue(v.rootId(), h.spare, h.capacity);
      backend_->bindValue(plan_.values[size_t(i.value)].rootId(), h.memory,
                          h.capacity);
    } else {
      if (bytes)
        from.backend_->saveHeld(v, h.memory, bytes);
      heldCopyBytes_ += bytes;
      // From now on the run writes this plan's output of that name (which
      // a decode loop pairs with the input) where the next step reads it.
      const ModelIO *mine = self ? &o : findIO(plan_.outputs, out);
      if (h.output.empty() && mine &&
          holdError(plan_, out, plan_, in).empty() &&
          bindableOutput(*mine, in)) {
        h.output = out;
        h.spare = backend_->allocateHeld(h.capacity);
      }
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
