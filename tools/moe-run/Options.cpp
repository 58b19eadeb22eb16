//===- Options.cpp - moe-run's command line -------------------------------===//
//
// See Options.h.
//
//===----------------------------------------------------------------------===//

#include "Options.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace moerun;

int moerun::fail(const std::string &message) {
  std::fprintf(stderr, "moe-run: error: %s\n", message.c_str());
  return 1;
}

namespace {
/// A count in [1, max], or a CLI::ValidationError "`what`, got 'V'".
int parseCount(const std::string &v, long max, const std::string &what) {
  char *end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < 1 || n > max)
    throw CLI::ValidationError(what + ", got '" + v + "'");
  return int(n);
}

} // namespace

int moerun::parseArgs(int argc, char **argv, Options &o) {
  // `moe-run generate ...`: the generation loop (moert/Generate.h).
  std::vector<char *> args(argv, argv + argc);
  if (argc > 1 && std::strcmp(argv[1], "generate") == 0) {
    o.generate = true;
    args.erase(args.begin() + 1);
  }
  argc = int(args.size());
  argv = args.data();
  CLI::App app("Runs a moe plan (.moeplan, from moec) on N ranks and prints "
               "a report per rank; `moe-run generate` generates text with a "
               "causal LM plan.",
               "moe-run");
  app.footer(
      "Ranks: -n 1 runs in this process; --threads runs N ranks as threads;\n"
      "otherwise moe-run started alone relaunches itself through mpirun, and\n"
      "under mpirun or srun it is one MPI rank. Every error prints one line\n"
      "and exits 1 (on every rank).\n"
      "Examples:\n"
      "  moe-run -n 4 model.moeplan --input x=in.npy -o out.npy --json\n"
      "  moe-run generate -n 4 lm.moeplan --ids prompt.npy "
      "--max-new-tokens 16 -o ids.npy\n"
      "  moe-run -n 4 model.moeplan --input x=in.npy --threads \\\n"
      "          --record-routing load.json\n"
      "  moe-run --describe model.moeplan");
  // A flag given twice: the last one counts.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // Value options convert in callbacks that throw ValidationError with the
  // whole message (naming the flag), printed as is.
  app.add_option_function<std::string>(
         "-n,--np",
         [&](const std::string &v) {
           o.n = parseCount(v, 65536, "-n expects a positive rank count");
           o.nGiven = true;
         },
         "ranks: the plan's world size (default 1; under mpirun, mpirun's)")
      ->type_name("N");
  app.add_option_function<std::vector<std::string>>(
         "-i,--input",
         [&](const std::vector<std::string> &specs) {
           for (const std::string &v : specs) {
             size_t eq = v.find('=');
             if (eq == std::string::npos || eq == 0 || eq + 1 == v.size())
               throw CLI::ValidationError(
                   "--input expects NAME=FILE.npy, got '" + v + "'");
             o.inputs.push_back({v.substr(0, eq), v.substr(eq + 1)});
           }
         },
         "a model input (.npy); one --input per plan input")
      ->type_name("NAME=FILE")
      ->allow_extra_args(false) // one value per --input; repeat the flag
      ->take_all();
  app.add_option("-o,--output", o.output,
                 "write the outputs: FILE.npy for one, FILE.npz for several "
                 "(an .npy name with several is an error)")
      ->type_name("FILE");
  app.add_flag("--json", o.json, "print the report as JSON");
  app.add_option_function<std::string>(
         "--iters",
         [&](const std::string &v) {
           o.iters = parseCount(v, 1000000, "--iters expects a count >= 1");
         },
         "run N times, report the last (warm) run")
      ->type_name("N");
  app.add_option("--record-routing", o.routing,
                 "write per MoE layer the tokens routed to each expert "
                 "(for moec --placement-load)")
      ->type_name("FILE");
  app.add_option_function<std::string>(
         "--timeout",
         [&](const std::string &v) {
           char *end = nullptr;
           double t = std::strtod(v.c_str(), &end);
           if (v.empty() || *end || !(t >= 0) || t > 1e9)
             throw CLI::ValidationError(
                 "--timeout expects seconds >= 0 (0: no timeout), got '" + v +
                 "'");
           o.timeout = t;
         },
         "end every rank with an error naming the rank and its step when a "
         "rank makes no progress for SECONDS (default 600; 0: never)")
      ->type_name("SECONDS");
  app.add_flag("--no-verify-weights{false}", o.verifyWeights,
               "do not check the weight segments each rank maps against "
               "their checksums (saves reading them once at load, 3-8 GB/s "
               "per rank; for trusted large plans)");
  app.add_flag("--quiet", o.quiet,
               "no progress meter (rank 0 shows one on a terminal while "
               "checking and loading weights takes over a second)");
  app.add_flag("--threads", o.threads,
               "run the ranks as threads of this process");
  app.add_option_function<std::string>(
         "--device",
         [&](const std::string &v) {
           if (v != "cpu" && v != "cuda")
             throw CLI::ValidationError("--device expects cpu or cuda, got '" +
                                        v + "'");
           o.device = v;
         },
         "where the steps run (default cpu)")
      ->type_name("cpu|cuda");
  app.add_flag("--describe", o.describe, "print the plan and exit");
  auto genOnly = [&](const char *flag) {
    if (!o.generate)
      throw CLI::ValidationError(std::string(flag) +
                                 " is an option of `moe-run generate`");
  };
  app.add_option_function<std::string>(
         "--ids",
         [&](const std::string &v) {
           genOnly("--ids");
           o.ids = v;
         },
         "generate: the prompt, int64 token ids [batch, tokens] (.npy)")
      ->type_name("FILE");
  app.add_option_function<std::string>(
         "--max-new-tokens",
         [&](const std::string &v) {
           genOnly("--max-new-tokens");
           o.gen.maxNewTokens =
               parseCount(v, 1 << 30, "--max-new-tokens expects a count >= 1");
         },
         "generate: tokens to add to each sequence (default 16)")
      ->type_name("K");
  app.add_option_function<std::string>(
         "--temperature",
         [&](const std::string &v) {
           genOnly("--temperature");
           char *end = nullptr;
           double t = std::strtod(v.c_str(), &end);
           if (v.empty() || *end || !(t >= 0) || std::isinf(t))
             throw CLI::ValidationError(
                 "--temperature expects a number >= 0, got '" + v + "'");
           o.gen.temperature = t;
         },
         "generate: sample from softmax(logits / T) (default 0: greedy)")
      ->type_name("T");
  app.add_option_function<std::string>(
         "--seed",
         [&](const std::string &v) {
           genOnly("--seed");
           char *end = nullptr;
           unsigned long long s = std::strtoull(v.c_str(), &end, 10);
           if (v.empty() || *end || v[0] == '-')
             throw CLI::ValidationError(
                 "--seed expects a non-negative integer, got '" + v + "'");
           o.gen.seed = s;
         },
         "generate: the sampling generator's seed (default 0)")
      ->type_name("S");
  app.add_option_function<std::string>(
         "--decode-plan",
         [&](const std::string &v) {
           genOnly("--decode-plan");
           o.decodePlan = v;
         },
         "generate: a decode-step plan whose KV-cache length is its dynamic "
         "count (inputs past*, outputs present*, positions); PLAN is then "
         "the prefill, which returns the first cache")
      ->type_name("FILE");
  app.add_flag_callback(
      "--cache-through-rank0",
      [&] {
        genOnly("--cache-through-rank0");
        o.gen.holdCache = false;
      },
      "generate --decode-plan: gather the KV cache on rank 0 and send it to "
      "every rank between steps instead of keeping it on the ranks (for "
      "comparison)");
  app.add_flag_callback(
      "--copy-cache",
      [&] {
        genOnly("--copy-cache");
        o.gen.bindCache = false;
      },
      "generate --decode-plan: copy each step's KV cache onto the next "
      "step's input on the ranks instead of swapping the two buffers (for "
      "comparison; a plan from moec --kv-cache swap: a cache kept in place "
      "is one buffer, and nothing is copied)");
  app.add_option_function<std::string>(
         "--ids-input",
         [&](const std::string &v) {
           genOnly("--ids-input");
           o.gen.idsInput = v;
         },
         "generate: the plan input fed the ids (default input_ids)")
      ->type_name("NAME");
  app.add_option_function<std::string>(
         "--logits-output",
         [&](const std::string &v) {
           genOnly("--logits-output");
           o.gen.logitsOutput = v;
         },
         "generate: the plan output read for the next token (default logits)")
      ->type_name("NAME");
  app.add_option("plan", o.plan, "the plan to run")->type_name("PLAN.moeplan");
  // Unknown options and a second plan are reported below, in moe-run's
  // words.
  app.allow_extras();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    return fail(e.what());
  }
  std::vector<std::string> extra = app.remaining();
  for (const std::string &a : extra)
    if (!a.empty() && a[0] == '-')
      return fail("unknown option '" + a + "' (see moe-run --help)");
  if (o.plan.empty())
    return fail(
        "no plan given (moe-run -n N PLAN.moeplan --input NAME=FILE.npy)");
  if (!extra.empty())
    return fail("more than one plan given ('" + o.plan + "' and '" + extra[0] +
                "')");
  if (o.generate) {
    if (o.ids.empty())
      return fail("generate: give the prompt with --ids FILE.npy (int64 "
                  "token ids [batch, tokens])");
    if (!o.inputs.empty() || o.describe || o.iters != 1 || !o.routing.empty())
      return fail("generate takes the prompt with --ids, not --input, "
                  "--describe, --iters or --record-routing");
    if (o.decodePlan.empty() && (!o.gen.holdCache || !o.gen.bindCache))
      return fail(std::string(!o.gen.holdCache ? "--cache-through-rank0"
                                               : "--copy-cache") +
                  " needs --decode-plan (without one, generate keeps no KV "
                  "cache)");
  }
  return -1;
}
