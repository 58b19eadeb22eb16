//===- KernelCodegen.cpp - kernels to machine code and PTX ----------------===//
//
// Compiles the `moe.kernel` functions outlined by moe-outline-kernels:
//  * CPU: bufferize (results become out-parameters), linalg -> loops ->
//    LLVM dialect with the bare-pointer calling convention (one pointer
//    per tensor, inputs then outputs), LLVM IR, then the exported entry
//    `kernel_N(void **args)` that loads the pointers from one array and
//    calls it (so the runtime calls every kernel alike, whatever its
//    operand count), -O3 for the host, an object file, linked into a
//    shared object with the system C compiler driver.
//  * CUDA: bufferize, linalg -> parallel loops -> gpu (blocks x threads) ->
//    NVVM for sm_90 -> PTX through LLVM's NVPTX backend.
//
//===----------------------------------------------------------------------===//

#include "moec/Conversion/KernelCodegen.h"
#include "moec/Conversion/KernelSymbols.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/ParallelLoopMapper.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include <cstring>

using namespace mlir;
using namespace moec;

/// A module holding copies of the kernels of `module` (public, no other
/// symbols): each kernel, or with `variants` each variant.
static OwningOpRef<ModuleOp> kernelModule(ModuleOp module,
                                          std::vector<KernelInfo> &infos,
                                          ArrayRef<KernelVariant> variants,
                                          std::string &error) {
  OpBuilder b(module.getContext());
  OwningOpRef<ModuleOp> k = ModuleOp::create(b.getUnknownLoc());
  b.setInsertionPointToEnd(k->getBody());
  auto add = [&](func::FuncOp f, StringRef name, bool symbolic) {
    auto c = cast<func::FuncOp>(b.clone(*f));
    c.setPublic();
    c.setName(name);
    KernelInfo info;
    info.name = name.str();
    info.numArgs = int(f.getNumArguments() + f.getNumResults());
    info.symbolic = symbolic;
    infos.push_back(info);
  };
  if (variants.empty()) {
    for (auto f : module.getOps<func::FuncOp>())
      if (f->hasAttr("moe.kernel"))
        add(f, f.getName(), false);
    return k;
  }
  for (const KernelVariant &v : variants) {
    auto f = module.lookupSymbol<func::FuncOp>(v.source);
    if (!f || !f->hasAttr("moe.kernel")) {
      error = "the plan calls kernel '" + v.source +
              "', which the module does not define";
      return nullptr;
    }
    add(f, v.name, v.symbolic());
  }
  return k;
}

static const char *kBufferizeOnly =
    "one-shot-bufferize{bufferize-function-boundaries=1 "
    "function-boundary-type-conversion=identity-layout-map},"
    "buffer-results-to-out-params{hoist-static-allocs=1 "
    "modify-public-functions=1}";
static const std::string kBufferize =
    std::string(kBufferizeOnly) + ",canonicalize";

static LogicalResult runPipeline(ModuleOp m, const std::string &pipeline,
                                 std::string &error) {
  // LLVM IR translations (builtin, llvm, gpu, nvvm) for serialisation.
  DialectRegistry registry;
  registerAllToLLVMIRTranslations(registry);
  m.getContext()->appendDialectRegistry(registry);
  PassManager pm(m.getContext());
  std::string err;
  llvm::raw_string_ostream es(err);
  if (failed(parsePassPipeline(pipeline, pm, es))) {
    error = "bad kernel pipeline: " + err;
    return failure();
  }
  if (failed(pm.run(m))) {
    error = "the kernel lowering pipeline failed";
    return failure();
  }
  return success();
}

/// Renames each kernel's bare-pointer function `kernel_N(ptr, ...)` to
/// `kernel_N.ptrs` (internal: -O3 inlines it) and exports in its place the
/// entry `void kernel_N(void **args)` that calls it with args[0..n-1]: the
/// calling convention of docs/plan-format.md (plan version 3).
static LogicalResult addPointerArrayEntries(llvm::Module &m,
                                            ArrayRef<KernelInfo> kernels,
                                            std::string &error) {
  llvm::LLVMContext &ctx = m.getContext();
  llvm::Type *ptr = llvm::PointerType::getUnqual(ctx);
  for (const KernelInfo &info : kernels) {
    llvm::Function *f = m.getFunction(info.name);
    if (!f) {
      error = "kernel " + info.name + " vanished in the LLVM lowering";
      return failure();
    }
    // A symbolic kernel's last pointer: the call's token counts.
    int numPtrs = info.numArgs + (info.symbolic ? 1 : 0);
    if (f->arg_size() != size_t(numPtrs) || !f->getReturnType()->isVoidTy() ||
        llvm::any_of(f->args(),
                     [&](llvm::Argument &a) { return a.getType() != ptr; })) {
      error = "kernel " + info.name + " does not take one pointer per operand";
      return failure();
    }
    f->setName(info.name + ".ptrs");
    f->setLinkage(llvm::GlobalValue::InternalLinkage);
    auto *entry = llvm::Function::Create(
        llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), {ptr}, false),
        llvm::GlobalValue::ExternalLinkage, info.name, m);
    llvm::Argument *args = entry->getArg(0);
    args->setName("args");
    llvm::IRBuilder<> b(llvm::BasicBlock::Create(ctx, "entry", entry));
    SmallVector<llvm::Value *> ptrs;
    for (int i = 0; i < numPtrs; ++i)
      ptrs.push_back(b.CreateLoad(
          ptr, b.CreateConstInBoundsGEP1_64(ptr, args, uint64_t(i))));
    b.CreateCall(f, ptrs);
    b.CreateRetVoid();
  }
  return success();
}

LogicalResult moec::compileKernelsForCPU(ModuleOp module,
                                         ArrayRef<KernelVariant> variants,
                                         std::vector<char> &sharedObject,
                                         std::vector<KernelInfo> &kernels,
                                         std::string &error) {
  OwningOpRef<ModuleOp> k = kernelModule(module, kernels, variants, error);
  if (!k)
    return failure();
  if (kernels.empty())
    return success();
  // Kernels with symbolic operands view them at the call's sizes, before
  // canonicalize would fold their sizes (memref.dim) to the maximum's.
  if (failed(runPipeline(*k, kBufferizeOnly, error)))
    return failure();
  for (const KernelVariant &v : variants)
    if (v.symbolic() &&
        failed(dynamizeKernel(k->lookupSymbol<func::FuncOp>(v.name), v, error)))
      return failure();
  std::string pipeline =
      "canonicalize,func.func(convert-linalg-to-loops),convert-scf-to-cf,"
      "expand-strided-metadata,lower-affine,finalize-memref-to-llvm,"
      // rsqrt as 1 / sqrt: libm has no rsqrtf (LayerNormalization's).
      "math-expand-ops{ops=rsqrt},convert-math-to-libm,convert-math-to-llvm,"
      // bf16 <-> f32 as integer ops: the host has no bf16 conversion
      // instructions and libgcc < 13 no __truncsfbf2.
      "arith-expand{include-bf16=1},convert-arith-to-llvm,"
      "convert-cf-to-llvm,"
      "convert-func-to-llvm{use-bare-ptr-memref-call-conv=1},"
      "reconcile-unrealized-casts";
  if (failed(runPipeline(*k, pipeline, error)))
    return failure();

  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(*k, llvmCtx, "moe_kernels");
  if (!llvmModule) {
    error = "cannot translate the kernels to LLVM IR";
    return failure();
  }
  if (failed(addPointerArrayEntries(*llvmModule, kernels, error)))
    return failure();
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  std::string triple = llvm::sys::getProcessTriple();
  std::string terr;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(llvm::Triple(triple), terr);
  if (!target) {
    error = "no LLVM target for " + triple + ": " + terr;
    return failure();
  }
  llvm::TargetOptions opts;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      llvm::Triple(triple), llvm::sys::getHostCPUName(), "", opts,
      llvm::Reloc::PIC_));
  llvmModule->setDataLayout(tm->createDataLayout());
  llvmModule->setTargetTriple(llvm::Triple(triple));
  auto optimize = makeOptimizingTransformer(3, 0, tm.get());
  if (llvm::Error e = optimize(llvmModule.get())) {
    error = "LLVM optimisation failed: " + llvm::toString(std::move(e));
    return failure();
  }
  llvm::SmallString<0> object;
  {
    llvm::raw_svector_ostream os(object);
    llvm::legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, os, nullptr,
                                llvm::CodeGenFileType::ObjectFile)) {
      error = "the host target cannot emit object files";
      return failure();
    }
    pm.run(*llvmModule);
  }

  // Link into a shared object with the C compiler driver (and libm for the
  // math functions the kernels call).
  llvm::SmallString<128> obj, so;
  int fd;
  if (llvm::sys::fs::createTemporaryFile("moe-kernels", "o", fd, obj) ||
      llvm::sys::fs::createTemporaryFile("moe-kernels", "so", so)) {
    error = "cannot create temporary files for the kernel object";
    return failure();
  }
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << object;
  }
  auto cc = llvm::sys::findProgramByName("cc");
  if (!cc) {
    error = "no C compiler driver ('cc') on PATH to link the kernels";
    return failure();
  }
  std::string msg;
  llvm::StringRef args[] = {*cc, "-shared", "-o", so, obj, "-lm"};
  int rc = llvm::sys::ExecuteAndWait(*cc, args, std::nullopt, {}, 0, 0, &msg);
  llvm::sys::fs::remove(obj);
  if (rc != 0) {
    llvm::sys::fs::remove(so);
    error = "linking the kernels failed (" + *cc + " exit " +
            std::to_string(rc) + (msg.empty() ? "" : ": " + msg) + ")";
    return failure();
  }
  auto buf = llvm::MemoryBuffer::getFile(so);
  llvm::sys::fs::remove(so);
  if (!buf) {
    error = "cannot read the linked kernels";
    return failure();
  }
  sharedObject.assign((*buf)->getBufferStart(), (*buf)->getBufferEnd());
  return success();
}

/// Maps every outermost scf.parallel onto the GPU: split into blocks of up
/// to kThreads iterations (innermost dims first), the outer loop on the
/// grid and the inner one on the threads of a block, innermost dim on x so
/// that a warp's lanes walk contiguous memory. Dims that do not fit the
/// hardware (grid y/z <= 65535, more than three dims) stay sequential loops
/// inside a thread. Iterations past the bounds are guarded (no min/max
/// bounds: the block size stays a constant). Without the split each block
/// would run a single thread.
static LogicalResult mapForThreads(ModuleOp m) {
  constexpr int64_t kThreads = 256;
  MLIRContext *ctx = m.getContext();
  ctx->getOrLoadDialect<gpu::GPUDialect>();
  AffineMap id = AffineMap::getMultiDimIdentityMap(1, ctx);
  auto dimMap = [&](gpu::Processor p) {
    return gpu::ParallelLoopDimMappingAttr::get(ctx, p, id, id);
  };
  // Processors for the dims of `loop`, innermost first; `count[d]` is the
  // number of iterations of dim d (0: unknown).
  auto assign = [&](scf::ParallelOp loop, ArrayRef<int64_t> count,
                    ArrayRef<gpu::Processor> procs,
                    ArrayRef<int64_t> limits) -> LogicalResult {
    size_t n = loop.getNumLoops();
    SmallVector<gpu::ParallelLoopDimMappingAttr> map(
        n, dimMap(gpu::Processor::Sequential));
    size_t next = 0;
    for (size_t d = n; d-- > 0 && next < procs.size();) {
      if (count[d] == 1 && procs[0] == gpu::Processor::ThreadX)
        continue; // a block dim of one thread: keep the slot
      if (count[d] <= 0 || count[d] > limits[next])
        continue;
      map[d] = dimMap(procs[next++]);
    }
    return gpu::setMappingAttr(loop, map);
  };
  SmallVector<scf::ParallelOp> loops;
  m.walk([&](scf::ParallelOp p) {
    if (!p->getParentOfType<scf::ParallelOp>())
      loops.push_back(p);
  });
  for (scf::ParallelOp p : loops) {
    size_t n = p.getNumLoops();
    SmallVector<int64_t> trip(n, 0), sizes(n, 1);
    int64_t left = kThreads;
    for (size_t d = n; d-- > 0;) {
      auto lb = getConstantIntValue(p.getLowerBound()[d]);
      auto ub = getConstantIntValue(p.getUpperBound()[d]);
      auto st = getConstantIntValue(p.getStep()[d]);
      if (!lb || !ub || !st || *st <= 0)
        continue;
      trip[d] = std::max<int64_t>(0, (*ub - *lb + *st - 1) / *st);
      sizes[d] = std::max<int64_t>(1, std::min(left, trip[d]));
      left /= sizes[d];
    }
    bool tile = llvm::any_of(sizes, [](int64_t s) { return s > 1; }) &&
                llvm::all_of(trip, [](int64_t t) { return t > 0; });
    if (!tile) {
      if (failed(assign(p, trip,
                        {gpu::Processor::BlockX, gpu::Processor::BlockY,
                         gpu::Processor::BlockZ},
                        {INT32_MAX, 65535, 65535})))
        return failure();
      continue;
    }
    auto [outer, inner] =
        scf::tileParallelLoop(p, sizes, /*noMinMaxBounds=*/true);
    SmallVector<int64_t> blocks(n);
    for (size_t d = 0; d < n; ++d)
      blocks[d] = (trip[d] + sizes[d] - 1) / sizes[d];
    if (failed(assign(outer, blocks,
                      {gpu::Processor::BlockX, gpu::Processor::BlockY,
                       gpu::Processor::BlockZ},
                      {INT32_MAX, 65535, 65535})) ||
        failed(assign(inner, sizes,
                      {gpu::Processor::ThreadX, gpu::Processor::ThreadY,
                       gpu::Processor::ThreadZ},
                      {1024, 1024, 64})))
      return failure();
  }
  return success();
}

LogicalResult moec::compileKernelsToPTX(ModuleOp module, StringRef chip,
                                        std::vector<std::string> &ptx,
                                        std::vector<KernelInfo> &kernels,
                                        std::string &error) {
  OwningOpRef<ModuleOp> k = kernelModule(module, kernels, {}, error);
  if (kernels.empty())
    return success();
  // libdevice (math functions such as __nv_powf) comes from the CUDA
  // toolkit: $CUDA_HOME, $CUDA_PATH, the toolkit of ptxas on PATH, or
  // /usr/local/cuda.
  std::string toolkit;
  for (const char *env : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *v = getenv(env); v && *v && toolkit.empty())
      toolkit = v;
  if (toolkit.empty())
    if (auto ptxas = llvm::sys::findProgramByName("ptxas"))
      toolkit =
          llvm::sys::path::parent_path(llvm::sys::path::parent_path(*ptxas))
              .str();
  if (toolkit.empty())
    toolkit = "/usr/local/cuda";
  std::string libdevice = toolkit + "/nvvm/libdevice/libdevice.10.bc";
  if (!llvm::sys::fs::exists(libdevice)) {
    error = "libdevice not found at " + libdevice +
            " (set CUDA_HOME to the CUDA toolkit)";
    return failure();
  }
  // Loops first, then blocks and threads (mapForThreads), then the GPU.
  if (failed(runPipeline(*k,
                         std::string(kBufferize) +
                             ",func.func(convert-linalg-to-parallel-loops)",
                         error)))
    return failure();
  if (failed(mapForThreads(*k))) {
    error = "cannot map the kernels' loops onto GPU blocks and threads";
    return failure();
  }
  std::string pipeline =
      "convert-parallel-loops-to-gpu,"
      "canonicalize,gpu-launch-sink-index-computations,gpu-kernel-outlining,"
      "lower-affine,convert-scf-to-cf,"
      "nvvm-attach-target{chip=" +
      chip.str() +
      " O=3},gpu.module(convert-gpu-to-nvvm{use-bare-ptr-memref-call-conv=1}),"
      "gpu.module(reconcile-unrealized-casts),"
      "gpu-module-to-binary{format=isa toolkit=" +
      toolkit + " l=" + libdevice + "}";
  if (failed(runPipeline(*k, pipeline, error)))
    return failure();
  // PTX modules by name.
  ptx.clear();
  llvm::StringMap<int> moduleIndex;
  k->walk([&](gpu::BinaryOp bin) {
    std::string text;
    for (Attribute a : bin.getObjects())
      if (auto obj = dyn_cast<gpu::ObjectAttr>(a))
        text += obj.getObject().str();
    moduleIndex[bin.getName()] = ptx.size();
    ptx.push_back(text);
  });
  // Launch geometry and parameters from the host side.
  for (KernelInfo &info : kernels) {
    auto host = k->lookupSymbol<func::FuncOp>(info.name);
    if (!host) {
      error = "kernel " + info.name + " vanished in the GPU pipeline";
      return failure();
    }
    WalkResult w = host.walk([&](gpu::LaunchFuncOp launch) {
      moert::GpuLaunchCode l;
      l.module = moduleIndex.lookup(launch.getKernelModuleName());
      l.function = launch.getKernelName().str();
      Value dims[6] = {launch.getGridSizeX(),  launch.getGridSizeY(),
                       launch.getGridSizeZ(),  launch.getBlockSizeX(),
                       launch.getBlockSizeY(), launch.getBlockSizeZ()};
      for (int i = 0; i < 6; ++i) {
        auto c = getConstantIntValue(dims[i]);
        if (!c) {
          error = info.name + ": a launch with a dynamic geometry";
          return WalkResult::interrupt();
        }
        (i < 3 ? l.grid[i] : l.block[i - 3]) = *c;
      }
      for (Value v : launch.getKernelOperands()) {
        if (auto arg = dyn_cast<BlockArgument>(v)) {
          l.addArg(moert::LaunchArg::pointer, int64_t(arg.getArgNumber()));
        } else if (auto c = v.getDefiningOp<arith::ConstantOp>()) {
          if (auto i = dyn_cast<IntegerAttr>(c.getValue())) {
            l.addArg(moert::LaunchArg::i64, i.getInt());
          } else if (auto f = dyn_cast<FloatAttr>(c.getValue());
                     f && f.getType().isF32()) {
            float x = f.getValueAsDouble();
            uint32_t bits;
            std::memcpy(&bits, &x, 4);
            l.addArg(moert::LaunchArg::f32, int64_t(bits));
          } else {
            error = info.name + ": a kernel parameter of unsupported type";
            return WalkResult::interrupt();
          }
        } else {
          error = info.name + ": a kernel parameter computed on the host";
          return WalkResult::interrupt();
        }
      }
      info.launches.push_back(l);
      return WalkResult::advance();
    });
    if (w.wasInterrupted())
      return failure();
  }
  if (ptx.empty()) {
    error = "the NVVM pipeline produced no PTX";
    return failure();
  }
  return success();
}
