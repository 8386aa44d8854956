"""System noise: the same stored image, decoded and resized by different libraries.

RobustART (Tang et al., "RobustART: Benchmarking Robustness on Architecture Design and
Training Techniques", 2021; ``RobustART/noise/utils/imagenet_s_gen.py``) showed that the
image decoder {PIL, OpenCV, FFmpeg} and the resize interpolation {PIL nearest, bilinear,
bicubic, box, hamming, lanczos; OpenCV nearest, linear, area, cubic, lanczos4} of a
deployment pipeline change a model's ImageNet accuracy. This suite measures
that for any architecture: every test image is encoded once (PNG, and JPEG), decoded by
each decoder and brought to the model's input size by each resizer -- every step the
library's own call -- and the model's accuracy is reported per (format, decoder, resizer)
plus the mean, std and worst case over the grid.

Choices (all recorded in the :class:`~nasrobust.records.Protocol`):

* JPEG quality 96 with 4:4:4 chroma (no subsampling): what most ImageNet files are stored
  with (M. Ehrlich, "Compression in the ImageNet Dataset", blog post, read with torchjpeg
  from the files' quantisation tables). With 4:2:0 the decoders differ far more (libjpeg's
  "fancy" chroma upsampling versus FFmpeg's swscale), see ``jpeg_subsampling``.
* Tensor datasets (MNIST, digits, CIFAR) hold 8-32 px images, the model's own input size, so a
  resize would be (nearly) the identity. As RobustART decodes a stored camera-sized JPEG and
  resizes it to the input, the suite first makes a stored "camera" image: the native uint8
  image upscaled ``source_scale`` times (default 4) with PIL's Lanczos filter, then encodes
  that; each decoder + resizer brings it back to ``model.resolution`` (whole image, square).
* ``imagefolder`` datasets use the real files' bytes (re-encoded with PIL only when the file
  is not already in the requested format). The geometry is the dataset's own clean pipeline
  (``nasrobust.data.FolderImages``: shorter side to ``round(r * 256 / 224)``, centre crop
  ``r``), done by the resizer under test, so ``jpeg/pil/pil_bilinear`` at the dataset's size
  reproduces the clean test tensors exactly. RobustART instead squashes to an ``8/7 r``
  square before the crop; the aspect-preserving resize keeps the grid comparable with clean.
  Stored JPEG files keep their own quality: the ``jpeg`` level (``jpeg_quality``) then only
  describes the files that had to be re-encoded.
* Grey data is encoded as a grey image and decoded to one channel (PIL ``convert("L")``,
  ``cv2.IMREAD_GRAYSCALE``, FFmpeg ``gray``); colour data as RGB (OpenCV's BGR is swapped).
* FFmpeg decodes through PyAV (``png_pipe`` / ``jpeg_pipe`` demuxers, then
  ``to_ndarray("rgb24"|"gray")``, i.e. swscale with PyAV's default bilinear flags) when PyAV
  is installed and can decode; otherwise that decoder is skipped with a logged reason. Every
  library call keeps its defaults (OpenCV applies EXIF orientation, PIL does not): those
  differences are the system noise being measured.

Decoded + resized images depend only on (dataset, test subset, format, decoder, resizer,
target size, library versions): they are made once, cached on disk as uint8 and reused for
every architecture (a supernet's subnets at several resolutions get one cache per size).

Records: noise ``"<format>/<decoder>/<resizer>"`` (e.g. ``"jpeg/pil/pil_bilinear"``), level
= JPEG quality (0 for PNG), metric ``"accuracy"``; summaries with metrics ``"mean"``,
``"std"`` (population, ddof 0: the grid is the whole population) and ``"worst"`` (min) under
noise ``"<format>/summary"`` (level of that format) and ``"summary"`` (level 0, all pairs).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Subset

from nasrobust.errors import NasRobustError
from nasrobust.noise.base import SUITES, EvalContext, Measurement, MetricInfo, NoiseSuite, cached_tensor
from nasrobust.options import option
from nasrobust.records import Protocol, current_versions

log = logging.getLogger(__name__)

SUITE = "system"
#: Leading bytes of each format's files.
MAGIC: Mapping[str, bytes] = MappingProxyType({"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"})

FORMATS: tuple[str, ...] = ("png", "jpeg")
#: Most ImageNet JPEGs: quality 96, no chroma subsampling (Ehrlich, "Compression in the ImageNet Dataset").
DEFAULT_JPEG_QUALITY = 96
DEFAULT_JPEG_SUBSAMPLING = "4:4:4"
#: PIL's ``subsampling`` codes.
JPEG_SUBSAMPLINGS: Mapping[str, int] = MappingProxyType({"4:4:4": 0, "4:2:2": 1, "4:2:0": 2})
DEFAULT_SOURCE_SCALE = 4
#: The fixed high-quality filter that makes the stored "camera" image of tensor datasets.
SOURCE_FILTER = "pil_lanczos"
#: ImageNet's evaluation crop (``FolderImages``): shorter side to ``round(r * 256 / 224)``.
CROP_NUM, CROP_DEN = 256, 224


# ---------------------------------------------------------------------------- encoding
def _format_of(data: bytes) -> str | None:
    """``"png"``/``"jpeg"`` from the magic bytes, ``None`` for anything else."""
    return next((fmt for fmt, magic in MAGIC.items() if data.startswith(magic)), None)


def encode(image: np.ndarray, fmt: str, quality: int = DEFAULT_JPEG_QUALITY,
           subsampling: str = DEFAULT_JPEG_SUBSAMPLING) -> bytes:
    """Encode a uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB image as PNG or JPEG with PIL."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise NasRobustError(f"encode expects uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    pil = Image.fromarray(image, "L" if image.ndim == 2 else "RGB")
    options: dict[str, Any] = {"quality": int(quality), "subsampling": JPEG_SUBSAMPLINGS[subsampling]} if fmt == "jpeg" else {}
    pil.save(buf, {"png": "PNG", "jpeg": "JPEG"}[fmt], **options)
    return buf.getvalue()


def camera_image(image: np.ndarray, scale: int) -> np.ndarray:
    """The stored "camera" image of a small tensor-dataset image: upscaled ``scale`` x with PIL Lanczos."""
    if scale == 1:
        return image
    h, w = image.shape[:2]
    return RESIZERS[SOURCE_FILTER](image, (w * scale, h * scale))


def to_uint8_hwc(images: torch.Tensor) -> list[np.ndarray]:
    """Float ``(N, C, H, W)`` in [0, 1] -> uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` arrays."""
    u8 = (images.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [x[0] if x.shape[0] == 1 else np.ascontiguousarray(x.transpose(1, 2, 0)) for x in u8]


# ---------------------------------------------------------------------------- decoders
def _decode_pil(data: bytes, grey: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L" if grey else "RGB"))


def _decode_opencv(data: bytes, grey: bool) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise NasRobustError("OpenCV could not decode the image bytes")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_ffmpeg(data: bytes, grey: bool) -> np.ndarray:
    import av

    demuxer = {"png": "png_pipe", "jpeg": "jpeg_pipe"}.get(_format_of(data) or "", "image2pipe")
    with av.open(io.BytesIO(data), format=demuxer) as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="gray" if grey else "rgb24")


def _always() -> str | None:
    return None


@lru_cache(maxsize=1)
def _ffmpeg_unavailable() -> str | None:
    """Why FFmpeg (PyAV) cannot decode here, or ``None``: checked once, on real PNG/JPEG bytes."""
    try:
        import av  # noqa: F401
    except ImportError as exc:
        return f"PyAV is not installed ({exc}); pip install 'nasrobust[av]'"
    probe = np.arange(64, dtype=np.uint8).reshape(8, 8)
    try:
        for fmt in FORMATS:
            if _decode_ffmpeg(encode(probe, fmt), grey=True).shape != probe.shape:
                return f"PyAV decoded an 8x8 {fmt} probe to the wrong shape"
        if not np.array_equal(_decode_ffmpeg(encode(probe, "png"), grey=True), probe):
            return "PyAV's PNG decode of a probe image is not lossless"
    except Exception as exc:  # any failure of the FFmpeg build: skip the decoder, say why
        return f"PyAV cannot decode PNG/JPEG bytes: {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class Decoder:
    """One image decoder: ``decode(bytes, grey) -> uint8 (H, W) | (H, W, 3) RGB``."""

    name: str
    decode: Callable[[bytes, bool], np.ndarray]
    unavailable: Callable[[], str | None]  # the reason it cannot run here, None when it can


DECODERS: Mapping[str, Decoder] = MappingProxyType({
    d.name: d for d in (
        Decoder("pil", _decode_pil, _always),
        Decoder("opencv", _decode_opencv, _always),
        Decoder("ffmpeg", _decode_ffmpeg, _ffmpeg_unavailable),
    )
})


# ---------------------------------------------------------------------------- resizers
@dataclass(frozen=True)
class Resizer:
    """One library resize: ``resizer(image, (width, height))`` with the library's own call."""

    name: str
    library: str  # "pil" or "opencv"
    flag: str  # PIL ``Image.Resampling`` member or cv2 ``INTER_*`` constant name

    def __call__(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return _RESIZE_CALLS[self.library](image, size, self.flag)


def _resize_pil(image: np.ndarray, size: tuple[int, int], flag: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize(size, getattr(Image.Resampling, flag)))


def _resize_opencv(image: np.ndarray, size: tuple[int, int], flag: str) -> np.ndarray:
    import cv2

    return cv2.resize(image, size, interpolation=getattr(cv2, flag))


_RESIZE_CALLS: Mapping[str, Callable[[np.ndarray, tuple[int, int], str], np.ndarray]] = MappingProxyType(
    {"pil": _resize_pil, "opencv": _resize_opencv}
)

RESIZERS: Mapping[str, Resizer] = MappingProxyType({
    r.name: r for r in (
        Resizer("pil_nearest", "pil", "NEAREST"),
        Resizer("pil_bilinear", "pil", "BILINEAR"),
        Resizer("pil_bicubic", "pil", "BICUBIC"),
        Resizer("pil_box", "pil", "BOX"),
        Resizer("pil_hamming", "pil", "HAMMING"),
        Resizer("pil_lanczos", "pil", "LANCZOS"),
        Resizer("opencv_nearest", "opencv", "INTER_NEAREST"),
        Resizer("opencv_linear", "opencv", "INTER_LINEAR"),
        Resizer("opencv_area", "opencv", "INTER_AREA"),
        Resizer("opencv_cubic", "opencv", "INTER_CUBIC"),
        Resizer("opencv_lanczos4", "opencv", "INTER_LANCZOS4"),
    )
})


# ---------------------------------------------------------------------------- geometry
def fit(image: np.ndarray, resizer: Resizer, resolution: int, centre_crop: bool) -> np.ndarray:
    """Bring a decoded image to ``resolution`` x ``resolution`` with ``resizer``.

    ``centre_crop=False``: resize the whole image (tensor datasets' camera images).
    ``centre_crop=True``: torchvision's ``Resize(round(r * 256 / 224))`` (shorter side, the
    longer one ``int(short * long / short_old)``) then ``CenterCrop(r)``, as the
    ``imagefolder`` dataset's clean pipeline.
    """
    if not centre_crop:
        return resizer(image, (resolution, resolution))
    h, w = image.shape[:2]
    short_new = round(resolution * CROP_NUM / CROP_DEN)
    short, long = (w, h) if w <= h else (h, w)
    long_new = int(short_new * long / short)
    new_w, new_h = (short_new, long_new) if w <= h else (long_new, short_new)
    if (new_w, new_h) != (w, h):
        image = resizer(image, (new_w, new_h))
    top = int(round((new_h - resolution) / 2.0))
    left = int(round((new_w - resolution) / 2.0))
    return image[top:top + resolution, left:left + resolution]


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class SystemOptions:
    """Options of the system suite."""

    formats: tuple[str, ...] = option(FORMATS, "encodings of the stored images", choices=FORMATS)
    jpeg_quality: int = option(DEFAULT_JPEG_QUALITY, "JPEG quality of re-encoded images", ge=1, le=100)
    jpeg_subsampling: str = option(DEFAULT_JPEG_SUBSAMPLING, "JPEG chroma subsampling",
                                   choices=lambda: tuple(JPEG_SUBSAMPLINGS))
    decoders: tuple[str, ...] | None = option(None, "decoders (default: every one that can run here)",
                                              choices=lambda: tuple(DECODERS), example="pil,opencv")
    resizers: tuple[str, ...] = option(tuple(RESIZERS), "resize interpolations", choices=lambda: tuple(RESIZERS))
    source_scale: int = option(DEFAULT_SOURCE_SCALE, "camera upscale of tensor datasets' images", ge=1)
    workers: int | None = option(None, "threads decoding/resizing (default: min(8, CPUs))", ge=1)
    memory_mb: int = option(1024, "bound on decoded images held in memory", ge=1)
    resolutions: tuple[int, ...] = option((), "sizes prepare() makes ahead (run makes a missing one itself)", ge=1,
                                          allow_empty=True, example="24,32")


@lru_cache(maxsize=1)
def _library_versions() -> tuple[tuple[str, str], ...]:
    import cv2
    import PIL

    out = {"pillow": PIL.__version__, "opencv": cv2.__version__}
    try:
        import av

        out["av"] = av.__version__
        out["libavcodec"] = ".".join(map(str, av.library_versions["libavcodec"]))
        out["libswscale"] = ".".join(map(str, av.library_versions["libswscale"]))
    except ImportError:
        pass
    return tuple(sorted(out.items()))


def library_versions() -> dict[str, str]:
    """Versions of the decoding/resizing libraries: they change the pixels, so caches and protocols record them."""
    return dict(_library_versions())


@dataclass(frozen=True)
class _Source:
    """The stored images of the test subset: encoded bytes per format, labels, grey or colour."""

    blobs: tuple[bytes, ...]
    labels: torch.Tensor
    grey: bool


def _folder_samples(ctx: EvalContext) -> list[tuple[Path, int]] | None:
    """The test subset's ``(path, label)`` when the dataset is a folder of real files, else ``None``."""
    test: Any = ctx.data.test
    index = list(range(len(test)))
    while isinstance(test, Subset):
        index = [int(test.indices[i]) for i in index]
        test = test.dataset
    samples = getattr(test, "samples", None)
    if samples is None:
        return None
    return [samples[i] for i in index[: ctx.n_examples]]


def _pack(blobs: Sequence[bytes], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()
    return {"data": torch.from_numpy(data), "offsets": torch.from_numpy(offsets), "labels": labels.clone()}


def _unpack(packed: dict[str, torch.Tensor]) -> tuple[bytes, ...]:
    raw = packed["data"].numpy().tobytes()
    off = packed["offsets"].tolist()
    return tuple(raw[a:b] for a, b in zip(off[:-1], off[1:]))


# ---------------------------------------------------------------------------- the suite
@SUITES.register(SUITE, "decoder x resizer grid (PIL, OpenCV, FFmpeg x 11 interpolations) on encoded images")
class SystemNoise(NoiseSuite):
    """Accuracy of a model on images decoded and resized by different libraries (RobustART's system noise).

    Options: :class:`SystemOptions` (``decoders`` and ``resizers`` are subsets of :data:`DECODERS` /
    :data:`RESIZERS`; by default every decoder that can run here, FFmpeg only where PyAV can decode).
    """

    name = SUITE
    Options = SystemOptions
    metrics = (
        MetricInfo("accuracy", True, rank_group=SUITE, description="accuracy per (format, decoder, resizer)"),
        MetricInfo("mean", True, headline="system mean", noise="summary", rank_group=SUITE, rank_fallback=True,
                   description="mean accuracy over every pair of the grid"),
        MetricInfo("worst", True, headline="system worst", noise="summary", rank_group=SUITE, rank_fallback=True,
                   description="lowest accuracy over every pair of the grid"),
        MetricInfo("mean", True, rank_group=SUITE, rank_fallback=True, description="mean accuracy over the pairs"),
        MetricInfo("std", False, rank_group=SUITE, rank_fallback=True,
                   description="population std of accuracy over the pairs (a smaller spread is more robust)"),
        MetricInfo("worst", True, rank_group=SUITE, rank_fallback=True, description="lowest accuracy over the pairs"),
    )
    #: JPEG q96 through every decoder x resizer (PNG left out; decoded images are cached once)
    cpu_options = MappingProxyType({"formats": ("jpeg",)})
    reads_reference = False  # no relative metric: workers need not wait for the reference model's unit

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.workers = self.options.workers or min(8, os.cpu_count() or 1)
        self.memory_bytes = self.options.memory_mb * 2**20
        self._active: tuple[str, ...] | None = None
        self._digests: dict[tuple[Any, ...], str] = {}
        self._memo: OrderedDict[Path, torch.Tensor] = OrderedDict()
        # encoded bytes can be large (ImageNet-size files): hold one format's at a time
        self._source: tuple[tuple[Any, ...], _Source] | None = None
        self._meta: dict[tuple[Any, ...], tuple[torch.Tensor, bool]] = {}

    # ------------------------------------------------------------------ plan
    def active_decoders(self) -> tuple[str, ...]:
        """The requested decoders that can run here; an unavailable one is skipped with a logged reason.

        A decoder named explicitly in ``decoders`` that cannot run is an error instead.
        """
        if self._active is not None:
            return self._active
        out = []
        for name in self.options.decoders or tuple(DECODERS):
            reason = DECODERS[name].unavailable()
            if reason is None:
                out.append(name)
            elif self.options.decoders is not None:
                raise NasRobustError(f"system-noise decoder {name!r} is unavailable: {reason}")
            else:
                log.warning("system noise: skipping decoder %r: %s", name, reason)
        if not out:
            raise NasRobustError("system suite: none of the decoders can run here; add 'pil' or 'opencv' to decoders")
        self._active = tuple(out)
        return self._active

    def level(self, fmt: str) -> float:
        """The record level of a format: JPEG quality, 0 for PNG."""
        return float(self.options.jpeg_quality) if fmt == "jpeg" else 0.0

    def pairs(self) -> list[tuple[str, str, str]]:
        """The grid, ``(format, decoder, resizer)``, in a fixed order."""
        return [(f, d, r) for f in self.options.formats for d in self.active_decoders() for r in self.options.resizers]

    @staticmethod
    def noise_name(fmt: str, decoder: str, resizer: str) -> str:
        return f"{fmt}/{decoder}/{resizer}"

    def protocol(self, ctx: EvalContext) -> Protocol:
        folder = _folder_samples(ctx) is not None
        params: dict[str, Any] = {
            "formats": self.options.formats,
            "decoders": self.active_decoders(),
            "resizers": self.options.resizers,
            "jpeg_quality": self.options.jpeg_quality,
            "jpeg_subsampling": self.options.jpeg_subsampling,
            "source": "files (re-encoded with PIL if not in the format)" if folder
            else f"tensor x{self.options.source_scale} {SOURCE_FILTER}",
            "geometry": f"short side round(r*{CROP_NUM}/{CROP_DEN}), centre crop r" if folder
            else "resize to r x r",
            "std": "population (ddof 0)",
        }
        versions = {**dict(current_versions()), **library_versions()}
        return Protocol.make(n_examples=ctx.n_examples, params=params, versions=versions)

    # ------------------------------------------------------------------ data
    def _digest(self, ctx: EvalContext) -> str:
        """A fingerprint of the test images (tensor bytes, or the files' paths, sizes and times); memoised."""
        samples = _folder_samples(ctx)
        if samples is None:
            x = ctx.images
            key: tuple[Any, ...] = ("tensor", id(x), x.data_ptr(), tuple(x.shape), x._version)
        else:
            key = ("files", tuple(str(p) for p, _ in samples))
        if key not in self._digests:
            if samples is None:
                payload = ctx.images.detach().cpu().contiguous().numpy().tobytes()
            else:
                payload = repr([(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p, _ in samples]).encode()
            self._digests[key] = hashlib.sha1(payload).hexdigest()
        return self._digests[key]

    def _identity(self, ctx: EvalContext, fmt: str) -> dict[str, Any]:
        ident: dict[str, Any] = {"format": fmt, "images": self._digest(ctx), "pillow": library_versions()["pillow"]}
        if fmt == "jpeg":
            ident.update(quality=self.options.jpeg_quality, subsampling=self.options.jpeg_subsampling)
        if _folder_samples(ctx) is None:
            ident["source_scale"] = self.options.source_scale
        return ident

    def _source_key(self, ctx: EvalContext, fmt: str) -> tuple[Any, ...]:
        return tuple(sorted(self._identity(ctx, fmt).items())) + (str(ctx.cache_dir), ctx.data.info.name)

    def source(self, ctx: EvalContext, fmt: str) -> _Source:
        """The encoded test images in ``fmt`` (cached on disk; the last format used also in memory)."""
        key = self._source_key(ctx, fmt)
        if self._source is None or self._source[0] != key:
            path = ctx.cache_path(SUITE, kind="encoded", **self._identity(ctx, fmt))
            packed = cached_tensor(path, lambda: self._encode_all(ctx, fmt))
            grey = ctx.data.info.channels == 1 if _folder_samples(ctx) is not None else ctx.images.shape[1] == 1
            self._source = (key, _Source(_unpack(packed), packed["labels"], grey))
            self._meta[key] = (packed["labels"], grey)
        return self._source[1]

    def _labels_grey(self, ctx: EvalContext, fmt: str) -> tuple[torch.Tensor, bool]:
        """Labels and grey flag of the encoded test images, without holding their bytes."""
        key = self._source_key(ctx, fmt)
        if key not in self._meta:
            self.source(ctx, fmt)
        return self._meta[key]

    def _encode_all(self, ctx: EvalContext, fmt: str) -> dict[str, torch.Tensor]:
        samples = _folder_samples(ctx)
        with ThreadPoolExecutor(self.workers) as pool:
            if samples is None:
                def stored(image: np.ndarray) -> bytes:
                    return encode(camera_image(image, self.options.source_scale), fmt, self.options.jpeg_quality, self.options.jpeg_subsampling)

                blobs = list(pool.map(stored, to_uint8_hwc(ctx.images)))
                labels = ctx.labels.detach().cpu().long()
            else:
                grey = ctx.data.info.channels == 1
                blobs = list(pool.map(lambda s: self._file_bytes(s[0], fmt, grey), samples))
                labels = torch.tensor([int(y) for _, y in samples], dtype=torch.long)
                if not torch.equal(labels, ctx.labels.detach().cpu().long()):
                    raise NasRobustError(
                        "system noise: the labels of the test files do not match the evaluator's test labels; "
                        "the test subset must be the first n images of the dataset's test split"
                    )
                kept = sum(_format_of(b) == fmt and b == p.read_bytes() for b, (p, _) in zip(blobs, samples))
                log.info("system noise: %d of %d %s files kept as stored, the rest re-encoded", kept, len(blobs), fmt)
        mean_kib = sum(map(len, blobs)) / max(1, len(blobs)) / 1024
        log.info("system noise: encoded %d %s images (%.1f KiB mean)", len(blobs), fmt, mean_kib)
        return _pack(blobs, labels)

    def _file_bytes(self, path: Path, fmt: str, grey: bool) -> bytes:
        data = path.read_bytes()
        if _format_of(data) == fmt:
            return data
        return encode(_decode_pil(data, grey), fmt, self.options.jpeg_quality, self.options.jpeg_subsampling)

    def _image_path(self, ctx: EvalContext, fmt: str, decoder: str, resizer: str, resolution: int) -> Path:
        ident = self._identity(ctx, fmt)
        ident.update(library_versions())
        return ctx.cache_path(SUITE, kind="images", decoder=decoder, resizer=resizer, resolution=resolution, **ident)

    def images(self, ctx: EvalContext, fmt: str, decoder: str, resizer: str, resolution: int) -> torch.Tensor:
        """uint8 ``(N, C, r, r)`` test images after ``fmt`` -> ``decoder`` -> ``resizer`` (cached)."""
        path = self._image_path(ctx, fmt, decoder, resizer, resolution)
        if path in self._memo:
            self._memo.move_to_end(path)
            return self._memo[path]
        tensor = cached_tensor(path, lambda: self._generate(ctx, fmt, decoder, [resizer], resolution)[resizer])
        self._remember(path, tensor)
        return tensor

    def _remember(self, path: Path, tensor: torch.Tensor) -> None:
        self._memo[path] = tensor
        self._memo.move_to_end(path)
        while len(self._memo) > 1 and sum(t.numel() for t in self._memo.values()) > self.memory_bytes:
            self._memo.popitem(last=False)

    def _generate(
        self, ctx: EvalContext, fmt: str, decoder: str, resizers: Sequence[str], resolution: int
    ) -> dict[str, torch.Tensor]:
        """Decode each image once and apply every resizer in ``resizers``: uint8 ``(N, C, r, r)`` per resizer."""
        src = self.source(ctx, fmt)
        decode = DECODERS[decoder].decode
        chosen = [RESIZERS[r] for r in resizers]
        centre_crop = _folder_samples(ctx) is not None

        def one(blob: bytes) -> list[np.ndarray]:
            decoded = decode(blob, src.grey)
            return [fit(decoded, r, resolution, centre_crop) for r in chosen]

        with ThreadPoolExecutor(self.workers) as pool:
            per_image = list(pool.map(one, src.blobs))
        out = {}
        for k, name in enumerate(resizers):
            arr = np.stack([imgs[k] for imgs in per_image])
            arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
            out[name] = torch.from_numpy(np.ascontiguousarray(arr))
        log.info("system noise: made %s/%s x %d resizers at %d px", fmt, decoder, len(resizers), resolution)
        return out

    def prepare(self, ctx: EvalContext) -> None:
        """Encode the test images and make every pair's images at ``resolutions`` (default: the dataset's size)."""
        for resolution in self.options.resolutions or (ctx.data.info.image_size,):
            self._ensure(ctx, int(resolution))

    def _ensure(self, ctx: EvalContext, resolution: int) -> None:
        """Make the missing caches at ``resolution``, decoding each image once per group of resizers.

        A group holds as many resizers' outputs as fit in ``memory_mb``.
        """
        channels = 1 if self._labels_grey(ctx, self.options.formats[0])[1] else 3
        group = max(1, self.memory_bytes // max(1, ctx.n_examples * channels * resolution**2))
        for fmt in self.options.formats:
            for decoder in self.active_decoders():
                missing = [r for r in self.options.resizers
                           if not self._image_path(ctx, fmt, decoder, r, resolution).exists()]
                for i in range(0, len(missing), group):
                    made = self._generate(ctx, fmt, decoder, missing[i:i + group], resolution)
                    for name, tensor in made.items():
                        cached_tensor(self._image_path(ctx, fmt, decoder, name, resolution), lambda t=tensor: t)

    # ------------------------------------------------------------------ scoring
    def run(self, model: nn.Module, ctx: EvalContext) -> Iterator[Measurement]:
        resolution = int(getattr(model, "resolution", ctx.data.info.image_size))
        pairs = self.pairs()
        summary_keys = [(f"{f}/summary", self.level(f), m) for f in self.options.formats for m in ("mean", "std", "worst")]
        summary_keys += [("summary", 0.0, m) for m in ("mean", "std", "worst")]
        need_summary = any(k not in ctx.done for k in summary_keys)
        todo = [p for p in pairs if need_summary or (self.noise_name(*p), self.level(p[0]), "accuracy") not in ctx.done]
        if not todo:
            return
        self._ensure(ctx, resolution)
        scorer = BatchMemo(model, ctx.device, ctx.batch_size) if ctx.dedupe_inputs else None
        accs: dict[tuple[str, str, str], float] = {}
        for fmt, decoder, resizer in todo:
            images = self.images(ctx, fmt, decoder, resizer, resolution)
            labels = self._labels_grey(ctx, fmt)[0]
            acc = (scorer.accuracy(images, labels) if scorer is not None
                   else accuracy_u8(model, images, labels, ctx.device, ctx.batch_size))
            accs[(fmt, decoder, resizer)] = acc
            key = (self.noise_name(fmt, decoder, resizer), self.level(fmt), "accuracy")
            if key not in ctx.done:
                yield Measurement(key[0], key[1], key[2], acc)
        if not need_summary:
            return
        groups = {f"{f}/summary": (self.level(f), [a for p, a in accs.items() if p[0] == f]) for f in self.options.formats}
        groups["summary"] = (0.0, list(accs.values()))
        for noise, (level, values) in groups.items():
            for metric, value in summarize(values).items():
                if (noise, level, metric) not in ctx.done:
                    yield Measurement(noise, level, metric, value)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, population std and worst case (min) of per-pair accuracies."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "worst": float(arr.min())}


class BatchMemo:
    """Accuracy of one model on uint8 image sets, each batch that equals an earlier one run through the model once.

    Decoders and resizers often agree on every pixel (PIL and OpenCV decode a JPEG with the same libjpeg
    code; every resizer is the identity at the image's own size), so whole pairs of the grid repeat. A
    batch is keyed by a hash of its bytes and shape; a batch seen before reuses its predictions. Batches
    are never regrouped: a batch that runs is exactly the one :func:`accuracy_u8` runs, so the numbers
    are bit-identical with the memo off, whatever the kernels do with other batch compositions.
    """

    def __init__(self, model: nn.Module, device: torch.device, batch_size: int = 256):
        self.model, self.device, self.batch_size = model, device, batch_size
        self._predictions: dict[bytes, torch.Tensor] = {}
        self.forwards = 0  # batches run through the model (the others were reused)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy on ``images`` (uint8 ``(N, C, H, W)``), as :func:`accuracy_u8` computes it."""
        correct = 0
        for i in range(0, len(images), self.batch_size):
            batch = images[i:i + self.batch_size].contiguous()
            key = hashlib.blake2b(repr(tuple(batch.shape)).encode() + batch.numpy().tobytes(), digest_size=20).digest()
            if key not in self._predictions:
                self._predictions[key] = _predict_u8(self.model, batch, self.device)
                self.forwards += 1
            correct += int((self._predictions[key] == labels[i:i + self.batch_size]).sum())
        return correct / max(1, len(images))


@torch.no_grad()
def _predict_u8(model: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Argmax predictions (CPU) of ``model`` in eval mode on one uint8 batch scaled to [0, 1] on ``device``."""
    was_training = model.training
    model.eval()
    try:
        return model(batch.to(device, non_blocking=True).float().div_(255)).argmax(-1).cpu()
    finally:
        model.train(was_training)


@torch.no_grad()
def accuracy_u8(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int = 256
) -> float:
    """Top-1 accuracy of ``model`` on uint8 images (scaled to [0, 1] batch by batch on ``device``)."""
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((_predict_u8(model, images[i:i + batch_size], device) == labels[i:i + batch_size]).sum())
    return correct / max(1, len(images))
