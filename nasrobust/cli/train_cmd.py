"""``nasrobust train-supernet`` and ``nasrobust train``."""

from __future__ import annotations

import argparse

from nasrobust.cli.common import positive_int
from nasrobust.cli.guard import add_force
from nasrobust.options import parse_assignments
from nasrobust.train.recipe import SCHEDULES


def _recipe_args(p: argparse.ArgumentParser, teacher: bool = True) -> None:
    g = p.add_argument_group("recipe (defaults: the --preset)")
    g.add_argument("--preset", default="quick", help="recipe preset: quick (CPU, mnist-sized), cifar, bignas, pgd-at")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=float)
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=SCHEDULES, help="lr schedule after warm-up: cosine, bignas (exponential with "
                   "constant ending), constant, or step (piecewise constant, see --lr-milestones)")
    g.add_argument("--lr-milestones", type=float, nargs="+", metavar="FRACTION",
                   help="step schedule: fractions of the run where the lr is multiplied by --lr-decay (default 0.5 0.75)")
    g.add_argument("--lr-decay", type=float, help="step schedule: factor at each milestone (default 0.1)")
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--mixup", type=float, help="mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=float, help="cutmix alpha (0 = off)")
    g.add_argument("--augment", choices=["none", "randaugment", "autoaugment"])
    g.add_argument("--random-crop", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--precise-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="re-estimate BN statistics on clean training images before each evaluation and checkpoint "
                   "(default: on when fine-tuning --from-supernet without --adv)")
    g.add_argument("--ema-decay", type=float, help="keep an EMA of the weights (e.g. 0.999)")
    # supernet training distils in place from its largest subnet: the flag is parsed there only to say so
    g.add_argument("--kd-teacher", help="checkpoint of a teacher network for knowledge distillation; a supernet checkpoint "
                   "means its BN-re-calibrated largest subnet" if teacher else argparse.SUPPRESS)
    g.add_argument("--adv", dest="adversarial", choices=["none", "pgd", "fgsm-rs", "trades"], help="adversarial training")
    g.add_argument("--adv-eps", type=float, help="Linf radius of adversarial training (inputs in [0, 1])")
    g.add_argument("--adv-steps", type=positive_int)
    g.add_argument("--adv-alpha", type=float, help="attack step size (default 2.5 eps / steps)")
    g.add_argument("--trades-beta", type=float)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (CUDA only)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="(CUDA only)")
    g.add_argument("--seed", type=int)
    g.add_argument("--num-workers", type=int)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="mnist5k, digits, cifar10, cifar100 or imagefolder")
    p.add_argument("--data-root", help="folder of a dataset that is not bundled (cifar*, imagefolder)")
    p.add_argument("--download", action="store_true", help="download CIFAR into --data-root if missing")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.csv (a rerun resumes)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--keep-epochs", action="store_true",
                   help="also keep every epoch's weights as OUT/epochs/epochNNN.pt (e.g. for the best robust epoch)")
    add_force(p, "a different run already in --out (its checkpoint and log are replaced)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-supernet", help="BigNAS sandwich training of a weight-sharing supernet")
    p.add_argument("--space", required=True)
    _data_args(p)
    _recipe_args(p, teacher=False)
    p.add_argument("--supernet-option", action="append", default=[], metavar="KEY=VALUE",
                   help="supernet option of the space, e.g. channels=8 or cells_per_stage=1 (cell spaces)")
    g = p.add_argument_group("sandwich rule")
    g.add_argument("--num-random", dest="sandwich_num_random", type=int, help="random subnets per step besides largest and smallest (default 2)")
    g.add_argument("--no-inplace-distill", dest="sandwich_inplace_distill", action="store_false", default=None)
    g.add_argument("--reg-all", dest="sandwich_reg_largest_only", action="store_false", default=None, help="regularise every subnet, not only the largest")
    g.add_argument("--adv-target", dest="sandwich_adv_target", choices=["each", "largest"], help="make adversarial examples against each subnet or the largest")
    p.set_defaults(func=cmd_train_supernet)

    p = sub.add_parser("train", help="train one architecture stand-alone (or fine-tune it from a supernet)")
    p.add_argument("--space", required=True)
    p.add_argument("--arch", required=True, help="encoding or named point")
    p.add_argument("--from-supernet", help="supernet checkpoint to start from (fine-tuning)")
    p.add_argument("--build-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra network option of the space, e.g. channels=8 or cells_per_stage=2 (cell spaces)")
    _data_args(p)
    _recipe_args(p)
    p.set_defaults(func=cmd_train)


_RECIPE_KEYS = (
    "epochs", "batch_size", "lr", "optimizer", "weight_decay", "schedule", "lr_milestones", "lr_decay", "warmup_epochs",
    "label_smoothing", "mixup", "cutmix", "augment", "random_crop", "ema_decay", "kd_teacher", "adversarial", "adv_eps", "adv_steps",
    "adv_alpha", "trades_beta", "amp", "channels_last", "precise_bn", "seed", "num_workers",
    "sandwich_num_random", "sandwich_inplace_distill", "sandwich_reg_largest_only", "sandwich_adv_target",
)


def recipe_from_args(args: argparse.Namespace):
    from nasrobust.train.recipe import get_preset

    return get_preset(args.preset).replace(**{k: getattr(args, k, None) for k in _RECIPE_KEYS})


def _data(args: argparse.Namespace):
    from nasrobust.data import load_dataset

    return load_dataset(args.dataset, root=args.data_root, download=args.download)


def _report(result) -> None:
    from nasrobust import distributed

    if not distributed.is_main():
        return
    last = result.history[-1] if result.history else {}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith("test_acc"))
    print(f"checkpoint {result.checkpoint} (weights {result.weights_id}); {shown}")


def cmd_train_supernet(args: argparse.Namespace) -> int:
    from nasrobust.outputs import check_output
    from nasrobust.train.api import train_supernet

    check_output(args.out, folder=True)
    recipe = recipe_from_args(args)
    result = train_supernet(args.space, _data(args), recipe, args.out, data_root=args.data_root,
                            progress=not args.no_progress, force=args.force, keep_epochs=args.keep_epochs,
                            **parse_assignments(args.supernet_option, what="--supernet-option"))
    _report(result)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nasrobust.outputs import check_output
    from nasrobust.train.api import train_standalone

    check_output(args.out, folder=True)
    build = parse_assignments(args.build_option, what="--build-option")
    result = train_standalone(args.space, args.arch, _data(args), recipe_from_args(args), args.out,
                              from_supernet=args.from_supernet, data_root=args.data_root, progress=not args.no_progress,
                              build_kwargs=build or None, force=args.force, keep_epochs=args.keep_epochs)
    _report(result)
    return 0
