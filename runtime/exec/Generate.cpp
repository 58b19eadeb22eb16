//===- Generate.cpp - text generation with a causal LM plan ---------------===//
//
// See moert/Generate.h.
//
//===----------------------------------------------------------------------===//

#include "moert/Generate.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace moert;

namespace {
/// Whether `m`'s dim `dim` is the count itself (1*T+0).
bool countDim(const ModelIO &m, int32_t dim) {
  for (const SymDim &d : m.symDims)
    if (d.dim == dim && d.sym == SymKind::T && d.a == 1 && d.b == 0)
      return true;
  return false;
}

/// The next token of one sequence from its last position's logits.
int64_t pick(const float *logits, int64_t V, double temperature,
             std::mt19937_64 &rng) {
  int64_t best = 0;
  for (int64_t v = 1; v < V; ++v)
    if (logits[v] > logits[best])
      best = v;
  if (temperature <= 0)
    return best;
  // softmax(logits / temperature) by inverse CDF, in double.
  std::vector<double> p(static_cast<size_t>(V));
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) {
    p[size_t(v)] = std::exp((double(logits[v]) - logits[best]) / temperature);
    sum += p[size_t(v)];
  }
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (int64_t v = 0; v < V; ++v) {
    u -= p[size_t(v)];
    if (u < 0)
      return v;
  }
  return best;
}
/// The decode plan's cache inputs: every input but the ids, positions and
/// attention mask.
std::vector<const ModelIO *> cacheInputs(const Plan &decode,
                                         const GenerateOptions &o) {
  std::vector<const ModelIO *> r;
  for (const ModelIO &m : decode.inputs)
    if (m.name != o.idsInput && m.name != o.positionInput &&
        m.name != o.maskInput)
      r.push_back(&m);
  return r;
}

/// An int64 array of `shape` holding `values` (as many as the shape has).
NpyArray int64Array(std::vector<int64_t> shape,
                    const std::vector<int64_t> &values) {
  NpyArray a;
  a.dtype = "<i8";
  a.shape = std::move(shape);
  a.data.resize(values.size() * 8);
  if (!values.empty())
    std::memcpy(a.data.data(), values.data(), a.data.size());
  return a;
}

/// Whether `m` is a position input generate can feed: int64 [B, n] or
/// [3, B, n].
bool positionShape(const ModelIO &m) {
  return m.dtype == DType::i64 &&
         (m.shape.size() == 2 || (m.shape.size() == 3 && m.shape[0] == 3));
}

/// Why `plan`'s input `m` (not the ids) cannot be fed by generate ("" when
/// it can): the attention mask, int64 [B, length]; or, with `emptyCaches`,
/// a cache or state input (past*) of fixed shape, which starts as zeros.
std::string extraInputError(const ModelIO &m, const GenerateOptions &o,
                            bool emptyCaches, bool fixedPlan = false) {
  if (m.name == o.maskInput) {
    // (A plan of a fixed count has a fixed mask: the prompt's length.)
    if (m.dtype != DType::i64 || m.shape.size() != 2 ||
        (m.symDims.empty() && !fixedPlan))
      return "input '" + m.name + "' is " + dtypeName(m.dtype) +
             shapeString(m.shape) +
             "; an attention mask is int64 [batch, length] with the length "
             "following the count";
    return "";
  }
  if (m.name == o.positionInput) {
    if (!positionShape(m))
      return "input '" + m.name + "' is " + dtypeName(m.dtype) +
             shapeString(m.shape) +
             "; positions are int64 [batch, tokens] or [3, batch, tokens] "
             "(multimodal rotary sections, all three the text position)";
    return "";
  }
  if (emptyCaches && m.symDims.empty() && !presentNameOf(m.name).empty())
    return "";
  return "the plan also takes input '" + m.name +
         "'; generate feeds the token ids ('" + o.idsInput +
         "'), the positions ('" + o.positionInput +
         "'), the attention mask ('" + o.maskInput +
         "': ones) and caches of fixed shape that start empty (past*: zeros)";
}

/// Positions `first` .. `first + n - 1` of every sequence, in the shape of
/// position input `m` ([B, n], or [3, B, n]: text positions in each of the
/// three multimodal rotary sections, as onnxruntime-genai feeds them).
NpyArray positionsOf(const ModelIO &m, int64_t B, int64_t first, int64_t n) {
  int64_t sections = m.shape.size() == 3 ? 3 : 1;
  std::vector<int64_t> v;
  for (int64_t r = 0; r < sections * B; ++r)
    for (int64_t i = 0; i < n; ++i)
      v.push_back(first + i);
  return int64Array(sections == 3 ? std::vector<int64_t>{3, B, n}
                                  : std::vector<int64_t>{B, n},
                    v);
}

/// Ones [B, length] for the mask input and, with `caches` (a run from the
/// first token), positions 0 .. length - 1 and zeros for the fixed-shape
/// cache inputs of `plan` (extraInputError passed), added to `in`.
void feedExtra(const Plan &plan, const GenerateOptions &o, int64_t B,
               int64_t length, bool caches,
               std::map<std::string, NpyArray> &in) {
  for (const ModelIO &m : plan.inputs) {
    if (m.name == o.idsInput || (m.name == o.positionInput && !caches))
      continue;
    NpyArray a;
    if (m.name == o.positionInput) {
      a = positionsOf(m, B, 0, length); // a run from the first token
    } else if (m.name == o.maskInput) {
      a = int64Array({B, length}, std::vector<int64_t>(size_t(B * length), 1));
    } else if (caches) {
      a.dtype = npyDType(m.dtype);
      a.shape = m.shape;
      size_t n = dtypeSize(m.dtype);
      for (int64_t d : m.shape)
        n *= size_t(d);
      a.data.assign(n, 0);
    } else {
      continue;
    }
    in[m.name] = std::move(a);
  }
}

/// Sends rank 0's arrays `arrays` to every rank, in one buffer (two
/// all-gathers: its size, then its bytes).
void broadcast(Comm &world, const std::vector<NpyArray *> &arrays) {
  std::vector<char> bytes;
  if (world.rank() == 0) {
    auto put = [&](const void *p, size_t n) {
      const char *c = static_cast<const char *>(p);
      bytes.insert(bytes.end(), c, c + n);
    };
    for (const NpyArray *a : arrays) {
      int64_t meta[3] = {int64_t(a->dtype.size()), int64_t(a->shape.size()),
                         int64_t(a->data.size())};
      put(meta, sizeof(meta));
      put(a->dtype.data(), a->dtype.size());
      put(a->shape.data(), a->shape.size() * 8);
      put(a->data.data(), a->data.size());
    }
  }
  int64_t n = int64_t(bytes.size());
  std::vector<int64_t> sizes(size_t(world.size()));
  world.allGather(&n, 8, sizes.data());
  int64_t size = sizes[0];
  bytes.resize(size_t(size));
  std::vector<char> all(size_t(size) * size_t(world.size()));
  world.allGather(bytes.data(), size, all.data());
  if (world.rank() == 0)
    return;
  const char *p = all.data();
  for (NpyArray *a : arrays) {
    int64_t meta[3];
    std::memcpy(meta, p, sizeof(meta));
    p += sizeof(meta);
    a->dtype.assign(p, size_t(meta[0]));
    p += meta[0];
    a->shape.resize(size_t(meta[1]));
    std::memcpy(a->shape.data(), p, size_t(meta[1]) * 8);
    p += meta[1] * 8;
    a->data.assign(p, p + meta[2]);
    p += meta[2];
  }
}

/// Rank 0: each sequence's next token from the logits at position `at`
/// of output `name` ([B, L, V]); then every rank has them.
std::vector<int64_t>
nextTokens(Comm &world,
           const std::vector<std::pair<std::string, NpyArray>> &outs,
           const GenerateOptions &o, int64_t B, int64_t L, int64_t at,
           std::mt19937_64 &rng) {
  std::vector<int64_t> next(static_cast<size_t>(B)),
      all(static_cast<size_t>(B * world.size()));
  if (world.rank() == 0) {
    const NpyArray *logits = nullptr;
    for (auto &[name, a] : outs)
      if (name == o.logitsOutput)
        logits = &a;
    if (!logits || logits->dtype != "<f4" || logits->shape.size() != 3 ||
        logits->shape[0] != B || logits->shape[1] != L)
      throw RunError("generate: output '" + o.logitsOutput + "' is not f32 [" +
                     std::to_string(B) + ", " + std::to_string(L) + ", V]");
    int64_t V = logits->shape[2];
    const float *f = reinterpret_cast<const float *>(logits->data.data());
    for (int64_t b = 0; b < B; ++b)
      next[size_t(b)] = pick(f + (b * L + at) * V, V, o.temperature, rng);
  }
  world.allGather(next.data(), B * 8, all.data());
  all.resize(size_t(B));
  return all;
}

/// The prompt's rows (sequences), which generation extends.
std::vector<std::vector<int64_t>> rowsOf(const NpyArray &prompt) {
  int64_t B = prompt.shape[0], P = prompt.shape[1];
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    rows[size_t(b)].resize(size_t(P));
    std::memcpy(rows[size_t(b)].data(), prompt.data.data() + b * P * 8,
                size_t(P) * 8);
  }
  return rows;
}

/// Appends each sequence's next token.
void append(std::vector<std::vector<int64_t>> &rows,
            const std::vector<int64_t> &next) {
  for (size_t b = 0; b < rows.size(); ++b)
    rows[b].push_back(next[b]);
}

/// The ids [B, n] of equally long `rows`.
NpyArray idsOf(const std::vector<std::vector<int64_t>> &rows) {
  int64_t B = int64_t(rows.size()), n = B ? int64_t(rows[0].size()) : 0;
  std::vector<int64_t> v;
  for (const std::vector<int64_t> &row : rows)
    v.insert(v.end(), row.begin(), row.end());
  return int64Array({B, n}, v);
}
} // namespace

std::string moert::generateError(const Plan &plan, const NpyArray &prompt,
                                 const GenerateOptions &o) {
  // A plan of a fixed count runs one prompt of exactly its length: the
  // prefill of generateWithCache (a model whose prefill cannot take a
  // dynamic count, e.g. a linear-attention recurrence unrolled over it).
  bool fixed = plan.symbols.empty();
  if (fixed && o.maxNewTokens != 1)
    return "the plan has a fixed token count; generate needs a plan compiled "
           "with a dynamic one (moec --input-shape " +
           o.idsInput +
           "=B,? --max-tokens N), or a decode plan beside a prefill plan of "
           "the prompt's length (--decode-plan)";
  const ModelIO *ids = findIO(plan.inputs, o.idsInput);
  if (!ids)
    return "the plan has no input '" + o.idsInput + "' (--ids-input)";
  if (fixed && ids->shape.size() == 2 && prompt.shape.size() == 2 &&
      ids->shape[1] != prompt.shape[1])
    return "the plan has a fixed token count: it takes prompts of exactly " +
           std::to_string(ids->shape[1]) + " tokens, not " +
           std::to_string(prompt.shape[1]) +
           " (or compile it with a dynamic one: moec --input-shape " +
           o.idsInput + "=B,? --max-tokens N)";
  int64_t max = fixed ? ids->shape.back() : plan.symbols[0].max;
  int64_t min = fixed ? 0 : plan.symbols[0].min;
  auto countAt1 = [&](const ModelIO &m) {
    return fixed ? m.shape.size() >= 2 && m.shape[1] == ids->shape.back()
                 : countDim(m, 1);
  };
  for (const ModelIO &m : plan.inputs)
    if (m.name != o.idsInput)
      if (std::string why = extraInputError(m, o, true, fixed); !why.empty())
        return why;
  if (ids->dtype != DType::i64 || ids->shape.size() != 2 || !countAt1(*ids))
    return "input '" + o.idsInput + "' is " + dtypeName(ids->dtype) +
           shapeString(ids->shape) +
           "; generate needs int64 [batch, tokens] with the token count as "
           "dim 1";
  const ModelIO *logits = findIO(plan.outputs, o.logitsOutput);
  if (!logits)
    return "the plan has no output '" + o.logitsOutput + "' (--logits-output)";
  if (logits->dtype != DType::f32 || logits->shape.size() != 3 ||
      !countAt1(*logits) || logits->shape[0] != ids->shape[0])
    return "output '" + o.logitsOutput + "' is " + dtypeName(logits->dtype) +
           shapeString(logits->shape) +
           "; generate needs f32 [batch, tokens, vocabulary] logits";
  if (prompt.dtype != "<i8" || prompt.shape.size() != 2)
    return "the prompt ids must be an int64 array [batch, tokens], not " +
           prompt.dtype + shapeString(prompt.shape);
  if (prompt.shape[0] != ids->shape[0])
    return "the prompt has " + std::to_string(prompt.shape[0]) +
           " sequences, the plan takes " + std::to_string(ids->shape[0]);
  if (prompt.shape[1] < 1)
    return "the prompt is empty";
  if (prompt.shape[1] < min)
    return "a prompt of " + std::to_string(prompt.shape[1]) +
           " tokens is shorter than the plan's minimum of " +
           std::to_string(min) +
           " (moe-run --describe: the model takes another path below it)";
  if (o.maxNewTokens < 1)
    return "--max-new-tokens must be at least 1";
  // The last new token needs no run: runs at P .. P + K - 1 tokens.
  if (prompt.shape[1] + o.maxNewTokens - 1 > max)
    return "a prompt of " + std::to_string(prompt.shape[1]) + " tokens and " +
           std::to_string(o.maxNewTokens) + " new tokens need runs at up to " +
           std::to_string(prompt.shape[1] + o.maxNewTokens - 1) +
           " tokens, more than the plan's maximum of " + std::to_string(max);
  if (!(o.temperature >= 0) || std::isinf(o.temperature))
    return "--temperature must be a finite number >= 0";
  int64_t V = logits->shape[2];
  if (prompt.data.size() != size_t(prompt.numElements()) * 8)
    return "the prompt's data does not match its shape";
  for (int64_t i = 0; i < prompt.numElements(); ++i) {
    int64_t id;
    std::memcpy(&id, prompt.data.data() + i * 8, 8);
    if (id < 0 || id >= V)
      return "prompt id " + std::to_string(id) + " at [" +
             std::to_string(i / prompt.shape[1]) + ", " +
             std::to_string(i % prompt.shape[1]) +
             "] is outside the vocabulary of " + std::to_string(V) +
             " (the logits' last dim)";
  }
  return "";
}

GenerateResult moert::generate(Executor &ex, Comm &world, const Plan &plan,
                               const NpyArray &prompt,
                               const GenerateOptions &o) {
  if (std::string why = generateError(plan, prompt, o); !why.empty())
    throw RunError(why);
  GenerateResult r;
  r.batch = prompt.shape[0];
  r.prompt = prompt.shape[1];
  r.newTokens = o.maxNewTokens;
  std::vector<std::vector<int64_t>> rows = rowsOf(prompt);
  std::mt19937_64 rng(o.seed);
  for (int64_t step = 0; step < o.maxNewTokens; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    int64_t L = r.prompt + step;
    std::map<std::string, NpyArray> in = {{o.idsInput, idsOf(rows)}};
    feedExtra(plan, o, r.batch, L, true, in);
    ex.setInputs(in);
    ex.run();
    // Only the logits: a builder model's present* stay on the ranks.
    auto outs = ex.gatherOutputs({o.logitsOutput});
    append(rows, nextTokens(world, outs, o, r.batch, L, L - 1, rng));
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    (step == 0 ? r.prefillSeconds : r.decodeSeconds) += s;
  }
  if (world.rank() == 0)
    r.ids = idsOf(rows);
  return r;
}

std::string moert::generateWithCacheError(const Plan &prefill,
                                          const Plan &decode,
                                          const NpyArray &prompt,
                                          const GenerateOptions &o) {
  GenerateOptions one = o;
  one.maxNewTokens = 1; // the prefill gives the first token
  if (std::string why = generateError(prefill, prompt, one); !why.empty())
    return "the prefill plan: " + why;
  if (decode.symbols.empty())
    return "the decode plan has a fixed cache length; compile it with a "
           "dynamic one (moec --input-shape past...=B,H,?,D --max-tokens N)";
  int64_t B = prompt.shape[0];
  const ModelIO *ids = findIO(decode.inputs, o.idsInput);
  if (!ids || ids->dtype != DType::i64 ||
      ids->shape != std::vector<int64_t>{B, 1})
    return "the decode plan needs an int64 input '" + o.idsInput + "' [" +
           std::to_string(B) + ", 1]";
  if (const ModelIO *pos = findIO(decode.inputs, o.positionInput);
      pos && (!positionShape(*pos) || pos->shape[pos->shape.size() - 2] != B ||
              pos->shape.back() != 1))
    return "the decode plan's input '" + o.positionInput + "' is not int64 [" +
           std::to_string(B) + ", 1] or [3, " + std::to_string(B) + ", 1]";
  const ModelIO *logits = findIO(decode.outputs, o.logitsOutput);
  if (!logits || logits->dtype != DType::f32 || logits->shape.size() != 3 ||
      logits->shape[0] != B || logits->shape[1] != 1)
    return "the decode plan needs f32 logits '" + o.logitsOutput + "' [" +
           std::to_string(B) + ", 1, V]";
  if (const ModelIO *mask = findIO(decode.inputs, o.maskInput))
    if (std::string why = extraInputError(*mask, o, false); !why.empty())
      return "the decode plan: " + why;
  if (o.maxNewTokens > 1 && prompt.shape[1] < decode.symbols[0].min)
    return "the first decode step's cache of " +
           std::to_string(prompt.shape[1]) +
           " positions is shorter than the decode plan's minimum of " +
           std::to_string(decode.symbols[0].min);
  bool counted = false;
  for (const ModelIO &m : decode.inputs)
    counted |= !m.symDims.empty();
  if (!counted)
    return "no input of the decode plan follows its count (the cache "
           "length)";
  std::vector<const ModelIO *> cache = cacheInputs(decode, o);
  if (cache.empty())
    return "the decode plan takes no cache (inputs besides '" + o.idsInput +
           "' and '" + o.positionInput + "')";
  for (const ModelIO *m : cache) {
    std::string present = presentNameOf(m->name);
    if (present.empty() || !findIO(decode.outputs, present) ||
        !findIO(prefill.outputs, present))
      return "the decode plan's input '" + m->name + "' has no output '" +
             (present.empty() ? "present..." : present) +
             "' in both plans (past* inputs pair with present* outputs)";
  }
  int64_t runs = prompt.shape[1] + o.maxNewTokens - 2;
  if (o.maxNewTokens > 1 && runs > decode.symbols[0].max)
    return "a prompt of " + std::to_string(prompt.shape[1]) + " tokens and " +
           std::to_string(o.maxNewTokens) +
           " new tokens need a cache of up to " + std::to_string(runs) +
           " positions, more than the decode plan's maximum of " +
           std::to_string(decode.symbols[0].max);
  return "";
}

GenerateResult moert::generateWithCache(Executor &prefill, Executor &decode,
                                        Comm &world, const Plan &prefillPlan,
                                        const Plan &decodePlan,
                                        const NpyArray &prompt,
                                        const GenerateOptions &o) {
  if (std::string why =
          generateWithCacheError(prefillPlan, decodePlan, prompt, o);
      !why.empty())
    throw RunError(why);
  GenerateResult r;
  r.batch = prompt.shape[0];
  r.prompt = prompt.shape[1];
  r.newTokens = o.maxNewTokens;
  int64_t B = r.batch, P = r.prompt;
  std::mt19937_64 rng(o.seed);
  std::vector<std::vector<int64_t>> rows = rowsOf(prompt);
  std::vector<const ModelIO *> cache = cacheInputs(decodePlan, o);
  bool positions = findIO(decodePlan.inputs, o.positionInput) != nullptr;
  // The cache pairs: {present*, past*}. Held on the ranks when both plans
  // give every rank the same block of each (moert::holdError); else
  // gathered on rank 0 and sent to every rank between steps.
  std::vector<std::pair<std::string, std::string>> pairs;
  if (!o.holdCache)
    r.cacheThroughHost = "asked for";
  for (const ModelIO *m : cache) {
    pairs.push_back({presentNameOf(m->name), m->name});
    for (const Plan *from : {&prefillPlan, &decodePlan})
      if (std::string why =
              holdError(*from, pairs.back().first, decodePlan, m->name);
          !why.empty() && r.cacheThroughHost.empty())
        r.cacheThroughHost =
            (from == &prefillPlan ? "the prefill's " : "the decode plan's ") +
            why;
  }
  bool held = r.cacheThroughHost.empty();
  decode.setBindHeld(o.bindCache);
  const std::vector<std::string> logits = {o.logitsOutput};
  // The host path: the cache every rank feeds the next decode step.
  std::map<std::string, NpyArray> state;
  auto keepCache = [&](std::vector<std::pair<std::string, NpyArray>> &outs) {
    std::vector<NpyArray *> arrays;
    for (const ModelIO *m : cache) {
      NpyArray &a = state[m->name];
      if (world.rank() == 0)
        for (auto &[name, arr] : outs)
          if (name == presentNameOf(m->name))
            a = std::move(arr);
      arrays.push_back(&a);
    }
    broadcast(world, arrays);
  };
  auto t0 = std::chrono::steady_clock::now();
  std::map<std::string, NpyArray> first = {{o.idsInput, prompt}};
  feedExtra(prefillPlan, o, B, P, true, first);
  prefill.setInputs(first);
  prefill.run();
  auto outs = held ? prefill.gatherOutputs(logits) : prefill.gatherOutputs();
  std::vector<int64_t> next = nextTokens(world, outs, o, B, P, P - 1, rng);
  append(rows, next);
  if (o.maxNewTokens > 1) {
    if (held)
      decode.holdOutputs(prefill, pairs);
    else
      keepCache(outs);
  }
  uint64_t copiedBefore = decode.heldCopyBytes();
  auto t1 = std::chrono::steady_clock::now();
  r.prefillSeconds = std::chrono::duration<double>(t1 - t0).count();
  for (int64_t step = 1; step < o.maxNewTokens; ++step) {
    int64_t L = P + step - 1; // cached positions; the new token's position
    std::map<std::string, NpyArray> in;
    in[o.idsInput] = int64Array({B, 1}, next);
    if (positions)
      in[o.positionInput] =
          positionsOf(*findIO(decodePlan.inputs, o.positionInput), B, L, 1);
    feedExtra(decodePlan, o, B, L + 1, false, in);
    for (auto &[name, a] : state)
      in[name] = std::move(a);
    decode.setInputs(in);
    decode.run();
    outs = held ? decode.gatherOutputs(logits) : decode.gatherOutputs();
    next = nextTokens(world, outs, o, B, 1, 0, rng);
    append(rows, next);
    state.clear();
    if (step + 1 < o.maxNewTokens) {
      if (held)
        decode.holdOutputs(decode, pairs);
      else
        keepCache(outs);
    }
  }
  r.decodeSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1)
          .count();
  r.cacheCopyBytes = decode.heldCopyBytes() - copiedBefore;
  if (world.rank() == 0)
    r.ids = idsOf(rows);
  return r;
}
