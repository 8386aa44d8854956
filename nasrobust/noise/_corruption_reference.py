"""Per-image numpy reference of the published ImageNet-C / CIFAR-10-C generators.

A straight port of hendrycks/robustness ``ImageNet-C/create_c/make_imagenet_c.py`` and
``make_cifar_c.py`` (Hendrycks & Dietterich, ICLR 2019) to today's libraries, one image at
a time, with the original algorithms kept -- including glass blur's Python pixel loop --
so that it serves two purposes: the tests check the batched torch implementation
(``corruptions.py``) against it on identical random draws, and ``benchmarks/
corruptions_bench.py`` times it as the "reference per-image numpy implementation".

Replacements for calls that no longer exist or cannot be installed here:

* ``skimage.filters.gaussian(x, sigma, multichannel=True)`` -> ``scipy.ndimage.gaussian_filter``
  with ``sigma=(s, s, 0)``, ``mode='nearest'``, ``truncate=4`` (what scikit-image calls);
* ``skimage.color.rgb2hsv / hsv2rgb`` -> :func:`rgb2hsv` / :func:`hsv2rgb` (scikit-image's
  formulas, vectorised numpy);
* ``skimage.util.random_noise(mode='s&p')`` -> current scikit-image's Bernoulli draw;
* Wand/ImageMagick ``MotionBlurImage`` -> :func:`imagemagick_motion_blur`, a numpy port of
  ImageMagick's C loop (8-bit in, 8-bit out, as through the PNG round trip);
* frost photographs -> those of :func:`nasrobust.noise.frost.frost_textures` (published or synthetic).

``rng`` is a ``numpy.random.RandomState`` used exactly where the original calls
``np.random`` (same methods, same order). Images are ``uint8`` RGB ``(H, W, 3)`` arrays (what
the original receives as a PIL image); results are float arrays in [0, 255] (``uint8`` for
motion blur, pixelate and JPEG, as the original returns).
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np

from nasrobust.noise._corruption_params import resolve_param_set, zoom_factors


def _gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sig = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return gaussian_filter(x, sigma=sig, mode=mode, truncate=truncate)


def rgb2hsv(arr: np.ndarray) -> np.ndarray:
    """scikit-image's ``rgb2hsv`` (float RGB in [0, 1])."""
    out = np.empty_like(arr)
    out_v = arr.max(-1)
    delta = np.ptp(arr, -1)
    old = np.seterr(invalid="ignore", divide="ignore")
    out_s = delta / out_v
    out_s[delta == 0.0] = 0.0
    idx = arr[..., 0] == out_v
    out[idx, 0] = (arr[idx, 1] - arr[idx, 2]) / delta[idx]
    idx = arr[..., 1] == out_v
    out[idx, 0] = 2.0 + (arr[idx, 2] - arr[idx, 0]) / delta[idx]
    idx = arr[..., 2] == out_v
    out[idx, 0] = 4.0 + (arr[idx, 0] - arr[idx, 1]) / delta[idx]
    out_h = (out[..., 0] / 6.0) % 1.0
    out_h[delta == 0.0] = 0.0
    np.seterr(**old)
    out[..., 0], out[..., 1], out[..., 2] = out_h, out_s, out_v
    out[np.isnan(out)] = 0
    return out


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """scikit-image's ``hsv2rgb``."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    return np.choose(hi, np.stack([np.stack((v, t, p), axis=-1), np.stack((q, v, p), axis=-1),
                                   np.stack((p, v, t), axis=-1), np.stack((p, q, v), axis=-1),
                                   np.stack((t, p, v), axis=-1), np.stack((v, p, q), axis=-1)]))


def imagemagick_motion_blur(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick 6 ``MotionBlurImage`` on a ``uint8`` image (2-D or H x W x C), 8-bit result."""
    width = int(2.0 * math.ceil(radius) + 1.0)
    i = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(i * i) / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    px, py = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(px, py)
    h, w = img.shape[:2]
    rows, cols = np.arange(h), np.arange(w)
    acc = np.zeros(img.shape, np.float64)
    for k in range(width):
        ox = int(math.ceil((k * py) / hyp - 0.5))
        oy = int(math.ceil((k * px) / hyp - 0.5))
        r = np.clip(rows + oy, 0, h - 1)
        c = np.clip(cols + ox, 0, w - 1)
        acc += kernel[k] * img[r][:, c]
    return np.clip(np.round(acc), 0, 255).astype(np.uint8)


def plasma_fractal(rng, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """The published diamond-square height map in [0, 1]."""
    assert mapsize & (mapsize - 1) == 0
    maparray = np.zeros((mapsize, mapsize), dtype=np.float64)
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    """Centre crop of ``ceil(n / z)``, ``scipy.ndimage.zoom(order=1)``, trimmed to ``n``."""
    from scipy.ndimage import zoom as scizoom

    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / zoom_factor)), int(np.ceil(w / zoom_factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    img = scizoom(img[top:top + ch, left:left + cw], (zoom_factor, zoom_factor, 1), order=1)
    th, tw = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[th:th + h, tw:tw + w]


def disk(radius: float, alias_blur: float = 0.1, dtype=np.float32) -> np.ndarray:
    import cv2

    if radius <= 8:
        L, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        L, ksize = np.arange(-radius, radius + 1), (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased_disk = np.array((X**2 + Y**2) <= radius**2, dtype=dtype)
    aliased_disk /= np.sum(aliased_disk)
    return cv2.GaussianBlur(aliased_disk, ksize=ksize, sigmaX=alias_blur)


# ----------------------------------------------------------------------------- corruptions


def gaussian_noise(x, c, rng, pset):
    x = np.array(x) / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, rng, pset):
    x = np.array(x) / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, c, rng, pset):
    x = np.array(x) / 255.0
    out = x.copy()
    flipped = rng.random_sample(x.shape) <= c
    salted = rng.random_sample(x.shape) <= 0.5
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return np.clip(out, 0, 1) * 255


def glass_blur(x, c, rng, pset):
    sigma, d, iterations = c
    x = np.uint8(_gaussian(np.array(x) / 255.0, sigma) * 255)
    h, w = x.shape[:2]
    for _ in range(iterations):
        for hh in range(h - d, d, -1):
            for ww in range(w - d, d, -1):
                dx, dy = rng.randint(-d, d, size=(2,))
                h_prime, w_prime = hh + dy, ww + dx
                # the published statement, kept verbatim (on H x W x 3 views it copies)
                x[hh, ww], x[h_prime, w_prime] = x[h_prime, w_prime], x[hh, ww]
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


def defocus_blur(x, c, rng, pset):
    import cv2

    x = np.array(x) / 255.0
    kernel = disk(radius=c[0], alias_blur=c[1])
    channels = np.array([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]).transpose((1, 2, 0))
    return np.clip(channels, 0, 1) * 255


def motion_blur(x, c, rng, pset):
    return imagemagick_motion_blur(np.array(x), c[0], c[1], rng.uniform(-45, 45))


def zoom_blur(x, c, rng, pset):
    factors = zoom_factors(c)
    x = (np.array(x) / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in factors:
        out += clipped_zoom(x, z)
    x = (x + out) / (len(factors) + 1)
    return np.clip(x, 0, 1) * 255


def snow(x, c, rng, pset):
    import cv2

    x = np.array(x, dtype=np.float32) / 255.0
    h, w = x.shape[:2]
    snow_layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    snow_layer = clipped_zoom(snow_layer[..., np.newaxis], c[2])
    snow_layer[snow_layer < c[3]] = 0
    snow_layer = (np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8)
    snow_layer = imagemagick_motion_blur(snow_layer, c[4], c[5], rng.uniform(-135, -45)) / 255.0
    snow_layer = snow_layer[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(h, w, 1) * 1.5 + 0.5)
    return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255


def frost(x, c, rng, pset):
    from nasrobust.noise.frost import N_TEXTURES, scaled_textures

    h, w = np.array(x).shape[:2]
    idx = rng.randint(N_TEXTURES)
    tex = scaled_textures(pset.frost_texture_scale)[idx]
    x_start, y_start = rng.randint(0, tex.shape[0] - h), rng.randint(0, tex.shape[1] - w)
    tex = tex[x_start:x_start + h, y_start:y_start + w]
    return np.clip(c[0] * np.array(x) + c[1] * tex, 0, 255)


def fog(x, c, rng, pset):
    x = np.array(x) / 255.0
    h, w = x.shape[:2]
    max_val = x.max()
    mapsize = 1 << (max(h, w) - 1).bit_length()
    x += c[0] * plasma_fractal(rng, mapsize=mapsize, wibbledecay=c[1])[:h, :w][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def brightness(x, c, rng, pset):
    x = np.array(x) / 255.0
    x = rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    x = hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


def contrast(x, c, rng, pset):
    x = np.array(x) / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(image, c, rng, pset):
    import cv2
    from scipy.ndimage import map_coordinates

    image = np.array(image, dtype=np.float32) / 255.0
    shape = image.shape
    shape_size = shape[:2]
    scale = min(shape_size) / pset.elastic_ref_size
    c = tuple(v * scale for v in c)
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size,
                       [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (_gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (_gaussian(rng.uniform(-1, 1, size=shape[:2]), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def pixelate(x, c, rng, pset):
    from PIL import Image

    img = Image.fromarray(np.array(x))
    w, h = img.size
    img = img.resize((int(w * c), int(h * c)), Image.BOX)
    return np.array(img.resize((w, h), Image.BOX))


def jpeg_compression(x, c, rng, pset):
    from PIL import Image

    output = BytesIO()
    Image.fromarray(np.array(x)).save(output, "JPEG", quality=c)
    return np.array(Image.open(output))


REFERENCE = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur,
    "zoom_blur": zoom_blur, "snow": snow, "frost": frost, "fog": fog, "brightness": brightness,
    "contrast": contrast, "elastic_transform": elastic_transform, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}


def reference_corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.RandomState,
                      params: str | None = None) -> np.ndarray:
    """Corrupt one ``uint8`` RGB image (H, W, 3) as the published code does; float [0, 255]."""
    pset = resolve_param_set(image.shape[0], image.shape[1], params)
    return np.asarray(REFERENCE[name](image, pset.c(name, severity), rng, pset), dtype=np.float64)
