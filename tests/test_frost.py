"""Frost from the published pictures (the ``imagecorruptions`` package's data files, its code never
imported): read correctly, recorded in the protocol and the cache key, and as strong as the reference."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch

from nasrobust.data import load_dataset, stack
from nasrobust.noise import frost
from nasrobust.noise.base import EvalContext
from nasrobust.noise.corruptions import corrupt
from nasrobust.noise.natural import NaturalNoise

#: The published frost weights (image, picture) per severity (make_imagenet_c.py).
WEIGHTS = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))

needs_pictures = pytest.mark.skipif(importlib.util.find_spec("imagecorruptions") is None,
                                    reason="imagecorruptions (part of the test extra) is not installed")


def package_pictures() -> list[np.ndarray]:
    """frost1..5 as the published code reads them (cv2.imread, BGR), located through the package's
    file list (independently of nasrobust.noise.frost's lookup)."""
    import cv2

    files = {f.name: f for f in importlib.metadata.files("imagecorruptions") if "frost" in str(f.parent)}
    return [cv2.imread(str(files[name].locate())) for name in frost.PUBLISHED_FILES]


def reference_frost(x: np.ndarray, severity: int, rng: np.random.RandomState, pictures: list[np.ndarray]) -> np.ndarray:
    """``imagecorruptions`` / ``make_imagenet_c.py`` frost on one uint8 RGB image (its formula, verbatim)."""
    c = WEIGHTS[severity - 1]
    idx = rng.randint(5)
    picture = pictures[idx]
    x_start, y_start = rng.randint(0, picture.shape[0] - x.shape[0]), rng.randint(0, picture.shape[1] - x.shape[1])
    picture = picture[x_start:x_start + x.shape[0], y_start:y_start + x.shape[1]][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(x) + c[1] * picture, 0, 255)


def photo_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random ``size`` px crops of scikit-learn's two bundled photographs (uint8 RGB)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        top, left = rng.integers(0, p.shape[0] - size), rng.integers(0, p.shape[1] - size)
        out.append(p[top:top + size, left:left + size])
    return np.stack(out)


@needs_pictures
def test_published_pictures_are_read_as_rgb_without_importing_the_package():
    from PIL import Image

    assert frost.frost_source() == f"published (imagecorruptions {importlib.metadata.version('imagecorruptions')})"
    textures = frost.frost_textures()
    assert len(textures) == frost.N_TEXTURES
    for texture, name in zip(textures, frost.PUBLISHED_FILES):
        expected = np.asarray(Image.open(frost.published_folder() / name).convert("RGB"))
        assert texture.dtype == np.uint8 and np.abs(texture.astype(int) - expected).max() <= 2  # JPEG decoders differ by 1-2
    code = ("import sys, nasrobust.noise.frost as f; f.frost_textures(); "
            "assert 'imagecorruptions' not in sys.modules, 'the package code was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@needs_pictures
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_effect_size_matches_the_reference_formula(severity):
    """Mean absolute change per pixel over 300 photo crops: ours vs the published formula on the same
    images, each with its own random picture and crop draws. Within 4% (the pictures' brightness
    differs by up to 1.7x, so a wrong picture or channel order shows up here)."""
    images = photo_crops(300, 224)
    rng = np.random.RandomState(severity)
    pictures = package_pictures()
    reference = np.stack([reference_frost(im, severity, rng, pictures) for im in images])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    ours = corrupt(x, "frost", severity, torch.Generator().manual_seed(severity), "imagenet")
    effect_ref = np.abs(reference - images).mean()
    effect_ours = float((ours - x).abs().mean()) * 255
    assert effect_ours == pytest.approx(effect_ref, rel=0.04)


@needs_pictures
def test_synthetic_frost_is_weaker_than_published():
    """Why the published pictures matter: the synthetic stand-ins change images 20-45% less."""
    x = torch.from_numpy(photo_crops(100, 224, seed=1)).permute(0, 3, 1, 2).float() / 255
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, frost.N_TEXTURES, (len(x),), generator=gen)
    effects = {}
    for name, textures in (("published", frost.published_textures()), ("synthetic", frost.synthetic_textures())):
        crops = torch.stack([torch.from_numpy(np.array(textures[int(i)][:224, :224])).permute(2, 0, 1).float() / 255
                             for i in index])
        c = WEIGHTS[4]
        effects[name] = float(((c[0] * x + c[1] * crops).clamp(0, 1) - x).abs().mean())
    assert 0.55 < effects["synthetic"] / effects["published"] < 0.8


def test_protocol_and_cache_key_name_the_frost_source(tmp_path, monkeypatch):
    import nasrobust.noise.natural as natural

    data = load_dataset("digits")
    images, labels = stack(data.test_subset(4))
    ctx = EvalContext(data, images, labels, tmp_path, torch.device("cpu"), batch_size=4, progress=False)
    suite = NaturalNoise(corruptions=("frost",), severities=(1,), fp_kinds=())
    assert suite.protocol(ctx).param("frost_textures") == frost.frost_source()
    suite.prepare(ctx)
    before = set(tmp_path.rglob("*.pt"))
    assert len(before) == 1
    other = frost.SYNTHETIC if frost.frost_source() != frost.SYNTHETIC else "published (imagecorruptions 0)"
    monkeypatch.setattr(natural, "frost_source", lambda: other)
    assert suite.protocol(ctx).param("frost_textures") == other
    suite.prepare(ctx)
    assert len(set(tmp_path.rglob("*.pt")) - before) == 1  # another source, another cached file


def test_without_the_package_the_synthetic_textures_are_used(monkeypatch):
    monkeypatch.setattr(frost.importlib.util, "find_spec", lambda name: None)
    frost.frost_source.cache_clear()
    try:
        assert frost.frost_source() == frost.SYNTHETIC
        assert frost.frost_textures() is frost.synthetic_textures()
    finally:
        frost.frost_source.cache_clear()
