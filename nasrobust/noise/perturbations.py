"""ImageNet-P-style perturbation sequences and the flip probability.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019), Section 3: a network is stable if its prediction does not flip
along a sequence of gradually perturbed frames of one image. The sequences here follow the
released generators (hendrycks/robustness ``ImageNet-P/create_p/make_imagenet_p.py`` for
large images, ``make_cifar_p.py`` for 32 px; chosen by image size as for the corruptions):

=============  ======================================  =======================================
kind           ImageNet-P (frames)                      CIFAR-10-P (frames)
=============  ======================================  =======================================
gaussian_noise clean + 30 x ``x + N(0, s^2)``, s = .03  clean + 30, s = .02 (difficulty 2, 3:
               (difficulty 2, 3: .05, .08)              .04, .06)
shot_noise     clean + 30 x ``Poisson(L x) / L``,       clean + 30, L = 700 (400, 200)
               L = 300 (120, 60)
translate      41: horizontal shift ``i - 20`` px       16: shift ``i - 7`` px (-7 .. 8)
rotate         31: ``i - 15`` degrees, bilinear          31: ``i - 15`` degrees, bilinear
scale          31: zoom ``(2.5 i + 40) / 100`` (0.4 ..  31: zoom ``(2 i + 70) / 100`` (0.7 ..
               1.15), bilinear                          1.3), bilinear
brightness     31: HSV value ``+ (i - 15) * 0.02``       31: ``+ (i - 15) * 0.015``
=============  ======================================  =======================================

Noise frames are independent draws around the clean first frame; the others move
gradually. ``length`` other than the published one keeps the same range with a different
spacing (``linspace`` of the published first and last magnitudes), or the same noise with
more or fewer noisy frames. Differences from the published data, on purpose: the geometric
sequences transform the given image and fill uncovered pixels with black (ImageNet-P
transformed the 256 px resize and centre-cropped 224, so borders showed real content;
CIFAR-10-P did what is done here), and frames are not passed through H.264 as the released
videos were.

:func:`flip_probability` is the paper's FP (``test.py``'s ``flip_prob``): the fraction of
frame pairs whose top-1 predictions differ, averaged over sequences; pairs are consecutive
frames (``compare="previous"``, with ``step`` = difficulty: frames ``i`` and ``i + step``) or,
for noise sequences, every frame against the clean first one (``compare="first"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch

from nasrobust.errors import UnknownNameError
from nasrobust.noise import _corruption_ops as ops
from nasrobust.noise.corruptions import CorruptionInputError, check_images
from nasrobust.noise._corruption_params import resolve_param_set


@dataclass(frozen=True)
class PerturbationSpec:
    """One ImageNet-P perturbation: how its frames are made and how FP compares them."""

    name: str
    #: "first" (noise: every frame vs the clean one) or "previous" (consecutive frames).
    compare: str
    #: per parameter set: the published magnitude of every frame (noise: per difficulty).
    magnitudes: Mapping[str, tuple[float, ...]]
    source: str


def _frames(values: list[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


_SRC = "hendrycks/robustness ImageNet-P/create_p/make_imagenet_p.py, make_cifar_p.py"

PERTURBATIONS: Mapping[str, PerturbationSpec] = MappingProxyType({
    # noise: magnitudes are the per-difficulty strengths; 30 noisy frames after the clean one
    "gaussian_noise": PerturbationSpec("gaussian_noise", "first",
                                       {"imagenet": (0.03, 0.05, 0.08), "cifar": (0.02, 0.04, 0.06)}, _SRC),
    "shot_noise": PerturbationSpec("shot_noise", "first",
                                   {"imagenet": (300.0, 120.0, 60.0), "cifar": (700.0, 400.0, 200.0)}, _SRC),
    "translate": PerturbationSpec("translate", "previous", {
        "imagenet": _frames([i - 20 for i in range(41)]),
        "cifar": _frames([i - 7 for i in range(16)]),
    }, _SRC),
    "rotate": PerturbationSpec("rotate", "previous", {
        "imagenet": _frames([i - 15 for i in range(31)]),
        "cifar": _frames([i - 15 for i in range(31)]),
    }, _SRC),
    "scale": PerturbationSpec("scale", "previous", {
        "imagenet": _frames([(i * 2.5 + 40) / 100.0 for i in range(31)]),
        "cifar": _frames([(i * 2 + 70) / 100.0 for i in range(31)]),
    }, _SRC),
    "brightness": PerturbationSpec("brightness", "previous", {
        "imagenet": _frames([(i - 15) * 2 / 100.0 for i in range(31)]),
        "cifar": _frames([(i - 15) * 1.5 / 100.0 for i in range(31)]),
    }, _SRC),
})
PERTURBATION_NAMES: tuple[str, ...] = tuple(PERTURBATIONS)
#: Published number of frames of the noise sequences (the clean frame plus 30).
NOISE_LENGTH = 31


def _affine(images: torch.Tensor, angle: float = 0.0, translate: float = 0.0, scale: float = 1.0,
            bilinear: bool = True) -> torch.Tensor:
    """``torchvision`` ``affine`` about the centre with black fill, as ``trn_F.affine`` in the
    published scripts (translation there uses the default nearest interpolation)."""
    from torchvision.transforms import functional as TF

    mode = TF.InterpolationMode.BILINEAR if bilinear else TF.InterpolationMode.NEAREST
    return TF.affine(images, angle=float(angle), translate=[int(round(translate)), 0], scale=float(scale),
                     shear=[0.0], interpolation=mode)


_GEOMETRIC: Mapping[str, Callable[[torch.Tensor, float], torch.Tensor]] = MappingProxyType({
    "translate": lambda x, m: _affine(x, translate=m, bilinear=False),
    "rotate": lambda x, m: _affine(x, angle=m),
    "scale": lambda x, m: _affine(x, scale=m),
    "brightness": lambda x, m: ops.hsv_value_shift(x, m),
})


def _noise_frame(kind: str, x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    g_dev = generator.device
    if kind == "gaussian_noise":
        noise = torch.randn(x.shape, generator=generator, device=g_dev).to(x.device, x.dtype)
        return x + strength * noise
    counts = torch.poisson((x * strength).to(g_dev, torch.float32), generator=generator)
    return counts.to(x.device, x.dtype) / strength


def frame_magnitudes(kind: str, params: str, length: int | None = None, difficulty: int = 1) -> tuple[float, ...]:
    """The magnitude of every frame of ``kind`` (noise kinds: the strength of every noisy frame,
    frame 0 being clean), published values when ``length`` is None."""
    spec = _spec(kind)
    if spec.compare == "first":
        if difficulty not in (1, 2, 3):
            raise CorruptionInputError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
        n = NOISE_LENGTH if length is None else int(length)
        return (0.0,) + (spec.magnitudes[params][difficulty - 1],) * (n - 1)
    published = spec.magnitudes[params]
    if length is None or length == len(published):
        return published
    return tuple(float(v) for v in np.linspace(published[0], published[-1], int(length)))


def _spec(kind: str) -> PerturbationSpec:
    try:
        return PERTURBATIONS[kind]
    except (KeyError, TypeError):
        raise UnknownNameError("perturbation", str(kind), PERTURBATION_NAMES) from None


def perturbation_sequence(images: torch.Tensor, kind: str, generator: torch.Generator, length: int | None = None,
                          params: str | None = None, difficulty: int = 1) -> torch.Tensor:
    """Frames ``(T, N, C, H, W)`` of perturbation ``kind`` applied to each image of ``images``.

    ``images``: float (N, 1|3, H, W) in [0, 1]; ``generator``: randomness of the noise kinds;
    ``length``: number of frames (default: the published 31, or 41 / 16 for translate);
    ``params``: ``"imagenet"`` / ``"cifar"`` (default by image size, <= 64 px is CIFAR);
    ``difficulty``: 1-3, the noise strength level of ImageNet-P's noise sequences.
    Frames are clipped to [0, 1] and keep the input dtype.
    """
    spec = _spec(kind)
    check_images(images)
    if not isinstance(generator, torch.Generator):
        raise CorruptionInputError("generator must be a torch.Generator; use torch.Generator().manual_seed(seed)")
    if length is not None and (isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2):
        raise CorruptionInputError(f"length must be an integer >= 2, got {length!r}")
    pset = resolve_param_set(images.shape[-2], images.shape[-1], params)
    mags = frame_magnitudes(kind, pset.name, length, difficulty)
    x = images if images.dtype in (torch.float32, torch.float64) else images.float()
    if spec.compare == "first":
        frames = [x] + [_noise_frame(kind, x, m, generator) for m in mags[1:]]
    else:
        frames = [_GEOMETRIC[kind](x, m) for m in mags]
    return torch.stack(frames).clamp(0.0, 1.0).to(images.dtype)


def flip_probability(predictions: torch.Tensor, compare: str = "previous", step: int = 1) -> float:
    """The paper's flip probability of top-1 ``predictions`` shaped ``(T, N)`` (frame, sequence).

    ``compare="previous"``: pairs ``(i, i + step)`` along each sequence (``step`` is ImageNet-P's
    difficulty; 1 = consecutive frames), as for translate / rotate / scale / brightness;
    ``compare="first"``: every frame against frame 0, the clean image, as for noise
    sequences (``PERTURBATIONS[kind].compare`` says which). Returns the mean over sequences
    of each sequence's fraction of flipped pairs (``test.py``'s ``flip_prob``).
    """
    if not isinstance(predictions, torch.Tensor) or predictions.dim() != 2:
        raise CorruptionInputError("predictions must be a tensor shaped (T frames, N sequences) of class indices")
    if predictions.is_floating_point():
        raise CorruptionInputError("predictions must be integer class indices (take logits.argmax(-1))")
    t = predictions.shape[0]
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise CorruptionInputError(f"step must be a positive integer, got {step!r}")
    if predictions.shape[1] == 0:
        raise CorruptionInputError("predictions hold no sequences")
    if compare == "first":
        if t < 2:
            raise CorruptionInputError("a noise sequence needs the clean frame and at least one more")
        flips = predictions[1:] != predictions[:1]
    elif compare == "previous":
        if t <= step:
            raise CorruptionInputError(f"{t} frames hold no pair {step} apart")
        flips = predictions[step:] != predictions[:-step]
    else:
        raise CorruptionInputError(f"compare must be 'previous' or 'first', got {compare!r}")
    return float(flips.float().mean(dim=0).mean())
