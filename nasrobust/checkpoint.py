"""Checkpoints that carry everything later steps need: space, arch or supernet config, recipe, data split.

One file, ``<out>/checkpoint.pt``, written atomically (temp file + rename) at the end of
every epoch, so a killed run resumes from its last finished epoch and never leaves a torn
file. ``weights_id`` (a hash of the weights) keys results in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import nasrobust
from nasrobust.data import DatasetInfo
from nasrobust.errors import NasRobustError
from nasrobust.models import ImageClassifier
from nasrobust.space import get_space

FORMAT = "nasrobust-checkpoint/1"
FILENAME = "checkpoint.pt"


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint is: enough to rebuild the model without extra flags."""

    kind: str  # "standalone" or "supernet"
    space: str
    dataset: dict[str, Any]  # DatasetInfo as a dict
    recipe: dict[str, Any]
    arch: str | None = None  # encoding, for stand-alone networks
    supernet: dict[str, Any] | None = None  # kwargs of space.supernet(...)
    parent: str | None = None  # weights_id of the supernet a fine-tuned subnet came from
    build: dict[str, Any] | None = None  # extra space.build kwargs (e.g. cell channels)
    data_root: str | None = None  # where a folder dataset was read from

    @property
    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo(**{**self.dataset, "mean": tuple(self.dataset["mean"]), "std": tuple(self.dataset["std"])})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def checkpoint_path(path: str | Path) -> Path:
    """Accept either a run folder or the checkpoint file itself."""
    path = Path(path)
    return path / FILENAME if path.is_dir() or not path.suffix else path


def epoch_path(out: str | Path, epoch: int) -> Path:
    """Where a run kept with ``keep_epochs`` stores the weights after ``epoch`` (loadable like any checkpoint)."""
    return Path(out) / "epochs" / f"epoch{epoch:03d}.pt"


def weights_id(state_dict: dict[str, torch.Tensor]) -> str:
    """A short content hash of the weights (names, shapes and values)."""
    h = hashlib.sha1()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


def save(path: str | Path, meta: CheckpointMeta, model_state: dict[str, torch.Tensor], **train_state: Any) -> Path:
    """Write atomically; ``train_state`` (optimizer, epoch, rng, ...) makes the run resumable."""
    path = checkpoint_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "nasrobust_version": nasrobust.__version__,
        "meta": meta.to_dict(),
        "model": model_state,
        "weights_id": weights_id(model_state),
        **train_state,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (CPU tensors), with a clear error for anything else."""
    file = checkpoint_path(path)
    if not file.exists():
        raise NasRobustError(f"no checkpoint at {file}; train one with `nasrobust train` or `nasrobust train-supernet --out {Path(path)}`")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's own message runs to several lines of weights_only advice
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0].rstrip(".")
        raise NasRobustError(f"{file} is not a readable checkpoint (truncated, corrupt, or not written by nasrobust: "
                             f"{first[:120]}); train it again or pass another checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NasRobustError(f"{file} is not a nasrobust checkpoint (expected format {FORMAT})")
    return payload


def meta_of(payload: dict[str, Any]) -> CheckpointMeta:
    return CheckpointMeta(**payload["meta"])


def expect(meta: CheckpointMeta, *, kind: str | None = None, space: str | None = None, path: str | Path = "") -> None:
    """Raise a clear error when a checkpoint is of the wrong kind or space."""
    if kind and meta.kind != kind:
        fix = "`nasrobust train-supernet`" if kind == "supernet" else "`nasrobust train`"
        raise NasRobustError(f"{path} holds a {meta.kind} checkpoint, but a {kind} one is needed (make one with {fix})")
    if space and get_space(space).name != meta.space and get_space(space).for_input_size(meta.dataset["image_size"]).name != meta.space:
        raise NasRobustError(
            f"{path} is a checkpoint of space {meta.space!r}, not {space!r}; pass --space {meta.space} or another checkpoint"
        )


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[ImageClassifier, dict[str, Any]]:
    """A stand-alone network from its checkpoint, weights loaded, in eval mode."""
    payload = read(path)
    return model_from_payload(payload, path, device), payload


def model_from_payload(payload: dict[str, Any], path: str | Path = "", device: torch.device | str = "cpu") -> ImageClassifier:
    """The stand-alone network of an already read checkpoint (``path`` only names it in errors)."""
    meta = meta_of(payload)
    expect(meta, kind="standalone", path=path)
    space = get_space(meta.space)
    arch = space.decode(meta.arch)
    info = meta.dataset_info
    model = ImageClassifier(space.build(arch, num_classes=info.num_classes, input_size=info.image_size, **(meta.build or {})),
                            space.resolution(arch, info.image_size), info.mean, info.std)
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def load_supernet(path: str | Path, device: torch.device | str = "cpu"):
    """A trained supernet (wrapped as a :class:`~nasrobust.supernet.SupernetClassifier`)."""
    payload = read(path)
    return supernet_from_payload(payload, path, device), payload


def supernet_from_payload(payload: dict[str, Any], path: str | Path = "", device: torch.device | str = "cpu"):
    """The supernet of an already read checkpoint (``path`` only names it in errors)."""
    from nasrobust.supernet import build_supernet

    meta = meta_of(payload)
    expect(meta, kind="supernet", path=path)
    info = meta.dataset_info
    model = build_supernet(meta.space, info.image_size, info.mean, info.std, **(meta.supernet or {}))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()
