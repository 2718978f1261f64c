"""The official SMPL files without chumpy: import, smplx loading, refusal of code-running pickles, messages."""
from __future__ import annotations

import builtins
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from smplx.utils import Struct

from cat_ray.body.smpl_import import SMPLImportError, import_smpl, load_smpl_pickle
from fixtures_real import FakeCh, py2_dumps, smpl_arrays, write_code_running_pickle, write_official_smpl, write_vibe_data

NEUTRAL = "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
MALE = "basicmodel_m_lbs_10_207_0_v1.0.0.pkl"


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, dict[str, np.ndarray]]]:
    """SMPL_DIR with the neutral and male models in the official layout, and a VIBE data folder."""
    root = tmp_path_factory.mktemp("official")
    arrays = {"neutral": smpl_arrays(seed=1), "male": smpl_arrays(seed=2)}
    write_official_smpl(root / "smpl" / "models" / NEUTRAL, arrays["neutral"])
    write_official_smpl(root / "smpl" / "models" / MALE, arrays["male"])
    write_vibe_data(root / "vibe_data")
    return root / "smpl", root / "vibe_data", arrays


def test_fixture_is_a_chumpy_pickle_that_plain_pickle_cannot_read(official) -> None:
    smpl_dir, _, _ = official
    data = (smpl_dir / "models" / NEUTRAL).read_bytes()
    assert b"cchumpy.ch\nCh\n" in data and b"cscipy.sparse.csc\ncsc_matrix\n" in data
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    if importlib.util.find_spec("chumpy") is None:  # the situation the importer exists for
        with pytest.raises(ModuleNotFoundError, match="chumpy"):
            pickle.loads(data, encoding="latin1")


def test_import_gives_smplx_models_with_the_source_vertices(official, tmp_path: Path) -> None:
    smpl_dir, vibe_dir, arrays = official
    written = import_smpl(smpl_dir, tmp_path / "body", vibe_dir)
    assert set(written) == {"SMPL_NEUTRAL.pkl", "SMPL_MALE.pkl", "J_regressor_h36m.npy", "J_regressor_extra.npy", "smpl_mean_params.npz"}
    assert "chumpy" not in sys.modules
    torch.manual_seed(0)
    betas, body_pose, orient = torch.randn(2, 10), 0.3 * torch.randn(2, 69), 0.3 * torch.randn(2, 3)
    for gender in ("neutral", "male"):
        imported = smplx.SMPL(model_path=str(tmp_path / "body"), gender=gender, batch_size=2)
        source = smplx.SMPL(model_path="", data_struct=Struct(**arrays[gender]), batch_size=2)
        out_i = imported(betas=betas, body_pose=body_pose, global_orient=orient)
        out_s = source(betas=betas, body_pose=body_pose, global_orient=orient)
        assert torch.equal(out_i.vertices, out_s.vertices)
    # Plain pickle reads the output: no chumpy, no scipy class inside.
    with open(written["SMPL_NEUTRAL.pkl"], "rb") as handle:
        model = pickle.load(handle, encoding="latin1")
    assert all(type(v).__module__ in ("numpy", "builtins") for v in model.values())
    np.testing.assert_array_equal(model["J_regressor"], arrays["neutral"]["J_regressor"])


def test_regressors_and_mean_params_are_copied_unchanged(official, tmp_path: Path) -> None:
    smpl_dir, vibe_dir, _ = official
    written = import_smpl(smpl_dir, tmp_path / "body", vibe_dir)
    np.testing.assert_array_equal(np.load(written["J_regressor_h36m.npy"]), np.load(vibe_dir / "J_regressor_h36m.npy"))
    with np.load(written["smpl_mean_params.npz"]) as got, np.load(vibe_dir / "smpl_mean_params.npz") as want:
        assert {k: got[k].shape for k in got.files} == {"pose": (144,), "shape": (10,), "cam": (3,)}
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key])


def test_vibe_files_are_found_in_the_smpl_folder_by_default(tmp_path: Path) -> None:
    write_official_smpl(tmp_path / "all" / "SMPL_NEUTRAL.pkl", smpl_arrays(seed=3))
    write_vibe_data(tmp_path / "all")
    written = import_smpl(tmp_path / "all", tmp_path / "body")
    assert set(written) >= {"SMPL_NEUTRAL.pkl", "J_regressor_h36m.npy", "smpl_mean_params.npz"}
    assert "SMPL_FEMALE.pkl" not in written


def _pickle_calling(func, arg: str) -> bytes:
    class Calls:
        def __reduce__(self):
            return (func, (arg,))

    return pickle.dumps({"v_template": Calls()}, protocol=2)


def test_unpickler_refuses_a_pickle_that_runs_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_code_running_pickle(tmp_path / "evil.pkl", marker)
    with pytest.raises(SMPLImportError, match=r"refused to load class (posix|os)\.system"):
        load_smpl_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("func", [builtins.eval, builtins.exec, subprocess.check_output, os.remove, getattr], ids=lambda f: f.__name__)
def test_unpickler_refuses_every_class_outside_the_allow_list(func, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path = tmp_path / "evil.pkl"
    path.write_bytes(_pickle_calling(func, str(victim)))
    with pytest.raises(SMPLImportError, match=f"refused to load class .*{func.__name__}"):
        load_smpl_pickle(path)
    assert victim.read_text() == "keep me"


def test_import_of_a_code_running_model_writes_nothing(official, tmp_path: Path) -> None:
    _, vibe_dir, _ = official
    marker = tmp_path / "pwned"
    (tmp_path / "smpl").mkdir()
    write_code_running_pickle(tmp_path / "smpl" / "SMPL_NEUTRAL.pkl", marker)
    with pytest.raises(SMPLImportError, match="SMPL_NEUTRAL.pkl: refused"):
        import_smpl(tmp_path / "smpl", tmp_path / "body", vibe_dir)
    assert not marker.exists() and not (tmp_path / "body").exists()


def test_chumpy_reordering_operators_are_evaluated(tmp_path: Path) -> None:
    class Transpose:
        def __init__(self, a):
            self.a = a

        def __getstate__(self):
            return {"_dirty_vars": set(), "_itr": None, "_make_dense": False, "_make_sparse": False, "_depends_on_deps": {}, "a": self.a, "axes": (1, 0)}

    Transpose.__module__, Transpose.__qualname__ = "chumpy.reordering", "transpose"
    value = np.arange(6.0).reshape(2, 3)
    path = tmp_path / "ops.pkl"
    path.write_bytes(py2_dumps({"t": Transpose(FakeCh(value)), "s": "lbs"}))
    loaded = load_smpl_pickle(path)
    np.testing.assert_array_equal(loaded["t"], value.T)
    assert loaded["s"] == "lbs"


def test_missing_neutral_model_names_files_folder_and_source(tmp_path: Path) -> None:
    (tmp_path / "smpl").mkdir()
    write_official_smpl(tmp_path / "smpl" / MALE, smpl_arrays(seed=4))
    with pytest.raises(SMPLImportError) as err:
        import_smpl(tmp_path / "smpl", tmp_path / "body", tmp_path)
    message = str(err.value)
    assert NEUTRAL in message and str(tmp_path / "smpl") in message and "https://smpl.is.tue.mpg.de" in message


def test_missing_h36m_regressor_says_it_is_required(official, tmp_path: Path) -> None:
    smpl_dir, vibe_dir, _ = official
    (tmp_path / "vibe").mkdir()
    (tmp_path / "vibe" / "smpl_mean_params.npz").write_bytes((vibe_dir / "smpl_mean_params.npz").read_bytes())
    with pytest.raises(SMPLImportError) as err:
        import_smpl(smpl_dir, tmp_path / "body", tmp_path / "vibe")
    message = str(err.value)
    assert "J_regressor_h36m.npy" in message and str(tmp_path / "vibe") in message
    assert "required" in message and "prepare_data.sh" in message
    assert not (tmp_path / "body").exists()


def test_malformed_regressor_names_the_file_and_shapes(official, tmp_path: Path) -> None:
    smpl_dir, _, _ = official
    write_vibe_data(tmp_path / "vibe", h36m_shape=(16, 6890))
    with pytest.raises(SMPLImportError, match=r"J_regressor_h36m\.npy: expected a finite array of shape \(17, 6890\), got \(16, 6890\)"):
        import_smpl(smpl_dir, tmp_path / "body", tmp_path / "vibe")


def test_malformed_model_names_the_key(official, tmp_path: Path) -> None:
    _, vibe_dir, _ = official
    arrays = smpl_arrays(seed=5)
    arrays["posedirs"] = arrays["posedirs"][:, :, :200]
    write_official_smpl(tmp_path / "smpl" / NEUTRAL, arrays)
    with pytest.raises(SMPLImportError, match=r"posedirs has shape \(6890, 3, 200\), expected 6890x3x207"):
        import_smpl(tmp_path / "smpl", tmp_path / "body", vibe_dir)


def test_a_file_that_is_not_a_pickle_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(b"<html>login required</html>")
    with pytest.raises(SMPLImportError, match=f"{path}: not a readable SMPL pickle"):
        load_smpl_pickle(path)
