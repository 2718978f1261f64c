"""The official SMPL files, made chumpy-free, plus VIBE's regressors and mean parameters (issue 5, item 1).

The official SMPL ``.pkl`` files are Python-2 pickles that reference ``chumpy.ch.Ch`` objects and
``scipy.sparse`` matrices. chumpy no longer installs on current numpy, so :class:`SMPLUnpickler`
reads them without it: every chumpy or sparse class becomes an inert record of its pickled state,
turned into a numpy array afterwards, and every class outside a short allow-list is refused before
it is built (a pickle's ``REDUCE`` can otherwise call anything, ``os.system`` included).

:func:`import_smpl` writes a body-model folder in the layout the rest of cat-ray reads
(``SMPL_NEUTRAL.pkl``, ``J_regressor_h36m.npy``, ``smpl_mean_params.npz``; README "Using the real
datasets"), every file written atomically.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

SMPL_URL = "https://smpl.is.tue.mpg.de (free registration; the neutral model ships with SMPLify, https://smplify.is.tue.mpg.de)"
VIBE_DATA_HINT = (
    "VIBE's data: run VIBE's scripts/prepare_data.sh (https://github.com/mkocabas/VIBE), which unpacks "
    "vibe_data.zip into data/vibe_data/"
)
NUM_VERTICES = 6890  # SMPL's mesh; VIBE's regressors are (J, 6890)
NUM_JOINTS = 24
NUM_POSE_BASIS = 207  # 23 joints x 9 rotation-matrix entries

# Output name -> official file names (matched case-insensitively anywhere under SMPL_DIR).
SMPL_FILES = {
    "SMPL_NEUTRAL.pkl": ("basicModel_neutral_lbs_10_207_0_v1.0.0.pkl", "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl", "SMPL_NEUTRAL.pkl"),
    "SMPL_MALE.pkl": ("basicmodel_m_lbs_10_207_0_v1.0.0.pkl", "basicmodel_m_lbs_10_207_0_v1.1.0.pkl", "SMPL_MALE.pkl"),
    "SMPL_FEMALE.pkl": ("basicModel_f_lbs_10_207_0_v1.0.0.pkl", "basicmodel_f_lbs_10_207_0_v1.1.0.pkl", "SMPL_FEMALE.pkl"),
}
# VIBE file -> expected shape ("J_regressor_extra" is optional: cat-ray evaluates on the H36M joints).
VIBE_REGRESSORS = {"J_regressor_h36m.npy": (17, NUM_VERTICES), "J_regressor_extra.npy": (9, NUM_VERTICES)}
MEAN_PARAMS = "smpl_mean_params.npz"
MEAN_PARAM_SHAPES = {"pose": (144,), "shape": (10,), "cam": (3,)}  # 24 x 6D rotations, betas, weak-perspective camera


class SMPLImportError(ValueError):
    """A missing, malformed or unsafe SMPL/VIBE file: names the file, where it was looked for and where to get it."""


# --------------------------------------------------------------------------- restricted unpickling


class _PickledState:
    """An inert stand-in for a chumpy or scipy.sparse object: keeps its pickled state, runs nothing."""

    qualified_name = "?"
    state: Any = None  # NEWOBJ builds instances without __init__; BUILD then sets the state

    def __setstate__(self, state: Any) -> None:
        self.state = state


_STUB_CLASSES: dict[str, type] = {}


def _stub(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _STUB_CLASSES:
        _STUB_CLASSES[key] = type(f"Pickled_{name}", (_PickledState,), {"qualified_name": key})
    return _STUB_CLASSES[key]


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """copy_reg._reconstructor (pickle protocols 0-1) restricted to the inert stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledState)) or base is not object:
        raise SMPLImportError(f"refused copy_reg._reconstructor of {cls!r}: only chumpy/scipy.sparse objects are rebuilt")
    obj = cls()
    obj.state = state
    return obj


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """_codecs.encode as Python 3 pickles bytes at protocol 2 (``encode(str, 'latin1')``), nothing else."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise SMPLImportError(f"refused _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core; pickles name either
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        found[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        found[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        found[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return found


_BUILTINS = {"set": set, "frozenset": frozenset, "object": object, "bytes": bytes, "list": list, "dict": dict, "tuple": tuple}
_CHUMPY_MODULES = ("chumpy.ch", "chumpy.ch_ops", "chumpy.reordering")
_SPARSE_MODULES = ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr")
_SPARSE_NAMES = ("csc_matrix", "csr_matrix")


class SMPLUnpickler(pickle.Unpickler):
    """Reads SMPL pickles (``encoding="latin1"``) with an allow-list of classes and no chumpy.

    Allowed: numpy's array/dtype/scalar reconstructors, a few builtin containers, ``copy_reg``'s
    reconstructor and ``_codecs.encode`` (latin1 only) restricted as above, and the classes of
    ``chumpy.ch``/``chumpy.ch_ops``/``chumpy.reordering`` and ``scipy.sparse`` CSC/CSR matrices as
    inert stand-ins. Anything else raises :class:`SMPLImportError` naming the class, before it is called.
    """

    _numpy = None

    def __init__(self, file: io.BufferedIOBase, source: str = "<pickle>"):
        super().__init__(file, encoding="latin1")
        self.source = source
        if SMPLUnpickler._numpy is None:
            SMPLUnpickler._numpy = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._numpy:
            return self._numpy[(module, name)]
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module in _CHUMPY_MODULES and name.isidentifier():
            return _stub(module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return _stub(module, name)
        raise SMPLImportError(f"{self.source}: refused to load class {module}.{name}: not an SMPL model component (allowed: numpy arrays, chumpy arrays, scipy.sparse matrices)")


def _dense_sparse(state: dict[str, Any], name: str) -> np.ndarray:
    """A pickled scipy CSC/CSR matrix's state -> dense float array (no scipy class rebuilt)."""
    from scipy import sparse

    shape = state.get("_shape", state.get("shape"))
    data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
    build = sparse.csc_matrix if name.startswith("csc") else sparse.csr_matrix
    return np.asarray(build((data, indices, indptr), shape=tuple(int(s) for s in shape)).toarray())


# chumpy operators whose value is simple to recompute from their pickled terms.
_CHUMPY_OPS: dict[str, Callable[[dict[str, Any]], np.ndarray]] = {
    "chumpy.ch.Ch": lambda s: np.asarray(s["x"]),
    "chumpy.reordering.transpose": lambda s: np.transpose(s["a"], s.get("axes")),
    "chumpy.reordering.reshape": lambda s: np.reshape(s["a"], s["newshape"]),
    "chumpy.ch_ops.add": lambda s: np.add(s["a"], s["b"]),
    "chumpy.ch_ops.subtract": lambda s: np.subtract(s["a"], s["b"]),
    "chumpy.ch_ops.multiply": lambda s: np.multiply(s["a"], s["b"]),
}


def _to_plain(value: Any, source: str, memo: dict[int, Any] | None = None) -> Any:
    """Replace every inert stand-in (recursively, shared objects once) by its numpy value."""
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, dict):
        out: Any = {k: _to_plain(v, source, memo) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        out = type(value)(_to_plain(v, source, memo) for v in value)
    elif isinstance(value, _PickledState):
        name, state = value.qualified_name, value.state
        if not isinstance(state, dict):
            raise SMPLImportError(f"{source}: a pickled {name} has no state dictionary; the file is not a valid SMPL model")
        plain = {k: _to_plain(v, source, memo) for k, v in state.items()}
        try:
            if name.rsplit(".", 1)[-1] in _SPARSE_NAMES:
                out = _dense_sparse(plain, name.rsplit(".", 1)[-1])
            elif name in _CHUMPY_OPS:
                out = np.asarray(_CHUMPY_OPS[name](plain), dtype=np.float64)
            else:
                raise SMPLImportError(f"{source}: chumpy operator {name} is not supported by the converter")
        except KeyError as err:
            raise SMPLImportError(f"{source}: a pickled {name} lacks its {err.args[0]!r} term; the file is not a valid SMPL model") from None
    else:
        out = value
    memo[id(value)] = out
    return out


def load_smpl_pickle(path: Path) -> dict[str, Any]:
    """The dict of an SMPL ``.pkl`` (official chumpy one or already clean), chumpy and sparse values as numpy arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = SMPLUnpickler(handle, source=str(path)).load()
    except SMPLImportError:
        raise
    except Exception as err:  # any failure of a foreign file is the user's file problem, reported as such
        raise SMPLImportError(f"{path}: not a readable SMPL pickle ({type(err).__name__}: {err}); get the model from {SMPL_URL}") from None
    if not isinstance(raw, dict):
        raise SMPLImportError(f"{path}: expected a pickled dict of SMPL arrays, got {type(raw).__name__}")
    return _to_plain(raw, str(path))


# --------------------------------------------------------------------------- checks


def check_smpl_dict(model: dict[str, Any], source: str) -> None:
    """Refuse a model dict that ``smplx.SMPL`` could not load or that is not SMPL (V = 6890, 24 joints)."""
    v = NUM_VERTICES
    expected = {
        "v_template": (v, 3),
        "shapedirs": (v, 3, None),
        "posedirs": (v, 3, NUM_POSE_BASIS),
        "J_regressor": (NUM_JOINTS, v),
        "weights": (v, NUM_JOINTS),
        "kintree_table": (2, NUM_JOINTS),
        "f": (None, 3),
    }
    for key, shape in expected.items():
        if key not in model:
            raise SMPLImportError(f"{source}: key {key!r} missing; keys found: {', '.join(sorted(map(str, model)))}")
        got = np.shape(model[key])
        if len(got) != len(shape) or any(e is not None and g != e for g, e in zip(got, shape)):
            want = "x".join("*" if e is None else str(e) for e in shape)
            raise SMPLImportError(f"{source}: {key} has shape {got}, expected {want}")
        if not np.all(np.isfinite(np.asarray(model[key], dtype=np.float64))):
            raise SMPLImportError(f"{source}: {key} holds non-finite values")
    if np.shape(model["shapedirs"])[2] < 10:
        raise SMPLImportError(f"{source}: shapedirs has {np.shape(model['shapedirs'])[2]} shape components, expected at least 10")


def _load_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise SMPLImportError(f"{path}: not a readable .npy array ({err}); get it from {VIBE_DATA_HINT}") from None
    if array.shape != shape or not np.all(np.isfinite(array)):
        raise SMPLImportError(f"{path}: expected a finite array of shape {shape}, got {array.shape}; get it from {VIBE_DATA_HINT}")
    return array


def _load_mean_params(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            params = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as err:
        raise SMPLImportError(f"{path}: not a readable .npz file ({err}); get it from {VIBE_DATA_HINT}") from None
    for key, shape in MEAN_PARAM_SHAPES.items():
        if key not in params or params[key].shape != shape:
            got = params[key].shape if key in params else "missing"
            raise SMPLImportError(f"{path}: key {key!r} should have shape {shape}, got {got}; get it from {VIBE_DATA_HINT}")
    return params


# --------------------------------------------------------------------------- import


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first file under ``folder`` (recursively) whose name matches one of ``names``, case-insensitively."""
    wanted = [n.lower() for n in names]
    found = sorted((p for p in folder.rglob("*") if p.is_file() and p.name.lower() in wanted), key=lambda p: (wanted.index(p.name.lower()), len(p.parts), str(p)))
    return found[0] if found else None


def _write_atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean_for_smplx(model: dict[str, Any]) -> dict[str, Any]:
    """Plain numpy/builtin values only; sparse regressors already dense; faces and tree as integers."""
    clean = dict(model)
    clean["f"] = np.asarray(model["f"]).astype(np.int64)
    clean["kintree_table"] = np.asarray(model["kintree_table"]).astype(np.int64)
    return clean


def import_smpl(smpl_dir: Path, out_dir: Path, vibe_data_dir: Path | None = None) -> dict[str, Path]:
    """Convert the official SMPL models and copy VIBE's files into the body-model folder ``out_dir``.

    Looks under ``smpl_dir`` (recursively) for the neutral model (required: evaluation uses it) and the
    male/female ones (optional), and under ``vibe_data_dir`` (default ``smpl_dir``) for
    ``J_regressor_h36m.npy`` (17 x 6890, required: it gives the evaluation joints),
    ``smpl_mean_params.npz`` (required) and ``J_regressor_extra.npy`` (9 x 6890, optional).
    Returns output file name -> written path. Raises :class:`SMPLImportError` naming the file,
    where it was looked for and where to obtain it; nothing is written unless every check passed.
    """
    smpl_dir, out_dir = Path(smpl_dir), Path(out_dir)
    vibe_dir = Path(vibe_data_dir) if vibe_data_dir is not None else smpl_dir
    for folder, what in ((smpl_dir, "SMPL model folder"), (vibe_dir, "VIBE data folder")):
        if not folder.is_dir():
            raise SMPLImportError(f"{folder}: {what} not found")

    models: dict[str, dict[str, Any]] = {}
    for out_name, names in SMPL_FILES.items():
        source = _find(smpl_dir, names)
        if source is None:
            if out_name == "SMPL_NEUTRAL.pkl":
                raise SMPLImportError(f"the neutral SMPL model ({' or '.join(names)}) was not found under {smpl_dir}; get it from {SMPL_URL} (VIBE's vibe_data.zip also holds SMPL_NEUTRAL.pkl)")
            continue
        model = load_smpl_pickle(source)
        check_smpl_dict(model, str(source))
        models[out_name] = _clean_for_smplx(model)

    arrays: dict[str, np.ndarray] = {}
    for name, shape in VIBE_REGRESSORS.items():
        source = _find(vibe_dir, (name,))
        if source is None:
            if name == "J_regressor_h36m.npy":
                raise SMPLImportError(f"{name} was not found under {vibe_dir}: it is required (it regresses the 17 Human3.6M joints whose 14 LSP joints are the evaluation joints); get it from {VIBE_DATA_HINT}")
            continue
        arrays[name] = _load_npy(source, shape)
    mean_source = _find(vibe_dir, (MEAN_PARAMS,))
    if mean_source is None:
        raise SMPLImportError(f"{MEAN_PARAMS} was not found under {vibe_dir}: it holds the regressor's initial pose (144), shape (10) and camera (3); get it from {VIBE_DATA_HINT}")
    mean_params = _load_mean_params(mean_source)

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for out_name, model in models.items():
        _write_atomic(out_dir / out_name, lambda h, m=model: pickle.dump(m, h, protocol=4))
        written[out_name] = out_dir / out_name
    for name, array in arrays.items():
        _write_atomic(out_dir / name, lambda h, a=array: np.save(h, a, allow_pickle=False))
        written[name] = out_dir / name
    _write_atomic(out_dir / MEAN_PARAMS, lambda h: np.savez(h, **mean_params))
    written[MEAN_PARAMS] = out_dir / MEAN_PARAMS
    return written

