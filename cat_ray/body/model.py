"""The body model: SMPL through smplx, the 14 evaluation joints, and a fast exact joints path.

The losses need the 14 evaluation joints of every predicted body, and VIBE gets them by skinning
all 6,890 vertices and regressing joints from the mesh. The regressed joints are linear in the
per-bone transforms, so they can be computed without the mesh (issue 7, item 1). With the
H36M-to-J14 regressor R (14 x V), skinning weights W (V x 24) and rest vertices
v = v_template + S beta + P f(theta) (smplx.lbs), the skinned vertex is
sum_k W_vk (R_k v + t_k), hence

    J_j = sum_k R_k M_jk + C_jk t_k,   C = R W,   M_jk = sum_v R_jv W_vk v_v,

where M_jk = T_jk + S_jk beta + P_jk f(theta) folds the template and both blend-shape bases once
per body model, and (R_k, t_k) are smplx's relative rigid transforms A_k
(``smplx.lbs.batch_rigid_transform``). Pairs (j, k) with R_j W_k = 0 are dropped exactly.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import smplx
import torch
from torch import nn

from cat_ray.body.standin import make_standin
from cat_ray.paths import cache_root

# VIBE's H36M regressor rows -> the 14 LSP evaluation joints: R ankle, R knee, R hip, L hip,
# L knee, L ankle, R wrist, R elbow, R shoulder, L shoulder, L elbow, L wrist, neck, head top.
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
PELVIS_J14 = (2, 3)  # the hips; their mean centres the joints (VIBE)
SMPL_FILE = "SMPL_NEUTRAL.pkl"
H36M_REGRESSOR_FILE = "J_regressor_h36m.npy"
MEAN_PARAMS_FILE = "smpl_mean_params.npz"
REQUIRED_FILES = (SMPL_FILE, H36M_REGRESSOR_FILE)
_HOW_TO_GET = (
    "generate a stand-in with `cat-ray body make-standin --out DIR`, or convert the official SMPL "
    "files with `cat-ray body import SMPL_DIR --out DIR`, and set body.model_path to DIR "
    "(leave it empty for the stand-in generated under the cache)"
)


class BodyModelError(ValueError):
    """A body model folder that is missing or incomplete: names the file, where, and how to get it."""


def _check_dir(path: Path, files: tuple[str, ...] = REQUIRED_FILES) -> None:
    if not path.is_dir():
        raise BodyModelError(f"body model folder {path} does not exist: {_HOW_TO_GET}")
    for name in files:
        if not (path / name).is_file():
            raise BodyModelError(f"{name} not found in body model folder {path}: {_HOW_TO_GET}")


def ensure_standin(target: Path, seed: int = 0) -> Path:
    """The stand-in in ``target``, generated there if missing.

    Written to a temporary sibling folder and renamed into place, so concurrent processes (Ray
    workers) never see a half-written model: the first rename wins, the others discard theirs.
    """
    target = Path(target)
    files = (SMPL_FILE, H36M_REGRESSOR_FILE, MEAN_PARAMS_FILE)
    if all((target / f).is_file() for f in files):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make_standin(tmp, seed=seed)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not all((target / f).is_file() for f in files):  # not a lost race: a broken folder
            raise BodyModelError(f"stand-in body model folder {target} is incomplete; delete it "
                                 "and it is generated again") from None
    return target


def resolve_body_dir(model_path: str, cache: Path | None = None) -> Path:
    """The body model folder for ``body.model_path``.

    "" -> the stand-in under ``<cache or cache_root()>/body/standin`` (generated on first use);
    otherwise the given folder, which must hold SMPL_NEUTRAL.pkl and J_regressor_h36m.npy.
    """
    if not model_path:
        root = Path(cache) if cache is not None else cache_root()
        return ensure_standin(root / "body" / "standin")
    path = Path(model_path).expanduser()
    _check_dir(path)
    return path


def load_mean_params(body_dir: Path) -> dict[str, np.ndarray]:
    """``smpl_mean_params.npz`` of a body folder: pose (144,) 6D, shape (10,), cam (3,)."""
    _check_dir(Path(body_dir), (MEAN_PARAMS_FILE,))
    with np.load(Path(body_dir) / MEAN_PARAMS_FILE) as npz:
        return {k: np.asarray(npz[k], dtype=np.float64) for k in ("pose", "shape", "cam")}


class BodyModel(nn.Module):
    """SMPL (smplx) with the 14 evaluation joints; ``joints14`` skips the mesh, exactly."""

    def __init__(self, smpl: smplx.SMPL, j_regressor_h36m: np.ndarray):
        super().__init__()
        self.smpl = smpl  # a submodule: moves with .to(), its buffers in the state dict
        dtype = smpl.v_template.dtype
        r14 = torch.as_tensor(np.asarray(j_regressor_h36m)[list(H36M_TO_J14)], dtype=torch.float64)
        self.register_buffer("j_regressor14", r14.to(dtype))  # (14, V)
        self._parents = [int(p) for p in smpl.parents.tolist()]
        self._fold(r14, dtype)

    @classmethod
    def from_dir(cls, path: Path | str, dtype: torch.dtype = torch.float32) -> "BodyModel":
        """Load SMPL_NEUTRAL.pkl with smplx.SMPL and J_regressor_h36m.npy from a body folder."""
        path = Path(path)
        _check_dir(path)
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a 10-betas warning
            smpl = smplx.SMPL(model_path=str(path / SMPL_FILE), num_betas=10, dtype=dtype,
                              create_betas=False, create_global_orient=False,
                              create_body_pose=False, create_transl=False)
        reg = np.load(path / H36M_REGRESSOR_FILE)
        if reg.ndim != 2 or reg.shape[0] != 17 or reg.shape[1] != smpl.get_num_verts():
            raise BodyModelError(f"{path / H36M_REGRESSOR_FILE}: expected shape (17, "
                                 f"{smpl.get_num_verts()}), got {reg.shape}")
        return cls(smpl, reg)

    def _fold(self, r14: torch.Tensor, dtype: torch.dtype) -> None:
        """Fold regressor, skinning weights and blend shapes into per-(joint, bone) pairs (float64)."""
        s = self.smpl
        f64 = torch.float64
        W = s.lbs_weights.to(f64)  # (V, 24)
        V = W.shape[0]
        vt = s.v_template.to(f64)  # (V, 3)
        sd = s.shapedirs.to(f64)  # (V, 3, B)
        pd = s.posedirs.to(f64).T.reshape(V, 3, -1)  # smplx keeps (P, V*3)
        jr = s.J_regressor.to(f64)  # (24, V)
        pairs = torch.nonzero(r14.abs() @ W.abs() > 0)  # (Q, 2) (j, k) with R_j W_k != 0
        j_idx, k_idx = pairs[:, 0], pairs[:, 1]
        rw = r14[j_idx] * W[:, k_idx].T  # (Q, V): R_jv W_vk
        Q = len(pairs)
        self.register_buffer("k_idx", k_idx)
        self.register_buffer("fold_c", rw.sum(1).to(dtype))  # (Q,) C_jk
        self.register_buffer("fold_t", (rw @ vt).to(dtype))  # (Q, 3) T_jk
        self.register_buffer("fold_s", (rw @ sd.reshape(V, -1)).reshape(Q, 3, -1).to(dtype))
        self.register_buffer("fold_p", (rw @ pd.reshape(V, -1)).reshape(Q * 3, -1).T
                             .contiguous().to(dtype))  # (207, Q*3)
        self.register_buffer("scatter", nn.functional.one_hot(j_idx, 14).T.to(dtype))  # (14, Q)
        self.register_buffer("joint_t", (jr @ vt).to(dtype))  # (24, 3) rest joints
        self.register_buffer("joint_s", torch.einsum("jv,vcb->jcb", jr, sd).to(dtype))

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) long."""
        return self.smpl.faces_tensor

    @property
    def num_vertices(self) -> int:
        return int(self.smpl.v_template.shape[0])

    def vertices(self, rotmats: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """smplx forward. rotmats (..., 24, 3, 3), betas (..., 10) -> vertices (..., V, 3)."""
        lead = rotmats.shape[:-3]
        rot = rotmats.reshape(-1, 24, 3, 3)
        out = self.smpl(betas=betas.reshape(-1, betas.shape[-1]), global_orient=rot[:, :1],
                        body_pose=rot[:, 1:], pose2rot=False)
        return out.vertices.reshape(*lead, -1, 3)

    def joints14_from_vertices(self, verts: torch.Tensor) -> torch.Tensor:
        """(..., V, 3) -> (..., 14, 3): the H36M regressor rows of the evaluation joints."""
        return torch.einsum("jv,...vc->...jc", self.j_regressor14, verts)

    def _rigid(self, rotmats: torch.Tensor, betas: torch.Tensor):
        """The kinematic chain (smplx.lbs.batch_rigid_transform, without 4x4 matrices).

        rotmats (N, 24, 3, 3), betas (N, B) -> global rotations (N, 24, 3, 3), posed joints
        (N, 24, 3) and the translations of the relative transforms A_k, t_k = p_k - G_k J_k.
        """
        J = self.joint_t + torch.einsum("jcb,nb->njc", self.joint_s, betas)  # (N, 24, 3) rest
        par = self._parents
        rel = torch.cat([J[:, :1], J[:, 1:] - J[:, par[1:]]], 1)  # bone vectors
        rot_g, pos = [rotmats[:, 0]], [J[:, 0]]
        for k in range(1, len(par)):
            p = par[k]
            rot_g.append(rot_g[p] @ rotmats[:, k])
            pos.append(pos[p] + (rot_g[p] @ rel[:, k, :, None])[..., 0])
        rot_g, pos = torch.stack(rot_g, 1), torch.stack(pos, 1)
        trans = pos - (rot_g @ J[..., None])[..., 0]
        return rot_g, pos, trans

    def joints24(self, rotmats: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """Posed SMPL kinematic joints (smplx's first 24). (..., 24, 3, 3), (..., 10) -> (..., 24, 3)."""
        lead = rotmats.shape[:-3]
        _, pos, _ = self._rigid(rotmats.reshape(-1, 24, 3, 3), betas.reshape(-1, betas.shape[-1]))
        return pos.reshape(*lead, 24, 3)

    def joints14(self, rotmats: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """The 14 evaluation joints without the mesh, equal to
        ``joints14_from_vertices(vertices(rotmats, betas))``.

        rotmats (..., 24, 3, 3), betas (..., 10) -> (..., 14, 3).
        """
        lead = rotmats.shape[:-3]
        rot = rotmats.reshape(-1, 24, 3, 3)
        betas = betas.reshape(-1, betas.shape[-1])
        N = rot.shape[0]
        rot_g, _, trans = self._rigid(rot, betas)
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feat = (rot[:, 1:] - eye).reshape(N, -1)  # (N, 207) smplx's pose feature
        Q = self.fold_c.shape[0]
        m = self.fold_t + torch.einsum("qcb,nb->nqc", self.fold_s, betas) \
            + (pose_feat @ self.fold_p).view(N, Q, 3)  # (N, Q, 3) M_jk
        k = self.k_idx
        contrib = (rot_g[:, k] @ m[..., None])[..., 0] + self.fold_c[:, None] * trans[:, k]
        return torch.einsum("jq,nqc->njc", self.scatter, contrib).reshape(*lead, 14, 3)
