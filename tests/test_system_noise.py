"""System noise (decoder x resizer grid) on real images.

References: the libraries' own calls (PIL ``Image.resize``, ``cv2.resize``, ``cv2.imdecode``),
closed-form results of integer-factor down-sampling (block mean, pixel picking), the
``imagefolder`` dataset's clean pipeline (torchvision Resize + CenterCrop on PIL), and an
independent re-implementation of one pair end to end. Measured here (mnist5k, 200 test
images; sklearn's sample photos): PIL and OpenCV decode our JPEGs identically (both bundle
libjpeg-turbo); FFmpeg differs by at most 1 level on grey JPEG, at most 3 (mean 0.04) on
colour q96 4:4:4 and up to ~30 (mean ~1.4) on colour 4:2:0, from its chroma upsampling.
"""

from __future__ import annotations

import io
import logging
import statistics
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from sklearn.datasets import load_sample_images
from torch.utils.data import TensorDataset

from nasrobust.data import DatasetInfo, ImageData, load_dataset, stack
from nasrobust.errors import NasRobustError
from nasrobust.inference import predict
from nasrobust.models import ImageClassifier
from nasrobust.noise import system as S
from nasrobust.noise.base import SUITES, EvalContext

N_TEST = 100


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def mnist_test(mnist):
    return stack(mnist.test_subset(N_TEST))


@pytest.fixture(scope="module")
def mnist_camera(mnist_test):
    """The 4x Lanczos "camera" images of the first 50 real MNIST test digits (112 px, uint8)."""
    return [S.camera_image(a, 4) for a in S.to_uint8_hwc(mnist_test[0][:50])]


@pytest.fixture(scope="module")
def photo_patches():
    """Real colour photographs (sklearn's china/flower samples) cut into 128 px patches."""
    return [p[t:t + 128, l:l + 128] for p in load_sample_images().images for t in (0, 150, 290) for l in (0, 250, 500)]


class _SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 10),
        )

    def forward(self, x):
        return self.body(x)


@pytest.fixture(scope="module")
def trained(mnist):
    """A small CNN trained 2 epochs on mnist5k's 4,000 training digits (~95% test accuracy)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = ImageClassifier(_SmallCNN(), 28, mnist.info.mean, mnist.info.std)
    x, y = stack(mnist.train)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(2):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _ctx(data, images, labels, cache: Path) -> EvalContext:
    return EvalContext(data, images, labels, cache, torch.device("cpu"), batch_size=200)


# ---------------------------------------------------------------------------- options
def test_registered_with_defaults():
    suite = SUITES.create("system")
    assert isinstance(suite, S.SystemNoise)
    assert suite.options.formats == ("png", "jpeg") and suite.options.jpeg_quality == 96
    assert suite.options.jpeg_subsampling == "4:4:4"
    assert len(S.RESIZERS) == 11 and set(S.DECODERS) == {"pil", "opencv", "ffmpeg"}
    parsed = SUITES.create("system", formats="jpeg", resizers="pil_box, opencv_area", decoders=["pil"])
    assert parsed.pairs() == [("jpeg", "pil", "pil_box"), ("jpeg", "pil", "opencv_area")]
    from_cli = SUITES.create("system", jpeg_quality="75", resolutions="24,32", source_scale="2")
    assert (from_cli.options.jpeg_quality, from_cli.options.resolutions, from_cli.options.source_scale) == (75, (24, 32), 2)


@pytest.mark.parametrize("kwargs, listed", [
    ({"formats": "webp"}, "png"),
    ({"decoders": "libvips"}, "opencv"),
    ({"resizers": "pil_bilinear,opencv_bilinear"}, "opencv_linear"),
    ({"jpeg_subsampling": "4:1:1"}, "4:2:0"),
])
def test_bad_names_list_valid_ones(kwargs, listed):
    with pytest.raises(NasRobustError, match=listed):
        S.SystemNoise(**kwargs)


@pytest.mark.parametrize("kwargs", [{"jpeg_quality": 0}, {"jpeg_quality": 101}, {"jpeg_quality": 9.5},
                                    {"jpeg_quality": "high"}, {"source_scale": 0}, {"formats": ""},
                                    {"resolutions": (0,)}, {"workers": 0}])
def test_bad_values_raise(kwargs):
    with pytest.raises(NasRobustError):
        S.SystemNoise(**kwargs)


def test_unavailable_ffmpeg_is_skipped_with_reason(monkeypatch, caplog):
    broken = S.Decoder("ffmpeg", S.DECODERS["ffmpeg"].decode, lambda: "PyAV is not installed (test)")
    monkeypatch.setattr(S, "DECODERS", MappingProxyType({**S.DECODERS, "ffmpeg": broken}))
    with caplog.at_level(logging.WARNING, logger="nasrobust.noise.system"):
        assert S.SystemNoise().active_decoders() == ("pil", "opencv")
    assert "PyAV is not installed (test)" in caplog.text
    with pytest.raises(NasRobustError, match="unavailable"):
        S.SystemNoise(decoders="ffmpeg").active_decoders()


def test_pyav_decodes_here():
    pytest.importorskip("av")
    assert S._ffmpeg_unavailable() is None


# ---------------------------------------------------------------------------- decoders
def test_png_is_lossless_and_identical_across_decoders(mnist_camera, photo_patches):
    for image in [*mnist_camera[:20], *photo_patches]:
        data = S.encode(image, "png")
        assert S._format_of(data) == "png"
        for name in S.SystemNoise().active_decoders():
            out = S.DECODERS[name].decode(data, image.ndim == 2)
            assert out.dtype == np.uint8 and np.array_equal(out, image), name


def test_grey_jpeg_decodes_are_close(mnist_camera):
    diffs = {}
    for name in ("opencv", "ffmpeg"):
        d = []
        for image in mnist_camera:
            data = S.encode(image, "jpeg", 96)
            assert np.asarray(Image.open(io.BytesIO(data))).ndim == 2  # stored grey
            ref = S.DECODERS["pil"].decode(data, True).astype(int)
            out = S.DECODERS[name].decode(data, True)
            assert out.shape == image.shape
            d.append(out.astype(int) - ref)
        diffs[name] = np.abs(np.stack(d))
    assert diffs["opencv"].max() <= 1
    assert diffs["ffmpeg"].max() <= 2 and diffs["ffmpeg"].mean() < 0.05  # measured: max 1, mean 0.008


def test_colour_jpeg_decodes_are_close_and_rgb(photo_patches):
    """4:4:4 (default): FFmpeg within a few levels; 4:2:0: its chroma upsampling differs much more."""
    def dev(subsampling):
        d = {"opencv": [], "ffmpeg": []}
        for image in photo_patches:
            data = S.encode(image, "jpeg", 96, subsampling)
            ref = S.DECODERS["pil"].decode(data, False).astype(int)
            # q96 is light compression (measured: <= 2.2 levels per patch at 4:4:4, <= 5 at 4:2:0) and
            # the channel order is RGB: swapped it is 7 to 113 levels off on these photos
            err, swapped = np.abs(ref - image).mean(), np.abs(ref[..., ::-1] - image).mean()
            assert err < 6 and swapped > err + 1.5
            for name in d:
                d[name].append(np.abs(S.DECODERS[name].decode(data, False).astype(int) - ref))
        return {k: np.stack(v) for k, v in d.items()}

    full, sub = dev("4:4:4"), dev("4:2:0")
    assert full["opencv"].max() <= 1 and sub["opencv"].max() <= 1
    assert full["ffmpeg"].max() <= 6 and full["ffmpeg"].mean() < 0.2  # measured: max 3, mean 0.04
    assert 0.3 < sub["ffmpeg"].mean() < 3  # measured: mean 1.36, max 30
    assert sub["ffmpeg"].mean() > 5 * full["ffmpeg"].mean()


# ---------------------------------------------------------------------------- resizers
def test_resizers_are_the_library_calls(mnist_camera, photo_patches):
    pil_flags = {"pil_nearest": Image.NEAREST, "pil_bilinear": Image.BILINEAR, "pil_bicubic": Image.BICUBIC,
                 "pil_box": Image.BOX, "pil_hamming": Image.HAMMING, "pil_lanczos": Image.LANCZOS}
    cv_flags = {"opencv_nearest": cv2.INTER_NEAREST, "opencv_linear": cv2.INTER_LINEAR, "opencv_area": cv2.INTER_AREA,
                "opencv_cubic": cv2.INTER_CUBIC, "opencv_lanczos4": cv2.INTER_LANCZOS4}
    assert set(pil_flags) | set(cv_flags) == set(S.RESIZERS)
    for image in [*mnist_camera[:10], *photo_patches[:4]]:
        outs = {}
        for name, flag in pil_flags.items():
            outs[name] = S.RESIZERS[name](image, (28, 30))
            assert np.array_equal(outs[name], np.asarray(Image.fromarray(image).resize((28, 30), flag))), name
        for name, flag in cv_flags.items():
            outs[name] = S.RESIZERS[name](image, (28, 30))
            assert np.array_equal(outs[name], cv2.resize(image, (28, 30), interpolation=flag)), name
        assert all(o.shape[:2] == (30, 28) for o in outs.values())
    # eleven different methods: on a real digit no two give the same image
    digit = {n: r(mnist_camera[0], (28, 28)).tobytes() for n, r in S.RESIZERS.items()}
    assert len(set(digit.values())) == len(S.RESIZERS)


def test_integer_downscale_closed_forms(mnist_camera):
    """4x down-sampling of real digits against closed forms of each library's arithmetic.

    PIL box: two separable 8-bit passes (horizontal first), each the 4-pixel mean rounded half
    up (fixed-point weights 1/4 are exact). OpenCV area: the 4x4 block mean in floating point,
    rounded half to even (``cvRound``). Nearest: OpenCV takes pixel ``floor(4 i)``, PIL the
    pixel under the centre, ``floor(4 (i + 1/2))``.
    """
    for image in mnist_camera:
        px = image.astype(np.int64)
        rows = np.floor(px.reshape(112, 28, 4).sum(-1) / 4 + 0.5)
        box = np.floor(rows.reshape(28, 4, 28).sum(1) / 4 + 0.5)
        assert np.array_equal(S.RESIZERS["pil_box"](image, (28, 28)), box)
        area = np.rint(px.reshape(28, 4, 28, 4).sum((1, 3)) / 16)
        assert np.array_equal(S.RESIZERS["opencv_area"](image, (28, 28)), area)
        assert np.array_equal(S.RESIZERS["opencv_nearest"](image, (28, 28)), image[::4, ::4])
        assert np.array_equal(S.RESIZERS["pil_nearest"](image, (28, 28)), image[2::4, 2::4])


def test_camera_image_is_pil_lanczos_upscale(mnist_test):
    native = S.to_uint8_hwc(mnist_test[0][:5])
    assert all(np.array_equal(a * 1.0, mnist_test[0][i, 0].numpy() * 255) for i, a in enumerate(native))
    for a in native:
        cam = S.camera_image(a, 4)
        assert cam.shape == (112, 112)
        assert np.array_equal(cam, np.asarray(Image.fromarray(a).resize((112, 112), Image.LANCZOS)))


# ---------------------------------------------------------------------------- suite on MNIST
def _by_key(measurements):
    return {(m.noise, m.level, m.metric): m.value for m in measurements}


def test_suite_on_mnist_end_to_end(mnist, mnist_test, trained, tmp_path):
    x, y = mnist_test
    ctx = _ctx(mnist, x, y, tmp_path)
    suite = S.SystemNoise()
    proto = suite.protocol(ctx)
    assert proto.n_examples == N_TEST and proto.param("jpeg_quality") == 96
    assert dict(proto.versions)["pillow"] and dict(proto.versions)["opencv"]
    suite.prepare(ctx)
    out = _by_key(suite.run(trained, ctx))
    pairs = suite.pairs()
    assert len(pairs) == 2 * len(suite.active_decoders()) * 11
    assert len(out) == len(pairs) + 9

    clean = float((predict(trained, x).argmax(-1) == y).float().mean())
    assert clean > 0.9
    accs = {p: out[(suite.noise_name(*p), suite.level(p[0]), "accuracy")] for p in pairs}
    for p, acc in accs.items():
        assert abs(acc - clean) <= 0.05, (p, acc, clean)
    for benign in ("pil_box", "pil_lanczos", "opencv_area"):
        assert abs(accs[("png", "pil", benign)] - clean) <= 0.02

    # the summaries are arithmetic of the per-pair numbers
    for noise, level, fmt in (("png/summary", 0.0, "png"), ("jpeg/summary", 96.0, "jpeg"), ("summary", 0.0, None)):
        vals = [a for p, a in accs.items() if fmt is None or p[0] == fmt]
        assert out[(noise, level, "mean")] == pytest.approx(statistics.fmean(vals), abs=1e-12)
        assert out[(noise, level, "std")] == pytest.approx(statistics.pstdev(vals), abs=1e-12)
        assert out[(noise, level, "worst")] == min(vals)

    # PNG is lossless and identical across decoders, so the decoder does not matter there
    for r in suite.options.resizers:
        assert len({accs[("png", d, r)] for d in suite.active_decoders()}) == 1

    # one pair re-implemented with the libraries directly: JPEG q96 -> cv2.imdecode -> cv2 INTER_AREA
    imgs = []
    for a in (x[:, 0].numpy() * 255).round().astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(a).resize((112, 112), Image.LANCZOS).save(buf, "JPEG", quality=96, subsampling=0)
        dec = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
        imgs.append(cv2.resize(dec, (28, 28), interpolation=cv2.INTER_AREA))
    ref = torch.from_numpy(np.stack(imgs))[:, None].float() / 255
    ref_acc = int((predict(trained, ref).argmax(-1) == y).sum()) / len(y)
    assert accs[("jpeg", "opencv", "opencv_area")] == ref_acc


def test_cache_is_reused_across_models_and_per_resolution(mnist, mnist_test, trained, tmp_path, monkeypatch):
    x, y = mnist_test
    opts = {"formats": "png,jpeg", "decoders": "pil,opencv", "resizers": "pil_bilinear,opencv_nearest"}
    first = _by_key(S.SystemNoise(**opts).run(trained, _ctx(mnist, x, y, tmp_path)))
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == 2 + 2 * 2 * 2  # encoded bytes per format + one uint8 tensor per pair

    def boom(*a, **k):
        raise AssertionError("regenerated a cached image set")

    monkeypatch.setattr(S.SystemNoise, "_generate", boom)
    monkeypatch.setattr(S.SystemNoise, "_encode_all", boom)
    fresh = S.SystemNoise(**opts)  # a new instance (e.g. another process) reads the disk cache
    assert _by_key(fresh.run(trained, _ctx(mnist, x, y, tmp_path))) == first
    monkeypatch.undo()

    # a 32-px architecture (e.g. another supernet resolution) gets its own images, made at 32 px
    wide = ImageClassifier(trained.net, 32, mnist.info.mean, mnist.info.std).eval()
    suite = S.SystemNoise(**opts)
    got = _by_key(suite.run(wide, _ctx(mnist, x, y, tmp_path)))
    assert len(sorted(tmp_path.rglob("*.pt"))) == len(files) + 8
    im = suite.images(_ctx(mnist, x, y, tmp_path), "png", "pil", "pil_bilinear", 32)
    assert im.shape == (N_TEST, 1, 32, 32) and im.dtype == torch.uint8
    assert all(abs(v - first[k]) < 0.1 for k, v in got.items())


def test_done_keys_are_skipped_and_summary_still_exact(mnist, mnist_test, trained, tmp_path):
    x, y = mnist_test
    opts = {"formats": "png", "decoders": "pil", "resizers": "pil_nearest,opencv_linear,opencv_cubic"}
    full = _by_key(S.SystemNoise(**opts).run(trained, _ctx(mnist, x, y, tmp_path)))
    ctx = _ctx(mnist, x, y, tmp_path)
    ctx.done = {k for k in full if k[2] == "accuracy"}
    rest = _by_key(S.SystemNoise(**opts).run(trained, ctx))
    assert rest == {k: v for k, v in full.items() if k[2] != "accuracy"}
    ctx.done = set(full)
    assert list(S.SystemNoise(**opts).run(trained, ctx)) == []


# ---------------------------------------------------------------------------- colour tensors
def test_colour_tensor_dataset_keeps_rgb(photo_patches, tmp_path):
    """Real 32-px colour photo patches: every decoder gives the same PNG pixels (no BGR swap)."""
    small = np.stack([np.asarray(Image.fromarray(p).resize((32, 32), Image.BOX)) for p in photo_patches])
    x = torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255
    y = torch.arange(len(small)) % 2
    info = DatasetInfo("photos32", 2, 32, 3, (0.5,) * 3, (0.25,) * 3, split="sklearn sample photos, 128-px patches")
    data = ImageData(info, TensorDataset(x, y), TensorDataset(x, y))
    ctx = _ctx(data, x, y, tmp_path)
    suite = S.SystemNoise(formats="png", resizers="pil_bicubic,opencv_linear")
    for resizer in suite.options.resizers:
        ref = suite.images(ctx, "png", "pil", resizer, 32)
        assert ref.shape == (len(small), 3, 32, 32)
        manual = [S.RESIZERS[resizer](S.camera_image(a, 4), (32, 32)) for a in small]
        assert torch.equal(ref, torch.from_numpy(np.stack(manual)).permute(0, 3, 1, 2))
        for decoder in suite.active_decoders():
            assert torch.equal(suite.images(ctx, "png", decoder, resizer, 32), ref), decoder


# ---------------------------------------------------------------------------- image folders
@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """An ImageNet-style tree of real photo crops of several sizes: JPEG (q90, 4:2:0) plus one PNG per class."""
    root = tmp_path_factory.mktemp("folder")
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, photo in enumerate(photos):
            (root / split / f"c{c}").mkdir(parents=True)
            for k in range(3):
                h, w = int(rng.integers(90, 200)), int(rng.integers(90, 200))
                t, l = int(rng.integers(0, photo.shape[0] - h)), int(rng.integers(0, photo.shape[1] - w))
                crop = Image.fromarray(photo[t:t + h, l:l + w])
                if k == 2:
                    crop.save(root / split / f"c{c}" / f"{k}.png")
                else:
                    crop.save(root / split / f"c{c}" / f"{k}.jpg", quality=90)
    return root


def test_imagefolder_uses_stored_bytes_and_clean_geometry(photo_folder, tmp_path):
    data = load_dataset("imagefolder", root=photo_folder, image_size=40)
    x, y = stack(data.test)
    ctx = _ctx(data, x, y, tmp_path)
    suite = S.SystemNoise(resizers="pil_bilinear,opencv_area")
    clean = (x * 255).round().to(torch.uint8)
    paths = [p for p, _ in data.test.samples]

    # stored JPEG files are used byte for byte; the PNGs are re-encoded
    src = suite.source(ctx, "jpeg")
    for blob, path in zip(src.blobs, paths):
        assert S._format_of(blob) == "jpeg"
        assert (blob == path.read_bytes()) == (path.suffix == ".jpg")
    assert torch.equal(src.labels, y)

    # PIL decode + PIL bilinear is the dataset's own clean pipeline (torchvision Resize + CenterCrop)
    png = suite.images(ctx, "png", "pil", "pil_bilinear", 40)
    assert torch.equal(png, clean)
    jpg = suite.images(ctx, "jpeg", "pil", "pil_bilinear", 40)
    for i, path in enumerate(paths):
        if path.suffix == ".jpg":
            assert torch.equal(jpg[i], clean[i])
        else:  # re-encoded at q96 4:4:4
            assert (jpg[i].int() - clean[i].int()).abs().float().mean() < 1.5

    # FFmpeg decodes these 4:2:0 files a little differently; OpenCV resizes differently from PIL
    ff = suite.images(ctx, "jpeg", "ffmpeg", "pil_bilinear", 40).int()
    assert 0 < (ff - jpg.int()).abs().float().mean() < 3
    area = suite.images(ctx, "jpeg", "pil", "opencv_area", 40).int()
    assert 0 < (area - jpg.int()).abs().float().mean() < 10
    # other resolutions (e.g. a supernet subnet at 48 px) use the same geometry at that size
    assert suite.images(ctx, "png", "opencv", "opencv_area", 48).shape == (len(y), 3, 48, 48)


def test_imagefolder_label_mismatch_is_an_error(photo_folder, tmp_path):
    data = load_dataset("imagefolder", root=photo_folder, image_size=40)
    x, y = stack(data.test)
    with pytest.raises(NasRobustError, match="labels"):
        S.SystemNoise(formats="png").source(_ctx(data, x, 1 - y, tmp_path), "png")


def test_memory_bound_groups_give_the_same_images(mnist, mnist_test, tmp_path):
    """With ``memory_mb=1`` each 100-px image set (0.95 MiB) is made in its own decode pass; same pixels."""
    x, y = mnist_test
    opts = {"formats": "jpeg", "decoders": "opencv", "resizers": "pil_hamming,opencv_cubic", "resolutions": (100,)}
    small = S.SystemNoise(memory_mb=1, **opts)
    small.prepare(_ctx(mnist, x, y, tmp_path / "a"))
    big = S.SystemNoise(**opts)
    for r in big.options.resizers:
        a = small.images(_ctx(mnist, x, y, tmp_path / "a"), "jpeg", "opencv", r, 100)
        b = big.images(_ctx(mnist, x, y, tmp_path / "b"), "jpeg", "opencv", r, 100)
        assert a.shape == (N_TEST, 1, 100, 100) and torch.equal(a, b)
    assert not torch.equal(a, small.images(_ctx(mnist, x, y, tmp_path / "a"), "jpeg", "opencv", "pil_hamming", 100))
    assert len(small._memo) == 1  # the in-memory cache respects the bound too
