"""Pose a body and project it into an image: walking skeleton, view, drawing primitives and keypoints.

The skeleton lives in a body frame (X the person's left, Y down, Z the person's forward; units of
stature, head top at Y=0 and soles at Y=1). Limbs rotate about the hips, knees, shoulders and elbows
(walking phase and arm swing), then the body turns by its yaw and is projected orthographically:

    x = X cos(yaw) + Z sin(yaw),  depth = X sin(yaw) - Z cos(yaw)   (depth grows away from the camera)

so yaw 0 faces the camera (the person's left on the image's right), yaw pi shows the back (left and
right swap in the image) and yaw +-pi/2 a side view, where the body narrows to its depth.

Image coordinates are continuous: x right, y down, pixel (i, j) covers [j, j+1) x [i, i+1), so the
centre of the top-left pixel is (0.5, 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kglfr.data.synth.body import Identity, Material
from kglfr.keypoints.coco import COCO17

KEYPOINT_NAMES = COCO17  # the ground truth is written in COCO-17 order
SIDES = (("left", 1.0), ("right", -1.0))


@dataclass(frozen=True)
class Pose:
    """One image's pose: the body's yaw, walking phase and amplitudes, and an image-plane tilt."""

    view: str  # "front", "back" or "side" (for file names)
    yaw: float
    phase: float
    stride: float
    arm_swing: float
    abduction: float
    roll: float


def sample_pose(rng: np.random.Generator, ident: Identity) -> Pose:
    u = rng.random()
    if u < 0.36:
        view, base = "front", 0.0
    elif u < 0.72:
        view, base = "back", np.pi
    else:
        view, base = "side", (np.pi / 2 if u < 0.86 else -np.pi / 2)
    walking = rng.random() > 0.1
    return Pose(
        view=view,
        yaw=float(base + rng.uniform(-0.35, 0.35)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        stride=float(ident.stride * (rng.uniform(0.6, 1.15) if walking else 0.15)),
        arm_swing=float(ident.arm_swing * (rng.uniform(0.6, 1.2) if walking else 0.2)),
        abduction=float(np.deg2rad(rng.uniform(4, 11))),
        roll=float(np.deg2rad(rng.normal(0, 1.5))),
    )


# A primitive is (kind, material, geometry), in image pixels:
#   ("capsule", m, (p1, p2, r1, r2)); ("circle", m, (c, r)); ("poly", m, points (n, 2));
#   ("ellipse", m, (c, (ax, ay), angle_deg, start_deg, end_deg)).
Primitive = tuple


@dataclass
class Figure:
    """A posed person: primitive groups sorted far to near, and keypoints (17, 3) = x, y, v."""

    groups: list[tuple[float, list[Primitive]]]
    keypoints: np.ndarray
    torso: np.ndarray  # the torso outline in the image, (n, 2)


def _sag(angle: float, lateral: float = 0.0) -> np.ndarray:
    """Unit direction of a limb hanging down, swung forward by ``angle`` and out by ``lateral``."""
    c = np.cos(lateral)
    return np.array([np.sin(lateral), c * np.cos(angle), c * np.sin(angle)])


def skeleton(ident: Identity, pose: Pose) -> dict[str, np.ndarray]:
    """3-D joint positions in the body frame (see the module docstring)."""
    h = ident.head
    j: dict[str, np.ndarray] = {}
    sh_y = h + 0.055
    hip_y = 0.955 - ident.leg
    j["head"] = np.array([0.0, h / 2, 0.012])
    j["neck"] = np.array([0.0, sh_y - 0.02, 0.0])
    thigh, shin = 0.53 * ident.leg, 0.47 * ident.leg
    for name, s in SIDES:
        phase = pose.phase + (0.0 if s > 0 else np.pi)
        theta = pose.stride * np.sin(phase)
        flex = np.deg2rad(5) + np.deg2rad(55) * max(0.0, np.cos(phase + np.pi / 4)) ** 3 * pose.stride / 0.4
        hip = np.array([s * ident.hip / 2, hip_y, 0.0])
        knee = hip + thigh * _sag(theta, s * 0.02)
        ankle = knee + shin * _sag(theta - flex, -s * 0.02)
        foot_pitch = 0.5 * (theta - flex)
        j[f"{name}_hip"], j[f"{name}_knee"], j[f"{name}_ankle"] = hip, knee, ankle
        j[f"{name}_heel"] = ankle + np.array([0.0, 0.028, -0.02])
        j[f"{name}_toe"] = ankle + np.array([0.0, 0.03 + 0.06 * np.sin(-foot_pitch), 0.075 * np.cos(foot_pitch)])

        swing = -pose.arm_swing * np.sin(pose.phase) * s
        elbow_flex = np.deg2rad(12) + np.deg2rad(25) * max(0.0, np.sin(swing + 0.1)) * 2
        shoulder = np.array([s * ident.shoulder / 2, sh_y, 0.0])
        elbow = shoulder + ident.upper_arm * _sag(swing, s * pose.abduction)
        fore = _sag(swing + elbow_flex, s * pose.abduction * 0.5)
        wrist = elbow + ident.forearm * fore
        j[f"{name}_shoulder"], j[f"{name}_elbow"], j[f"{name}_wrist"] = shoulder, elbow, wrist
        j[f"{name}_hand"] = wrist + 0.05 * fore
    # The lower foot stands on the ground.
    drop = 0.955 - max(j["left_ankle"][1], j["right_ankle"][1])
    for v in j.values():
        v[1] += drop
    return j


class _Projector:
    def __init__(self, yaw: float, roll: float, cx: float, top: float, scale: float):
        self.c, self.s = np.cos(yaw), np.sin(yaw)
        self.cx, self.top, self.scale = cx, top, scale
        self.rc, self.rs = np.cos(roll), np.sin(roll)
        self.pivot_y = top + scale * 0.5

    def __call__(self, p: np.ndarray) -> tuple[np.ndarray, float]:
        """Image point (x, y) and depth (stature units) of a body-frame point."""
        x = self.scale * (p[0] * self.c + p[2] * self.s)
        y = self.scale * p[1] + self.top - self.pivot_y
        xi = self.cx + x * self.rc - y * self.rs
        yi = self.pivot_y + x * self.rs + y * self.rc
        return np.array([xi, yi]), float(p[0] * self.s - p[2] * self.c)

    def width(self, half_x: float, half_z: float) -> float:
        """Projected half width, in pixels, of a box with half sizes ``half_x`` (left) and ``half_z``."""
        return self.scale * (half_x * abs(self.c) + half_z * abs(self.s))

    def depth_of_direction(self, d: np.ndarray) -> float:
        return float(d[0] * self.s - d[2] * self.c)


def _level_outline(levels, centre_top, centre_bottom, y_top, y_bottom, proj: _Projector) -> np.ndarray:
    """A symmetric outline through ``levels`` = [(body y, frontal half width, half depth), ...]."""
    axis = centre_bottom - centre_top
    length = np.hypot(*axis) or 1.0
    normal = np.array([-axis[1], axis[0]]) / length
    left, right = [], []
    for y, hw, hd in levels:
        t = (y - y_top) / (y_bottom - y_top)
        c = centre_top + t * axis
        w = proj.width(hw, hd)
        left.append(c - normal * w)
        right.append(c + normal * w)
    return np.array(left + right[::-1])


@dataclass
class _Frame:
    """A posed body and what every part's drawing needs: the joints (body frame), their image points
    and depths, the projector and the torso's measures (stature units; ``S`` pixels per stature)."""

    ident: Identity
    pose: Pose
    j: dict[str, np.ndarray]
    proj: _Projector
    pt: dict[str, np.ndarray]
    dp: dict[str, float]
    b: float  # build
    S: float  # scale
    facing: float  # 1 facing the camera, -1 showing the back
    roll_deg: float
    td: float  # half depth of the chest
    sh_y: float
    hip_y: float
    spine_top: np.ndarray
    spine_bottom: np.ndarray
    neck_r: float
    thigh_r: float
    waist: float
    hip_half: float
    neck_w: float

    def outline(self, levels) -> np.ndarray:
        """An outline through ``levels`` centred on the projected spine (see :func:`_level_outline`)."""
        return _level_outline(levels, self.spine_top, self.spine_bottom, self.sh_y, self.hip_y, self.proj)


@dataclass(frozen=True)
class _Head:
    """The head's image centre and depth, its radii (stature units) and its ellipse's axes (pixels)."""

    c: np.ndarray
    d: float
    rx: float
    ry: float
    rz: float
    axes: tuple[float, float]


def _frame(ident: Identity, pose: Pose, cx: float, top: float, scale: float) -> _Frame:
    j = skeleton(ident, pose)
    proj = _Projector(pose.yaw, pose.roll, cx, top, scale)
    P = {k: proj(v) for k, v in j.items()}
    b = ident.build
    neck_r = 0.026 * np.sqrt(b)
    thigh_r = 0.037 * b
    sh_y, hip_y = j["left_shoulder"][1], j["left_hip"][1]
    spine_top, _ = proj(np.array([0.0, sh_y, 0.0]))
    spine_bottom, _ = proj(np.array([0.0, hip_y, 0.0]))
    return _Frame(
        ident=ident,
        pose=pose,
        j=j,
        proj=proj,
        pt={k: v[0] for k, v in P.items()},
        dp={k: v[1] for k, v in P.items()},
        b=b,
        S=scale,
        facing=np.cos(pose.yaw),
        roll_deg=float(np.rad2deg(pose.roll)),
        td=0.055 * b,
        sh_y=sh_y,
        hip_y=hip_y,
        spine_top=spine_top,
        spine_bottom=spine_bottom,
        neck_r=neck_r,
        thigh_r=thigh_r,
        waist=(0.068 if ident.sex == "female" else 0.078) * b,
        hip_half=ident.hip / 2 + thigh_r * 0.85,
        neck_w=neck_r * (1.9 if ident.neckline == "scoop" else 1.4),
    )


def build_figure(ident: Identity, pose: Pose, cx: float, top: float, scale: float) -> Figure:
    """Pose ``ident`` and project it with its head top at ``top`` and stature ``scale`` pixels."""
    f = _frame(ident, pose, cx, top, scale)
    torso = _torso_outline(f)
    groups = _torso_groups(f, torso)
    for name, _s in SIDES:
        groups.append(_leg_group(f, name))
    groups += _skirt_groups(f)
    for name, _s in SIDES:
        groups.append(_arm_group(f, name))
    groups += _bag_groups(f)
    head = _head(f)
    groups += _neck_and_head_groups(f, head)
    groups += _back_hair_groups(f, head)
    groups += _head_hair_groups(f, head)
    hat = _headwear(ident, f.j["head"], f.proj, head.axes, f.roll_deg, head.rx, head.ry, head.rz, f.S)
    if hat:
        groups.append((-0.12, hat))
    keypoints = _keypoints(ident, f.j, f.proj, torso, f.td)
    ry, S = head.ry, f.S
    eyes = [("circle", Material.EYES, (keypoints[k, :2], 0.075 * ry * S)) for k in (1, 2) if keypoints[k, 2] > 0]
    if eyes and ry * S > 6:
        groups.append((head.d - 0.0006, eyes))
    groups.sort(key=lambda g: -g[0])
    return Figure(groups, keypoints, torso)


def _torso_outline(f: _Frame) -> np.ndarray:
    """The top's outline from the neck to its hem, through levels of the body frame."""
    ident, sh_y, hip_y, td = f.ident, f.sh_y, f.hip_y, f.td
    chest = max(ident.shoulder / 2 - 0.012, f.waist + 0.01)
    top_end = hip_y + ident.top_length
    sleeveless = ident.sleeves == "none"
    return f.outline(
        [
            (sh_y - 0.022, f.neck_w, f.neck_r),
            (sh_y - 0.006, ident.shoulder / 2 * (0.72 if sleeveless else 1.0), td * 0.8),
            (sh_y + 0.07, chest, td),
            (hip_y - 0.09, f.waist, td * 0.9),
            (hip_y, f.hip_half, td * 0.85),
            (top_end, f.hip_half + 0.01 + max(0.0, ident.top_length) * 0.15, td * 0.9),
        ]
    )


def _torso_groups(f: _Frame, torso: np.ndarray) -> list[tuple[float, list[Primitive]]]:
    """The top (with round shoulders unless sleeveless), the skin of a low neckline, and the pelvis."""
    ident, sh_y, hip_y, td, neck_w = f.ident, f.sh_y, f.hip_y, f.td, f.neck_w
    groups: list[tuple[float, list[Primitive]]] = []
    pelvis = f.outline(
        [
            (hip_y - 0.1, f.waist - 0.003, td * 0.85),
            (hip_y, f.hip_half, td * 0.85),
            (hip_y + 0.045, f.hip_half * 0.9, td * 0.75),
            (hip_y + 0.07, 0.012, td * 0.6),
        ]
    )
    sleeveless = ident.sleeves == "none"
    shoulder_prims = [("circle", Material.UPPER, (f.pt[f"{n}_shoulder"], 0.026 * f.b * f.S)) for n, _ in SIDES]
    groups.append((0.0, [("poly", Material.UPPER, torso), *([] if sleeveless else shoulder_prims)]))
    if f.facing > 0.3 and ident.neckline in ("v", "scoop"):
        # The neckline shows skin on the chest, from the front.
        if ident.neckline == "v":
            levels = [(sh_y - 0.024, 0.03, td), (sh_y + 0.02, 0.012, td), (sh_y + 0.075, 0.001, td)]
        else:
            levels = [(sh_y - 0.024, neck_w * 0.9, td), (sh_y + 0.01, neck_w * 0.8, td), (sh_y + 0.045, 0.012, td)]
        groups.append((-0.0002, [("poly", Material.SKIN, f.outline(levels))]))
    groups.append((0.004, [("poly", Material.LOWER, pelvis)]))
    return groups


def _leg_group(f: _Frame, name: str) -> tuple[float, list[Primitive]]:
    """One leg: skin, then the garment over it, then the shoe."""
    ident, pt, b, S = f.ident, f.pt, f.b, f.S
    hip, knee, ankle = pt[f"{name}_hip"], pt[f"{name}_knee"], pt[f"{name}_ankle"]
    r_hip, r_knee, r_ankle = f.thigh_r * S, 0.026 * b * S, 0.017 * b * S
    prims: list[Primitive] = [
        ("capsule", Material.SKIN, (hip, knee, r_hip, r_knee)),
        ("capsule", Material.SKIN, (knee, ankle, r_knee, r_ankle)),
    ]
    if ident.legwear in ("trousers", "capri"):
        pad = ident.fit * S
        end = ankle if ident.legwear == "trousers" else knee + 0.5 * (ankle - knee)
        r_end = r_ankle + 1.5 * pad if ident.legwear == "trousers" else 0.5 * (r_knee + r_ankle) + pad
        prims += [
            ("capsule", Material.LOWER, (hip, knee, r_hip + pad, r_knee + pad)),
            ("capsule", Material.LOWER, (knee, end, r_knee + pad, r_end)),
        ]
    elif ident.legwear == "shorts":
        end = hip + 0.6 * (knee - hip)
        prims.append(("capsule", Material.LOWER, (hip, end, r_hip + 0.005 * S, 0.6 * r_hip + 0.4 * r_knee + 0.007 * S)))
    heel, toe = pt[f"{name}_heel"], pt[f"{name}_toe"]
    if ident.footwear == "sandals":  # bare feet on a thin sole
        prims.append(("capsule", Material.SKIN, (ankle, toe, r_ankle, 0.013 * S)))
        prims.append(("capsule", Material.SHOES, (heel, toe, 0.009 * S, 0.008 * S)))
    else:
        prims.append(("capsule", Material.SHOES, (heel, toe, 0.019 * S, 0.017 * S)))
    if ident.footwear == "boots":
        top_b = ankle + 0.45 * (knee - ankle)
        prims.append(("capsule", Material.SHOES, (top_b, ankle, r_knee * 0.85 + 0.006 * S, r_ankle + 0.008 * S)))
    # Legs stay behind the pelvis-top stack (a top hangs over the trousers), in their own order.
    depth = 0.002 + 0.001 * float(np.tanh(f.dp[f"{name}_knee"] / 0.05))
    return depth, prims


def _skirt_groups(f: _Frame) -> list[tuple[float, list[Primitive]]]:
    """A skirt (to above the knees) or a long skirt (to above the ankles) over the legs, if worn."""
    ident, j = f.ident, f.j
    if ident.legwear not in ("skirt", "long_skirt"):
        return []
    long = ident.legwear == "long_skirt"
    knee_y = 0.5 * (j["left_knee"][1] + j["right_knee"][1])
    end_y = 0.5 * (j["left_ankle"][1] + j["right_ankle"][1]) - 0.03 if long else knee_y - 0.02
    spread = 0.5 * abs(j["left_knee"][2] - j["right_knee"][2]) * (2.0 if long else 1.0)
    skirt = f.outline(
        [
            (f.hip_y - 0.1, f.waist, f.td * 0.9),
            (f.hip_y, f.hip_half + 0.006, f.td + 0.01),
            (end_y, f.hip_half + (0.07 if long else 0.035), f.td + 0.03 + spread),
        ]
    )
    return [(0.0008, [("poly", Material.LOWER, skirt)])]


def _arm_group(f: _Frame, name: str) -> tuple[float, list[Primitive]]:
    """One arm: skin, then the sleeve, and a hand bag if this hand carries one."""
    ident, b, S = f.ident, f.b, f.S
    sh, el, wr, ha = (f.pt[f"{name}_{k}"] for k in ("shoulder", "elbow", "wrist", "hand"))
    r_sh, r_el, r_wr = 0.024 * b * S, 0.02 * b * S, 0.015 * b * S
    prims = [
        ("capsule", Material.SKIN, (sh, el, r_sh, r_el)),
        ("capsule", Material.SKIN, (el, wr, r_el, r_wr)),
        ("capsule", Material.SKIN, (wr, ha, r_wr * 1.1, r_wr * 1.15)),
    ]
    pad = (0.6 * ident.fit + 0.002) * S
    if ident.sleeves == "long":
        prims += [
            ("capsule", Material.UPPER, (sh, el, r_sh + pad, r_el + pad)),
            ("capsule", Material.UPPER, (el, wr, r_el + pad, r_wr + pad)),
        ]
    elif ident.sleeves == "short":
        prims.append(("capsule", Material.UPPER, (sh, sh + 0.5 * (el - sh), r_sh + pad, r_sh + 1.5 * pad)))
    if ident.bag == f"hand_{name}":  # a hand bag hanging from this hand
        roll = f.pose.roll
        down = np.array([-np.sin(roll), np.cos(roll)])
        k = ident.bag_size
        c = ha + down * 0.06 * k * S
        box = _box(c, f.proj.width(0.04 * k, 0.02 * k), 0.04 * k * S, roll)
        prims.append(("capsule", Material.BAG, (ha, c - down * 0.03 * k * S, 0.005 * S, 0.005 * S)))
        prims.append(("poly", Material.BAG, box))
    return 0.5 * (f.dp[f"{name}_elbow"] + f.dp[f"{name}_shoulder"]), prims


def _bag_groups(f: _Frame) -> list[tuple[float, list[Primitive]]]:
    """A shoulder bag on one side with a strap across the body, or a backpack (hand bags: the arms)."""
    if f.ident.bag in ("left", "right"):
        return _shoulder_bag_groups(f)
    if f.ident.bag == "backpack":
        return _backpack_groups(f)
    return []


def _shoulder_bag_groups(f: _Frame) -> list[tuple[float, list[Primitive]]]:
    ident, proj, S, roll = f.ident, f.proj, f.S, f.pose.roll
    sw = ident.shoulder
    s = 1.0 if ident.bag == "left" else -1.0
    centre3 = np.array([s * (sw / 2 + 0.02 + 0.02 * f.b), f.hip_y - 0.005, -0.01])
    c, depth = proj(centre3)
    hw, hh = proj.width(0.025, 0.07 * ident.bag_size), 0.055 * ident.bag_size * S
    groups: list[tuple[float, list[Primitive]]] = [(depth, [("poly", Material.BAG, _box(c, hw, hh, roll))])]
    top3 = centre3 + np.array([-s * 0.01, -0.05, 0.0])
    for zs in (1.0, -1.0):
        a3 = np.array([-s * sw * 0.3, f.sh_y - 0.01, zs * (f.td + 0.004)])
        b3 = top3 + np.array([0.0, 0.0, zs * 0.02])
        (a, da), (bb, db) = proj(a3), proj(b3)
        groups.append((0.5 * (da + db) - 0.001 * zs, [("capsule", Material.BAG, (a, bb, 0.007 * S, 0.007 * S))]))
    return groups


def _backpack_groups(f: _Frame) -> list[tuple[float, list[Primitive]]]:
    ident, proj, S, td = f.ident, f.proj, f.S, f.td
    sw = ident.shoulder
    centre3 = np.array([0.0, f.sh_y + 0.12, -(td + 0.045)])
    c, depth = proj(centre3)
    if abs(f.facing) < 0.45:
        depth = min(depth, -0.001)
    hw = proj.width(0.085 * np.sqrt(f.b) * ident.bag_size, 0.045 * ident.bag_size)
    box = _box(c, hw, 0.115 * ident.bag_size * S, f.pose.roll)
    groups: list[tuple[float, list[Primitive]]] = [(depth, [("poly", Material.BAG, box)])]
    for _name, s in SIDES:
        a3 = np.array([s * sw * 0.3, f.sh_y - 0.008, td + 0.004])
        b3 = np.array([s * sw * 0.34, f.sh_y + 0.19, td + 0.004])
        (a, da), (bb, db) = proj(a3), proj(b3)
        groups.append((0.5 * (da + db) - 0.001, [("capsule", Material.BAG, (a, bb, 0.009 * S, 0.009 * S))]))
    return groups


def _head(f: _Frame) -> _Head:
    ry = f.ident.head / 2
    rx, rz = ry * 0.78, ry * 0.92
    head_d = min(f.dp["head"], -0.001)  # the head is drawn after the torso, the neck before the head
    return _Head(f.pt["head"], head_d, rx, ry, rz, (f.proj.width(rx, rz), ry * f.S))


def _neck_and_head_groups(f: _Frame, head: _Head) -> list[tuple[float, list[Primitive]]]:
    """The neck, a turtleneck's collar and the head's ellipse."""
    neck, neck_r, S = f.pt["neck"], f.neck_r, f.S
    groups: list[tuple[float, list[Primitive]]] = [
        (head.d + 0.0008, [("capsule", Material.SKIN, (neck, head.c, neck_r * S, neck_r * S))])
    ]
    if f.ident.neckline == "turtleneck":
        collar_top = neck + 0.55 * (head.c - neck)
        collar = ("capsule", Material.UPPER, (neck, collar_top, neck_r * 1.3 * S, neck_r * 1.2 * S))
        groups.append((head.d + 0.0006, [collar]))
    groups.append((head.d, [("ellipse", Material.SKIN, (head.c, head.axes, f.roll_deg, 0, 360))]))
    return groups


def _back_hair_groups(f: _Frame, head: _Head) -> list[tuple[float, list[Primitive]]]:
    """Hair hanging down the back (medium or long), a ponytail or a bun."""
    ident, proj, j, S, facing = f.ident, f.proj, f.j, f.S, f.facing
    rx, ry, rz = head.rx, head.ry, head.rz
    vol = ident.hair_volume
    back_depth = (f.td + 0.01) * facing if abs(facing) >= 0.45 else -0.03  # hair hanging down the back
    style = ident.hair_length
    if style in ("medium", "long"):
        bottom_y = j["head"][1] + (ry + 0.04 if style == "medium" else ry + 0.2)
        back = -(rz * (0.8 if abs(facing) < 0.45 else 0.45))
        top3, bot3 = np.array([0.0, j["head"][1], back]), np.array([0.0, bottom_y, back])
        (t2, _), (b2, _) = proj(top3), proj(bot3)
        w_top, w_bot = proj.width(rx * 1.02 * vol, rz * 0.5), proj.width(rx * 1.25 * vol, rz * 0.6)
        normal = np.array([np.cos(f.pose.roll), np.sin(f.pose.roll)])
        poly = np.array([t2 - normal * w_top, t2 + normal * w_top, b2 + normal * w_bot, b2 - normal * w_bot])
        return [(back_depth, [("poly", Material.HAIR, poly)])]
    if style == "ponytail":
        (t2, _), (b2, _) = (
            proj(j["head"] + np.array([0.0, -0.3 * ry, -rz])),
            proj(j["head"] + np.array([0.0, ry + 0.09, -rz - 0.025])),
        )
        return [(back_depth, [("capsule", Material.HAIR, (t2, b2, 0.03 * vol * S, 0.016 * vol * S))])]
    if style == "bun":
        c2, _ = proj(j["head"] + np.array([0.0, -0.75 * ry, -0.75 * rz]))
        depth = (f.td + 0.01) * facing if abs(facing) >= 0.45 else head.d + 0.0002
        return [(depth, [("circle", Material.HAIR, (c2, 0.42 * ry * vol * S))])]
    return []


def _head_hair_groups(f: _Frame, head: _Head) -> list[tuple[float, list[Primitive]]]:
    """The hair over the head: behind it seen from the front (with a fringe), over it from the back,
    a slice over the top and back in profile."""
    ident, facing, axes, roll_deg = f.ident, f.facing, head.axes, f.roll_deg
    style, vol = ident.hair_length, ident.hair_volume
    if facing >= 0.3:
        up, back, grow = 0.1, 0.2, 1.06
    elif facing <= -0.3:
        up, back, grow = 0.04, 0.2, 1.08
    else:
        up, back, grow = 0.0, 0.0, 1.0
    if style == "buzz":
        up, grow = up * 0.5, 1.0
    else:
        grow *= 1.0 + 0.6 * (vol - 1.0)
    hc, _ = f.proj(f.j["head"] + np.array([0.0, -up * head.ry, -back * head.rz]))
    hair = ("ellipse", Material.HAIR, (hc, (axes[0] * grow, axes[1] * grow), roll_deg, 0, 360))
    if abs(facing) < 0.3:
        # Profile: hair over the top and the back of the head, the face in front. A pie slice of the
        # head ellipse from back-down over the top to up-forward (OpenCV angles run clockwise).
        forward_right = np.sin(f.pose.yaw) > 0
        start, end = (135, 300) if forward_right else (240, 405)
        big = (axes[0] * 1.05, axes[1] * 1.05)
        hair = ("ellipse", Material.HAIR, (head.c, big, roll_deg, start, end))
    if not facing > 0.3:
        return [(head.d - 0.0004, [hair])]
    groups: list[tuple[float, list[Primitive]]] = [(head.d + 0.0004, [hair])]
    if style != "buzz":
        fc, _ = f.proj(f.j["head"] + np.array([0.0, -0.3 * head.ry, 0.0]))
        fringe = ("ellipse", Material.HAIR, (fc, (axes[0] * 1.03, 0.72 * head.ry * f.S), roll_deg, 180, 360))
        groups.append((head.d - 0.0004, [fringe]))
    return groups


def _headwear(ident: Identity, head: np.ndarray, proj: _Projector, axes, roll_deg, rx, ry, rz, S) -> list:
    """A cap (crown and a forward brim), a tall beanie or a wide-brimmed hat over the head."""
    kind = ident.headwear
    if kind == "none":
        return []
    m = Material.HAT
    if kind == "cap":
        crown_c, _ = proj(head + np.array([0.0, -0.32 * ry, 0.0]))
        crown = ("ellipse", m, (crown_c, (axes[0] * 1.08, axes[1] * 0.78), roll_deg, 180, 360))
        (a, _), (b, _) = (
            proj(head + np.array([0.0, -0.34 * ry, 0.3 * rz])),
            proj(head + np.array([0.0, -0.3 * ry, 1.7 * rz])),
        )
        (lft, _), (rgt, _) = (
            proj(head + np.array([-rx, -0.36 * ry, 0.6 * rz])),
            proj(head + np.array([rx, -0.36 * ry, 0.6 * rz])),
        )
        return [
            crown,
            ("capsule", m, (a, b, 0.1 * ry * S, 0.08 * ry * S)),
            ("capsule", m, (lft, rgt, 0.1 * ry * S, 0.1 * ry * S)),
        ]
    if kind == "beanie":
        c, _ = proj(head + np.array([0.0, -0.22 * ry, -0.04 * rz]))
        (lft, _), (rgt, _) = proj(head + np.array([-rx, -0.25 * ry, 0.0])), proj(head + np.array([rx, -0.25 * ry, 0.0]))
        return [
            ("ellipse", m, (c, (axes[0] * 1.1, axes[1] * 1.02), roll_deg, 180, 360)),
            ("capsule", m, (lft, rgt, 0.13 * ry * S, 0.13 * ry * S)),
        ]
    brim_c, _ = proj(head + np.array([0.0, -0.45 * ry, 0.0]))
    crown_c, _ = proj(head + np.array([0.0, -0.5 * ry, 0.0]))
    brim = ("ellipse", m, (brim_c, (proj.width(rx * 1.9, rz * 1.9), 0.15 * ry * S), roll_deg, 0, 360))
    crown = ("ellipse", m, (crown_c, (axes[0] * 0.92, 0.72 * ry * S), roll_deg, 180, 360))
    return [brim, crown]


def _box(c: np.ndarray, hw: float, hh: float, roll: float) -> np.ndarray:
    u = np.array([np.cos(roll), np.sin(roll)])
    v = np.array([-np.sin(roll), np.cos(roll)])
    return np.array([c - u * hw - v * hh, c + u * hw - v * hh, c + u * hw + v * hh, c - u * hw + v * hh])


# Face points relative to the head centre, in head radii (x: left, y: down, z: forward), and the
# largest depth of their surface normal (toward the camera is negative) at which they still show.
_FACE = {
    "nose": ((0.0, 0.12, 0.97), 0.25),
    "left_eye": ((0.36, -0.1, 0.82), 0.1),
    "right_eye": ((-0.36, -0.1, 0.82), 0.1),
    "left_ear": ((0.97, 0.05, -0.05), 0.35),
    "right_ear": ((-0.97, 0.05, -0.05), 0.35),
}


def _keypoints(ident: Identity, j: dict, proj: _Projector, torso: np.ndarray, td: float) -> np.ndarray:
    ry = ident.head / 2
    radii = np.array([ry * 0.78, ry, ry * 0.92])
    out = np.zeros((len(KEYPOINT_NAMES), 3), dtype=np.float64)
    contour = torso.astype(np.float32).reshape(-1, 1, 2)
    for k, name in enumerate(KEYPOINT_NAMES):
        if name in _FACE:
            offset, limit = _FACE[name]
            offset = np.asarray(offset)
            xy, _ = proj(j["head"] + offset * radii)
            normal = offset / radii
            normal /= np.linalg.norm(normal)
            visible = proj.depth_of_direction(normal) < limit
        else:
            xy, depth = proj(j[name])
            # The far shoulder, elbow or hip hidden behind the torso (side and three-quarter views).
            hidden = depth > 0.6 * td and cv2.pointPolygonTest(contour, (float(xy[0]), float(xy[1])), False) > 0
            visible = not hidden
        out[k] = (xy[0], xy[1], 1.0 if visible else 0.0)
    return out
