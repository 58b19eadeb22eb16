"""moec: compile ONNX Mixture-of-Experts models to expert-parallel plans and
run them, from Python.

The compiler and the runtime run in this process (a nanobind extension over
the same C++ libraries as the ``moec`` and ``moe-run`` tools)::

    import moec
    plan = moec.compile("model.onnx", mesh="ep=4")  # moec model.onnx --mesh ep=4
    print(plan.describe())                          # moe-run --describe
    plan.report()["layers"]                         # moec --report=json
    out = plan.run({"hidden_states": x}, ranks=4)   # 4 CPU ranks as threads
    plan.save("model.moeplan")                      # moe-run can run it too

Errors raise :class:`CompileError` (naming the ONNX node, the file or the
flag, as moec's one-line errors do), :class:`PlanError` (a plan file that
cannot be opened) and :class:`RunError` (a run that fails); bad arguments
raise ``ValueError`` or ``TypeError``. See docs/python.md.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import warnings
import weakref
from typing import (TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple,
                    Optional, Tuple, Union)

import numpy as np

from . import _moec
from ._moec import CompileError, Error, PlanError, RunError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "compile",
    "compile_option_names",
    "load",
    "init",
    "finalize",
    "Plan",
    "TensorSpec",
    "Error",
    "CompileError",
    "PlanError",
    "RunError",
]

PathLike = Union[str, "os.PathLike[str]"]
#: A model: a path to an ``.onnx`` / ``.onnxtxt`` file, an
#: ``onnx.ModelProto``, or the bytes of a serialized ModelProto.
Model = Union[str, "os.PathLike[str]", bytes, "onnx.ModelProto"]


class TensorSpec(NamedTuple):
    """A plan input or output: its name, dtype ("f32", "i64", ...) and
    global shape."""

    name: str
    dtype: str
    shape: Tuple[int, ...]


def _flag_value(flag: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"option {flag}: expected a str, int, float, bool or "
                    f"path, got {type(value).__name__}")


def compile(  # noqa: A001 (the issue's name for it)
    model: Model,
    mesh: str = "ep=4",
    input_shapes: Optional[Mapping[str, Tuple[Union[int, str], ...]]] = None,
    precision: Optional[str] = None,
    target: Optional[str] = None,
    **options: Any,
) -> Plan:
    """Compiles an ONNX MoE model to a plan for ``mesh``.

    The same compile as ``moec MODEL --mesh MESH -o PLAN.moeplan``, in this
    process: import, raise the MoE layers, shard over the mesh, lower to the
    per-rank program and write the plan (to a temporary file the returned
    :class:`Plan` owns; :meth:`Plan.save` copies it).

    Args:
        model: a path to an ``.onnx`` or ``.onnxtxt`` file, an
            ``onnx.ModelProto`` (external data loaded, or next to the
            current directory), or the bytes of a serialized ModelProto.
        mesh: the device mesh, ``"dp=D,ep=E,tp=T"`` (any subset; the
            product is the number of ranks), or ``"auto"`` with
            ``gpus=N`` (moec's search).
        input_shapes: fixed shapes of graph inputs with symbolic dims,
            e.g. ``{"hidden_states": (4, 128, 1024)}`` (moec
            ``--input-shape``). A dim ``"?"`` follows the token count:
            with ``max_tokens=N`` the plan runs at every count up to N
            (``{"hidden_states": (1, "?", 1024)}, max_tokens=256``).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` GEMM
            weights (docs/precision.md).
        target: ``"cpu"`` (default) or ``"cuda"`` (PTX for ``cuda_chip``
            as well as CPU code).
        **options: any other moec compile flag, its name with ``_`` for
            ``-``: ``attention_mesh="tp=4"``, ``placement="balanced"``,
            ``placement_load="load.json"``, ``redundant_experts=2``,
            ``capacity_factor=1.25``, ``token_split="moe"``,
            ``strict=True``, ``device_memory="80GiB"``, ``gpus=16``, ...
            (``moec.compile_option_names()`` lists them; ``moec --help``
            describes them).

    Returns:
        The compiled :class:`Plan`; warnings moec prints (an MoE-like
        region left unraised, ...) are issued as ``UserWarning``.

    Raises:
        CompileError: the model cannot be compiled (the message names the
            file, the ONNX node and the reason) or an option's value is
            wrong (the message names the flag, e.g. ``--mesh``).
        TypeError: an unknown option.
    """
    flags: List[Tuple[str, str]] = [("mesh", mesh)]
    for name, shape in (input_shapes or {}).items():
        # "?" (or "?+B", "A*?"): a dim that follows the token count, with
        # max_tokens=N (docs/sharding.md, "Dynamic token counts").
        dims = ",".join(d if isinstance(d, str) else str(int(d))
                        for d in shape)
        flags.append(("input-shape", f"{name}={dims}"))
    if precision is not None:
        flags.append(("precision", precision))
    if target is not None:
        flags.append(("target", target))
    for key, value in options.items():
        flag = key.replace("_", "-")
        if flag in ("mesh", "input-shape", "precision", "target"):
            raise TypeError(f"compile() got {key}= twice")
        flags.append((flag, _flag_value(flag, value)))

    path: Optional[str] = None
    data: Optional[bytes] = None
    name = "model.onnx"
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        name = path
    elif isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    elif hasattr(model, "SerializeToString"):
        data = model.SerializeToString()
        graph = getattr(model, "graph", None)
        if graph is not None and graph.name:
            name = f"{graph.name}.onnx"
    else:
        raise TypeError("compile() takes a path, an onnx.ModelProto or the "
                        f"bytes of one, got {type(model).__name__}")

    tmp = tempfile.TemporaryDirectory(prefix="moec-")
    plan_path = os.path.join(tmp.name, "model.moeplan")
    try:
        report, warns, mesh_used, attention, _log, page = _moec.compile(
            path, data, name, flags, plan_path)
    except BaseException:
        tmp.cleanup()
        raise
    for w in warns:
        warnings.warn(w, stacklevel=2)
    plan = Plan._open(plan_path, verify_weights=True, tmp=tmp)
    plan._report = json.loads(report)
    plan._page = page
    plan._mesh_text = mesh_used + (f" (attention {attention})"
                                   if attention else "")
    return plan


def compile_option_names() -> List[str]:
    """The moec flags :func:`compile` takes as keyword options (with ``_``
    for ``-``)."""
    return list(_moec.compile_option_names())


def load(path: PathLike, verify_weights: bool = True) -> Plan:
    """Opens a ``.moeplan`` file (written by ``moec -o`` or
    :meth:`Plan.save`).

    Each rank's weights are mapped (not copied) at its first run and
    checked against their checksums unless ``verify_weights`` is false.

    Raises:
        PlanError: not a plan, truncated, a version mismatch, a bad checksum.
    """
    return Plan._open(os.fspath(path), verify_weights=verify_weights,
                      tmp=None)


class Plan:
    """A compiled plan: the per-rank program of every rank of its mesh.

    Made by :func:`compile` or :func:`load`, not directly.
    """

    _file: Any
    _report: Optional[Dict[str, Any]]
    _mesh_text: str
    last_run_report: Optional[List[Dict[str, Any]]]

    def __init__(self) -> None:
        raise TypeError("use moec.compile(...) or moec.load(path)")

    @classmethod
    def _open(cls, path: str, verify_weights: bool,
              tmp: Optional[tempfile.TemporaryDirectory]) -> Plan:
        self = object.__new__(cls)
        self._file = _moec.PlanFile(path, verify_weights)
        self._report = None
        self._page = None
        self._mesh_text = ",".join(f"{a}={n}" for a, n in self._file.mesh)
        self.last_run_report = None
        self._tmp = tmp
        if tmp is not None:
            # The temporary plan goes when the Plan does.
            weakref.finalize(self, tmp.cleanup)
        return self

    @property
    def path(self) -> str:
        """The plan file (a temporary file for a compiled plan)."""
        return self._file.path

    @property
    def mesh(self) -> Dict[str, int]:
        """The mesh axes and their sizes, e.g. ``{"ep": 4}``."""
        return dict(self._file.mesh)

    @property
    def world_size(self) -> int:
        """The number of ranks (the product of the mesh)."""
        return int(self._file.world_size)

    @property
    def inputs(self) -> List[TensorSpec]:
        """The model inputs :meth:`run` takes (global shapes)."""
        return [TensorSpec(n, d, tuple(s)) for n, d, s in self._file.inputs()]

    @property
    def outputs(self) -> List[TensorSpec]:
        """The model outputs :meth:`run` returns (global shapes)."""
        return [TensorSpec(n, d, tuple(s)) for n, d, s in self._file.outputs()]

    def describe(self) -> str:
        """The plan as ``moe-run --describe`` prints it: mesh, inputs and
        outputs with their splits, segments and bytes per rank, values,
        steps."""
        return str(self._file.describe())

    def report(self) -> Dict[str, Any]:
        """The compile report, ``moec --mesh ... --report=json``: per MoE
        layer the experts each rank holds and the bytes dispatch and combine
        move (beside the seed's formulas), per rank the memory.

        Raises:
            PlanError: the plan was loaded from a file (the report is
                moec's, made while compiling).
        """
        if self._report is None:
            raise PlanError(f"{self.path}: a loaded plan has no compile "
                            "report (moec.compile(...).report(), or moec "
                            "--report=json)")
        return self._report

    def to_html(self, path: Optional[PathLike] = None,
                routing: Optional[PathLike] = None) -> str:
        """The plan as one self-contained HTML page, as ``moec --emit=html``
        draws it: the ranks by node with the experts each holds, per MoE
        layer the dispatch and combine bytes beside the seed's formulas,
        per rank the memory; with ``routing`` (a ``moe-run
        --record-routing`` file of this model and mesh) the measured
        tokens per expert and the rank-to-rank token flow.

        Args:
            path: also write the page there.
            routing: the recorded routing to draw.

        Returns:
            The page's HTML.

        Raises:
            PlanError: a loaded plan (the page is drawn from the compile
                report), or a routing file that does not fit the plan.
        """
        if self._page is None:
            raise PlanError(f"{self.path}: a loaded plan has no compile "
                            "report to draw (moec.compile(...).to_html(), "
                            "or moec --emit=html)")
        html = self._page.render(None if routing is None
                                 else os.fspath(routing))
        if path is not None:
            with open(os.fspath(path), "w", encoding="utf-8") as f:
                f.write(html)
        return str(html)

    def save(self, path: PathLike) -> str:
        """Writes the plan to ``path`` (``.moeplan``), which ``moe-run`` and
        :func:`load` read. Returns the path."""
        dest = os.fspath(path)
        if os.path.abspath(dest) != os.path.abspath(self.path):
            shutil.copyfile(self.path, dest)
        return dest

    def run(
        self,
        inputs: Mapping[str, Any],
        ranks: Optional[int] = None,
        threads: bool = True,
    ) -> Dict[str, np.ndarray]:
        """Runs the plan on CPU ranks and returns its outputs.

        Args:
            inputs: every model input by name: numpy arrays, or tensors with
                ``__dlpack__`` on the CPU (torch, JAX, CuPy host arrays...),
                of the plan's dtype and global shape (:attr:`inputs`).
                They are taken without conversion (DLPack or the buffer
                protocol) and their bytes copied once into the runtime's
                input arrays.
            ranks: the number of ranks; must equal :attr:`world_size`
                (default).
            threads: ``True`` runs the ranks as threads of this process
                (a shared-memory communicator). ``False`` runs this
                process's rank of an MPI job (``mpirun -n N python ...``
                after :func:`init`), or the one rank of a 1-rank plan.

        Returns:
            The outputs by name (numpy arrays, owning the runtime's buffers).
            Under MPI, rank 0 gets them, the other ranks an empty dict.
            :attr:`last_run_report` then holds each rank's run report
            (``moe-run --json``'s ``reports``).

        Raises:
            ValueError: a missing or unknown input, a wrong dtype or shape,
                ``ranks`` not the plan's world size.
            TypeError: an input that is not a CPU array.
            PlanError: a rank's weights fail their checksums.
            RunError: a step fails (the message names the rank and the ONNX
                node). Under MPI a failing rank ends the job (MPI_Abort), as
                ``moe-run`` does, since the other ranks wait in collectives.
        """
        specs = {s.name: s for s in self.inputs}
        for name in specs:
            if name not in inputs:
                s = specs[name]
                raise ValueError(f"missing input '{name}' (expected "
                                 f"{s.dtype}{list(s.shape)}; plan.inputs "
                                 "lists them)")
        for name in inputs:
            if name not in specs:
                raise ValueError(f"unknown input '{name}' (the plan's inputs "
                                 f"are {', '.join(specs)})")
        arrays: Dict[str, Any] = {}
        for name, value in inputs.items():
            arrays[str(name)] = _as_cpu_array(str(name), value)
        outputs, reports = self._file.run(arrays, ranks, threads)
        self.last_run_report = [json.loads(r) for r in reports]
        return dict(outputs)

    def generate(
        self,
        ids: Any,
        max_new_tokens: int = 16,
        ranks: Optional[int] = None,
        threads: bool = True,
        temperature: float = 0.0,
        seed: int = 0,
        decode_plan: Optional["Plan"] = None,
    ) -> np.ndarray:
        """Generates ``max_new_tokens`` tokens after the prompt ``ids``, as
        ``moe-run generate`` does.

        The plan must have a dynamic token count (``moec.compile(...,
        input_shapes={"input_ids": (B, "?")}, max_tokens=N)``), an int64
        ``input_ids`` [B, T] input and f32 ``logits`` [B, T, V]. Each step
        runs the plan on the whole sequence so far, or with
        ``decode_plan`` this plan is the prefill (it also returns the
        ``present*`` KV cache) and each later token is one step of
        ``decode_plan`` (``moe-run generate --decode-plan``).

        Args:
            ids: int64 token ids [B, prompt] (numpy or a CPU tensor).
            max_new_tokens: tokens added to each sequence; prompt +
                max_new_tokens - 1 must not exceed the plan's maximum.
            ranks, threads: as in :meth:`run`.
            temperature: 0 for greedy (the first maximum, as torch.argmax),
                else sampling from softmax(logits / temperature).
            seed: the sampling generator's seed (rank 0's).
            decode_plan: a decode-step :class:`Plan` whose dynamic count is
                the cache length (inputs ``input_ids`` [B, 1],
                ``position_ids``, ``past*``; outputs ``logits``,
                ``present*``), for the same number of ranks.

        Returns:
            int64 ids [B, prompt + max_new_tokens] (under MPI on rank 0;
            ``None`` on the others). :attr:`last_generate_seconds` holds
            (prefill, decode) seconds.

        Raises:
            ValueError: a plan that cannot generate, a prompt that does not
                fit it (batch, dtype, ids outside the vocabulary, length).
            RunError: a step fails.
        """
        array = _as_cpu_array("ids", ids)
        out, prefill, decode = self._file.generate(
            array, int(max_new_tokens), ranks, threads, float(temperature),
            int(seed), None if decode_plan is None else decode_plan._file)
        self.last_generate_seconds = (prefill, decode)
        return out

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}"
                        for s in self.inputs)
        return f"<moec.Plan mesh {self._mesh_text} ({ins}) at {self.path}>"


def _as_cpu_array(name: str, value: Any) -> Any:
    """`value` as something the extension takes without a copy: a
    C-contiguous numpy array or a CPU DLPack tensor."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    if hasattr(value, "__dlpack__"):
        device = getattr(value, "device", None)
        if device is not None and str(device) != "cpu" and \
                getattr(device, "type", "cpu") != "cpu":
            raise TypeError(f"input '{name}' is on {device}: this moec runs "
                            "plans on CPU ranks only (move it with .cpu())")
        if hasattr(value, "detach"):  # torch: DLPack refuses grad tensors
            value = value.detach()
        if hasattr(value, "is_contiguous") and not value.is_contiguous():
            value = value.contiguous()
        return value
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"input '{name}': expected a numpy array or a CPU "
                        f"tensor, got {type(value).__name__}")
    return np.ascontiguousarray(array)


_mpi_initialized = False


def init() -> Tuple[int, int]:
    """Joins the MPI job this process was started in (``mpirun -n N`` or
    ``srun``): MPI_Init, once. Returns ``(rank, size)``. Then
    ``plan.run(inputs, threads=False)`` runs this process's rank; MPI is
    finalized at exit.

    Raises:
        RunError: MPI fails to start, or moec was built without MPI.
    """
    global _mpi_initialized
    rank, size = _moec.init_mpi()
    if not _mpi_initialized:
        _mpi_initialized = True
        atexit.register(finalize)
    return int(rank), int(size)


def finalize() -> None:
    """MPI_Finalize when :func:`init` started MPI (also called at exit)."""
    _moec.finalize_mpi()
