"""Draw a posed person into a visible or an infrared image, with a camera's background and sensor.

Visible images show the clothing's colours and patterns under the camera's lighting; infrared images
show heat: skin bright, each garment at its identity's thermal level, hair dark, no colour and no
pattern, on a cooler background, with blur and sensor noise, saved as three identical channels.
SYSU-MM01's infrared cameras are near infrared (active illumination): there a garment's grey level
mixes its thermal level with its visible lightness (``CameraStyle.reflectance``), so a light top
tends to show lighter than a dark one, as in real near-infrared footage; RegDB's far-infrared
camera sees heat only.
Everything is drawn with anti-aliased OpenCV primitives into small masks that are composited in
depth order (far to near).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kglfr.data.synth.body import RGB, Garment, Identity, Material
from kglfr.data.synth.figure import Figure, Pose, build_figure

_SHIFT = 4  # sub-pixel bits of the OpenCV drawing calls
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class CameraStyle:
    """How one camera sees: its scene, lighting and sensor."""

    name: str
    infrared: bool
    scene: str  # "indoor" or "outdoor"
    wall: RGB  # main background colour (grey level in its first channel for infrared)
    floor: RGB
    tint: RGB = (1.0, 1.0, 1.0)  # per-channel gain of the lighting
    brightness: float = 1.0
    light: float = 0.1  # strength of the side light across the body (sign: from which side)
    noise: float = 2.5  # sensor noise, grey levels
    blur: float = 0.0  # Gaussian blur sigma at 288 pixels of height
    heat_gain: float = 1.0  # infrared: how the camera maps the identity's thermal level
    heat_offset: float = 0.0
    skin_boost: float = 0.0  # infrared: extra brightness of skin (far infrared sees body heat)
    reflectance: float = 0.0  # near infrared: weight of a surface's visible lightness in its grey level


def _visible(name, scene, wall, floor, tint, brightness, light, **kw) -> CameraStyle:
    return CameraStyle(name, False, scene, wall, floor, tint, brightness, light, **kw)


def _infrared(name, scene, wall, floor, **kw) -> CameraStyle:
    return CameraStyle(name, True, scene, (wall,) * 3, (floor,) * 3, **kw)


# Weight of visible lightness in a garment's near-infrared grey level (SYSU cameras 3 and 6). Without
# it only shape links the modalities and a small CNN trained for minutes matches near chance.
REFLECTANCE = 0.7
# SYSU-MM01: cameras 1 and 2 indoor (warm and bright; cool and dim), 4 and 5 outdoor, 3 and 6 infrared.
SYSU_CAMERAS: dict[int, CameraStyle] = {
    1: _visible("sysu-cam1 indoor", "indoor", (208, 198, 178), (150, 118, 88), (1.06, 1.0, 0.9), 1.0, 0.12),
    2: _visible(
        "sysu-cam2 indoor",
        "indoor",
        (170, 182, 188),
        (96, 100, 108),
        (0.92, 1.0, 1.06),
        0.82,
        -0.1,
        noise=4.0,
        blur=0.5,
    ),
    3: _infrared(
        "sysu-cam3 infrared indoor",
        "indoor",
        92,
        70,
        noise=4.0,
        blur=1.1,
        heat_gain=0.95,
        heat_offset=8.0,
        reflectance=REFLECTANCE,
    ),
    4: _visible("sysu-cam4 outdoor", "outdoor", (176, 172, 164), (118, 116, 112), (1.0, 1.0, 1.02), 1.1, 0.16),
    5: _visible(
        "sysu-cam5 outdoor", "outdoor", (150, 160, 138), (104, 98, 90), (1.04, 1.02, 0.94), 0.95, -0.14, noise=3.0
    ),
    6: _infrared(
        "sysu-cam6 infrared outdoor",
        "outdoor",
        58,
        80,
        noise=5.0,
        blur=1.3,
        heat_gain=1.05,
        heat_offset=-6.0,
        reflectance=REFLECTANCE,
    ),
}
# RegDB: one visible and one far-infrared (thermal) camera side by side; the thermal one sees body heat.
REGDB_CAMERAS: dict[int, CameraStyle] = {
    1: _visible(
        "regdb visible", "outdoor", (140, 138, 132), (96, 96, 94), (0.98, 1.0, 1.04), 0.85, 0.1, noise=3.5, blur=0.4
    ),
    2: _infrared(
        "regdb thermal", "outdoor", 40, 62, noise=3.5, blur=1.6, heat_gain=0.9, heat_offset=-10.0, skin_boost=15.0
    ),
}


# --------------------------------------------------------------------------------------- drawing
def _fixed(points, ox: int, oy: int) -> np.ndarray:
    """Continuous image points -> OpenCV sub-pixel points of a mask whose origin is pixel (oy, ox)."""
    return np.rint((np.asarray(points, np.float64) - (ox + 0.5, oy + 0.5)) * _ONE).astype(np.int32)


def _pt(p: np.ndarray, ox: int, oy: int) -> tuple[int, int]:
    q = _fixed(p, ox, oy)
    return int(q[0]), int(q[1])


def _bounds(kind: str, g) -> tuple[float, float, float, float]:
    if kind == "capsule":
        p1, p2, r1, r2 = g
        r = max(r1, r2)
        return min(p1[0], p2[0]) - r, min(p1[1], p2[1]) - r, max(p1[0], p2[0]) + r, max(p1[1], p2[1]) + r
    if kind == "circle":
        c, r = g
        return c[0] - r, c[1] - r, c[0] + r, c[1] + r
    if kind == "ellipse":
        c, (ax, ay), *_ = g
        r = max(ax, ay)
        return c[0] - r, c[1] - r, c[0] + r, c[1] + r
    pts = np.asarray(g)
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def _draw(mask: np.ndarray, kind: str, g, ox: int, oy: int) -> None:
    aa = cv2.LINE_AA
    if kind == "capsule":
        p1, p2, r1, r2 = g
        d = p2 - p1
        length = float(np.hypot(d[0], d[1]))
        if length > 1e-6:
            n = np.array([-d[1], d[0]]) / length
            quad = _fixed([p1 + n * r1, p2 + n * r2, p2 - n * r2, p1 - n * r1], ox, oy)
            cv2.fillConvexPoly(mask, quad, 255, aa, _SHIFT)
        cv2.circle(mask, _pt(p1, ox, oy), int(round(r1 * _ONE)), 255, -1, aa, _SHIFT)
        cv2.circle(mask, _pt(p2, ox, oy), int(round(r2 * _ONE)), 255, -1, aa, _SHIFT)
    elif kind == "circle":
        c, r = g
        cv2.circle(mask, _pt(c, ox, oy), int(round(r * _ONE)), 255, -1, aa, _SHIFT)
    elif kind == "ellipse":
        c, (ax, ay), angle, start, end = g
        axes = (int(round(ax * _ONE)), int(round(ay * _ONE)))
        cv2.ellipse(mask, _pt(c, ox, oy), axes, angle, start, end, 255, -1, aa, _SHIFT)
    else:
        cv2.fillPoly(mask, [_fixed(g, ox, oy)], 255, aa, _SHIFT)


class _Painter:
    """Paint of each material over a region: a colour, a pattern, or a heat level, with shading."""

    def __init__(self, ident: Identity, style: CameraStyle, rng: np.random.Generator, cx: float, scale: float):
        self.ident, self.style, self.cx, self.scale = ident, style, cx, scale
        self.light = style.light * rng.uniform(0.6, 1.4)
        self.phase = rng.uniform(0, 1, 2) * scale
        if style.infrared:
            j = rng.normal(0, 7, 6)
            boost = style.skin_boost
            levels = {
                Material.SKIN: ident.skin_thermal + boost + j[0],
                Material.HAIR: ident.hair_thermal + j[1],
                Material.UPPER: ident.upper.thermal + j[2],
                Material.LOWER: ident.lower.thermal + j[3],
                Material.SHOES: ident.shoes_thermal + j[4],
                Material.BAG: ident.bag_thermal + j[5],
                Material.HAT: ident.hat_thermal + j[5],
                Material.EYES: ident.skin_thermal + boost + j[0] - 12.0,
            }
            if style.reflectance > 0:
                # Near infrared sees reflected light too: a light garment shows lighter than a dark one
                # (grey only; its hue and pattern do not show).
                for m, garment_rgb in (
                    (Material.UPPER, _mean_rgb(ident.upper)),
                    (Material.LOWER, _mean_rgb(ident.lower)),
                    (Material.SHOES, ident.shoes),
                    (Material.BAG, ident.bag_color),
                    (Material.HAT, ident.hat_color),
                ):
                    lightness = 40.0 + 0.75 * float(np.dot(garment_rgb, (0.299, 0.587, 0.114)))
                    levels[m] = (1 - style.reflectance) * levels[m] + style.reflectance * lightness
            self.levels = {m: np.float32(v * style.heat_gain + style.heat_offset) for m, v in levels.items()}
        else:
            colors = {
                Material.SKIN: ident.skin,
                Material.HAIR: ident.hair,
                Material.SHOES: ident.shoes,
                Material.BAG: ident.bag_color,
                Material.HAT: ident.hat_color,
                Material.UPPER: ident.upper.color,
                Material.LOWER: ident.lower.color,
                Material.EYES: (35.0, 28.0, 26.0),
            }
            self.colors = {m: np.asarray(c, np.float32) for m, c in colors.items()}

    def __call__(self, material: Material, x0: int, y0: int, h: int, w: int) -> np.ndarray:
        xs = np.arange(x0, x0 + w, dtype=np.float32) + 0.5
        across = np.clip((xs - self.cx) / (0.25 * self.scale), -1.0, 1.0)
        if self.style.infrared:
            # Surfaces seen edge-on look cooler.
            return (self.levels[material] * (1.0 - 0.07 * across * across))[None, :]
        shade = (1.0 + self.light * across)[None, :, None]
        garment = self._garment(material)
        if garment is None or garment.pattern == "plain":
            return self.colors[material][None, None, :] * shade
        period = max(2.5, garment.period * self.scale)
        ys = np.arange(y0, y0 + h, dtype=np.float32)[:, None] + self.phase[1]
        if garment.pattern == "stripes":
            second = (np.floor(ys / (period * 0.5)) % 2).astype(bool)
            second = np.broadcast_to(second, (h, w))
        else:
            xq = np.floor((xs[None, :] + self.phase[0]) / period)
            second = ((np.floor(ys / period) + xq) % 2).astype(bool)
        c1 = np.asarray(garment.color, np.float32)
        c2 = np.asarray(garment.color2, np.float32)
        return np.where(second[..., None], c2, c1) * shade

    def _garment(self, material: Material) -> Garment | None:
        if material == Material.UPPER:
            return self.ident.upper
        if material == Material.LOWER:
            return self.ident.lower
        return None


def _mean_rgb(garment: Garment) -> RGB:
    if garment.pattern == "plain":
        return garment.color
    return tuple(0.5 * (a + b) for a, b in zip(garment.color, garment.color2, strict=True))


def _composite(img: np.ndarray, mask: np.ndarray, x0: int, y0: int, paint: np.ndarray) -> None:
    h, w = mask.shape
    alpha = mask.astype(np.float32) * np.float32(1 / 255)
    roi = img[y0 : y0 + h, x0 : x0 + w]
    if img.ndim == 3:
        alpha = alpha[..., None]
    roi += (paint - roi) * alpha


def draw_figure(img: np.ndarray, figure: Figure, painter: _Painter) -> None:
    """Composite the figure's primitives into ``img`` (float32, H x W or H x W x 3), far to near."""
    H, W = img.shape[:2]
    for _depth, prims in figure.groups:
        i = 0
        while i < len(prims):
            material = prims[i][1]
            k = i
            while k < len(prims) and prims[k][1] == material:
                k += 1
            run = prims[i:k]
            i = k
            boxes = np.array([_bounds(kind, g) for kind, _m, g in run])
            x0 = max(0, int(np.floor(boxes[:, 0].min())) - 2)
            y0 = max(0, int(np.floor(boxes[:, 1].min())) - 2)
            x1 = min(W, int(np.ceil(boxes[:, 2].max())) + 2)
            y1 = min(H, int(np.ceil(boxes[:, 3].max())) + 2)
            if x1 <= x0 or y1 <= y0:
                continue
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            for kind, _m, g in run:
                _draw(mask, kind, g, x0, y0)
            _composite(img, mask, x0, y0, painter(material, x0, y0, y1 - y0, x1 - x0))


# ------------------------------------------------------------------------------------ background
def _smooth(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int], amp: float) -> np.ndarray:
    """Low-frequency blotches: a coarse random grid resized to the image."""
    grid = rng.standard_normal(cells).astype(np.float32) * np.float32(amp)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, value) -> None:
    H, W = img.shape[:2]
    a, b = max(0, int(round(y0))), min(H, int(round(y1)))
    c, d = max(0, int(round(x0))), min(W, int(round(x1)))
    if b > a and d > c:
        img[a:b, c:d] = value


def _vary(rng: np.random.Generator, color: RGB, amount: float) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32), 0, 255)


def _background_visible(rng: np.random.Generator, style: CameraStyle, H: int, W: int) -> np.ndarray:
    img = np.empty((H, W, 3), np.float32)
    wall = _vary(rng, style.wall, 18)
    floor = _vary(rng, style.floor, 14)
    if style.scene == "indoor":
        horizon = H * rng.uniform(0.68, 0.86)
        grad = np.linspace(1.06, 0.9, H, dtype=np.float32)[:, None, None]
        img[:] = wall * grad
        _rect(img, 0, horizon, W, H, floor)
        _rect(img, 0, horizon - 0.012 * H, W, horizon, floor * 0.7)  # skirting board
        for _ in range(rng.integers(2, 6)):  # doors, windows, posters, furniture
            w, h = W * rng.uniform(0.12, 0.45), H * rng.uniform(0.1, 0.5)
            x, y = W * rng.uniform(-0.2, 1.0), rng.uniform(0.02, 0.95) * (horizon + 0.05 * H) - 0.5 * h
            color = _vary(rng, wall, 70) if rng.random() < 0.6 else rng.uniform(30, 230, 3).astype(np.float32)
            _rect(img, x - 2, y - 2, x + w + 2, y + h + 2, color * 0.7)
            _rect(img, x, y, x + w, y + h, color)
    else:
        horizon = H * rng.uniform(0.42, 0.7)
        if rng.random() < 0.5:  # building facade with windows
            img[:] = wall
            cols, rows = rng.integers(2, 5), rng.integers(3, 7)
            win = _vary(rng, (70, 80, 95), 25)
            for r in range(rows):
                for c in range(cols):
                    x = (c + 0.25) * W / cols
                    y = (r + 0.2) * horizon / rows
                    _rect(img, x, y, x + 0.5 * W / cols, y + 0.55 * horizon / rows, win)
        else:  # sky, then trees
            sky = _vary(rng, (170, 195, 225), 25)
            img[:] = sky * np.linspace(0.9, 1.08, H, dtype=np.float32)[:, None, None]
            for _ in range(rng.integers(1, 4)):
                green = _vary(rng, (70, 110, 60), 25)
                c = (int(rng.uniform(0, W)), int(horizon - rng.uniform(0, 0.25) * H))
                axes = (int(W * rng.uniform(0.15, 0.4)), int(H * rng.uniform(0.1, 0.25)))
                cv2.ellipse(img, c, axes, 0, 0, 360, green.tolist(), -1, cv2.LINE_AA)
        _rect(img, 0, horizon, W, H, floor)
        for _ in range(rng.integers(0, 3)):  # poles and posts
            x, w = W * rng.uniform(0, 1), W * rng.uniform(0.02, 0.05)
            _rect(img, x, H * rng.uniform(0.0, 0.4), x + w, horizon + 0.05 * H, _vary(rng, (90, 90, 95), 30))
        if rng.random() < 0.5:  # a shadow across the ground
            y = horizon + (H - horizon) * rng.uniform(0.2, 0.7)
            img[int(y) :, : int(W * rng.uniform(0.3, 1.0))] *= np.float32(0.7)
    img += _smooth(rng, H, W, (6, 4), 7.0)[..., None]
    return img


def _background_infrared(rng: np.random.Generator, style: CameraStyle, H: int, W: int) -> np.ndarray:
    base = style.wall[0] + rng.uniform(-15, 15)
    floor = style.floor[0] + rng.uniform(-12, 12)
    if style.scene == "indoor":
        horizon = H * rng.uniform(0.68, 0.86)
        img = np.full((H, W), base, np.float32) * np.linspace(1.08, 0.92, H, dtype=np.float32)[:, None]
    else:
        horizon = H * rng.uniform(0.42, 0.7)
        img = np.full((H, W), base, np.float32) * np.linspace(0.75, 1.05, H, dtype=np.float32)[:, None]
    _rect(img, 0, horizon, W, H, floor)
    for _ in range(rng.integers(1, 5)):  # objects a little warmer or cooler than the scene
        w, h = W * rng.uniform(0.1, 0.4), H * rng.uniform(0.08, 0.4)
        x, y = W * rng.uniform(-0.2, 1.0), rng.uniform(0.0, 0.95) * horizon - 0.3 * h
        _rect(img, x, y, x + w, y + h, base + rng.uniform(-25, 35))
    img += _smooth(rng, H, W, (5, 3), 6.0)
    return img


# -------------------------------------------------------------------------------------- occluder
def _occluder(rng: np.random.Generator, H: int, W: int) -> tuple[float, float, float, float]:
    """A rectangle (x0, y0, x1, y1) covering part of the body: a pillar, a low wall, a pole."""
    kind = rng.choice(3, p=[0.45, 0.35, 0.2])
    if kind == 0:
        w = W * rng.uniform(0.35, 0.55)
        y0 = H * rng.uniform(-0.1, 0.4)
        return (0.0, y0, w, H + 1) if rng.random() < 0.5 else (W - w, y0, W + 1, H + 1)
    if kind == 1:
        return (W * rng.uniform(-0.1, 0.2), H * rng.uniform(0.55, 0.8), W * rng.uniform(0.8, 1.1), H + 1)
    w = W * rng.uniform(0.08, 0.16)
    x = W * rng.uniform(0.3, 0.7) - w / 2
    return (x, -1.0, x + w, H + 1)


# ------------------------------------------------------------------------------------------ image
def render(
    ident: Identity,
    style: CameraStyle,
    pose: Pose,
    rng: np.random.Generator,
    height: int,
    width: int,
    occlusion: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """One image of ``ident`` in ``pose`` seen by ``style``: (H x W x 3 uint8 RGB, keypoints (17, 3)).

    Keypoint rows are x, y, v (see ``kglfr.data.synth.sidecar``). ``rng`` draws everything else:
    placement, background, lighting, occluder and noise.
    """
    H, W = height, width
    if rng.random() < 0.05:  # cropped tight: the head or the feet may be cut
        scale = H * rng.uniform(0.95, 1.08)
        top = H * rng.uniform(-0.07, 0.03)
    else:
        scale = H * rng.uniform(0.8, 0.92) * (1.0 + 0.5 * (ident.stature - 1.0))
        top = (H - scale) * rng.uniform(0.25, 0.7)
    cx = W * (0.5 + rng.uniform(-0.07, 0.07))
    figure = build_figure(ident, pose, cx, top, scale)
    painter = _Painter(ident, style, rng, cx, scale)
    px = H / 288.0  # pixel sizes below are given for a 288-pixel-high image
    if style.infrared:
        img = _background_infrared(rng, style, H, W)
    else:
        img = _background_visible(rng, style, H, W)
    draw_figure(img, figure, painter)

    keypoints = figure.keypoints.copy()
    if rng.random() < occlusion:
        x0, y0, x1, y1 = _occluder(rng, H, W)
        if style.infrared:
            value = np.float32(rng.uniform(30, 150))
        else:
            value = rng.uniform(25, 230, 3).astype(np.float32)
        _rect(img, x0, y0, x1, y1, value)
        inside = (keypoints[:, 0] >= x0) & (keypoints[:, 0] < x1) & (keypoints[:, 1] >= y0) & (keypoints[:, 1] < y1)
        keypoints[inside, 2] = 0.0
    outside = (keypoints[:, 0] < 0) | (keypoints[:, 0] >= W) | (keypoints[:, 1] < 0) | (keypoints[:, 1] >= H)
    keypoints[outside, 2] = 0.0

    gain = style.brightness * rng.uniform(0.88, 1.12)
    if style.infrared:
        sigma = style.blur * px * rng.uniform(0.8, 1.25)
        if sigma > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        yy = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
        xx = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
        img *= 1.0 - 0.12 * (xx * xx + yy * yy)  # vignetting
        img += rng.normal(0, 2.0, (1, W)).astype(np.float32)  # column fixed-pattern noise
        gray = _add_noise(img, rng, style.noise)
        return np.repeat(gray[:, :, None], 3, axis=2), keypoints
    img *= (np.asarray(style.tint, np.float32) * np.float32(gain))[None, None, :]
    if style.blur * px > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), style.blur * px)
    return _add_noise(img, rng, style.noise), keypoints


def _add_noise(img: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """``img`` plus uniform sensor noise of standard deviation ``sigma``, rounded and clipped to uint8."""
    noise = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)
    scale = sigma * np.sqrt(12.0) / 255.0
    return cv2.addWeighted(img, 1.0, noise, scale, -127.5 * scale, dtype=cv2.CV_8U)
