"""The stand-in SMPL body model, the BodyModel wrapper and its fast exact joints path."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch
from smplx.lbs import batch_rodrigues

from cat_ray.body.camera import project_weak_perspective
from cat_ray.body.model import (
    H36M_TO_J14,
    PELVIS_J14,
    BodyModel,
    BodyModelError,
    load_mean_params,
    resolve_body_dir,
)
from cat_ray.body.standin import (
    NUM_VERTICES,
    SHAPE_DIRECTIONS,
    SMPL_PARENTS,
    make_standin,
)

LEFT_J14 = (3, 4, 5, 9, 10, 11)  # L hip, knee, ankle, shoulder, elbow, wrist
RIGHT_J14 = (2, 1, 0, 8, 7, 6)  # the same joints on the right


@pytest.fixture(scope="module")
def body(body_dir: Path) -> BodyModel:
    return BodyModel.from_dir(body_dir)


@pytest.fixture(scope="module")
def smpl_dict(body_dir: Path) -> dict:
    with open(body_dir / "SMPL_NEUTRAL.pkl", "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def _random_pose(n: int, seed: int, dtype=torch.float32, scale: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    aa = torch.randn(n * 24, 3, generator=g, dtype=torch.float64) * scale
    rot = batch_rodrigues(aa).view(n, 24, 3, 3).to(dtype)
    betas = (torch.randn(n, 10, generator=g, dtype=torch.float64) * 1.5).to(dtype)
    return rot, betas


def _rest(n: int = 1, dtype=torch.float32):
    return torch.eye(3, dtype=dtype).expand(n, 24, 3, 3), torch.zeros(n, 10, dtype=dtype)


def _winding_number(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalised winding number of a closed, outward-oriented mesh at points (P, 3) -> (P,)
    (Van Oosterom and Strackee's solid angle of each triangle, summed over 4 pi)."""
    a = verts[faces[:, 0]][None] - points[:, None]  # (P, F, 3)
    b = verts[faces[:, 1]][None] - points[:, None]
    c = verts[faces[:, 2]][None] - points[:, None]
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    num = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc
           + np.einsum("pfi,pfi->pf", b, c) * la + np.einsum("pfi,pfi->pf", c, a) * lb)
    return 2 * np.arctan2(num, den).sum(1) / (4 * np.pi)


# --- the files -----------------------------------------------------------------------------


def test_smplx_loads_the_standin_unchanged(body_dir: Path, smpl_dict: dict):
    for path in (body_dir / "SMPL_NEUTRAL.pkl", body_dir):  # the file, or the folder (neutral)
        smpl = smplx.SMPL(model_path=str(path))
        out = smpl()  # its own zero parameters, batch 1
        assert out.vertices.shape == (1, NUM_VERTICES, 3)
        assert out.joints.shape[1] > 24  # + smplx's vertex joints (indices up to 6788)
        assert torch.isfinite(out.vertices).all()
    # A plain pickle: NumPy arrays and one SciPy sparse matrix, nothing else (no chumpy).
    assert set(smpl_dict) == {"v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                              "kintree_table", "f"}
    for key, value in smpl_dict.items():
        assert isinstance(value, np.ndarray) or scipy.sparse.issparse(value), key
    assert smpl_dict["v_template"].shape == (NUM_VERTICES, 3)
    assert smpl_dict["shapedirs"].shape == (NUM_VERTICES, 3, 10)
    assert smpl_dict["posedirs"].shape == (NUM_VERTICES, 3, 207)
    assert np.abs(smpl_dict["posedirs"]).max() > 0  # real pose blend shapes
    assert smpl_dict["J_regressor"].shape == (24, NUM_VERTICES)
    assert smpl_dict["weights"].shape == (NUM_VERTICES, 24)
    assert list(smpl_dict["kintree_table"][0]) == list(SMPL_PARENTS)
    f = smpl_dict["f"]
    assert f.ndim == 2 and f.shape[1] == 3 and f.min() == 0 and f.max() == NUM_VERTICES - 1
    assert len(np.unique(f)) == NUM_VERTICES  # every vertex is on the surface


def test_weights_and_regressors_are_normalised(body_dir: Path, smpl_dict: dict):
    w = smpl_dict["weights"]
    assert w.min() >= 0 and np.allclose(w.sum(1), 1.0)
    assert (w > 0.05).sum(1).max() >= 2  # blended at the joints, not rigid parts
    jr = smpl_dict["J_regressor"].toarray()
    assert np.allclose(jr.sum(1), 1.0) and jr.min() >= 0
    h36m = np.load(body_dir / "J_regressor_h36m.npy")
    assert h36m.shape == (17, NUM_VERTICES)
    assert np.allclose(h36m.sum(1), 1.0) and h36m.min() >= 0


def test_mean_params_are_identity_rotations_in_vibe_6d(body_dir: Path):
    mean = load_mean_params(body_dir)
    assert mean["pose"].shape == (144,) and mean["shape"].shape == (10,)
    np.testing.assert_array_equal(mean["cam"], [0.9, 0.0, 0.0])
    np.testing.assert_array_equal(mean["shape"], np.zeros(10))
    # VIBE's rot6d_to_rotmat: x.view(-1, 3, 2), columns a1, a2, Gram-Schmidt.
    x = mean["pose"].reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = a1 / np.linalg.norm(a1, axis=1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(1, keepdims=True) * b1
    b2 /= np.linalg.norm(b2, axis=1, keepdims=True)
    rot = np.stack([b1, b2, np.cross(b1, b2)], -1)
    np.testing.assert_allclose(rot, np.broadcast_to(np.eye(3), (24, 3, 3)), atol=1e-12)


def test_deterministic_for_a_seed(tmp_path: Path, body_dir: Path):
    a = make_standin(tmp_path / "a", seed=0)
    b = make_standin(tmp_path / "b", seed=1)
    for name in ("SMPL_NEUTRAL.pkl", "J_regressor_h36m.npy"):
        assert (a / name).read_bytes() == (body_dir / name).read_bytes()
    with open(b / "SMPL_NEUTRAL.pkl", "rb") as fh:
        other = pickle.load(fh)
    with open(a / "SMPL_NEUTRAL.pkl", "rb") as fh:
        same = pickle.load(fh)
    assert not np.allclose(other["v_template"], same["v_template"])
    np.testing.assert_array_equal(other["f"], same["f"])  # one topology for every seed


# --- geometry: template, shape, proportions, joints inside ---------------------------------


def test_zero_pose_and_shape_give_the_template(body: BodyModel, body_dir: Path, smpl_dict: dict):
    rot, betas = _rest(2)
    verts = body.vertices(rot, betas)
    np.testing.assert_allclose(verts[0].numpy(), smpl_dict["v_template"], atol=1e-6)
    smpl = smplx.SMPL(model_path=str(body_dir / "SMPL_NEUTRAL.pkl"))
    np.testing.assert_allclose(smpl().vertices[0].detach().numpy(), smpl_dict["v_template"],
                               atol=1e-6)


def _height(verts: torch.Tensor) -> float:
    return float(verts[..., 1].max() - verts[..., 1].min())


@pytest.mark.parametrize("index", range(10), ids=[name for name, _ in SHAPE_DIRECTIONS])
def test_each_shape_direction_moves_the_surface(body: BodyModel, index: int):
    rot, betas = _rest(3)
    betas[1, index], betas[2, index] = 2.0, -2.0
    verts = body.vertices(rot, betas)
    moved = (verts[1:] - verts[0]).norm(dim=-1).amax(dim=-1)
    assert (moved > 0.01).all()  # at least a centimetre at two standard deviations
    joints = body.joints24(rot, betas)
    if SHAPE_DIRECTIONS[index][0] not in ("girth", "torso_depth", "limb_thickness"):
        assert (joints[1:] - joints[0]).norm(dim=-1).max() > 0.005  # the skeleton follows
    assert torch.isfinite(verts).all()


def test_height_direction_changes_height(body: BodyModel):
    rot, betas = _rest(3)
    betas[1, 0], betas[2, 0] = 1.0, -1.0
    heights = [_height(v) for v in body.vertices(rot, betas)]
    assert heights[1] - heights[0] > 0.04 and heights[0] - heights[2] > 0.04
    # the other directions keep the height within a few centimetres
    betas = torch.zeros(10, 10)
    betas[torch.arange(10), torch.arange(10)] = 1.0
    others = [_height(v) for v in body.vertices(torch.eye(3).expand(10, 24, 3, 3), betas)]
    assert abs(others[1] - heights[0]) < 0.01  # girth keeps the height


def test_human_proportions(body: BodyModel):
    rot, betas = _rest()
    verts = body.vertices(rot, betas)[0]
    joints = body.joints24(rot, betas)[0]
    height = _height(verts)
    assert 1.5 < height < 2.0
    assert joints[0].norm() < 0.05  # pelvis near the origin
    leg = float(joints[1, 1] - verts[:, 1].min())  # hip to sole
    assert 0.42 < leg / height < 0.58
    span = float(verts[:, 0].max() - verts[:, 0].min())  # T-pose arm span ~ height
    assert 0.9 < span / height < 1.1
    assert float(joints[15, 1]) > float(joints[12, 1]) > float(joints[9, 1]) > 0  # head up


@pytest.mark.parametrize("scale", [0.0, 2.0])
def test_joints_lie_inside_the_body(body: BodyModel, body_dir: Path, scale: float):
    g = torch.Generator().manual_seed(3)
    betas = torch.randn(1, 10, generator=g) * scale
    rot = torch.eye(3).expand(1, 24, 3, 3)
    verts = body.vertices(rot, betas)[0].numpy().astype(np.float64)
    faces = body.faces.numpy()
    joints24 = body.joints24(rot, betas)[0].numpy()
    h36m = np.load(body_dir / "J_regressor_h36m.npy") @ verts
    winding = _winding_number(np.concatenate([joints24, h36m]), verts, faces)
    assert (winding > 0.5).all(), np.round(winding, 2)
    # and not on the skin: 8 mm away from each SMPL joint along +-x, +-y, +-z is still inside
    steps = 0.008 * np.concatenate([np.eye(3), -np.eye(3)])  # (6, 3)
    around = (joints24[:, None] + steps[None]).reshape(-1, 3)
    assert (_winding_number(around, verts, faces) > 0.5).all()


def test_j14_left_is_plus_x_and_in_order(body: BodyModel):
    rot, betas = _rest()
    j14 = body.joints14(rot, betas)[0]
    assert (j14[list(LEFT_J14), 0] > 0.05).all()
    assert (j14[list(RIGHT_J14), 0] < -0.05).all()
    y = j14[:, 1]
    assert y[0] < y[1] < y[2] and y[5] < y[4] < y[3]  # ankle < knee < hip
    assert y[12] < y[13] and y[13] == y.max()  # neck below the head top
    assert (j14[[6, 11], 0].abs() > j14[[7, 10], 0].abs()).all()  # wrists beyond elbows (T-pose)
    assert (j14[[7, 10], 0].abs() > j14[[8, 9], 0].abs()).all()
    pelvis = j14[list(PELVIS_J14)].mean(0)
    assert pelvis.norm() < 0.1
    assert len(H36M_TO_J14) == 14


# --- fast joints ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_joints14_equal_smplx(body_dir: Path, dtype: torch.dtype):
    body = BodyModel.from_dir(body_dir, dtype=dtype)
    rot, betas = _random_pose(48, seed=1, dtype=dtype)
    fast = body.joints14(rot, betas)
    slow = body.joints14_from_vertices(body.vertices(rot, betas))
    assert fast.shape == (48, 14, 3) and fast.dtype == dtype
    assert (fast - slow).abs().max() < 1e-5
    # the pose blend shapes are part of it (a bent knee bulges), so they were folded too
    assert (body.fold_p.abs().sum() > 0)
    # posed kinematic joints equal smplx's first 24
    out = body.smpl(betas=betas, global_orient=rot[:, :1], body_pose=rot[:, 1:], pose2rot=False)
    assert (body.joints24(rot, betas) - out.joints[:, :24]).abs().max() < 1e-5


def test_fast_joints14_batch_dims_and_gradients(body: BodyModel):
    rot, betas = _random_pose(6, seed=2)
    rot = rot.view(2, 3, 24, 3, 3)
    betas = betas.view(2, 3, 10).requires_grad_(True)
    fast = body.joints14(rot, betas)
    assert fast.shape == (2, 3, 14, 3)
    slow = body.joints14_from_vertices(body.vertices(rot, betas))
    assert (fast - slow).abs().max() < 1e-5
    (g_fast,) = torch.autograd.grad(fast.square().sum(), betas)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), betas)
    torch.testing.assert_close(g_fast, g_slow, atol=1e-4, rtol=1e-4)


def test_body_model_has_no_parameters(body: BodyModel):
    assert list(body.parameters()) == []
    assert body.num_vertices == NUM_VERTICES
    assert body.faces.dtype == torch.long


# --- folder resolution ----------------------------------------------------------------------


def test_resolve_body_dir_generates_the_standin_once(tmp_path: Path):
    path = resolve_body_dir("", cache=tmp_path)
    assert path == tmp_path / "body" / "standin"
    pkl = path / "SMPL_NEUTRAL.pkl"
    stamp = pkl.stat().st_mtime_ns
    assert resolve_body_dir("", cache=tmp_path) == path
    assert pkl.stat().st_mtime_ns == stamp  # not regenerated
    assert [p.name for p in path.parent.iterdir()] == ["standin"]  # no temp folder left
    assert BodyModel.from_dir(path).num_vertices == NUM_VERTICES


@pytest.mark.parametrize("missing", ["SMPL_NEUTRAL.pkl", "J_regressor_h36m.npy"])
def test_resolve_body_dir_names_the_missing_file(tmp_path: Path, body_dir: Path, missing: str):
    folder = tmp_path / "smpl"
    folder.mkdir()
    for name in ("SMPL_NEUTRAL.pkl", "J_regressor_h36m.npy"):
        if name != missing:
            os.symlink(body_dir / name, folder / name)
    with pytest.raises(BodyModelError) as err:
        resolve_body_dir(str(folder))
    msg = str(err.value)
    assert missing in msg and str(folder) in msg
    assert "cat-ray body make-standin" in msg and "cat-ray body import" in msg
    with pytest.raises(BodyModelError, match="does not exist"):
        resolve_body_dir(str(tmp_path / "nowhere"))
    assert resolve_body_dir(str(body_dir)) == body_dir


# --- camera ---------------------------------------------------------------------------------


def test_weak_perspective_projection():
    pts = torch.tensor([[[1.0, 2.0, 5.0], [-1.0, 0.0, 0.0]]])  # (1, 2, 3)
    cam = torch.tensor([[2.0, 0.5, -1.0]])
    out = project_weak_perspective(pts, cam)
    torch.testing.assert_close(out, torch.tensor([[[3.0, 2.0], [-1.0, -2.0]]]))
    many = project_weak_perspective(pts.expand(4, 3, 2, 3), cam.expand(4, 3, 3))
    assert many.shape == (4, 3, 2, 2)
