"""Build the configured sampler, giving it what its constructor asks for.

Every sampler is a `_target_` in `hydra_configs/sampler/`. A constructor that takes `seed` gets the
study's seed; one that takes `space`, `cheap` or `deploy` (the cost-aware sampler) gets the search
space, cheap objectives and device limits the search itself built, so that it prices exactly the
candidates the study trains, with the tokenizer's real vocabulary.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import optuna

from nas.config.compose import build
from nas.hardware import DeployBudget
from nas.objectives.cheap import CheapObjectives
from search_spaces import SearchSpace


@dataclass(frozen=True)
class SamplerContext:
    """What the search hands a sampler that wants it (picklable: pool workers rebuild it)."""

    space: SearchSpace | None = None
    cheap: CheapObjectives | None = None
    deploy: DeployBudget | None = None


def build_sampler(
    node: dict[str, Any],
    seed: int,
    *,
    context: SamplerContext | None = None,
    parallel: bool = True,
) -> optuna.samplers.BaseSampler:
    """The sampler `node` (the `sampler` group) names, seeded where it takes a seed.

    `parallel=False` (one process writes the study) turns TPE's constant liar off unless the
    config sets it: with no other trial running it changes nothing, yet it makes TPE re-read
    the storage once per parameter group instead of once per trial (6 reads a trial here).
    """
    target = build("sampler", node, _partial_=True)
    accepted = inspect.signature(target.func).parameters
    extra: dict[str, Any] = {"seed": seed} if "seed" in accepted else {}
    if not parallel and "constant_liar" in accepted and "constant_liar" not in node:
        extra["constant_liar"] = False
    for name, value in vars(context or SamplerContext()).items():
        if name in accepted:
            if value is None:
                raise ValueError(f"sampler {node.get('_target_')} needs the study's {name}")
            extra[name] = value
    return target(**extra)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler to build, here or in a pool worker: its config group and what it is handed."""

    node: dict[str, Any]
    context: SamplerContext = SamplerContext()

    def build(self, seed: int, *, parallel: bool = True) -> optuna.samplers.BaseSampler:
        return build_sampler(self.node, seed, context=self.context, parallel=parallel)
