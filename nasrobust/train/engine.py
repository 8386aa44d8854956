"""The training loop shared by supernet, stand-alone and fine-tuning runs.

Owns what every run needs: seeding, the data loader (sharded under torchrun), optimiser and
per-iteration LR schedule, AMP / channels_last on CUDA, EMA of weights, gradient
synchronisation, progress bars, a CSV log per epoch, an atomic checkpoint per epoch and
resuming from it. What a step computes is a strategy (:mod:`nasrobust.train.steps`); what an
epoch's evaluation reports is a callback.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from nasrobust import checkpoint, distributed
from nasrobust.data import ImageData
from nasrobust.determinism import deterministic_kernels
from nasrobust.errors import NasRobustError
from nasrobust.train.augment import BatchAugment
from nasrobust.train.recipe import Recipe, stored_recipe
from nasrobust.train.schedule import make_scheduler

log = logging.getLogger(__name__)
SYNC_EVERY = 50  # CUDA: training steps between progress-bar updates (each reads the sums: a host-device sync)

Evaluate = Callable[[nn.Module], dict[str, float]]


@dataclasses.dataclass
class TrainResult:
    checkpoint: Path
    history: list[dict[str, Any]]
    weights_id: str
    resumed_from_epoch: int


def seed_everything(seed: int) -> None:
    """Seed the global generators that library augmentations (timm, torchvision) draw from."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(model, recipe.weight_decay)  # no decay on BN and biases
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0)


def _autocast_factory(device: torch.device, recipe: Recipe) -> Callable[[], object]:
    if recipe.amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext


def _rng_state(numpy_rng: np.random.Generator, generator: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy_global": list(np.random.get_state()[1].tolist()) + [int(np.random.get_state()[2])],
        "numpy_rng": numpy_rng.bit_generator.state["state"]["state"],
        "numpy_inc": numpy_rng.bit_generator.state["state"]["inc"],
        "generator": generator.get_state(),
        "python": random.getstate(),
    }


def _restore_rng(state: dict[str, Any], numpy_rng: np.random.Generator, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_global"]
    np.random.set_state(("MT19937", np.array(keys[:-1], dtype=np.uint32), keys[-1]))
    bg = numpy_rng.bit_generator.state
    bg["state"] = {"state": int(state["numpy_rng"]), "inc": int(state["numpy_inc"])}
    numpy_rng.bit_generator.state = bg
    generator.set_state(state["generator"])
    if "python" in state:  # absent in checkpoints written before it was seeded
        random.setstate(state["python"])


class Trainer:
    """Runs ``recipe`` on ``model`` with a step strategy; checkpoints into ``out``.

    ``meta`` describes the run (space, arch or supernet config, dataset, recipe) and is
    stored in the checkpoint. An existing checkpoint in ``out`` with the same meta is
    resumed; a different one is an error (choose another ``--out``). ``keep_epochs`` also keeps
    every epoch's weights (:func:`~nasrobust.checkpoint.epoch_path`), e.g. to pick the epoch of
    best robust accuracy or to study how representations change late in training.
    """

    def __init__(
        self,
        model: nn.Module,
        data: ImageData,
        recipe: Recipe,
        out: str | Path,
        meta: checkpoint.CheckpointMeta,
        make_step: Callable[[torch.Generator, np.random.Generator, Callable[[], object]], Any],
        evaluate: Evaluate | None = None,
        device: torch.device | None = None,
        progress: bool = True,
        keep_epochs: bool = False,
        force: bool = False,
    ):
        self.force = force
        self.device = device or distributed.local_device()
        deterministic_kernels(self.device)
        self.distributed = distributed.init(self.device)
        self.model = model.to(self.device)
        self.data = data
        self.recipe = recipe
        self.out = Path(out)
        if distributed.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.evaluate = evaluate
        self.keep_epochs = keep_epochs
        self.progress = progress and distributed.is_main()
        seed_everything(recipe.seed + distributed.rank())
        self.generator = torch.Generator().manual_seed(recipe.seed + 7919 * distributed.rank())
        self.numpy_rng = np.random.default_rng(recipe.seed)  # same on every rank: same subnets per step
        autocast = _autocast_factory(self.device, recipe)
        self.step = make_step(self.generator, self.numpy_rng, autocast)
        if self.device.type == "cuda" and recipe.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ set-up
    def _loader(self) -> DataLoader:
        world = distributed.world_size()
        per_rank = max(1, self.recipe.batch_size // world)
        if per_rank * world != self.recipe.batch_size:
            log.warning("batch size %d is not divisible by %d ranks; using %d per rank", self.recipe.batch_size, world, per_rank)
        if len(self.data.train) < per_rank:
            raise NasRobustError(f"the training set has {len(self.data.train)} images, fewer than one batch ({per_rank}); lower --batch-size")
        sampler = None
        if self.distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(self.data.train, shuffle=True, seed=self.recipe.seed, drop_last=True)
        self.shuffle = torch.Generator()
        return DataLoader(
            self.data.train, batch_size=per_rank, shuffle=sampler is None, sampler=sampler, drop_last=True,
            generator=self.shuffle if sampler is None else None,
            num_workers=self.recipe.num_workers, pin_memory=self.device.type == "cuda",
        )

    def _resumable(self, ckpt_file: Path) -> dict[str, Any] | None:
        """The checkpoint to resume from: the same run's, or ``None`` (none there, or a different run
        that ``force`` replaces; without it a different run is an error)."""
        if not ckpt_file.exists():
            return None
        try:
            payload = checkpoint.read(ckpt_file)
            old = checkpoint.meta_of(payload)
        except (NasRobustError, TypeError) as exc:
            if not self.force:
                raise NasRobustError(f"{ckpt_file} cannot be resumed ({exc}); pass --force to start over") from None
            return None
        old = dataclasses.replace(old, recipe=stored_recipe(old.recipe))
        if old == self.meta:
            return payload
        if not self.force:
            diff = [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(self.meta, f.name)]
            raise NasRobustError(
                f"{self.out} already holds a different run (differs in: {', '.join(diff)}); "
                "use another --out, or pass --force to replace it"
            )
        log.info("replacing the different run in %s (--force)", self.out)
        return None

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        r = self.recipe
        loader = self._loader()
        steps_per_epoch = len(loader)
        lr = r.lr * distributed.world_size()  # linear scaling: lr is given for one process's batch
        optimizer = _optimizer(self.model, r, lr)
        scheduler = make_scheduler(optimizer, r, steps_per_epoch)
        use_ddp = self.distributed and not hasattr(self.model, "set_active")
        train_model: nn.Module = self.model
        if use_ddp:
            train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            distributed.broadcast_module(self.model)
        scaler = torch.amp.GradScaler("cuda", enabled=r.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported())
        ema = None
        if r.ema_decay:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(self.model, decay=r.ema_decay)
        augment = BatchAugment(r, self.data.info.num_classes, self.generator)

        start_epoch, history = 0, []
        ckpt_file = checkpoint.checkpoint_path(self.out)
        payload = self._resumable(ckpt_file)
        if payload is not None:
            self.model.load_state_dict(payload["train_model"] if payload.get("train_model") is not None else payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            if ema is not None and payload.get("ema") is not None:
                ema.module.load_state_dict(payload["ema"])
            _restore_rng(payload["rng"], self.numpy_rng, self.generator)
            start_epoch, history = int(payload["epoch"]), list(payload["history"])
            if start_epoch >= r.epochs:
                log.info("%s is already complete (%d epochs)", ckpt_file, start_epoch)
                return TrainResult(ckpt_file, history, payload["weights_id"], start_epoch)
            log.info("resuming %s from epoch %d of %d", ckpt_file, start_epoch, r.epochs)
        elif distributed.is_main():
            (self.out / "log.csv").unlink(missing_ok=True)  # a fresh run's log starts empty
        resumed_from = start_epoch

        for epoch in range(start_epoch, r.epochs):
            # the data order depends on (seed, epoch) only, so a resumed run sees what it would have
            self.shuffle.manual_seed(r.seed * 1_000_003 + epoch)
            if isinstance(loader.sampler, torch.utils.data.distributed.DistributedSampler):
                loader.sampler.set_epoch(epoch)
            t0 = time.time()
            stats = self._train_epoch(train_model, loader, optimizer, scheduler, scaler, ema, augment, epoch)
            row = {"epoch": epoch + 1, **stats, "seconds": round(time.time() - t0, 2)}
            final_model = ema.module if ema is not None else self.model
            if self.evaluate is not None and distributed.is_main():
                row.update(self.evaluate(final_model))
            history.append(row)
            if distributed.is_main():
                self._log_row(row)
                checkpoint.save(
                    ckpt_file, self.meta, final_model.state_dict(),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    ema=ema.module.state_dict() if ema is not None else None,
                    train_model=self.model.state_dict() if ema is not None else None,
                    epoch=epoch + 1, history=history, rng=_rng_state(self.numpy_rng, self.generator),
                    finished=epoch + 1 == r.epochs,
                )
                if self.keep_epochs:
                    checkpoint.save(checkpoint.epoch_path(self.out, epoch + 1), self.meta, final_model.state_dict(),
                                    epoch=epoch + 1, history=list(history))
                log.info("epoch %d/%d %s", epoch + 1, r.epochs, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"))
            distributed.barrier()
        payload = checkpoint.read(ckpt_file)
        return TrainResult(ckpt_file, history, payload["weights_id"], resumed_from)

    def _train_epoch(self, model, loader, optimizer, scheduler, scaler, ema, augment, epoch) -> dict[str, float]:
        from tqdm.auto import tqdm

        model.train()
        # sums stay on the device: on CUDA the host reads them (a sync) only for the progress bar every
        # SYNC_EVERY steps and once at the end of the epoch; float64 adds give the numbers float() did
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        count = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.recipe.epochs}", disable=not self.progress, leave=False, dynamic_ncols=True)
        cuda = self.device.type == "cuda"
        channels_last = cuda and self.recipe.channels_last
        lr = optimizer.param_groups[0]["lr"]
        for i, (x, y) in enumerate(bar):
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after the step)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x, y = augment(x, y)
            optimizer.zero_grad(set_to_none=True)
            result = self.step(model, x, y, scaler.scale)
            if not cuda:  # free on the CPU: stop at the first bad step
                self._check_finite(float(result.loss), epoch)
            if hasattr(self.model, "set_active"):
                distributed.average_gradients(self.model.parameters())
            if self.recipe.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), self.recipe.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(self.model)
            loss_sum += result.loss * result.count
            correct += result.correct
            count += result.count
            if not bar.disable and (not cuda or i % SYNC_EVERY == 0):
                bar.set_postfix(loss=f"{float(loss_sum) / count:.3f}", acc=f"{int(correct) / count:.3f}")
        bar.close()
        self._check_finite(float(loss_sum), epoch)  # CUDA: once per epoch, before this epoch's checkpoint
        loss_total, correct_total, count_total = distributed.all_sum([float(loss_sum), int(correct), count])
        return {"lr": lr, "train_loss": loss_total / count_total, "train_acc": correct_total / count_total}

    def _check_finite(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise NasRobustError(
                f"training diverged at epoch {epoch + 1} (loss {loss}); lower --lr or add warm-up. "
                f"The last finished epoch is kept in {self.out}"
            )

    def _log_row(self, row: dict[str, Any]) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        if not new:
            with path.open() as f:
                header = next(csv.reader(f), [])
            if header != list(row):
                new = True
                path.rename(path.with_suffix(".csv.old"))
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        try:  # TensorBoard when installed; the CSV is always written
            from torch.utils.tensorboard import SummaryWriter
        except Exception:
            return
        with SummaryWriter(str(self.out / "tensorboard")) as tb:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, row["epoch"])
