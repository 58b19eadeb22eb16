//===- MpiComm.h - the MPI communicator ---------------------------*- C++
//-*-===//
//
// One rank per process over MPI (Open MPI). Built only when CMake finds MPI;
// MOERT_HAVE_MPI is then defined for the targets that link moert_exec. The
// error handler of every communicator is MPI_ERRORS_RETURN and every call is
// checked: a failure throws CommError naming the MPI call.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_MPICOMM_H
#define MOERT_MPICOMM_H

#include "moert/Comm.h"

namespace moert {

/// Initialises MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) and returns the
/// MPI_COMM_WORLD communicator. Throws CommError on failure.
std::unique_ptr<Comm> initMpi(int *argc, char ***argv);

/// MPI_Finalize, when MPI was initialised and not yet finalised.
void finalizeMpi();

/// Prints `message` to stderr and ends every rank with MPI_Abort (status
/// `code`) when MPI is initialised; otherwise exits with `code`.
[[noreturn]] void abortMpi(const std::string &message, int code = 1);

} // namespace moert

#endif // MOERT_MPICOMM_H
