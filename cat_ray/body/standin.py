"""An SMPL-compatible stand-in body model, generated (the official SMPL files are licensed).

The body is a set of closed generalised cylinders ("tubes") laid along the 24-joint SMPL
kinematic tree in a T-pose, plus an ellipsoid head, 6,890 vertices in all (SMPL's count; smplx's
vertex joint selector indexes vertices up to 6,788). Metres, y up, +x = the body's left, +z = front.

Every tube is a polyline of control points (joints and a few shape points) with an elliptic
cross-section per control point; a ring of vertices sits exactly on every joint, so a joint is the
mean of its ring (the joint regressor) and follows the shape directions. The vertex positions are
multilinear in ten body proportions (height, girth, leg/arm length, ...), and each shape direction
is the central difference of the surface along one proportion (one standard deviation per unit
beta). Skinning weights blend the two bones that meet at a joint smoothly along the tube's axis;
pose blend shapes bulge the surface at bent joints, proportional to 3 - tr(R) = 2 (1 - cos angle).

Files written (what ``smplx.SMPL`` and VIBE-era code read):
``SMPL_NEUTRAL.pkl`` (plain pickle of NumPy/SciPy arrays, no chumpy), ``J_regressor_h36m.npy``
(17 x V) and ``smpl_mean_params.npz`` (``pose`` 144 = identity 6D x 24, ``shape`` 10, ``cam`` 3).
"""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.spatial import ConvexHull

NUM_VERTICES = 6890
NUM_JOINTS = 24
NUM_BETAS = 10
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)
# Rows of J_regressor_h36m. The H36M convention of VIBE/SPIN: H36M_TO_J14 = [6,5,4,1,2,3,16,15,14,
# 11,12,13,8,10] must give (R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist, R elbow,
# R shoulder, L shoulder, L elbow, L wrist, neck, head top), so rows 1-3 are the LEFT leg and rows
# 4-6 the RIGHT leg (the labels of the H36M data are swapped there), rows 11-13 the left arm.
H36M_JOINT_NAMES = (
    "pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle",
    "spine", "thorax", "neck_nose", "head_top", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)

# One standard deviation of each shape direction (relative change of a proportion per unit beta).
SHAPE_DIRECTIONS = (
    ("height", 0.04),  # overall scale about the pelvis
    ("girth", 0.08),  # all cross-sections
    ("leg_length", 0.05),
    ("arm_length", 0.05),
    ("shoulder_width", 0.06),
    ("torso_length", 0.05),
    ("head_size", 0.05),
    ("hip_width", 0.07),
    ("torso_depth", 0.10),  # front-back depth of the torso (belly, chest)
    ("limb_thickness", 0.08),
)
_RING_SPACING = 0.022  # metres between vertex rings along a tube
_POSE_BULGE = 0.004  # metres of outward bulge per unit of (3 - tr R) at a bent joint


@dataclass(frozen=True)
class _Tube:
    """Topology of one tube: control points, ring size, rings per segment, cap owners."""

    name: str
    ring: int  # vertices per ring
    joints: tuple[int | None, ...]  # SMPL joint at each control point (None: a shape point)
    start_owner: int  # bone that skins the start cap
    ref_u: tuple[float, float, float]  # first cross-section axis (radius a); second = tangent x u
    segments: tuple[int, ...] = ()  # rings per segment, set from the nominal geometry
    cap_rings: int = 3


def _proportions(p: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Control points (n, 3) and cross-section radii (n, 2) of every tube for proportions ``p``.

    p: (10,) relative proportions in SHAPE_DIRECTIONS order, 1.0 = nominal. Multilinear in p,
    so a central difference along one proportion is exact.
    """
    (height, girth, leg, arm, shoulder, torso, head, hip, depth, limb) = p
    lg = girth * limb  # limb cross-sections
    tg = girth  # torso width
    td = girth * depth  # torso depth
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # Torso: below the pelvis, pelvis, spine1, spine2, spine3, shoulder line.
    ty = np.array([-0.10, 0.0, 0.11 * torso, 0.24 * torso, 0.30 * torso, 0.43 * torso])
    pts = np.stack([np.zeros(6), ty, np.zeros(6)], 1)
    rad = np.array([
        [(0.07 + 0.08 * hip) * tg, 0.10 * td],
        [(0.08 + 0.09 * hip) * tg, 0.11 * td],
        [0.145 * tg, 0.10 * td],
        [0.150 * tg, 0.105 * td],
        [0.165 * tg, 0.11 * td],
        [(0.08 + 0.10 * shoulder) * tg, 0.09 * td],
    ])
    out["torso"] = (pts, rad)

    neck_y = 0.50 * torso
    shoulder_y = 0.45 * torso
    for side, sx in (("left", 1.0), ("right", -1.0)):
        # Leg: hip, mid-thigh, knee, calf, ankle (vertical).
        hx = sx * 0.09 * hip
        hip_y = -0.08
        thigh, shin = 0.39 * leg, 0.40 * leg
        ly = np.array([hip_y, hip_y - 0.5 * thigh, hip_y - thigh, hip_y - thigh - 0.3 * shin,
                       hip_y - thigh - shin])
        pts = np.stack([np.full(5, hx), ly, np.zeros(5)], 1)
        rad = np.array([[0.085, 0.085], [0.070, 0.072], [0.052, 0.055], [0.055, 0.058],
                        [0.035, 0.038]]) * lg
        out[f"{side}_leg"] = (pts, rad)
        ankle = pts[-1]
        # Foot: heel, ball of the foot (SMPL 'foot'), toe tip; forward along +z.
        pts = ankle + np.array([[0.0, -0.045, -0.05], [sx * 0.01, -0.055, 0.12],
                                [sx * 0.012, -0.06, 0.18]])
        rad = np.array([[0.035, 0.03], [0.045, 0.022], [0.035, 0.015]]) * lg
        out[f"{side}_foot"] = (pts, rad)
        # Collar: from the spine to the shoulder, along x.
        cx = sx * np.array([0.0, 0.075 * shoulder, 0.15 * shoulder])
        pts = np.stack([cx, np.full(3, 0.43 * torso), np.zeros(3)], 1)
        rad = np.array([[0.055, 0.06], [0.06, 0.065], [0.055, 0.06]]) * tg
        out[f"{side}_collar"] = (pts, rad)
        # Arm (T-pose, along x): shoulder, elbow, forearm, wrist, hand, finger tips.
        ax = np.cumsum([0.17 * shoulder, 0.26 * arm, 0.12 * arm, 0.13 * arm, 0.08 * arm, 0.10 * arm])
        pts = np.stack([sx * ax, np.full(6, shoulder_y), np.zeros(6)], 1)
        rad = np.array([[0.055, 0.055], [0.040, 0.042], [0.038, 0.040], [0.026, 0.030],
                        [0.016, 0.045], [0.010, 0.035]]) * lg
        out[f"{side}_arm"] = (pts, rad)

    # Neck: neck joint, head joint, chin level.
    ny = neck_y + head * np.array([0.0, 0.08, 0.11])
    pts = np.stack([np.zeros(3), ny, np.array([0.0, 0.01, 0.01]) * head], 1)
    rad = np.array([[0.055, 0.055], [0.06, 0.065], [0.06, 0.07]]) * girth * head
    out["neck"] = (pts, rad)
    # Head ellipsoid: centre (1, 3) and radii (1, 3) (x, y, z).
    centre = np.array([[0.0, neck_y + 0.17 * head, 0.015 * head]])
    radii = np.array([[0.08, 0.11, 0.095]]) * head
    out["head"] = (centre, radii)
    return {k: (pt * height, r * height) for k, (pt, r) in out.items()}


_TUBES = (
    _Tube("torso", 36, (None, 0, 3, 6, 9, None), 0, (1.0, 0.0, 0.0)),
    _Tube("left_leg", 20, (1, None, 4, None, 7), 0, (1.0, 0.0, 0.0)),
    _Tube("right_leg", 20, (2, None, 5, None, 8), 0, (1.0, 0.0, 0.0)),
    _Tube("left_foot", 16, (None, 10, None), 7, (1.0, 0.0, 0.0)),
    _Tube("right_foot", 16, (None, 11, None), 8, (1.0, 0.0, 0.0)),
    _Tube("left_collar", 16, (None, 13, None), 9, (0.0, 1.0, 0.0)),
    _Tube("right_collar", 16, (None, 14, None), 9, (0.0, 1.0, 0.0)),
    _Tube("left_arm", 16, (16, 18, None, 20, 22, None), 13, (0.0, 1.0, 0.0)),
    _Tube("right_arm", 16, (17, 19, None, 21, 23, None), 14, (0.0, 1.0, 0.0)),
    _Tube("neck", 20, (12, 15, None), 9, (1.0, 0.0, 0.0)),
)
_CAP_LENGTH = {  # cap length as a multiple of the end radius (start, end)
    "torso": (0.6, 0.5), "left_leg": (0.8, 1.0), "right_leg": (0.8, 1.0),
    "left_foot": (1.0, 1.0), "right_foot": (1.0, 1.0), "left_collar": (0.6, 0.6),
    "right_collar": (0.6, 0.6), "left_arm": (0.8, 1.0), "right_arm": (0.8, 1.0), "neck": (1.0, 0.5),
}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class _Layout:
    """Fixed topology and frames: rings per segment, ring parameters, frames, head sphere."""

    tubes: tuple[_Tube, ...]
    ring_t: tuple[np.ndarray, ...]  # per tube: (R,) ring positions as segment index + fraction
    frames: tuple[np.ndarray, ...]  # per tube: (R, 2, 3) cross-section axes u, w per ring
    cap_dirs: tuple[np.ndarray, ...]  # per tube: (2, 3) outward axis at start and end
    head_unit: np.ndarray  # (H, 3) unit sphere points of the head
    head_faces: np.ndarray  # (Fh, 3)


def _layout(p0: np.ndarray) -> _Layout:
    """Topology from the nominal proportions: rings per segment, frames (kept for every shape)."""
    geo = _proportions(p0)
    tubes, ring_t, frames, cap_dirs = [], [], [], []
    for tube in _TUBES:
        pts, _ = geo[tube.name]
        seg = np.diff(pts, axis=0)
        n_seg = tuple(max(2, int(np.ceil(np.linalg.norm(s) / _RING_SPACING))) for s in seg)
        tube = dataclasses.replace(tube, segments=n_seg)
        t = np.concatenate([i + np.arange(n) / n for i, n in enumerate(n_seg)] + [[len(n_seg)]])
        # Tangent per control point: mean of the adjacent segment directions.
        d = _unit(seg)
        tan_cp = _unit(np.concatenate([d[:1], d[:-1] + d[1:], d[-1:]]))
        i0 = np.minimum(np.floor(t).astype(int), len(seg) - 1)
        f = (t - i0)[:, None]
        tan = _unit((1 - f) * tan_cp[i0] + f * tan_cp[i0 + 1])
        ref = np.asarray(tube.ref_u)
        u = _unit(ref - (tan @ ref)[:, None] * tan)
        w = np.cross(tan, u)
        tubes.append(tube)
        ring_t.append(t)
        frames.append(np.stack([u, w], 1))
        cap_dirs.append(np.stack([-tan[0], tan[-1]]))
    return _Layout(tuple(tubes), tuple(ring_t), tuple(frames), tuple(cap_dirs),
                   np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))


def _tube_vertex_count(tube: _Tube) -> int:
    rings = sum(tube.segments) + 1 + 2 * tube.cap_rings
    return rings * tube.ring + 2  # + two poles


def _fibonacci_sphere(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n nearly uniform points on the unit sphere (top first) and outward-oriented triangles."""
    i = np.arange(n) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - y * y)
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    pts = np.stack([r * np.cos(phi), y, r * np.sin(phi)], 1)
    faces = ConvexHull(pts).simplices.astype(np.int64)
    a, b, c = pts[faces[:, 0]], pts[faces[:, 1]], pts[faces[:, 2]]
    flip = np.einsum("fi,fi->f", np.cross(b - a, c - a), a + b + c) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    order = np.lexsort(faces.T[::-1])  # canonical face order, independent of qhull's
    return pts, faces[order]


def _full_layout(p0: np.ndarray) -> _Layout:
    lay = _layout(p0)
    n_head = NUM_VERTICES - sum(_tube_vertex_count(t) for t in lay.tubes)
    assert 600 <= n_head <= 2500, n_head  # the head takes the vertices the tubes leave
    head_unit, head_faces = _fibonacci_sphere(n_head)
    return _Layout(lay.tubes, lay.ring_t, lay.frames, lay.cap_dirs, head_unit, head_faces)


def _surface(p: np.ndarray, lay: _Layout) -> np.ndarray:
    """Vertices (V, 3) of the body with proportions p (10,) on the fixed layout."""
    geo = _proportions(p)
    verts = []
    for tube, t, fr, caps in zip(lay.tubes, lay.ring_t, lay.frames, lay.cap_dirs):
        pts, rad = geo[tube.name]
        i0 = np.minimum(np.floor(t).astype(int), len(pts) - 2)
        f = (t - i0)[:, None]
        centre = (1 - f) * pts[i0] + f * pts[i0 + 1]  # (R, 3)
        radii = (1 - f) * rad[i0] + f * rad[i0 + 1]  # (R, 2)
        ang = 2 * np.pi * np.arange(tube.ring) / tube.ring
        cs = np.stack([np.cos(ang), np.sin(ang)], 1)  # (K, 2)
        # ring vertex = centre + a cos(theta) u + b sin(theta) w
        body = centre[:, None] + np.einsum("kc,rc,rcx->rkx", cs, radii, fr)
        cap_len = _CAP_LENGTH[tube.name]
        phi = 0.5 * np.pi * np.arange(1, tube.cap_rings + 1) / (tube.cap_rings + 1)
        ends = []
        for e, (ring, r_end, c_end) in enumerate(((body[0], radii[0], centre[0]),
                                                   (body[-1], radii[-1], centre[-1]))):
            length = cap_len[e] * r_end.mean()  # linear in the radii
            off = caps[e] * length
            cap = c_end + np.cos(phi)[:, None, None] * (ring - c_end) + \
                np.sin(phi)[:, None, None] * off
            ends.append((cap, c_end + off))
        (cap0, pole0), (cap1, pole1) = ends
        verts += [pole0[None], cap0[::-1].reshape(-1, 3), body.reshape(-1, 3),
                  cap1.reshape(-1, 3), pole1[None]]
    centre, radii = geo["head"]
    verts.append(centre + lay.head_unit * radii)
    out = np.concatenate(verts)
    assert out.shape == (NUM_VERTICES, 3), out.shape
    return out


def _topology(lay: _Layout):
    """Faces (F, 3), per-vertex tube index, axial coordinate s, ring index of every joint.

    Returns faces, part (V,), axial (V,) in control-point units (caps beyond [0, n-1]),
    joint_ring {smpl joint: vertex ids of its ring}, head_ids (H,).
    """
    faces, part, axial, joint_ring = [], [], [], {}
    start = 0
    for ti, (tube, t) in enumerate(zip(lay.tubes, lay.ring_t)):
        k, c = tube.ring, tube.cap_rings
        rings = len(t) + 2 * c
        ring_ids = start + 1 + np.arange(rings * k).reshape(rings, k)
        pole0, pole1 = start, start + 1 + rings * k
        # axial coordinate: caps extend half a segment beyond the ends
        cap_s = 0.5 * np.arange(1, c + 1) / (c + 1)
        s_rings = np.concatenate([-cap_s[::-1], t, t[-1] + cap_s])
        axial += [[-0.5], np.repeat(s_rings, k), [t[-1] + 0.5]]
        part += [np.full(rings * k + 2, ti)]
        nxt = np.roll(np.arange(k), -1)
        a, b = ring_ids[:-1], ring_ids[:-1][:, nxt]
        cc, d = ring_ids[1:][:, nxt], ring_ids[1:]
        quads = np.stack([a, b, cc, d], -1).reshape(-1, 4)
        faces.append(np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]))
        faces.append(np.stack([np.full(k, pole0), ring_ids[0][nxt], ring_ids[0]], 1))
        faces.append(np.stack([np.full(k, pole1), ring_ids[-1], ring_ids[-1][nxt]], 1))
        for cp, j in enumerate(tube.joints):
            if j is not None:
                r = c + int(np.flatnonzero(np.isclose(t, cp))[0])
                joint_ring[j] = ring_ids[r]
        start = pole1 + 1
    head_ids = start + np.arange(len(lay.head_unit))
    faces.append(lay.head_faces + start)
    part.append(np.full(len(head_ids), len(lay.tubes)))
    axial.append(np.zeros(len(head_ids)))
    return (np.concatenate(faces).astype(np.int64), np.concatenate(part),
            np.concatenate(axial).astype(float), joint_ring, head_ids)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _skinning_weights(lay: _Layout, part: np.ndarray, axial: np.ndarray) -> np.ndarray:
    """(V, 24) weights, rows summing to 1: along each tube, each interval between control points
    belongs to the bone of the joint that starts it; at a joint the parent bone hands over to
    the child bone over a band of +-0.35 segment (a smoothstep, a partition of unity)."""
    w = np.zeros((NUM_VERTICES, NUM_JOINTS))
    for ti, tube in enumerate(lay.tubes):
        ids = np.flatnonzero(part == ti)
        s = axial[ids]
        owner = tube.start_owner
        prev = np.ones(len(ids))  # H_0
        for cp, j in enumerate(tube.joints):
            if j is None or j == owner:
                continue
            h = _smoothstep((s - cp) / 0.7 + 0.5)  # H at this boundary
            w[ids, owner] += prev - h
            owner, prev = j, h
        w[ids, owner] += prev
    w[part == len(lay.tubes), 15] = 1.0  # head
    return w


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    vn = np.zeros_like(verts)
    for c in range(3):
        np.add.at(vn, faces[:, c], fn)
    return _unit(vn + 1e-12)


def _orient_outward(verts: np.ndarray, faces: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Flip the faces of every closed part whose signed volume is negative."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    vol = np.einsum("fi,fi->f", a, np.cross(b, c))
    fpart = part[faces[:, 0]]
    faces = faces.copy()
    for pi in np.unique(fpart):
        sel = fpart == pi
        if vol[sel].sum() < 0:
            faces[sel] = faces[sel][:, [0, 2, 1]]
    return faces


def build_standin(seed: int = 0) -> dict[str, np.ndarray]:
    """All arrays of the stand-in: the SMPL dict plus 'J_regressor_h36m' (17, V)."""
    rng = np.random.default_rng(seed)
    p0 = 1.0 + 0.01 * rng.standard_normal(NUM_BETAS)  # a little individuality per seed
    lay = _full_layout(np.ones(NUM_BETAS))  # topology and frames: independent of the seed
    faces, part, axial, joint_ring, head_ids = _topology(lay)
    v_template = _surface(p0, lay)
    faces = _orient_outward(v_template, faces, part)

    # Shape directions: central differences of the multilinear surface (exact).
    shapedirs = np.zeros((NUM_VERTICES, 3, NUM_BETAS))
    for i, (_, step) in enumerate(SHAPE_DIRECTIONS):
        d = np.zeros(NUM_BETAS)
        d[i] = step
        shapedirs[:, :, i] = (_surface(p0 + d, lay) - _surface(p0 - d, lay)) / 2

    # Joint regressors: the mean of the ring on each joint.
    J_regressor = np.zeros((NUM_JOINTS, NUM_VERTICES))
    for j, ids in joint_ring.items():
        J_regressor[j, ids] = 1.0 / len(ids)
    assert sorted(joint_ring) == list(range(NUM_JOINTS))
    h36m = np.zeros((17, NUM_VERTICES))
    from_smpl = {1: 1, 2: 4, 3: 7, 4: 2, 5: 5, 6: 8, 7: 6, 8: 12, 11: 16, 12: 18, 13: 20,
                 14: 17, 15: 19, 16: 21}
    for row, j in from_smpl.items():
        h36m[row] = J_regressor[j]
    h36m[0] = 0.5 * (J_regressor[1] + J_regressor[2])  # pelvis: the hips' midpoint
    h36m[9, head_ids] = 1.0 / len(head_ids)  # head centre
    top = head_ids[:12]  # the head's points are ordered top first
    h36m[10, top] = 1.0 / len(top)

    weights = _skinning_weights(lay, part, axial)

    # Pose blend shapes: outward bulge at a bent joint, where parent and child bones share the
    # skin; (R - I) diagonal summed = tr(R) - 3, so the bulge is c (3 - tr R) * 4 w_k w_parent.
    normals = _vertex_normals(v_template, faces)
    posedirs = np.zeros((NUM_VERTICES, 3, 9 * (NUM_JOINTS - 1)))
    for k in range(1, NUM_JOINTS):
        band = 4.0 * weights[:, k] * weights[:, SMPL_PARENTS[k]]
        for e in (0, 4, 8):
            posedirs[:, :, 9 * (k - 1) + e] = -_POSE_BULGE * band[:, None] * normals

    kintree = np.array([SMPL_PARENTS, range(NUM_JOINTS)], dtype=np.int64)
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(J_regressor),
        "weights": weights,
        "kintree_table": kintree,
        "f": faces,
        "J_regressor_h36m": h36m,
    }


def mean_params() -> dict[str, np.ndarray]:
    """VIBE's ``smpl_mean_params.npz`` layout: identity rotations in 6D, zero shape, cam (0.9, 0, 0).

    6D = the first two columns of the rotation matrix, read as ``x.view(-1, 3, 2)`` (VIBE's
    rot6d_to_rotmat), i.e. row-major (r00, r01, r10, r11, r20, r21) = (1, 0, 0, 1, 0, 0).
    """
    six = np.eye(3)[:, :2].reshape(-1)
    return {"pose": np.tile(six, NUM_JOINTS), "shape": np.zeros(NUM_BETAS),
            "cam": np.array([0.9, 0.0, 0.0])}


def make_standin(out_dir: Path, seed: int = 0) -> Path:
    """Write SMPL_NEUTRAL.pkl, J_regressor_h36m.npy and smpl_mean_params.npz into out_dir.

    ``smplx.SMPL(model_path=str(out_dir / 'SMPL_NEUTRAL.pkl'))`` loads the result unchanged.
    Deterministic for a seed. Returns out_dir.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = build_standin(seed)
    h36m = arrays.pop("J_regressor_h36m")
    with open(out_dir / "SMPL_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(arrays, fh, protocol=4)
    np.save(out_dir / "J_regressor_h36m.npy", h36m)
    np.savez(out_dir / "smpl_mean_params.npz", **mean_params())
    return out_dir
