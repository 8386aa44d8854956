"""The compact metric spec of ``nasrobust search --metric``, built from the registered metric kinds.

A spec is a weighted sum of terms; each term's atom is ``<kind>:<body>[?<options>]``, where
``<kind>`` is a registered :class:`MetricKind` (``store``, ``live``, ``proxy``, ``cost``, or one a
plug-in adds through the ``nasrobust.metrics`` entry-point group). The grammar text
(:func:`grammar`) and the term splitter are made from the registry, so a new kind is one
:func:`register_kind` call in its own module. Nothing is ``eval``-ed.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nasrobust.errors import NasRobustError
from nasrobust.metrics.base import MetricError, RobustnessMetric, Selector
from nasrobust.metrics.composition import Oriented, WeightedSum
from nasrobust.options import NoOptions, build_options, describe_options, parse_assignments
from nasrobust.registry import Registry

#: Builds one atom's metric from its body, its options (the kind's ``Options``), the other KEY=VALUE
#: options (when the kind passes them on) and the parse context (``space=``).
Builder = Callable[[str, Any, dict[str, Any], Mapping[str, Any]], RobustnessMetric]


class SpecProblem(ValueError):
    """Raised by a kind's builder for a malformed atom; :func:`parse_metric` adds the spec and the grammar."""


class MetricSpecError(MetricError, ValueError):
    """A ``--metric`` spec that does not parse; the message shows the grammar."""

    def __init__(self, spec: str, problem: str):
        self.spec, self.problem = spec, problem
        super().__init__(f"bad metric spec {spec!r}: {problem}\n{grammar()}")


@dataclass(frozen=True)
class MetricKind:
    """One kind of atom, ``'<name>:' <syntax> ['?' OPTS]``: what it is (``help``), its options, its builder.

    ``Options`` is a frozen dataclass of the kind's own ``?KEY=VALUE`` options, coerced by
    :func:`nasrobust.options.build_options` (the ``--suite-option`` grammar). With ``extra`` (e.g.
    ``"suite options"``) other keys are handed to the builder as they are; without it they are errors.
    """

    name: str
    syntax: str
    help: str
    build: Builder
    Options: type = NoOptions
    extra: str | None = None

    def __call__(self, body: str, options: Mapping[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
        fields = {f.name for f in dataclasses.fields(self.Options)}
        own = {k: v for k, v in options.items() if k in fields or self.extra is None}
        rest = {k: v for k, v in options.items() if k not in own}
        try:
            parsed: Any = build_options(self.Options, own, owner=self.name, key_prefix="")
        except NasRobustError as exc:
            raise SpecProblem(str(exc)) from None
        return self.build(body, parsed, rest, context)

    def options_text(self) -> str:
        """``OPTS`` of this kind for the grammar: ``key=default`` for each option, and where others go."""
        items = [f"{name}={_shown(default)}" for name, _, default, _ in describe_options(self.Options)]
        if self.extra:
            items.append(f"other KEY=VALUE: {self.extra}")
        return f"OPTS {', '.join(items)}" if items else ""


def _shown(value: Any) -> str:
    if value is None:
        return "..."
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


#: Registered metric kinds; the package ``nasrobust.metrics`` imports the built-in ones.
METRIC_KINDS: Registry[RobustnessMetric] = Registry("metric", plugins="nasrobust.metrics")


def register_kind(name: str, syntax: str, help: str, *, options: type = NoOptions,
                  extra: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(body, options, extra, context)`` as the metric kind ``name``."""

    def add(build: Builder) -> Builder:
        METRIC_KINDS.register(name, help)(MetricKind(name, syntax, help, build, options, extra))
        return build

    return add


def kinds() -> list[MetricKind]:
    out = []
    for name in METRIC_KINDS.names():
        kind = METRIC_KINDS.get(name)
        if not isinstance(kind, MetricKind):
            raise TypeError(f"metric kind {name!r} must be registered with nasrobust.metrics.register_kind")
        out.append(kind)
    return out


def grammar() -> str:
    """The spec grammar, with one ``ATOM`` alternative (and its options) per registered kind."""
    atoms = []
    for i, kind in enumerate(kinds()):
        head = f"{'ATOM  :=' if i == 0 else '       |'} '{kind.name}:' {kind.syntax}"
        atoms.append(f"  {head:<42}{kind.help}")
        atoms.extend(f"  {'':<44}{line}" for line in textwrap.wrap(kind.options_text(), 76))
    return "\n".join([
        "metric spec grammar (no spaces needed; quote it in the shell):",
        "  SPEC  := TERM ('+' TERM)*                 weighted sum of oriented scores (higher is better)",
        "  TERM  := [WEIGHT '*'] [DIR] ATOM          WEIGHT a number (0.5, -1e-3)",
        "  DIR   := 'max:' | 'min:' | '-'            force higher-/lower-is-better ('-' means 'min:')",
        *atoms,
        "  SEL   := SUITE '/' NOISE ['/' METRIC] ['@' LEVEL]   METRIC defaults to accuracy; NOISE may contain '/' when",
        "                                            METRIC is given; LEVEL a number or fraction (8/255); no '@': the",
        "                                            only stored level",
        "  OPTS  := KEY '=' VALUE ('&' KEY '=' VALUE)*          VALUE as in --suite-option: a number, fraction, word,",
        "                                            true/false, none or comma list",
        "examples: store:results.db:adversarial/pgd_linf/accuracy@8/255   live:runs/sn#adversarial/pgd_linf@0.1?n=100",
        "          -proxy:jacobian   0.5*store:r.db:adversarial/clean/accuracy+0.5*store:r.db:adversarial/pgd_linf/accuracy@0.1",
        "constraints: --max-flops / --max-params (Constrained); several objectives: repeat --metric (MultiObjective);",
        "on the command line write --metric=-SPEC (argparse reads a leading '-' as a flag) or use min:SPEC",
    ])


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"^\s*(?:(?P<w>{_NUM})\s*\*)?\s*(?P<dir>min:|max:|-)?\s*(?P<atom>.+?)\s*$", re.S)
_DIRS = {"min:": False, "-": False, "max:": True}


def _splitter(names: list[str]) -> re.Pattern[str]:
    """'+' separates terms only where a new term starts (weights may carry exponents like 1e+3)."""
    starts = "|".join(re.escape(n) + ":" for n in names)
    return re.compile(rf"(?<![0-9.][eE])\+(?=\s*(?:{_NUM}\s*\*|-|min:|max:|{starts}))")


def _options(text: str) -> dict[str, Any]:
    """``k=v&k2=v2`` with the one KEY=VALUE grammar of :mod:`nasrobust.options`."""
    try:
        return parse_assignments(filter(None, text.split("&")), what="option")
    except NasRobustError as exc:
        raise SpecProblem(str(exc)) from None


def selector(text: str) -> Selector:
    """A selector of an atom; a malformed one is a :class:`SpecProblem`."""
    try:
        return Selector.parse(text)
    except ValueError as exc:
        raise SpecProblem(str(exc)) from None


def _atom(text: str, context: Mapping[str, Any]) -> RobustnessMetric:
    names = METRIC_KINDS.names()
    name, colon, rest = text.partition(":")
    if not colon or name not in names:
        raise SpecProblem(f"{text!r} does not start with one of {', '.join(n + ':' for n in names)}")
    body, _, opt_text = rest.partition("?")
    if not body.strip():
        raise SpecProblem(f"{name}: needs a body")
    kind = METRIC_KINDS.get(name)
    return kind(body.strip(), _options(opt_text), context)


def parse_metric(spec: str, *, space: Any = None) -> RobustnessMetric:
    """Build a metric from a spec (see :func:`grammar`); ``space`` is needed by ``fallback=surrogate``."""
    if not isinstance(spec, str) or not spec.strip():
        raise MetricSpecError(str(spec), "empty spec")
    context = {"space": space}
    terms: list[tuple[float | None, RobustnessMetric]] = []
    try:
        for part in _splitter(METRIC_KINDS.names()).split(spec.strip()):
            m = _TERM.match(part)
            if not m or not m.group("atom"):
                raise SpecProblem(f"term {part!r} does not parse")
            metric = _atom(m.group("atom"), context)
            if m.group("dir"):
                metric = Oriented(metric, _DIRS[m.group("dir")])
            terms.append((float(m.group("w")) if m.group("w") else None, metric))
    except SpecProblem as exc:
        raise MetricSpecError(spec, str(exc)) from None
    if len(terms) == 1 and terms[0][0] is None:
        return terms[0][1]
    return WeightedSum([(1.0 if w is None else w, mt) for w, mt in terms], name=spec.strip())


__all__ = [
    "METRIC_KINDS", "MetricKind", "MetricSpecError", "SpecProblem", "grammar", "kinds", "parse_metric",
    "register_kind", "selector",
]
