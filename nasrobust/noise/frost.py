"""Frost pictures for the ``frost`` corruption: the published photographs when installed, else synthetic ones.

ImageNet-C's frost (Hendrycks & Dietterich, ICLR 2019; ``make_imagenet_c.py``) blends the
image with a random crop of one of six photographs of frosted glass (``frost1.png`` ...
``frost6.jpg``; the code draws ``np.random.randint(5)``, so only the first five are used).

**Published pictures.** The ``imagecorruptions`` package (``pip install imagecorruptions``,
part of nasrobust's ``test`` extra) ships those photographs as data files. Its *code* does not
import on current Python/numpy (it needs ``pkg_resources`` and removed numpy aliases), so this
module never imports it: it finds the package folder with :func:`importlib.util.find_spec`
(which locates a top-level package without running it) and reads ``frost/frost1.png`` ...
``frost5.jpg`` with OpenCV, converted to RGB as the published code does (``[..., [2, 1, 0]]``).
With them, frost is the published corruption and its errors are comparable with ImageNet-C /
CIFAR-10-C frost.

**Synthetic stand-ins** (when the package is not installed): five frost-like textures drawn
procedurally -- a low-frequency haze of fractal value noise, a network of thin bright veins
(ridged noise, like the crystal boundaries of a frozen film) and seeded "fern frost" feathers
(bending stems with barbs at +-60 degrees, the hexagonal growth directions of ice), rendered
anti-aliased in a pale blue-white. They follow the published formula ``clip(c0 * x + c1 * crop)``
with the published weights, but they are darker than the photographs (mean intensity about
0.4 against 0.48-0.81), so frost measured with them is 20-40% weaker and **not comparable**
with published frost numbers (compare frost only between models evaluated here).

Which pictures were used is :func:`frost_source`; the natural suite stores it in its protocol
and in the key of its corruption cache. The pictures are ``uint8`` RGB arrays, like decoded
image files, so the torch corruption and the per-image numpy reference see the same pixels;
they are read (or drawn, about 2 s for all five, deterministic with fixed seeds) once per process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from nasrobust.errors import NasRobustError

log = logging.getLogger(__name__)

#: Number of textures the corruption picks from (the published code uses five photographs).
N_TEXTURES = 5
#: The package whose data files are the published photographs, and the five the corruption uses.
PUBLISHED_PACKAGE = "imagecorruptions"
PUBLISHED_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
SYNTHETIC = "synthetic (nasrobust.noise.frost)"
#: Side of each texture in pixels; a 224 px crop shows about a third of it, as with the photos.
TEXTURE_SIZE = 640
_SEEDS = (20190101, 20190102, 20190103, 20190104, 20190105)
_TINT = np.array([0.86, 0.93, 1.0])  # pale blue-white, as ice on glass


def _value_noise(rng: np.random.Generator, size: int, cells: int, octaves: int, persistence: float) -> np.ndarray:
    """Fractal value noise in [0, 1]: bicubic-upsampled random grids, coarse to fine."""
    import cv2

    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2**o
        grid = rng.random((n, n)).astype(np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _ridges(rng: np.random.Generator, size: int) -> np.ndarray:
    """Ridged noise ``(1 - |2 v - 1|)^6`` over four octaves: a network of thin bright veins,
    like the crystal boundaries of a frozen film."""
    import cv2

    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(4):
        n = 10 * 2**o
        v = cv2.resize(rng.random((n, n)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        out += amp * (1.0 - np.abs(2.0 * v - 1.0)) ** 6
        total += amp
        amp *= 0.6
    return out / total


def _fern(canvas: np.ndarray, rng: np.random.Generator, x: float, y: float, angle: float, length: float,
          value: int, width: int) -> None:
    """One feather of fern frost: a slowly bending stem with barbs at +-60 degrees (the
    hexagonal growth directions of ice) that shorten towards the tip."""
    import cv2

    def pt(u: float, v: float) -> tuple[int, int]:
        return int(u * 16), int(v * 16)  # 4 fractional bits for anti-aliased lines

    step, done = 3.0 * width, 0.0
    while done < length:
        angle += rng.normal(0.0, 0.05)
        nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
        cv2.line(canvas, pt(x, y), pt(nx, ny), value, width, cv2.LINE_AA, shift=4)
        barb = (length - done) * 0.18 * rng.uniform(0.5, 1.0) + 2 * width
        for side in (-1.0, 1.0):
            if rng.random() < 0.8:
                a = angle + side * math.pi / 3 + rng.normal(0.0, 0.1)
                cv2.line(canvas, pt(nx, ny), pt(nx + barb * math.cos(a), ny + barb * math.sin(a)),
                         int(value * 0.8), 1, cv2.LINE_AA, shift=4)
        x, y, done = nx, ny, done + step


def _ferns(rng: np.random.Generator, size: int) -> np.ndarray:
    """40-ish feathers drawn at twice the size and area-downsampled, plus a soft glow."""
    import cv2

    up = 2
    canvas = np.zeros((size * up, size * up), np.uint8)
    for _ in range(int(rng.integers(35, 55))):
        x, y = rng.uniform(0, size * up, 2)
        angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(60, 260) * up
        _fern(canvas, rng, x, y, angle, length, int(rng.integers(120, 256)), up)
    layer = cv2.resize(canvas.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(layer + 0.6 * cv2.GaussianBlur(layer, (0, 0), 2.0), 0.0, 1.0)


def make_texture(index: int, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Frost texture ``index`` (0 .. N_TEXTURES-1) as ``uint8`` RGB ``(size, size, 3)``;
    mean intensity about 0.4, like a dim window pane with bright crystals."""
    if not 0 <= index < N_TEXTURES:
        raise ValueError(f"frost texture index must be in [0, {N_TEXTURES}), got {index}")
    rng = np.random.default_rng(_SEEDS[index])
    haze = _value_noise(rng, size, cells=3, octaves=5, persistence=0.5)
    veins = _ridges(rng, size)
    ferns = _ferns(rng, size)
    frost = 0.18 + 0.30 * haze + 0.45 * veins * (0.4 + 0.6 * haze) + 0.55 * ferns
    rgb = np.clip(frost[..., None] * _TINT, 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def published_folder() -> Path | None:
    """The ``frost`` data folder of an installed ``imagecorruptions``, found without importing its code."""
    try:
        spec = importlib.util.find_spec(PUBLISHED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "frost"
        if all((folder / name).is_file() for name in PUBLISHED_FILES):
            return folder
    return None


@lru_cache(maxsize=None)
def frost_source() -> str:
    """Which pictures :func:`frost_textures` returns: ``"published (imagecorruptions 1.1.2)"`` or :data:`SYNTHETIC`."""
    if published_folder() is None:
        return SYNTHETIC
    return f"published ({PUBLISHED_PACKAGE} {importlib.metadata.version(PUBLISHED_PACKAGE)})"


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise NasRobustError(f"cannot read the frost picture {path}; reinstall {PUBLISHED_PACKAGE} "
                             f"(pip install --force-reinstall {PUBLISHED_PACKAGE}) or uninstall it to use synthetic frost")
    return np.ascontiguousarray(bgr[..., ::-1])


@lru_cache(maxsize=None)
def published_textures() -> tuple[np.ndarray, ...]:
    """The five published photographs (RGB ``uint8``); an error when ``imagecorruptions`` is not installed."""
    folder = published_folder()
    if folder is None:
        raise NasRobustError(f"the published frost pictures need the {PUBLISHED_PACKAGE} package: "
                             f"pip install {PUBLISHED_PACKAGE}")
    return _frozen(_read_rgb(folder / name) for name in PUBLISHED_FILES)


@lru_cache(maxsize=None)
def synthetic_textures() -> tuple[np.ndarray, ...]:
    """The five synthetic textures (drawn once per process, then cached)."""
    log.debug("drawing %d synthetic frost textures", N_TEXTURES)
    return _frozen(make_texture(i) for i in range(N_TEXTURES))


def _frozen(arrays) -> tuple[np.ndarray, ...]:
    out = tuple(arrays)
    for t in out:
        t.setflags(write=False)
    return out


def frost_textures() -> tuple[np.ndarray, ...]:
    """The pictures the corruption uses (:func:`frost_source` says which)."""
    return published_textures() if frost_source() != SYNTHETIC else synthetic_textures()


@lru_cache(maxsize=16)
def scaled_textures(scale: float) -> tuple[np.ndarray, ...]:
    """Textures resized by ``scale`` with ``cv2.resize`` (bilinear), as ``make_cifar_c.py``
    does with ``fx = fy = 0.2`` before cropping 32 px patches."""
    import cv2

    if scale == 1.0:
        return frost_textures()
    return _frozen(cv2.resize(t, (0, 0), fx=scale, fy=scale) for t in frost_textures())
