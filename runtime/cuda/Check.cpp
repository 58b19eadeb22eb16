//===- Check.cpp - failure reporting of the CUDA runtime ------------------===//

#include "moert/cuda/Check.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace moert {
namespace cuda {

namespace {
std::mutex &handlerMutex() {
  static std::mutex m;
  return m;
}
FailureHandler &handlerSlot() {
  static FailureHandler h;
  return h;
}
} // namespace

FailureHandler setFailureHandler(FailureHandler handler) {
  std::lock_guard<std::mutex> lock(handlerMutex());
  FailureHandler old = std::move(handlerSlot());
  handlerSlot() = std::move(handler);
  return old;
}

void fail(const char *what, const char *file, int line, const char *call,
          const std::string &detail) {
  std::string msg = std::string("moert: ") + what + " at " + file + ":" +
                    std::to_string(line) + ": " + call + ": " + detail;
  FailureHandler h;
  {
    std::lock_guard<std::mutex> lock(handlerMutex());
    h = handlerSlot();
  }
  if (h)
    h(msg); // may throw
  else
    std::fprintf(stderr, "%s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

void failCuda(const char *file, int line, const char *call, cudaError_t err) {
  fail("CUDA error", file, line, call,
       std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) +
           ")");
}

const char *cublasStatusName(cublasStatus_t status) {
  return cublasGetStatusName(status);
}

void failCublas(const char *file, int line, const char *call,
                cublasStatus_t status) {
  fail("cuBLAS error", file, line, call,
       std::string(cublasGetStatusName(status)) + " (" +
           cublasGetStatusString(status) + ")");
}

} // namespace cuda
} // namespace moert
