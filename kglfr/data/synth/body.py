"""Synthetic identities: a body model (proportions, build, gait) and its appearance in both modalities.

Lengths are fractions of the person's stature (head top 0, soles 1). Colours are RGB in 0..255;
``thermal`` values are the grey level a surface shows in infrared (0..255), drawn independently of
its colour, so that across modalities only the body's shape and proportions and what the clothes
cover match: sleeves, neckline, top length, legwear, footwear, headwear, hair style and the bag
(``SHAPE_ATTRIBUTES``), drawn per identity with high entropy so that identities differ. Exposed skin
shows bright in infrared, hair and hats dark; colour and pattern show in visible images only.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

RGB = tuple[float, float, float]

# Streams of the seeded generators, so that each purpose draws from its own sequence.
STREAM_IDENTITY = 1
STREAM_POSE = 2
STREAM_IMAGE = 3
STREAM_SPLIT = 4
STREAM_CAMERAS = 5


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (e.g. stream, pid, camera, index)."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


class Material(IntEnum):
    """What a drawn body part is made of; the renderer maps it to a colour or a heat level."""

    SKIN = 0
    HAIR = 1
    UPPER = 2
    LOWER = 3
    SHOES = 4
    BAG = 5
    EYES = 6
    HAT = 7


PATTERNS = ("plain", "stripes", "checks")
# Shape attributes, drawn per identity and the same in both modalities (skin shows bright in infrared,
# so what a garment covers is a strong cross-modal cue).
HAIR_STYLES = ("buzz", "short", "medium", "long", "ponytail", "bun")
SLEEVES = ("none", "short", "long")
NECKLINES = ("crew", "v", "scoop", "turtleneck")
TOPS = ("cropped", "regular", "long", "coat")
LEGWEAR = ("trousers", "capri", "shorts", "skirt", "long_skirt")
FOOTWEAR = ("shoes", "boots", "sandals")
HEADWEAR = ("none", "cap", "beanie", "hat")
BAGS = ("none", "left", "right", "backpack", "hand_left", "hand_right")
BUILDS = (0.8, 1.0, 1.25)  # slim, average, heavy (times a small per-identity spread)
SHAPE_ATTRIBUTES = ("hair_length", "sleeves", "neckline", "top", "legwear", "footwear", "headwear", "bag")


def shape_attributes(ident: Identity) -> tuple:
    """The identity's categorical shape attributes and its build class: what both modalities show."""
    build = min(range(len(BUILDS)), key=lambda i: abs(BUILDS[i] - ident.build))
    return (*(getattr(ident, a) for a in SHAPE_ATTRIBUTES), build)


@dataclass(frozen=True)
class Garment:
    pattern: str  # one of PATTERNS
    color: RGB
    color2: RGB  # second colour of stripes or checks
    period: float  # stripe or check period, fraction of stature
    thermal: float  # infrared grey level


@dataclass(frozen=True)
class Identity:
    """Everything about one person that stays the same across images and cameras."""

    pid: int
    sex: str  # "female" or "male" (RegDB file names; shifts proportions and hair)
    stature: float  # relative body height, 1.0 on average
    head: float  # head height
    shoulder: float  # distance between the shoulder joints
    hip: float  # distance between the hip joints
    leg: float  # hip joint to ankle
    upper_arm: float
    forearm: float
    build: float  # multiplies torso depth and limb widths
    skin: RGB
    skin_thermal: float
    hair: RGB
    hair_length: str  # one of HAIR_STYLES
    hair_volume: float  # how far the hair stands off the head (1: close)
    hair_thermal: float
    upper: Garment
    sleeves: str  # one of SLEEVES
    neckline: str  # one of NECKLINES
    top: str  # one of TOPS (how far the top reaches down)
    top_length: float  # how far the top reaches below the hip joints (may be negative)
    lower: Garment
    legwear: str  # one of LEGWEAR
    fit: float  # extra half width of trousers and sleeves, fraction of stature
    shoes: RGB
    shoes_thermal: float
    footwear: str  # one of FOOTWEAR
    headwear: str  # one of HEADWEAR
    hat_color: RGB
    hat_thermal: float
    bag: str  # one of BAGS ("left"/"right": a shoulder bag on that side; "hand_*": carried in that hand)
    bag_size: float  # multiplies the bag's size
    bag_color: RGB
    bag_thermal: float
    stride: float  # leg swing amplitude, radians
    arm_swing: float  # arm swing amplitude, radians


_NEUTRALS: tuple[RGB, ...] = (
    (24, 24, 27),  # black
    (58, 58, 62),  # charcoal
    (118, 118, 120),  # grey
    (182, 182, 180),  # light grey
    (228, 228, 222),  # white
    (32, 38, 72),  # navy
    (198, 178, 146),  # beige
    (96, 68, 46),  # brown
    (62, 84, 122),  # denim
)
_HAIR: tuple[tuple[RGB, float], ...] = (
    ((22, 19, 18), 0.40),  # black
    ((52, 36, 26), 0.25),  # dark brown
    ((98, 66, 40), 0.13),  # brown
    ((196, 164, 104), 0.10),  # blond
    ((150, 148, 146), 0.07),  # grey
    ((140, 64, 34), 0.05),  # auburn
)
_SKIN: tuple[RGB, ...] = ((240, 206, 182), (222, 176, 140), (186, 132, 96), (130, 88, 60), (88, 58, 40))


def _jitter(rng: np.random.Generator, color: RGB, amount: float) -> RGB:
    c = np.clip(np.asarray(color, dtype=float) + rng.uniform(-amount, amount, 3), 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _clothing_color(rng: np.random.Generator) -> RGB:
    if rng.random() < 0.4:
        return _jitter(rng, _NEUTRALS[rng.integers(len(_NEUTRALS))], 12)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.95))
    return (r * 255.0, g * 255.0, b * 255.0)


def _garment(rng: np.random.Generator, pattern_p: tuple[float, float, float], thermal: tuple[float, float]):
    pattern = PATTERNS[rng.choice(3, p=pattern_p)]
    color = _clothing_color(rng)
    color2 = _clothing_color(rng)
    # Keep the second colour visibly different from the first.
    if np.abs(np.subtract(color, color2)).sum() < 120:
        color2 = tuple(255.0 - c for c in color)
    return Garment(
        pattern=pattern,
        color=color,
        color2=color2,
        period=float(rng.uniform(0.035, 0.08)),
        thermal=float(rng.uniform(*thermal)),
    )


def _skin_tone(rng: np.random.Generator) -> RGB:
    """A skin colour between two neighbouring tones of ``_SKIN``."""
    t = rng.random() * (len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    return tuple(float(a + (b - a) * (t - i)) for a, b in zip(_SKIN[i], _SKIN[i + 1], strict=True))


def _pick(rng: np.random.Generator, values: tuple, p=None) -> str:
    return str(values[rng.choice(len(values), p=p)])


_HAIR_COLORS, _HAIR_P = zip(*_HAIR, strict=True)
_HAIR_P = np.asarray(_HAIR_P) / np.sum(_HAIR_P)
# How far each kind of top reaches below the hip joints (a uniform range, fraction of stature).
_TOP_LENGTH = {"cropped": (-0.02, -0.005), "regular": (0.01, 0.05), "long": (0.08, 0.12), "coat": (0.2, 0.26)}


def sample_identity(seed: int, pid: int) -> Identity:
    """The identity ``pid`` of the dataset generated with ``seed`` (independent of every other pid)."""
    rng = rng_for(seed, STREAM_IDENTITY, pid)
    female = rng.random() < 0.45
    shoulder = rng.normal(0.215 if female else 0.245, 0.014)
    hip = rng.normal(0.125 if female else 0.115, 0.01)
    skin = _skin_tone(rng)
    hair_length = _pick(
        rng, HAIR_STYLES, [0.04, 0.12, 0.24, 0.3, 0.18, 0.12] if female else [0.25, 0.5, 0.15, 0.04, 0.04, 0.02]
    )
    legwear = _pick(rng, LEGWEAR, [0.3, 0.15, 0.15, 0.22, 0.18] if female else [0.55, 0.15, 0.3, 0.0, 0.0])
    top = _pick(rng, TOPS, [0.2, 0.35, 0.25, 0.2])
    build = BUILDS[rng.integers(len(BUILDS))] * rng.normal(1.0, 0.04)
    hair_thermal = rng.uniform(35, 75)
    if hair_length == "buzz":  # the scalp shows through: warmer
        hair_thermal = rng.uniform(110, 150)
    return Identity(
        pid=pid,
        sex="female" if female else "male",
        stature=float(np.clip(rng.normal(1.0, 0.05), 0.86, 1.14)),
        head=float(np.clip(rng.normal(0.13, 0.008), 0.112, 0.15)),
        shoulder=float(np.clip(shoulder * (0.85 + 0.15 * build), 0.18, 0.3)),
        hip=float(np.clip(hip, 0.095, 0.15)),
        leg=float(np.clip(rng.normal(0.455, 0.02), 0.41, 0.5)),
        upper_arm=float(rng.uniform(0.165, 0.19)),
        forearm=float(rng.uniform(0.135, 0.155)),
        build=float(np.clip(build, 0.72, 1.42)),
        skin=_jitter(rng, skin, 6),
        skin_thermal=float(rng.uniform(215, 240)),
        hair=_jitter(rng, _HAIR_COLORS[rng.choice(len(_HAIR_COLORS), p=_HAIR_P)], 10),
        hair_length=hair_length,
        hair_volume=float(rng.uniform(1.0, 1.3)),
        hair_thermal=float(hair_thermal),
        upper=_garment(rng, (0.55, 0.3, 0.15), (110, 150)),
        sleeves=_pick(rng, SLEEVES, [0.22, 0.38, 0.4]),
        neckline=_pick(rng, NECKLINES, [0.35, 0.25, 0.2, 0.2]),
        top=top,
        top_length=float(rng.uniform(*_TOP_LENGTH[top])),
        lower=_garment(rng, (0.8, 0.08, 0.12), (100, 140)),
        legwear=legwear,
        fit=float(rng.uniform(0.002, 0.014)),
        shoes=_jitter(rng, _NEUTRALS[rng.integers(len(_NEUTRALS))], 15),
        shoes_thermal=float(rng.uniform(70, 110)),
        footwear=_pick(rng, FOOTWEAR, [0.55, 0.25, 0.2]),
        headwear=_pick(rng, HEADWEAR, [0.46, 0.2, 0.17, 0.17]),
        hat_color=_clothing_color(rng),
        hat_thermal=float(rng.uniform(40, 90)),
        bag=_pick(rng, BAGS, [0.3, 0.12, 0.12, 0.2, 0.13, 0.13]),
        bag_size=float(rng.uniform(0.85, 1.3)),
        bag_color=_clothing_color(rng),
        bag_thermal=float(rng.uniform(60, 110)),
        stride=float(np.deg2rad(rng.uniform(16, 28))),
        arm_swing=float(np.deg2rad(rng.uniform(10, 30))),
    )
