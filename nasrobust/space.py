"""The search-space abstraction: :class:`Arch` (one architecture of one space), :class:`SearchSpace`
and the registry of spaces, :data:`SPACES`.

An :class:`Arch` names its space, and its encoding is written by that space, so the value and the
registry that gives it meaning live here together. A :class:`SearchSpace` owns its choice lists
once; everything else (sampling, encodings, analytic cost, the built module, factors and choices
for analysis, moves for searchers, the supernet) reads them from there. Concrete spaces live in
the top-level ``spaces/`` folder (installed as ``nasrobust.spaces``) and register with
``@register_space``.

Torch is imported only by :meth:`SearchSpace.build` and friends, so sampling 1,200
architectures with their cost never pays torch's import time.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from nasrobust.cost import Cost
from nasrobust.errors import EncodingError, NasRobustError, SpaceError, UnknownNameError
from nasrobust.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch.nn as nn

log = logging.getLogger(__name__)

#: Spaces at most this many pixels wide use the small-input variant of their family.
SMALL_INPUT_MAX = 64

#: Registered search spaces. ``SPACES.create(name)`` builds a fresh instance;
#: :func:`get_space` returns a shared one.
SPACES: Registry[SearchSpace] = Registry("space", plugins="nasrobust.spaces")

_instances: dict[str, SearchSpace] = {}


@dataclass(frozen=True)
class Arch:
    """One architecture of one registered search space.

    ``genome`` is the space's own typed, hashable description (a frozen dataclass or a
    tuple), always in the space's canonical form, so equal networks compare and hash equal.
    The canonical string form, ``encoding`` (``"<space>:<body>"``), is the primary key in the
    result store, the CLI and plots; ``space.decode(arch.encoding) == arch``.
    """

    space: str
    genome: Hashable

    @cached_property
    def encoding(self) -> str:
        return get_space(self.space).encode(self)

    def __str__(self) -> str:
        return self.encoding

    def __repr__(self) -> str:
        return f"Arch({self.encoding!r})"


def register_space(name: str, doc: str = "") -> Callable[[Callable[..., SearchSpace]], Callable[..., SearchSpace]]:
    """Register a :class:`SearchSpace` subclass (or a factory of one) under ``name``."""
    return SPACES.register(name, doc)


def get_space(name: str) -> SearchSpace:
    """The shared instance of a registered space; an unknown name lists the valid ones."""
    if name not in _instances:
        space = SPACES.create(name)
        if space.name != name:
            raise RuntimeError(f"space registered as {name!r} calls itself {space.name!r}")
        _instances[name] = space
    return _instances[name]


def list_spaces(pattern: str = "*") -> list[str]:
    return SPACES.names(pattern)


def decode(encoding: str) -> Arch:
    """Decode a full encoding (``"<space>:<body>"``) of any registered space."""
    space, sep, _ = encoding.partition(":")
    if not sep:
        raise NasRobustError(
            f"encoding {encoding!r} has no space prefix; expected '<space>:<body>' "
            f"with <space> one of: {', '.join(list_spaces())}"
        )
    return get_space(space).decode(encoding)


class SearchSpace(abc.ABC):
    """A family of architectures: choice lists, encodings, sampling, cost and builder.

    Subclasses set the class attributes and implement the abstract methods; the genome they
    define must be hashable and canonical (equal networks, equal genomes).
    """

    #: Registered name; also the encoding prefix.
    name: str = ""
    #: One line for ``nasrobust spaces``.
    description: str = ""
    #: The encoding grammar, shown when an encoding does not parse.
    grammar: str = ""
    #: Defaults for :meth:`build` and :meth:`cost` (the space's home dataset).
    num_classes: int = 1000
    input_size: int = 224
    #: The variant of this family for inputs of at most ``SMALL_INPUT_MAX`` pixels.
    small_variant: str | None = None
    #: True when the architecture fixes its own input resolution (a ``resolution`` factor).
    elastic_resolution: bool = False

    # ------------------------------------------------------------------ genome hooks
    @abc.abstractmethod
    def encode_genome(self, genome: Hashable) -> str:
        """The body of the encoding (after ``"<space>:"``)."""

    @abc.abstractmethod
    def parse_genome(self, body: str) -> Hashable:
        """Parse an encoding body; raise ``self.encoding_error(body, problem)`` when malformed."""

    @abc.abstractmethod
    def random_genome(self, rng: np.random.Generator) -> Hashable:
        """One genome drawn with ``rng`` (need not be canonical; :meth:`arch` canonicalises)."""

    def uniform_genome(self, rng: np.random.Generator) -> Hashable:
        """One genome drawn uniformly over the space's *distinct* architectures (budgeted sampling).

        The default is :meth:`random_genome`, right when genomes and architectures correspond
        one to one. Spaces whose ``random_genome`` follows another convention (isomorphic cells,
        Once-for-All's depth-first draw) override it.
        """
        return self.random_genome(rng)

    def canonical(self, genome: Hashable) -> Hashable:
        """The canonical representative of the genome's equivalence class (default: itself)."""
        return genome

    def validate(self, genome: Hashable) -> None:
        """Raise :class:`SpaceError` naming the offending choice when a genome is not in the space."""

    # ------------------------------------------------------------------ encodings
    def arch(self, genome: Hashable) -> Arch:
        """Make an :class:`Arch` of this space from a genome (validated, canonicalised)."""
        self.validate(genome)
        return Arch(self.name, self.canonical(genome))

    def encode(self, arch: Arch) -> str:
        self._check_space(arch)
        return f"{self.name}:{self.encode_genome(arch.genome)}"

    def decode(self, text: str) -> Arch:
        """Parse an encoding, with or without the ``"<space>:"`` prefix."""
        body = text.strip()
        prefix, sep, rest = body.partition(":")
        if sep and prefix == self.name:
            body = rest
        elif sep and prefix in SPACES and prefix != self.name:
            related = ""
            if self.small_variant == prefix:
                related = f" ({prefix} is the small-input variant of {self.name}, used for 28-32 px images)"
            elif get_space(prefix).small_variant == self.name:
                related = f" ({self.name} is the small-input variant of {prefix}, used for 28-32 px images)"
            raise NasRobustError(
                f"encoding {text!r} belongs to space {prefix!r}, not {self.name!r}{related}; give an encoding of "
                f"{self.name} (`nasrobust sample --space {self.name}`), or work in space {prefix} (--space {prefix})"
            )
        genome = self.parse_genome(body)
        try:
            return self.arch(genome)
        except SpaceError as exc:
            raise self.encoding_error(text, str(exc)) from None

    def encoding_error(self, text: str, problem: str) -> EncodingError:
        return EncodingError(self.name, text, problem, self.grammar)

    def named(self) -> Mapping[str, Arch]:
        """Named points of the space (e.g. ``resnet50``, ``darts-v2``); override to add."""
        return {}

    def resolve(self, text: str) -> Arch:
        """A named point or an encoding (prefix optional) -> :class:`Arch`."""
        named = self.named()
        if text in named:
            return named[text]
        return self.decode(text)

    def _check_space(self, arch: Arch) -> None:
        if not isinstance(arch, Arch):
            raise TypeError(f"expected an Arch, got {type(arch).__name__}")
        if arch.space != self.name:
            raise NasRobustError(f"architecture {arch.space}:... is not in space {self.name!r}")

    # ------------------------------------------------------------------ size and sampling
    @abc.abstractmethod
    def size(self) -> int:
        """The exact number of distinct architectures (canonical genomes)."""

    def enumerate(self) -> Iterator[Arch]:
        """Every architecture once, in a fixed order (finite spaces only)."""
        raise SpaceError(f"space {self.name!r} cannot be enumerated")

    def sample(self, n: int, seed: int = 0) -> list[Arch]:
        """``n`` distinct architectures, the same for the same ``(n, seed)``.

        Draws with :meth:`random_genome` and skips repeats, so ``sample(n)`` is a prefix of
        ``sample(m)`` for ``n < m`` -- except when ``n`` exceeds half the space, where a
        seeded permutation of :meth:`enumerate` is used instead to avoid slow rejection.
        Under a parameter or FLOPs budget: :meth:`nasrobust.budget.Budget.sample` (uniform over the
        distinct architectures inside it, with the acceptance rate).
        """
        if n < 0:
            raise SpaceError(f"cannot sample a negative number of architectures ({n})")
        total = self.size()
        if n > total:
            raise SpaceError(
                f"asked for {n} distinct architectures but space {self.name!r} holds only "
                f"{total}; use --n {total} or fewer"
            )
        import numpy as np

        rng = np.random.default_rng(seed)
        if n > total // 2:
            everything = list(self.enumerate())
            return [everything[i] for i in rng.permutation(len(everything))[:n]]
        seen: set[Arch] = set()
        out: list[Arch] = []
        while len(out) < n:
            a = self.arch(self.random_genome(rng))
            if a not in seen:
                seen.add(a)
                out.append(a)
        return out

    # ------------------------------------------------------------------ analysis and search
    @abc.abstractmethod
    def factors(self, arch: Arch) -> dict[str, float]:
        """Named numeric factors for analysis (depths, widths, kernel counts, resolution, ops)."""

    def to_vector(self, arch: Arch) -> np.ndarray:
        """A fixed-length numeric vector for surrogates (default: the factors, in order)."""
        import numpy as np

        return np.asarray(list(self.factors(arch).values()), dtype=np.float64)

    def choices(self, arch: Arch) -> dict[str, str]:
        """The architecture's categorical choices, name -> value label (grouped effects in analysis).

        Default: a walk over the genome -- each field of a dataclass (nested ones as
        ``outer.inner``), each item of a tuple as ``name_1, name_2, ...``. A genome that is
        neither (e.g. a model name) has none, and analysis falls back to the integer-valued
        factors. Override to name the choices as the space's papers do (per stage, per edge).
        """
        self._check_space(arch)
        out: dict[str, str] = {}
        if dataclasses.is_dataclass(arch.genome) or isinstance(arch.genome, tuple):
            _walk_choices(arch.genome, "", out)
        return out

    @abc.abstractmethod
    def neighbors(self, arch: Arch) -> list[Arch]:
        """Every distinct architecture one choice away, in a fixed order, excluding ``arch``."""

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A random neighbour (one choice changed)."""
        options = self.neighbors(arch)
        if not options:
            raise SpaceError(f"{arch} has no neighbours in space {self.name!r}")
        return options[int(rng.integers(len(options)))]

    # ------------------------------------------------------------------ models and cost
    def resolution(self, arch: Arch, input_size: int | None = None) -> int:
        """The input size the built network expects.

        The architecture's own resolution for elastic-resolution spaces; otherwise
        ``input_size`` or the space default. Models are wrapped by
        :class:`nasrobust.models.ImageClassifier`, which resizes inputs to this size.
        """
        return int(input_size or self.input_size)

    @abc.abstractmethod
    def build(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> "nn.Module":
        """A freshly initialised stand-alone network for ``arch``.

        It takes normalised 3-channel images of :meth:`resolution` pixels and returns logits.
        """

    @abc.abstractmethod
    def cost(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> Cost:
        """Analytic params and MACs; equal to :func:`nasrobust.cost.measure_cost` of :meth:`build`."""

    def record(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> dict[str, Any]:
        """The JSON record ``sample`` writes and ``describe --json`` prints."""
        cost = self.cost(arch, num_classes, input_size)
        return {
            "space": self.name,
            "encoding": arch.encoding,
            "params": cost.params,
            "flops": cost.flops,
            "factors": self.factors(arch),
        }

    def for_input_size(self, size: int) -> "SearchSpace":
        """This family's variant for images of ``size`` pixels (small inputs: no early down-sampling)."""
        if size <= SMALL_INPUT_MAX and self.small_variant:
            return get_space(self.small_variant)
        return self

    def supernet(self, **kwargs: Any) -> "nn.Module":
        """A weight-sharing network holding every architecture of the space."""
        raise SpaceError(f"space {self.name!r} has no supernet")

    def pretrained(self, arch: Arch) -> tuple["nn.Module", str]:
        """A network with published weights, taking ``[0, 1]`` images (an ``ImageClassifier`` of the space's
        ``num_classes`` classes), and the weights id its results are stored under. Spaces without
        published weights raise :class:`SpaceError`."""
        raise SpaceError(f"space {self.name!r} has no published pretrained weights; evaluate a --checkpoint or "
                         "a --supernet instead")

    @classmethod
    def has_pretrained(cls) -> bool:
        """Whether the space declares :meth:`pretrained` (published weights)."""
        return cls.pretrained is not SearchSpace.pretrained

    @classmethod
    def has_supernet(cls) -> bool:
        """Whether the space declares :meth:`supernet` (weight-sharing training and evaluation run on it)."""
        return cls.supernet is not SearchSpace.supernet

    def search_supernet(self, *, num_classes: int, channels: int, cells_per_stage: int, layers: int | None,
                        partial_channels: int, edge_normalization: bool, affine: bool, alpha_seed: int) -> "nn.Module":
        """The one-shot supernet a differentiable searcher (DARTS, DSRNA, AdvRush) relaxes.

        The searcher sizes it with generic knobs -- ``channels``, ``cells_per_stage`` (or ``layers``
        cells in all), PC-DARTS' ``partial_channels`` and ``edge_normalization``, ``affine`` BN --
        and each cell space maps them onto its own supernet. Spaces without one raise :class:`SpaceError`.
        """
        raise SpaceError(f"differentiable search needs a one-shot cell supernet; space {self.name!r} has none")

    @classmethod
    def has_search_supernet(cls) -> bool:
        """Whether the space declares :meth:`search_supernet` (differentiable searchers run on it)."""
        return cls.search_supernet is not SearchSpace.search_supernet


def choice_label(value: Any) -> str:
    """How a choice value is shown: ``0.25`` -> ``"0.25"``, ``3`` -> ``"3"``, ``"conv_3x3"`` as is."""
    return format(value, "g") if isinstance(value, float) else str(value)


def _walk_choices(value: Any, name: str, out: dict[str, str]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _walk_choices(getattr(value, f.name), f"{name}.{f.name}" if name else f.name, out)
    elif isinstance(value, tuple):
        for i, item in enumerate(value, start=1):
            _walk_choices(item, f"{name}_{i}" if name else str(i), out)
    else:
        out[name] = choice_label(value)


def check_choice(value: Any, choices: Sequence[Any], what: str) -> None:
    """Raise :class:`SpaceError` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise SpaceError(f"{what} = {value!r} is not a choice; valid: {list(choices)}")


__all__ = [
    "SPACES",
    "SMALL_INPUT_MAX",
    "SearchSpace",
    "Arch",
    "Cost",
    "UnknownNameError",
    "check_choice",
    "choice_label",
    "decode",
    "get_space",
    "list_spaces",
    "register_space",
]
