"""One command from nothing to a RobustART-style study: sample -> train supernet -> evaluate -> analyze.

A study lives in one folder::

    out/config.toml      every setting, resolved (``nasrobust study --config out/config.toml`` reruns it)
    out/archs.jsonl      the sampled architectures with cost and factors (stage 1)
    out/supernet/        the weight-sharing supernet checkpoint (stage 2; reused when finished)
    out/results.db       the SQLite result store (stage 3; one row per number)
    out/standalone/      subnets fine-tuned from the supernet, scored into results.db (stage 4, --standalone-check)
    out/report/          report.html, report.md, figures/, tables/ (stage 5)

Each stage keeps what it finished, so re-running the same command continues where a killed
run stopped: the sample is deterministic, training resumes from its last epoch, evaluation
skips complete (architecture, suite) units, and the report is rebuilt from the store.

Under ``torchrun`` the supernet trains data-parallel and the subnets are sharded across ranks,
each writing its own store file that rank 0 merges into ``results.db`` (:mod:`nasrobust.rankstore`);
rank 0 writes the sample and the report.

How many subnets are scored, and how hard, is the *protocol*: ``full`` (every sampled subnet,
each suite's published defaults, the whole test set) when a GPU is present, else ``cpu``
(:data:`CPU_PROTOCOL`: the first 30 sampled subnets on a smaller but complete protocol, in 2 replicate
supernets so every finding is checked for replication, inside 30 minutes on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from nasrobust.errors import NasRobustError
from nasrobust.noise.base import SUITES

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.evaluation import EvalProtocol

log = logging.getLogger(__name__)

#: Every registered suite (a study runs all of them unless told otherwise).
ALL_SUITES: tuple[str, ...] = tuple(SUITES.names())


@dataclass(frozen=True)
class StudyProtocol:
    """How many subnets are scored and with which suite options."""

    eval_archs: int | None  # None: every sampled architecture
    n_examples: int | None  # test images per evaluation (None: the whole test set)
    recalib_images: int  # BN re-calibration images per subnet
    suite_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    replicates: int = 1  # supernets per technique unless --replicates is given (a finding must replicate)
    standalone_check: int = 0  # scored subnets fine-tuned stand-alone unless --standalone-check is given
    #: suites scored on only the first N evaluated subnets (a costly suite on a subset; the rest get every suite)
    suite_archs: Mapping[str, int] = field(default_factory=dict)


def _cpu_options() -> dict[str, dict[str, Any]]:
    """Each suite's own reduced protocol (``NoiseSuite.cpu_options``)."""
    return {name: dict(SUITES.get_class(name).cpu_options) for name in ALL_SUITES if SUITES.get_class(name).cpu_options}


def _described(options: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(f"{suite} " + ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                                            for k, v in opts.items()) for suite, opts in options.items())


#: CPU-sized: every suite and noise family is present, each at fewer points (the suite's
#: ``cpu_options``) and on the first 100 (class-interleaved) test digits, in 2 replicate supernets, inside
#: 30 minutes on 2 cores (benchmarks/study.md). Measured on a trained supernet, one thread per subnet
#: (benchmarks/study.md): training 5.5 min per replicate; adversarial ~17 s (the min-norm radius ~11 of them),
#: natural 3.6 s, system 2.1 s; certified CROWN-zono ~20 s per test image. So 30 subnets per replicate, and
#: the certified suite on the first 4 of them with 2 images each.
_CPU_SUBNETS, _CPU_CERTIFIED_SUBNETS = 30, 4
CPU_PROTOCOL = StudyProtocol(
    eval_archs=_CPU_SUBNETS,
    n_examples=100,
    recalib_images=500,
    suite_options=_cpu_options(),
    description=f"CPU subset: {_CPU_SUBNETS} subnets (certified: the first {_CPU_CERTIFIED_SUBNETS}), 100 test "
                f"images, 2 replicates, 3 stand-alone checks; {_described(_cpu_options())}",
    replicates=2,  # issue 11: the CPU main command checks its findings across 2 supernets
    # issue 11 item 5: the fewest subnets the supernet vs stand-alone Kendall tau accepts (analysis.replication)
    standalone_check=3,
    suite_archs={"certified": _CPU_CERTIFIED_SUBNETS},
)

#: Every sampled subnet, each suite's published defaults, the whole test set.
FULL_PROTOCOL = StudyProtocol(eval_archs=None, n_examples=None, recalib_images=2000, suite_options={},
                         description="all subnets, each suite's defaults, whole test set", standalone_check=20)

PROTOCOLS: dict[str, StudyProtocol] = {"cpu": CPU_PROTOCOL, "full": FULL_PROTOCOL}


#: How a stand-alone check fine-tunes a subnet from the supernet: benchmarks/finetune.md found 1 epoch at lr 0.005
#: without warm-up (precise BN on, the fine-tuning default) loses no accuracy on any checked subnet.
FINETUNE: dict[str, Any] = {"epochs": 1, "lr": 0.005, "warmup_epochs": 0.0}


def standalone_indices(evaluated: int, n: int) -> list[int]:
    """Positions (in the sampled order) of the ``n`` subnets a stand-alone check fine-tunes: evenly spaced over the
    ``evaluated`` scored subnets, the first and the last included (floor spacing keeps them distinct)."""
    if n <= 0:
        return []
    if n == 1:
        return [0]
    return [i * (evaluated - 1) // (n - 1) for i in range(n)]


RUN_SETTINGS = ("workers",)  # settings of how a study runs, not of what it computes


def _cores() -> int:
    from nasrobust.workers import cores

    return cores()


def _evaluate_worker(payload: tuple) -> int:
    """One spawned evaluation worker of a study: claims and scores units until none is left."""
    from nasrobust.claims import Claims
    from nasrobust.evaluation import evaluate

    ckpt, dataset, data_root, kw = payload
    with Claims(kw["db"]) as claims:
        evaluate(ckpt, data=dataset, data_root=data_root, progress=False, claims=claims, **kw)
    return 0


@dataclass(frozen=True)
class StudyConfig:
    """Everything a study did; written to ``out/config.toml`` resolved (no 'auto' left)."""

    space: str = "bignas"
    n: int = 1200
    dataset: str = "mnist5k"
    out: str = "study"
    data_root: str | None = None
    seed: int = 0
    preset: str = "quick"
    recipe: Mapping[str, Any] = field(default_factory=dict)  # overrides of the preset
    supernet: Mapping[str, Any] = field(default_factory=dict)  # supernet options of the space (e.g. channels)
    protocol: str = "auto"  # cpu | full | auto (full with a GPU)
    eval_archs: int | None = None  # overrides the protocol's
    n_examples: int | None = None  # overrides the protocol's
    suites: tuple[str, ...] = ALL_SUITES
    suite_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # on top of the protocol's
    suite_archs: Mapping[str, int] = field(default_factory=dict)  # SUITE -> first N subnets it scores; on the protocol's
    recalib_images: int | None = None
    batch_size: int = 256
    n_boot: int = 1000
    cache_dir: str | None = None
    replicates: int | None = None  # supernets trained with seeds recipe.seed + r, r = 0..K-1, the same subnets
    # scored in each; None: the protocol's (cpu 2, full 1)
    techniques: tuple[str, ...] = ("standard",)  # train.recipe.TECHNIQUES names or presets; one supernet each x replicate
    standalone_check: int | None = None  # scored subnets fine-tuned from supernet replicate 0 (technique standard)
    # and scored with the same protocol; None: the protocol's (cpu 3, full 20); 0: no check
    workers: int | None = None  # run setting (RUN_SETTINGS): evaluation worker processes; results do not depend on it

    # ------------------------------------------------------------------ resolution
    def resolved(self, has_gpu: bool) -> "StudyConfig":
        """Fill every 'auto' / unset field from the protocol and the recipe preset."""
        from nasrobust.space import get_space
        from nasrobust.train.recipe import Recipe, check_technique, get_preset

        from nasrobust.supernet import check_supernet_options

        check_supernet_options(get_space(self.space), self.supernet)  # unknown space or option: before any work
        if self.n < 1:
            raise NasRobustError(f"--n must be >= 1, got {self.n}")
        if self.replicates is not None and self.replicates < 1:
            raise NasRobustError(f"--replicates must be >= 1, got {self.replicates}")
        if not self.techniques or len(set(self.techniques)) != len(self.techniques):
            raise NasRobustError(f"--techniques must name each technique once, got {','.join(self.techniques)!r}")
        for technique in self.techniques:  # before any work
            check_technique(technique)
        name = ("full" if has_gpu else "cpu") if self.protocol == "auto" else self.protocol
        if name not in PROTOCOLS:
            raise NasRobustError(f"unknown protocol {self.protocol!r}; valid: auto, {', '.join(PROTOCOLS)}")
        unknown = set(self.suites) - set(ALL_SUITES)
        if unknown or not self.suites:
            raise NasRobustError(f"unknown suite(s) {sorted(unknown)}; valid: {', '.join(ALL_SUITES)}")
        p = PROTOCOLS[name]
        options = {s: {**p.suite_options.get(s, {}), **self.suite_options.get(s, {})} for s in self.suites}
        for suite, given in options.items():  # a bad option fails now, not after the supernet is trained
            SUITES.get_class(suite).from_options(given)
        eval_archs = min((self.eval_archs if self.eval_archs is not None else p.eval_archs) or self.n, self.n)
        suite_archs = {s: n for s, n in {**p.suite_archs, **self.suite_archs}.items() if s in self.suites}
        for suite, n in {**p.suite_archs, **self.suite_archs}.items():
            if suite not in ALL_SUITES or not isinstance(n, int) or n < 1:
                raise NasRobustError(f"--suite-archs {suite}={n}: expected a registered suite ({', '.join(ALL_SUITES)}) "
                                     f"and a number of subnets >= 1, e.g. certified=10")
        suite_archs = {s: min(n, eval_archs) for s, n in suite_archs.items()}
        alone = self.standalone_check if self.standalone_check is not None else min(p.standalone_check, eval_archs)
        if alone < 0:
            raise NasRobustError(f"--standalone-check must be >= 0 (0 turns the check off), got {alone}")
        if alone > eval_archs:
            raise NasRobustError(f"--standalone-check {alone} exceeds the {eval_archs} evaluated subnets; pass "
                                 f"--standalone-check {eval_archs} or less, or more --eval-archs")
        # the study seed trains the supernet unless the recipe names its own seed (it used to be the preset's 0 always)
        recipe = Recipe.from_dict({**get_preset(self.preset).to_dict(), "seed": self.seed, **self.recipe}).to_dict()
        return dataclasses.replace(
            self, protocol=name, eval_archs=eval_archs, standalone_check=alone,
            n_examples=self.n_examples if self.n_examples is not None else p.n_examples,
            recalib_images=self.recalib_images or p.recalib_images,
            replicates=self.replicates if self.replicates is not None else p.replicates,
            suite_options={s: o for s, o in options.items() if o}, suite_archs=suite_archs, recipe=recipe,
            workers=self.workers or (1 if has_gpu else _cores()),
        )

    def suite_groups(self) -> list[tuple[int, tuple[str, ...]]]:
        """``(n, suites)``: the suites that score the first ``n`` evaluated subnets, most subnets first."""
        n_of = {s: self.suite_archs.get(s, self.eval_archs) for s in self.suites}
        return [(n, tuple(s for s in self.suites if n_of[s] == n)) for n in sorted(set(n_of.values()), reverse=True)]

    def eval_protocol(self) -> EvalProtocol:
        """The evaluation protocol of a :meth:`resolved` config (what :func:`nasrobust.evaluate` runs)."""
        from nasrobust.evaluation import EvalProtocol

        if self.recalib_images is None:
            raise ValueError("eval_protocol() needs a resolved config (StudyConfig.resolved)")
        return EvalProtocol(n_examples=self.n_examples, seed=self.seed, recalib_images=self.recalib_images,
                            suite_options={s: dict(o) for s, o in self.suite_options.items()})

    # ------------------------------------------------------------------ TOML
    def to_toml(self) -> str:
        data = {k: _plain(v) for k, v in dataclasses.asdict(self).items() if v is not None}
        return ("# nasrobust study: everything this study did. Reproduce with\n"
                f"#   nasrobust study --config {Path(self.out) / 'config.toml'}\n" + tomli_w.dumps(data))

    @classmethod
    def from_toml(cls, path: str | Path) -> "StudyConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise NasRobustError(f"no study config at {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise NasRobustError(f"{path} is not valid TOML: {exc}") from None
        data.pop("runs", None)  # the [[runs]] table records what ran (Study.record_run); it is no setting
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise NasRobustError(f"{path}: unknown study setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
        from nasrobust.fieldtypes import check_fields
        from nasrobust.train.recipe import Recipe

        check_fields(cls, data, str(path))
        check_fields(Recipe, data.get("recipe", {}), f"{path} [recipe]")
        for key in ("suites", "techniques"):
            if key in data:
                data[key] = tuple(data[key])
        if not isinstance(data.get("suite_archs", {}), dict):
            raise NasRobustError(f"{path}: suite_archs must be a table of SUITE = N, e.g. suite_archs = {{certified = 10}}")
        data["suite_options"] = {s: {k: tuple(v) if isinstance(v, list) else v for k, v in o.items()}
                                 for s, o in data.get("suite_options", {}).items()}
        return cls(**data)


def _plain(value: Any) -> Any:
    """TOML-writable copy: tuples -> lists, mappings -> dicts, None values dropped."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class StudyResult:
    out: Path
    archs: Path
    checkpoint: Path
    db: Path
    report: Path | None
    evaluated: int
    seconds: dict[str, float]


class Study:
    """Runs the four stages of a :class:`StudyConfig` (see the module docstring)."""

    def __init__(self, config: StudyConfig, *, progress: bool = True, device=None, force: bool = False):
        from nasrobust import distributed

        self.force = force  # replace a study with other settings in the folder

        self.device = device or distributed.local_device()
        self.config = config.resolved(has_gpu=self.device.type == "cuda")
        self.out = Path(self.config.out)
        self.progress = progress
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ paths
    @property
    def config_file(self) -> Path:
        return self.out / "config.toml"

    @property
    def archs_file(self) -> Path:
        return self.out / "archs.jsonl"

    @property
    def supernet_dir(self) -> Path:
        return self.out / "supernet"

    def replicate_dir(self, replicate: int, technique: str = "standard") -> Path:
        """Replicate 0 trains in ``supernet/`` (the one-replicate layout), replicate r in ``supernet-r{r}/``;
        a technique other than ``standard`` in ``supernet-{technique}/`` and ``supernet-{technique}-r{r}/``."""
        name = "supernet" if technique == "standard" else f"supernet-{technique}"
        return self.out / (name if replicate == 0 else f"{name}-r{replicate}")

    def replicate_seed(self, replicate: int) -> int:
        """Training seed of a replicate: the resolved recipe seed (the study seed by default) plus r."""
        return int(self.config.recipe["seed"]) + replicate

    def record_run(self, ckpt: Path, *, replicate: int, technique: str = "standard", kind: str = "supernet",
                   seed: int | None = None) -> None:
        """Append the run to config.toml's ``[[runs]]`` (coord RUNS.md) unless it is there already (resume);
        ``seed`` defaults to the replicate's training seed."""
        from nasrobust import checkpoint

        run = {"weights_id": checkpoint.read(ckpt)["weights_id"], "technique": technique, "replicate": replicate,
               "seed": self.replicate_seed(replicate) if seed is None else seed, "kind": kind}
        if run in tomllib.loads(self.config_file.read_text()).get("runs", []):
            return
        with self.config_file.open("a") as f:
            f.write("\n" + tomli_w.dumps({"runs": [run]}))

    @property
    def standalone_dir(self) -> Path:
        return self.out / "standalone"

    @property
    def standalone_technique(self) -> str:
        """The technique whose replicate-0 supernet the stand-alone check fine-tunes from: standard if trained."""
        return "standard" if "standard" in self.config.techniques else self.config.techniques[0]

    @property
    def db(self) -> Path:
        return self.out / "results.db"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    # ------------------------------------------------------------------ run
    def run(self) -> StudyResult:
        from nasrobust import distributed
        from nasrobust.data import load_dataset

        distributed.init(self.device)
        if distributed.is_main():
            self._write_config()
        distributed.barrier()
        data = load_dataset(self.config.dataset, root=self.config.data_root)
        archs = self._timed("sample", lambda: self.sample(data))
        ckpts = []
        for technique in self.config.techniques:  # one supernet per technique x replicate, the same subnets in each
            for r in range(self.config.replicates or 1):  # resolved: never None
                ckpt = self._timed("train", lambda: self.train(data, replicate=r, technique=technique))
                if distributed.is_main():
                    self.record_run(ckpt, replicate=r, technique=technique)
                self._timed("evaluate", lambda: self.evaluate(data, archs[: self.config.eval_archs], ckpt))
                ckpts.append(ckpt)
        if self.config.standalone_check:
            self._timed("standalone", lambda: self.standalone(data, archs[: self.config.eval_archs]))
        distributed.barrier()
        report = self._timed("analyze", self.analyze) if distributed.is_main() else None
        return StudyResult(self.out, self.archs_file, ckpts[0], self.db, report, self.config.eval_archs, dict(self.seconds))

    def _timed(self, stage: str, fn):
        from nasrobust import distributed

        stages = ("sample", "train", "evaluate", "standalone", "analyze")
        if distributed.is_main():
            log.info("stage %d/%d: %s", stages.index(stage) + 1, len(stages), stage)
        t0 = time.perf_counter()
        result = fn()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0  # summed over replicates
        if distributed.is_main():
            log.info("stage %s done in %.0f s", stage, self.seconds[stage])
        return result

    def _write_config(self) -> None:
        """Write the resolved config; refuse to mix two different studies in one folder."""
        text = self.config.to_toml()
        if self.config_file.exists():
            previous = StudyConfig.from_toml(self.config_file)
            from nasrobust.train.recipe import stored_recipe

            if previous.recipe:  # written resolved: a full recipe, less the fields added since
                previous = dataclasses.replace(previous, recipe=stored_recipe(previous.recipe))
            old, new = (_plain({k: v for k, v in dataclasses.asdict(c).items() if k not in RUN_SETTINGS})
                        for c in (previous, self.config))
            if old == new:  # the same study; run settings (workers) may differ
                self.config_file.write_text(text)
                return
            if not self.force:
                diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                raise NasRobustError(
                    f"{self.out} holds a study with other settings ({'; '.join(diff)}). Continue it with "
                    f"`nasrobust study --config {self.config_file}`, choose a new --out, or pass --force to replace it"
                )
            self._discard()
        self.out.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text)

    def _discard(self) -> None:
        """Delete the previous study's files (only the ones a study writes)."""
        import shutil

        log.info("replacing the study in %s (--force)", self.out)
        for path in (self.config_file, self.archs_file, *(self.db.with_name(self.db.name + x) for x in ("", "-wal", "-shm"))):
            path.unlink(missing_ok=True)
        for folder in (self.supernet_dir, *self.out.glob("supernet-*"), self.standalone_dir, self.report_dir):
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ stages
    def sample(self, data) -> list:
        """The ``n`` architectures (of the space's small-input variant for small images)."""
        from nasrobust import distributed
        from nasrobust.io import write_records
        from nasrobust.space import get_space

        space = get_space(self.config.space).for_input_size(data.info.image_size)
        archs = space.sample(self.config.n, seed=self.config.seed)
        if distributed.is_main() and not self.archs_file.exists():
            records = [space.record(a, data.info.num_classes, data.info.image_size) for a in archs]
            write_records(records, self.archs_file)
            log.info("sampled %d %s architectures -> %s", len(archs), space.name, self.archs_file)
        return archs

    def train(self, data, replicate: int = 0, technique: str = "standard") -> Path:
        """Sandwich-train a (technique, replicate) supernet, or reuse / resume the one in its folder."""
        from nasrobust import checkpoint
        from nasrobust.train.api import train_supernet
        from nasrobust.train.recipe import technique_recipe

        folder = self.replicate_dir(replicate, technique)
        ckpt = checkpoint.checkpoint_path(folder)
        if ckpt.exists() and checkpoint.read(ckpt).get("finished"):
            log.info("reusing the finished supernet %s", ckpt)
            return ckpt
        recipe = technique_recipe({**self.config.recipe, "seed": self.replicate_seed(replicate)}, technique)
        result = train_supernet(self.config.space, data, recipe, folder, data_root=self.config.data_root,
                                device=self.device, progress=self.progress, **dict(self.config.supernet))
        return result.checkpoint

    def evaluate(self, data, archs: list, ckpt: Path) -> None:
        """Score ``archs`` (and the mCE reference, the largest subnet) on every suite into the store."""
        from nasrobust.evaluation import evaluate

        from nasrobust import distributed
        from nasrobust.claims import Claims
        from nasrobust.workers import WorkerPool, torch_threads

        from nasrobust.evaluation import LARGEST

        c = self.config
        for n, suites in c.suite_groups():  # a suite limited to the first n subnets (suite_archs) in its own pass
            reads_reference = any(SUITES.get_class(s).reads_reference for s in suites)
            kw = dict(db=self.db, suites=suites, protocol=c.eval_protocol(), archs=archs[:n], batch_size=c.batch_size,
                      cache_dir=c.cache_dir, device=self.device, reference=LARGEST if reads_reference else None)
            # spawned workers claim units from the store alongside this process, once every input is checked
            pool = WorkerPool(_evaluate_worker, (ckpt, c.dataset, c.data_root, kw),
                              1 if distributed.world_size() > 1 else (c.workers or 1))
            try:
                with Claims(self.db) as claims, torch_threads(pool.threads):
                    evaluate(ckpt, data=data, progress=self.progress, on_ready=pool.start,
                             claims=claims if distributed.world_size() == 1 else None, **kw)
            finally:
                code = pool.join()
            if code:
                raise NasRobustError("an evaluation worker failed (see its message above); rerun to finish the study")

    def standalone(self, data, archs: list) -> list[Path]:
        """Weight sharing checked against stand-alone training (issue 11): fine-tune ``standalone_check`` of the
        scored subnets (:func:`standalone_indices`) from replicate 0's supernet (:data:`FINETUNE`, the study seed)
        into ``standalone/NNNN/`` and score each with the study's protocol into the store under its own weights id,
        recorded as a ``kind = "standalone"`` run. Finished fine-tunes and complete units are skipped on a rerun.

        mCE is measured against the same reference as the supernet's subnets (its largest subnet), so every metric
        of the two rankings is comparable. In-process (one network each; the study's worker pool is for many
        subnets); under torchrun the fine-tune is data-parallel and rank 0 scores.
        """
        from nasrobust import checkpoint, distributed
        from nasrobust.evaluation import evaluate
        from nasrobust.evaluator import Reference
        from nasrobust.store import open_results
        from nasrobust.train.api import train_standalone
        from nasrobust.train.recipe import technique_recipe

        c = self.config
        technique = self.standalone_technique
        parent = checkpoint.checkpoint_path(self.replicate_dir(0, technique))
        supernet, payload = checkpoint.load_supernet(parent)
        reference = Reference(supernet.supernet.largest().encoding, payload["weights_id"])
        del supernet
        recipe = technique_recipe({**c.recipe, "seed": c.seed}, technique).replace(**FINETUNE)
        ckpts = []
        for i in standalone_indices(len(archs), c.standalone_check or 0):
            folder = self.standalone_dir / f"{i:04d}"
            ckpt = checkpoint.checkpoint_path(folder)
            if not (ckpt.exists() and checkpoint.read(ckpt).get("finished")):
                log.info("fine-tuning subnet %d %s from %s", i, archs[i].encoding, parent)
                ckpt = train_standalone(c.space, archs[i], data, recipe, folder, from_supernet=parent,
                                        data_root=c.data_root, device=self.device, progress=self.progress).checkpoint
            if distributed.is_main():
                self.record_run(ckpt, replicate=0, technique=technique, kind="standalone", seed=c.seed)
                suites = [s for s in c.suites if i < c.suite_archs.get(s, len(archs))]  # as the supernet's subnet
                with open_results(self.db, create=True) as store:
                    evaluate(ckpt, db=store, suites=suites, protocol=c.eval_protocol(), data=data,
                             reference=reference, batch_size=c.batch_size, cache_dir=c.cache_dir, device=self.device,
                             progress=self.progress)
            ckpts.append(ckpt)
        distributed.barrier()
        return ckpts

    def analyze(self) -> Path:
        """Factor <-> robustness report over every scored subnet."""
        from nasrobust.analysis.report import ReportOptions, build_report
        from nasrobust.store import open_results

        c = self.config
        # Several runs (replicates x techniques, coord RUNS.md): one report per run under report/<weights_id>/ and
        # the replicated-findings report (report/replication.md, report/tables/replication_*.csv) over all of them.
        # Its power note counts the subnets and test images from the store (the ones the study scored).
        # One run keeps today's single report in report/.
        runs = tomllib.loads(self.config_file.read_text()).get("runs", [])
        # Stand-alone runs (one subnet each) get no report of their own; beside one supernet, report/ keeps to its rows.
        supernets = [r["weights_id"] for r in runs if r.get("kind", "supernet") == "supernet"]
        wids = [None] if len(runs) <= 1 else supernets
        htmls = []
        for wid in wids:
            folder = self.report_dir if len(supernets) <= 1 else self.report_dir / str(wid)
            only = "" if wid is None else f" --weights-id {wid}"
            with open_results(self.db, readonly=True) as store:
                report = build_report(store, folder, ReportOptions(space=c.space, dataset=c.dataset, n_boot=c.n_boot,
                                                                   seed=c.seed, weights_id=wid),
                                      command=f"nasrobust analyze --db {self.db} --out {folder} --space {c.space} "
                                              f"--dataset {c.dataset} --n-boot {c.n_boot} --seed {c.seed}{only}")
            for note in report.notes:
                log.info("report note: %s", note)
            htmls.append(report.html)
        if len(runs) > 1:
            from nasrobust.analysis.replication import ReplicationOptions, replication_report

            md = replication_report(self.db, self.config_file, self.report_dir,
                                    ReplicationOptions(space=c.space, dataset=c.dataset, n_boot=c.n_boot, seed=c.seed))
            log.info("replicated findings -> %s", md)
        return htmls[0]
