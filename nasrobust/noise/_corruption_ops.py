"""Batched torch building blocks of the ImageNet-C corruptions.

Each block reproduces the library call the published code (hendrycks/robustness,
``make_imagenet_c.py`` / ``make_cifar_c.py``) makes, on a whole batch ``(N, C, H, W)`` at once:

* :func:`gaussian_filter` -- ``skimage.filters.gaussian`` / ``scipy.ndimage.gaussian_filter``
  (kernel radius ``int(truncate * sigma + 0.5)``, scipy's boundary modes, any radius);
* :func:`filter2d` -- ``cv2.filter2D`` (correlation, ``BORDER_REFLECT_101``; by FFT);
* :func:`disk_kernel` -- the published anti-aliased disk (``cv2.GaussianBlur`` of a disk);
* :func:`motion_blur` -- ImageMagick's ``MotionBlurImage`` (one-sided Gaussian along a line,
  offsets ``ceil(i * cos(angle) - 0.5)``, edge virtual pixels), which the published code
  calls through Wand;
* :func:`clipped_zoom` -- ``scipy.ndimage.zoom(order=1)`` of a centre crop, trimmed back;
* :func:`plasma_fractal` -- the published diamond-square height map (with its ``wibble**2``
  amplitude), batched over images;
* :func:`box_resize_matrix` -- PIL's ``Image.resize(..., BOX)`` as a matrix;
* :func:`hsv_value_shift` -- ``hsv2rgb`` of ``rgb2hsv`` with ``V`` shifted, in closed form;
* :func:`glass_source_index` -- the glass-blur pixel loop, solved in parallel;
* :func:`jpeg_roundtrip` -- a real JPEG encode/decode (PIL's libjpeg, as published).

Randomness is drawn by the callers (``corruptions.py``) so that these functions are
deterministic and can be checked against the per-image reference on identical draws.
"""

from __future__ import annotations

import math
from functools import lru_cache
from io import BytesIO

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- boundaries


def axis_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Indices into an axis of length ``n`` for positions ``-before .. n + after - 1``.

    ``mode`` follows scipy.ndimage: ``nearest`` (edge repeat, also ImageMagick's edge
    virtual pixels), ``reflect`` (``d c b a | a b c d``) and ``mirror`` (``d c b | a b c d``,
    OpenCV's ``BORDER_REFLECT_101``). Works for pads longer than the axis.
    """
    i = np.arange(-before, n + after)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "reflect":
        i = np.mod(i, 2 * n)
        return np.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i)
        i = np.mod(i, 2 * n - 2)
        return np.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown boundary mode {mode!r}")


def _index(x: torch.Tensor, dim: int, idx: np.ndarray) -> torch.Tensor:
    return x.index_select(dim, torch.from_numpy(idx).to(x.device))


# ----------------------------------------------------------------------------- filtering


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's Gaussian weights: radius ``int(truncate * sigma + 0.5)``, sum 1."""
    if sigma <= 1e-15:  # scipy skips an axis whose sigma is 0
        return np.ones(1)
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / (float(sigma) ** 2) * x**2)
    return w / w.sum()


@lru_cache(maxsize=128)
def axis_matrix(n: int, weights: tuple[float, ...], mode: str) -> np.ndarray:
    """The ``n x n`` linear map of a 1-D correlation with odd-length ``weights`` and boundary
    ``mode`` (any kernel length: reflections beyond the axis fold back in)."""
    r = len(weights) // 2
    idx = axis_index(n, r, r, mode)
    m = np.zeros((n, n))
    rows = np.arange(n)
    for k, w in enumerate(weights):
        np.add.at(m, (rows, idx[k : k + n]), w)
    return m


def filter_axis(x: torch.Tensor, weights: np.ndarray, dim: int, mode: str) -> torch.Tensor:
    """Correlate ``x`` along ``dim`` (-1 or -2) with odd-length ``weights`` (scipy semantics),
    as one matrix product with the axis operator (BLAS beats shifted adds even for 7 taps)."""
    if len(weights) == 1:
        return x * float(weights[0])
    m = axis_matrix(x.shape[dim], tuple(float(w) for w in weights), mode)
    mt = torch.as_tensor(m, dtype=x.dtype, device=x.device)
    return x @ mt.T if dim == -1 else mt @ x


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """Per-channel 2-D Gaussian blur over the last two dims, as ``skimage.filters.gaussian``
    (defaults ``mode='nearest'``, ``truncate=4``) / ``scipy.ndimage.gaussian_filter``."""
    w = gaussian_kernel1d(sigma, truncate)
    return filter_axis(filter_axis(x, w, -2, mode), w, -1, mode)


def _correlate_fft(xp: torch.Tensor, kernel: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Valid correlation of padded maps ``xp`` (..., Hp, Wp) with ``kernel`` (broadcastable
    (..., kh, kw)) through real FFTs at least (Hp, Wp) long: outputs whose window fits never wrap."""
    from scipy.fft import next_fast_len

    # zero-padding to a 2-3-5-smooth length keeps pocketfft fast (244 = 4 * 61 is 2.4x slower
    # than 256) and, being at least as long as the padded map, still never wraps valid outputs
    size = (next_fast_len(xp.shape[-2], real=True), next_fast_len(xp.shape[-1], real=True))
    kh, kw = kernel.shape[-2:]
    kf = torch.fft.rfft2(torch.flip(kernel, dims=(-2, -1)), s=size)
    y = torch.fft.irfft2(torch.fft.rfft2(xp, s=size) * kf, s=size)
    return y[..., kh - 1 : kh - 1 + out_h, kw - 1 : kw - 1 + out_w]


def filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """``cv2.filter2D(x, -1, kernel)`` per channel: correlation, centred anchor, reflect-101."""
    kh, kw = kernel.shape
    h, w = x.shape[-2:]
    xp = _index(_index(x, -2, axis_index(h, kh // 2, kh - 1 - kh // 2, "mirror")), -1,
                axis_index(w, kw // 2, kw - 1 - kw // 2, "mirror"))
    k = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)
    return _correlate_fft(xp, k, h, w).contiguous()


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The published defocus kernel: a normalised disk on a 17 x 17 grid (radius <= 8, else
    ``2 r + 1``), anti-aliased by ``cv2.GaussianBlur`` with a 3 x 3 (else 5 x 5) window."""
    import cv2

    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        grid, ksize = np.arange(-radius, radius + 1), (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


# ----------------------------------------------------------------------------- motion blur


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """ImageMagick's one-sided motion kernel: ``width = 2 ceil(radius) + 1`` Gaussian taps
    ``exp(-i^2 / 2 sigma^2)``, ``i = 0 .. width - 1``, normalised to sum 1."""
    width = int(2.0 * math.ceil(radius) + 1.0)
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i * i) / (2.0 * sigma * sigma))
    return k / k.sum()


def motion_offsets(width: int, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (x, y) of the motion taps: ``ceil(i * cos(a) - 0.5)``, ``ceil(i * sin(a) - 0.5)``
    computed in double as ImageMagick does (``point = width * (sin a, cos a)``)."""
    px = width * math.sin(math.radians(angle_deg))
    py = width * math.cos(math.radians(angle_deg))
    hyp = math.hypot(px, py)
    i = np.arange(width, dtype=np.float64)
    return np.ceil((i * py) / hyp - 0.5).astype(np.int64), np.ceil((i * px) / hyp - 0.5).astype(np.int64)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: np.ndarray) -> torch.Tensor:
    """ImageMagick ``MotionBlurImage(radius, sigma, angle)`` per image of ``x`` (N, C, H, W):
    ``out(y, x) = sum_i k_i in(y + oy_i, x + ox_i)`` with edge-replicated borders.

    The taps of each image are scattered into a 2-D kernel and applied by FFT correlation,
    so the cost does not grow with the blur length.
    """
    k = motion_kernel(radius, sigma)
    width = len(k)
    n, c, h, w = x.shape
    offs = [motion_offsets(width, float(a)) for a in angles_deg[:n]]
    ox_all = np.concatenate([o[0] for o in offs])
    oy_all = np.concatenate([o[1] for o in offs])
    # pad only as far as the taps reach (angles within +-45 degrees never look left)
    top, bottom = max(0, -int(oy_all.min())), max(0, int(oy_all.max()))
    left, right = max(0, -int(ox_all.min())), max(0, int(ox_all.max()))
    kernels = np.zeros((n, 1, top + bottom + 1, left + right + 1))
    for j, (ox, oy) in enumerate(offs):
        np.add.at(kernels[j, 0], (top + oy, left + ox), k)
    xp = _index(_index(x, -2, axis_index(h, top, bottom, "nearest")), -1, axis_index(w, left, right, "nearest"))
    kt = torch.as_tensor(kernels, dtype=x.dtype, device=x.device)
    return _correlate_fft(xp, kt, h, w).contiguous()


# ----------------------------------------------------------------------------- zoom


def _zoom_geometry(n: int, z: float) -> tuple[int, int, int, int]:
    ch = int(np.ceil(n / float(z)))
    top = (n - ch) // 2
    out = int(round(ch * z))  # scipy.ndimage.zoom's output length
    trim = (out - n) // 2
    return ch, top, out, trim


def clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """The published ``clipped_zoom``: centre crop of ``ceil(n / z)``, ``scipy.ndimage.zoom``
    (order 1, i.e. bilinear with corners aligned) back up, trimmed to the input size."""
    h, w = x.shape[-2:]
    ch, top, outh, trimh = _zoom_geometry(h, z)
    cw, left, outw, trimw = _zoom_geometry(w, z)
    crop = x[..., top : top + ch, left : left + cw]
    if (outh, outw) == (ch, cw):
        zoomed = crop
    else:
        lead = crop.shape[:-2]
        zoomed = F.interpolate(crop.reshape(-1, 1, ch, cw), size=(outh, outw), mode="bilinear", align_corners=True)
        zoomed = zoomed.reshape(*lead, outh, outw)
    return zoomed[..., trimh : trimh + h, trimw : trimw + w]


@lru_cache(maxsize=256)
def zoom_matrix(n: int, z: float) -> np.ndarray:
    """:func:`clipped_zoom` along one axis of length ``n`` as an ``n x n`` matrix (linear
    interpolation with aligned corners, from the centre crop, trimmed)."""
    ch, top, out, trim = _zoom_geometry(n, z)
    m = np.zeros((n, n))
    for i in range(n):
        src = (i + trim) * (ch - 1) / (out - 1) if out > 1 else 0.0
        i0 = min(int(np.floor(src)), ch - 1)
        f = src - i0
        i1 = min(i0 + 1, ch - 1)
        m[i, top + i0] += 1.0 - f
        m[i, top + i1] += f
    return m


def zoom_sum(x: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    """``sum_z clipped_zoom(x, z)``. Small images (side <= 64) go through one batched matrix
    product per axis (a handful of kernels instead of one interpolation per factor); larger
    ones through ``F.interpolate`` per factor, which is cheaper there."""
    h, w = x.shape[-2:]
    if max(h, w) > 64:
        out = torch.zeros_like(x)
        for z in factors:
            out += clipped_zoom(x, float(z))
        return out
    rows = torch.as_tensor(np.stack([zoom_matrix(h, float(z)) for z in factors]), dtype=x.dtype, device=x.device)
    cols = torch.as_tensor(np.stack([zoom_matrix(w, float(z)) for z in factors]), dtype=x.dtype, device=x.device)
    lead, nz = x.shape[:-2], len(factors)
    xt = x.reshape(-1, h, w).transpose(0, 1).reshape(h, -1)  # (H, B*W)
    y = (rows.reshape(nz * h, h) @ xt).reshape(nz, h, -1, w).reshape(nz, -1, w)  # (Z, H*B, W)
    y = torch.bmm(y, cols.transpose(1, 2)).sum(0)  # (H*B, W)
    return y.reshape(h, -1, w).transpose(0, 1).reshape(*lead, h, w)


# ----------------------------------------------------------------------------- plasma fractal


def plasma_fractal(uniforms: "PlasmaDraws", mapsize: int, wibbledecay: float) -> torch.Tensor:
    """The published diamond-square height map for a batch, normalised to [0, 1] per map
    (float32: the map is rescaled at the end, so single precision is ample).

    ``uniforms(shape)`` returns U(-1, 1) draws of ``(N, *shape)``; the published code's
    ``wibble * U(-wibble, wibble)`` is ``wibble**2 * U(-1, 1)``.
    """
    if mapsize & (mapsize - 1):
        raise ValueError("mapsize must be a power of two")
    # The published code fills one big array through strided views. Here the grid of known
    # points (spacing ``step``) is kept compact: corners C; the square step gives centres D;
    # the diamond step gives the points between corners along rows (L) and columns (T); the
    # four are interleaved into the grid of the next level. Same arithmetic, same draw shapes.
    corners = torch.zeros(uniforms.n, 1, 1)
    step, wibble = mapsize, 100.0
    while step >= 2:
        amp = wibble * wibble
        sq = corners + torch.roll(corners, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        centres = sq / 4 + amp * uniforms(sq.shape[1:])
        lt = centres + torch.roll(centres, 1, dims=1) + corners + torch.roll(corners, -1, dims=2)
        rows = lt / 4 + amp * uniforms(lt.shape[1:])  # (0::step, step/2::step)
        tt = centres + torch.roll(centres, 1, dims=2) + corners + torch.roll(corners, -1, dims=1)
        cols = tt / 4 + amp * uniforms(tt.shape[1:])  # (step/2::step, 0::step)
        n, m, _ = corners.shape
        even = torch.stack([corners, rows], dim=-1).reshape(n, m, 2 * m)
        odd = torch.stack([cols, centres], dim=-1).reshape(n, m, 2 * m)
        corners = torch.stack([even, odd], dim=2).reshape(n, 2 * m, 2 * m)
        step //= 2
        wibble /= wibbledecay
    a = corners - corners.amin(dim=(1, 2), keepdim=True)
    return a / a.amax(dim=(1, 2), keepdim=True)


class PlasmaDraws:
    """Source of U(-1, 1) draws for :func:`plasma_fractal` (a torch generator by default)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        u = torch.rand((self.n, *shape), generator=self.generator, device=self.generator.device)
        return (2.0 * u - 1.0).cpu()


# ----------------------------------------------------------------------------- PIL box resize


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


@lru_cache(maxsize=64)
def box_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL's ``Image.resize(..., Image.BOX)`` along one axis as an ``n_out x n_in`` matrix
    (Pillow ``Resample.c`` ``precompute_coeffs``: support 0.5 scaled by the reduction)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((n_out, n_in))
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        j = np.arange(xmin, xmax)
        wts = _box((j - center + 0.5) / filterscale)
        if wts.sum() != 0:
            wts = wts / wts.sum()
        m[xx, xmin:xmax] = wts
    return m


def box_resize(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Resize the last two dims as PIL's BOX filter does (separable, exact weights)."""
    h, w = x.shape[-2:]
    mh = torch.as_tensor(box_resize_matrix(h, out_h), dtype=x.dtype, device=x.device)
    mw = torch.as_tensor(box_resize_matrix(w, out_w), dtype=x.dtype, device=x.device)
    return mh @ x @ mw.T


# ----------------------------------------------------------------------------- colour

#: ITU-R BT.601 luma, as ``cv2.COLOR_RGB2GRAY``.
LUMA = (0.299, 0.587, 0.114)


def grey(x: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(x, COLOR_RGB2GRAY)`` of (N, 3, H, W); a grey image is its own grey."""
    if x.shape[1] == 1:
        return x
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def hsv_value_shift(x: torch.Tensor, c: float) -> torch.Tensor:
    """``hsv2rgb`` of ``rgb2hsv(x)`` with ``V <- clip(V + c, 0, 1)`` (skimage), in closed form.

    With hue and saturation fixed every RGB component of the HSV model is proportional to
    ``V = max(R, G, B)``, so the result is ``x * V' / V``; black (``V = 0``, ``S = 0``) becomes
    the grey ``V'``. A grey channel is its own ``V``.
    """
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0.0, 1.0)
    out = x * (v_new / v.clamp_min(1e-30))
    return torch.where(v > 0, out, v_new)


# ----------------------------------------------------------------------------- glass blur


def glass_offset_codes(dx: torch.Tensor, dy: torch.Tensor, d: int) -> torch.Tensor:
    """Pack offsets ``dx, dy`` in ``[-d, d)`` into codes ``(dy + d) * 2d + (dx + d)`` in ``[0, 4 d^2)``."""
    return (dy + d) * (2 * d) + (dx + d)


def glass_source_index(codes: torch.Tensor, h: int, w: int, d: int) -> torch.Tensor:
    """Where each pixel's value comes from after one pass of the published pixel loop.

    The loop visits ``(r, c)`` for ``r = h-d .. d+1`` and ``c = w-d .. d+1`` (both descending)
    and runs ``x[r, c], x[r', c'] = x[r', c'], x[r, c]`` with ``(r', c') = (r + dy, c + dx)``.
    On an RGB ``uint8`` array both sides are views, so the statement copies ``x[r', c']`` into
    ``x[r, c]`` and leaves ``x[r', c']`` unchanged. Each position is written once, in
    descending raster order, so its final value is the one at ``(r', c')`` when it was
    visited: already final if ``(r', c')`` was visited before (a later raster position inside
    the loop), else still original. Following those links is a chain of strictly increasing
    positions, resolved here by pointer jumping in ``O(log length)`` vectorised rounds.

    ``codes``: (N, h - 2d, w - 2d) offsets packed by :func:`glass_offset_codes`, indexed by
    (row - d - 1, col - d - 1). Returns (N, h * w) flat source indices (int64).
    """
    n = codes.shape[0]
    device = codes.device
    base = torch.arange(h * w, device=device).view(1, h, w).expand(n, h, w)
    if h - 2 * d <= 0 or w - 2 * d <= 0:
        return base.reshape(n, h * w)
    side = 2 * d
    j = torch.arange(side * side, device=device)
    offset = ((j // side - d) * w + (j % side - d))[codes.long()]  # flat offset of (dy, dx)
    # raster order of (dy, dx) is code order, so "q later than p" is "code > code of (0, 0)".
    # A later q outside the loop region needs no special case: it is never written, so its
    # chain stops at once with source q -- the same answer as not following the link.
    later = codes > d * side + d
    inner = (slice(None), slice(d + 1, h - d + 1), slice(d + 1, w - d + 1))
    term = base.clone()  # where p's value comes from if its chain stops at p
    term[inner] += offset
    hop = base.clone()  # next node of p's chain (p itself where it stops)
    hop[inner] += offset * later
    term, hop = term.view(n, -1), hop.view(n, -1)
    while True:
        nxt = torch.gather(hop, 1, hop)
        if torch.equal(nxt, hop):
            break
        hop = nxt
    return torch.gather(term, 1, hop)


def compose_sources(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """Flat source indices of ``then`` applied after ``first`` (both (N, H*W))."""
    return torch.gather(first, 1, then)


def gather_pixels(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with each pixel replaced by the one at flat index ``src`` (N, H*W)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    return torch.gather(flat, 2, src.unsqueeze(1).expand(n, c, h * w)).reshape(n, c, h, w)


# ----------------------------------------------------------------------------- JPEG


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as a JPEG of ``quality`` and decode it, 8-bit in between, as the
    published ``PIL.Image.save(..., 'JPEG', quality=q)``: PIL (libjpeg, 4:2:0 chroma) on CPU;
    nvJPEG through torchvision for CUDA tensors (same quantisation tables, its own DCT)."""
    u8 = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    if u8.device.type == "cuda":
        from torchvision.io import decode_jpeg, encode_jpeg

        dec = decode_jpeg(encode_jpeg(list(u8.unbind(0)), quality=int(quality)), device=u8.device)
        return torch.stack(dec).to(x.dtype) / 255.0
    from PIL import Image

    arr = u8.permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=int(quality))
        dec = np.asarray(Image.open(buf))
        out[i] = dec.reshape(out[i].shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0
