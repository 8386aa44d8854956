"""Per-severity parameters of the 15 ImageNet-C corruptions, both published sets.

Values are those of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations" (ICLR 2019), as released in hendrycks/robustness:

* ``imagenet`` -- ``ImageNet-C/create_c/make_imagenet_c.py`` (224 px images);
* ``cifar``    -- ``ImageNet-C/create_c/make_cifar_c.py`` (32 px, CIFAR-10-C).

Tuples keep the published order of each corruption's ``c``; the comment above each entry
names the fields. Two entries are stored relative to an image size because the published
code ties them to one: elastic's constants (``244 * k`` for 224 px; ``IMSIZE * k`` with
``IMSIZE = 32``) are scaled by ``min(H, W) / ref_size``, so a 224 px (or 32 px) image gets the
published numbers exactly. Zoom factors are ``np.arange(start, stop, step)`` as published.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from nasrobust.errors import UnknownNameError

#: Image side at or below which the CIFAR set is chosen automatically.
CIFAR_MAX_SIDE = 64


@dataclass(frozen=True)
class ParamSet:
    """One published parameter set: per corruption, five severities of ``c``."""

    name: str
    source: str
    table: Mapping[str, tuple]
    #: elastic constants are given for images of this side (scaled by min(H, W) / ref).
    elastic_ref_size: float
    #: frost textures are resized by this factor before cropping (CIFAR: 0.2).
    frost_texture_scale: float

    def c(self, corruption: str, severity: int):
        """The published ``c`` of ``corruption`` at ``severity`` (1..5)."""
        return self.table[corruption][severity - 1]


_IMAGENET = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # noise std
    "shot_noise": (60, 25, 12, 5, 3),  # photons per unit intensity (lambda)
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # s&p amount
    # (disk radius, alias blur sigma)
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    # (gaussian sigma, max pixel displacement, iterations)
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    # ImageMagick motion-blur (radius, sigma); angle ~ U(-45, 45)
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    # np.arange(start, stop, step) zoom factors
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    # (image weight, frost weight)
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    # (fog strength, plasma wibble decay)
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to HSV value
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor about the per-channel mean
    # (alpha, sigma, affine jitter) in pixels of a 224 px image ("244 should have been 224")
    "elastic_transform": (
        (244 * 2, 244 * 0.7, 244 * 0.1),
        (244 * 2, 244 * 0.08, 244 * 0.2),
        (244 * 0.05, 244 * 0.01, 244 * 0.02),
        (244 * 0.07, 244 * 0.01, 244 * 0.02),
        (244 * 0.12, 244 * 0.01, 244 * 0.02),
    ),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),  # down-sampling factor
    "jpeg_compression": (25, 18, 15, 10, 7),  # quality
}

_CIFAR_SIZE = 32
_CIFAR = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    # IMSIZE * (alpha, sigma, affine jitter) with IMSIZE = 32
    "elastic_transform": tuple(
        tuple(_CIFAR_SIZE * k for k in row)
        for row in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}

PARAM_SETS: Mapping[str, ParamSet] = MappingProxyType(
    {
        "imagenet": ParamSet(
            "imagenet", "hendrycks/robustness ImageNet-C/create_c/make_imagenet_c.py",
            MappingProxyType(_IMAGENET), elastic_ref_size=224.0, frost_texture_scale=1.0,
        ),
        "cifar": ParamSet(
            "cifar", "hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py",
            MappingProxyType(_CIFAR), elastic_ref_size=float(_CIFAR_SIZE), frost_texture_scale=0.2,
        ),
    }
)


def resolve_param_set(height: int, width: int, params: str | None = None) -> ParamSet:
    """The parameter set for images of this size: ``params`` if given, else CIFAR's for
    images whose longer side is at most 64 px (MNIST, CIFAR) and ImageNet's otherwise."""
    if params is None:
        params = "cifar" if max(height, width) <= CIFAR_MAX_SIDE else "imagenet"
    try:
        return PARAM_SETS[params]
    except KeyError:
        raise UnknownNameError("corruption parameter set", params, PARAM_SETS) from None


def zoom_factors(spec: tuple[float, float, float]) -> np.ndarray:
    """The published zoom factors, ``np.arange(start, stop, step)`` exactly as released."""
    return np.arange(*spec)
