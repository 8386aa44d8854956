"""Entry points: train a supernet, train a network stand-alone, fine-tune a supernet subnet."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from nasrobust import checkpoint, distributed
from nasrobust.data import ImageData, load_dataset
from nasrobust.determinism import seeded_init
from nasrobust.errors import NasRobustError
from nasrobust.inference import accuracy
from nasrobust.models import ImageClassifier
from nasrobust.space import Arch, SearchSpace, get_space
from nasrobust.supernet import SupernetClassifier, build_supernet, recalibrate, recalibrated_subnet
from nasrobust.train.engine import Trainer, TrainResult
from nasrobust.train.recipe import Recipe
from nasrobust.train.steps import SandwichStep, StandaloneStep

log = logging.getLogger(__name__)


def space_for_data(space_name: str, data: ImageData) -> SearchSpace:
    """The family variant suited to the dataset's image size (small inputs: no early down-sampling)."""
    space = get_space(space_name).for_input_size(data.info.image_size)
    if space.name != space_name:
        log.info("using %s, the small-input variant of %s, for %d-px %s images", space.name, space_name, data.info.image_size, data.info.name)
    return space


def _supernet_evaluator(data: ImageData, recipe: Recipe):
    def evaluate(model: SupernetClassifier) -> dict[str, float]:
        out = {}
        sn = model.supernet
        for name, arch in (("largest", sn.largest()), ("smallest", sn.smallest())):
            recalibrated_subnet(model, arch, data, min(recipe.bn_recalib_images, 1000), extract=False, seed=recipe.seed)
            out[f"test_acc_{name}"] = accuracy(model, data.test)
        return out

    return evaluate


def _standalone_evaluator(data: ImageData, recipe: Recipe, precise_bn: bool):
    """Test accuracy after each epoch; with ``precise_bn`` the BN statistics are re-estimated first (and saved)."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        if precise_bn:
            recalibrate(model, data, recipe.bn_recalib_images, seed=recipe.seed)
        return {"test_acc": accuracy(model, data.test)}

    return evaluate


def train_supernet(space_name: str, dataset: str | ImageData, recipe: Recipe, out: str | Path, *,
                   data_root: str | None = None, device: torch.device | None = None, progress: bool = True,
                   force: bool = False, keep_epochs: bool = False, **supernet_config) -> TrainResult:
    """BigNAS-style sandwich training of ``space_name``'s supernet (its small variant for small images).

    ``force`` replaces a different run already in ``out`` (otherwise an error; the same run resumes);
    ``keep_epochs`` keeps every epoch's weights as well (:func:`nasrobust.checkpoint.epoch_path`).
    The recipe's ``kd_teacher`` is refused: the sandwich rule distils every subnet in place from the
    largest one (BigNAS, sec. 3.1), so an external teacher would never be read.
    """
    if recipe.kd_teacher:
        raise NasRobustError(
            f"--kd-teacher {recipe.kd_teacher} is not used by supernet training: the sandwich rule distils every "
            "subnet in place from the largest one (BigNAS); drop it here, and use it with `nasrobust train` "
            "(e.g. when fine-tuning a subnet --from-supernet)")
    data = dataset if isinstance(dataset, ImageData) else load_dataset(dataset, root=data_root)
    space = space_for_data(space_name, data)
    info = data.info
    config = {"num_classes": info.num_classes, **supernet_config}
    with seeded_init(recipe.seed):  # a fresh process's global RNG is seeded from OS entropy
        model = build_supernet(space.name, info.image_size, info.mean, info.std, **config)
    meta = checkpoint.CheckpointMeta(
        kind="supernet", space=space.name, dataset=info.__dict__, recipe=recipe.to_dict(),
        supernet=config, data_root=data_root,
    )
    make_step = lambda gen, rng, autocast: SandwichStep(recipe, gen, rng, autocast)  # noqa: E731
    trainer = Trainer(model, data, recipe, out, meta, make_step, _supernet_evaluator(data, recipe), device, progress,
                      keep_epochs, force=force)
    return trainer.fit()


def train_standalone(space_name: str, arch: str | Arch, dataset: str | ImageData, recipe: Recipe, out: str | Path, *,
                     from_supernet: str | Path | None = None, data_root: str | None = None,
                     device: torch.device | None = None, progress: bool = True,
                     build_kwargs: dict | None = None, force: bool = False, keep_epochs: bool = False) -> TrainResult:
    """Train ``arch`` from scratch, or fine-tune it starting from a supernet's weights.

    ``build_kwargs`` are extra ``space.build`` options (e.g. ``channels``/``cells_per_stage`` of
    cell spaces); a fine-tuned subnet takes its supernet's. ``force`` replaces a different run
    already in ``out``; ``keep_epochs`` keeps every epoch's weights as well
    (:func:`nasrobust.checkpoint.epoch_path`). A ``kd_teacher`` checkpoint is read (and so
    validated) before anything else.
    """
    teacher_payload = checkpoint.read(recipe.kd_teacher) if recipe.kd_teacher else None
    data = dataset if isinstance(dataset, ImageData) else load_dataset(dataset, root=data_root)
    info = data.info
    parent = None
    if from_supernet is not None:
        supernet, payload = checkpoint.load_supernet(from_supernet)
        meta = checkpoint.meta_of(payload)
        checkpoint.expect(meta, kind="supernet", space=space_name, path=from_supernet)
        if meta.dataset["name"] != info.name:
            raise NasRobustError(f"{from_supernet} was trained on {meta.dataset['name']}, not {info.name}; pass --dataset {meta.dataset['name']}")
        space = get_space(meta.space)
        arch = arch if isinstance(arch, Arch) else space.resolve(arch)
        model = recalibrated_subnet(supernet, arch, data, recipe.bn_recalib_images, seed=recipe.seed)
        parent = payload["weights_id"]
        build_kwargs = supernet.supernet.build_kwargs()
    else:
        space = space_for_data(space_name, data)
        arch = arch if isinstance(arch, Arch) else space.resolve(arch)
        with seeded_init(recipe.seed):
            model = ImageClassifier(space.build(arch, num_classes=info.num_classes, input_size=info.image_size,
                                                **(build_kwargs or {})),
                                    space.resolution(arch, info.image_size), info.mean, info.std)
    if arch.space != space.name:
        raise NasRobustError(f"architecture {arch.encoding} is not in space {space.name}")
    teacher = _teacher(teacher_payload, recipe, data, device)
    meta = checkpoint.CheckpointMeta(
        kind="standalone", space=space.name, arch=arch.encoding, dataset=info.__dict__, recipe=recipe.to_dict(),
        parent=parent, data_root=data_root, build=build_kwargs or None,
    )
    make_step = lambda gen, rng, autocast: StandaloneStep(recipe, gen, teacher, autocast)  # noqa: E731
    precise_bn = recipe.precise_bn if recipe.precise_bn is not None else (
        from_supernet is not None and recipe.adversarial == "none")
    trainer = Trainer(model, data, recipe, out, meta, make_step, _standalone_evaluator(data, recipe, precise_bn), device,
                      progress, keep_epochs, force=force)
    return trainer.fit()


def _teacher(payload: dict | None, recipe: Recipe, data: ImageData, device: torch.device | None) -> nn.Module | None:
    """The distillation teacher (``payload``: its checkpoint, already read): a stand-alone network, or a
    supernet's BN-re-calibrated largest subnet.

    The supernet case lets a fine-tuned subnet keep learning from the largest subnet that taught
    it in-place during sandwich training (BigNAS / OFA style).
    """
    if payload is None:
        return None
    if checkpoint.meta_of(payload).kind == "supernet":
        supernet = checkpoint.supernet_from_payload(payload, recipe.kd_teacher)
        teacher = recalibrated_subnet(supernet, supernet.supernet.largest(), data, recipe.bn_recalib_images,
                                      seed=recipe.seed)
    else:
        teacher = checkpoint.model_from_payload(payload, recipe.kd_teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device or distributed.local_device()).eval()
