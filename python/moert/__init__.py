"""moert: the runtime half of moec, under the issue's name.

``moert.load(path)`` opens a ``.moeplan``, ``moert.init()`` joins an MPI job;
both are the :mod:`moec` functions of the same names (one extension holds
the compiler and the runtime; docs/python.md)::

    import moert
    rank, size = moert.init()                   # under mpirun -n 4 / srun
    plan = moert.load("model.moeplan")
    out = plan.run({"x": x}, threads=False)     # this process's rank
"""

from moec import Plan, PlanError, RunError, TensorSpec, finalize, init, load

__all__ = ["load", "init", "finalize", "Plan", "TensorSpec", "PlanError",
           "RunError"]
