"""`nas.samplers.factory`: each sampler gets what its constructor asks for, and nothing else."""

from __future__ import annotations

import optuna
import pytest

from nas.config.compose import load_settings
from nas.samplers.cost_aware import CostAwareSampler
from nas.samplers.factory import SamplerContext, build_sampler


def test_one_process_tpe_drops_the_constant_liar() -> None:
    tpe = load_settings(["sampler=tpe"]).sampler
    assert build_sampler(tpe, 0, parallel=True)._constant_liar
    assert not build_sampler(tpe, 0, parallel=False)._constant_liar
    random = load_settings(["sampler=random"]).sampler  # takes no constant liar: still builds
    assert isinstance(build_sampler(random, 0, parallel=False), optuna.samplers.RandomSampler)


def test_the_cost_aware_sampler_is_handed_the_study_s_own_parts() -> None:
    node = load_settings(["sampler=cost_aware"]).sampler
    with pytest.raises(ValueError, match="needs the study's space"):
        build_sampler(node, 0)
    context = SamplerContext(space=object(), cheap=object(), deploy=object())  # type: ignore[arg-type]
    sampler = build_sampler(node, 3, context=context)
    assert isinstance(sampler, CostAwareSampler)
    assert sampler.space is context.space and sampler.cheap is context.cheap
