"""`run_search(settings)`: run (or resume) the study that typed settings describe.

The plain function behind `python -m nas.search` (tests call it directly). Re-running a command
resumes its study (named after hardware, space and budget): finished trials are kept, none rerun.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from tokenizers import Tokenizer

from nas import __version__, records
from nas.config.compose import build
from nas.config.schema import ProxySettings, Settings
from nas.errors import NasError, raised_by_interrupt
from nas.executorch.runtime import require as require_executorch
from nas.fidelity import late_slope
from nas.fidelity.judge import judge, noise_sd
from nas.fidelity.rungs import Rungs
from nas.files import atomic_write, check_writable
from nas.hardware import HardwareProfile
from nas.objectives.cheap import CheapObjectives
from nas.objectives.hypervolume import Reference, space_reference
from nas.objectives.pareto import format_table, pareto_entries, write_front
from nas.objectives.reach import device_reach
from nas.quality.data import prepare_data
from nas.quality.early_stop import make_early_stopping
from nas.quality.scorers import QualityProxy
from nas.quality.training import ProxyData, ProxyDiverged, resolve_device
from nas.samplers.factory import SamplerContext, SamplerSpec
from nas.search import late, prune
from nas.search.progress import SearchProgress
from nas.search.trial import TrialObjective
from nas.search.workers import Workers, run_trials, start_forkserver
from nas.study.identity import settings_identity
from nas.study.open import open_study
from nas.study.storage import is_sqlite
from predictors.factory import latency_predictor, memory_predictor
from search_spaces import SearchSpace

if TYPE_CHECKING:
    from nas.parent import Parent
    from nas.quality.pruned import Pruning

log = logging.getLogger("nas.search")


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    out_dir: Path
    finished: int
    feasible: int
    pareto: list[dict[str, Any]]
    seconds: float


def build_space(settings: Settings, vocab_size: int) -> SearchSpace:
    """The search space plugin, with the tokenizer's real vocabulary and the budget's caps."""
    return build(
        "search_space", settings.search_space, vocab_size=vocab_size, caps=settings.budget.caps
    )


def build_scorer(settings: Settings) -> QualityProxy:
    return build("proxy.scorer", settings.proxy.scorer)


def study_rungs(settings: Settings) -> Rungs:
    """The budget's rungs; one rung (no promotion) for a training-free proxy."""
    budget, training = settings.budget, settings.proxy.training
    count = budget.rungs if build_scorer(settings).trains else 1
    return Rungs(
        steps=training.steps,
        eta=budget.eta,
        count=count,
        seeds=budget.seeds if count > 1 or budget.seeds > 1 else 1,
        decay_fraction=training.decay_fraction,
    )


def target_of(settings: Settings, rungs: Rungs) -> dict[str, Any]:
    """The training length the front is judged at (study attribute `target`)."""
    top = rungs.total(rungs.top) * settings.proxy.batch_size * settings.proxy.seq_len
    return {
        "tokens": settings.target.tokens or top,
        "top_rung_tokens": top,
        "given": settings.target.tokens is not None,
        "extrapolation": settings.target.extrapolation,
    }


@dataclass(frozen=True)
class Prepared:
    """What a study needs before its first trial, built once per run."""

    data: ProxyData
    tokenizer: Tokenizer
    data_info: dict[str, Any]
    space: SearchSpace
    cheap: CheapObjectives
    scorer: QualityProxy
    identity: dict[str, Any]
    rungs: Rungs
    training: ProxySettings  # every proxy run's settings (a prune study's peak rate: distill_lr)
    pruning: Pruning | None = None  # search_space=prune: the parent, its importance


def _read_data(
    settings: Settings,
) -> tuple[Parent | None, ProxyData, Tokenizer, dict[str, Any], ProxySettings]:
    """The corpus as token streams, and the training run's settings. A prune study reads the
    corpus with its parent's tokenizer (checked first, `nas.search.prune`) and trains at the
    gentler `proxy.distill_lr`."""
    parent = prune.parent_of(build_space(settings, settings.proxy.vocab_size))
    proxy, training = settings.proxy, settings.proxy.training
    if parent is not None:
        from nas.quality.pruned import with_parent_tokenizer

        proxy = with_parent_tokenizer(proxy, parent)
        training = dataclasses.replace(training, lr=settings.proxy.distill_lr)
    data, tokenizer, info = prepare_data(proxy, Path(settings.cache_dir))
    if parent is not None:
        from nas.quality.pruned import check_vocabulary

        check_vocabulary(parent, info["vocab_size"])
    if len(data.train_ids) <= training.seq_len + 1:
        raise NasError(
            f"corpus too short for the budget: {len(data.train_ids)} training tokens, "
            f"need more than proxy.seq_len={training.seq_len}"
        )
    return parent, data, tokenizer, info, training


def prepare(settings: Settings) -> Prepared:
    """Data, tokenizer, space, predictors and the study's identity; writes nothing outside the
    shared cache, so a refused resume leaves the study's folder as it was."""
    if settings.compression.quant_format == "xnnpack":
        require_executorch()  # torchao scores int8/int4 in XNNPACK's numerics; one line if absent
    parent, data, tokenizer, info, training = _read_data(settings)
    space = build_space(settings, info["vocab_size"])
    hardware = settings.hardware
    # The device's calibration (predictors/calibrations/<name>.json) when it exists, else priors.
    long_context = hardware.at_context(hardware.deploy.long_context)
    cheap = CheapObjectives(
        latency_predictor(hardware), memory_predictor(hardware), latency_predictor(long_context)
    )
    if settings.compression.int8_activations != hardware.int8_activations:
        log.warning(
            "compression.int8_activations=%s scores int8/int4 in another format than %s's "
            "runtime runs fast, while decode and memory are priced in that runtime's format",
            str(settings.compression.int8_activations).lower(),
            hardware.name,
        )
    pruning = None
    if parent is not None:
        prune.check_reach(space, cheap, hardware.deploy)
        pruning = prune.load(settings, parent, data, info)
    scorer = build_scorer(settings)
    proxy_identity = {**asdict(training), **info, "seed": settings.seed}
    if pruning is not None:  # every result depends on the parent's weights and the distillation
        proxy_identity["parent"] = pruning.identity()
    rungs = study_rungs(settings)
    proxy_identity["fidelity"] = {"rungs": rungs.count, "eta": rungs.eta, "seeds": rungs.seeds}
    if scorer.name != "train":  # the default keeps the identity of studies started before proxies
        proxy_identity["quality_proxy"] = scorer.identity()
    # Every setting that changes a stored value (nas.study.identity), and what it resolves to.
    every = settings_identity(settings)
    every["device"] = resolve_device(settings.device).type
    identity = {
        "hardware": hardware.name,
        "search_space": {"name": space.name, **space.choices()},
        "proxy": proxy_identity,
        "settings": every,
        # the calibration behind every decode ms and memory MB (a re-calibration is a new study)
        "pricing": {"latency": cheap.latency.identity, "memory": cheap.memory.identity},
    }
    return Prepared(data, tokenizer, info, space, cheap, scorer, identity, rungs, training, pruning)


def run_search(settings: Settings) -> SearchResult:
    """Run (or resume) the study that `settings` describe and write its Pareto front."""
    started = time.perf_counter()
    out_dir = settings.out_dir
    check_writable(out_dir, "runs_dir")  # probes without creating: a refusal leaves no folder
    start_forkserver(settings.study.workers)  # its imports overlap the data set-up
    ready = prepare(settings)
    sampler = SamplerSpec(
        settings.sampler, SamplerContext(ready.space, ready.cheap, settings.hardware.deploy)
    )
    workers = Workers.from_settings(settings.study, settings.seed, sampler)
    study = open_study(
        name=settings.study.name,
        storage=settings.study.storage,
        identity=ready.identity,
        heartbeat_s=settings.study.heartbeat_s,
        grace_s=settings.study.grace_s,
        retries=settings.study.retries,
    )
    stored = len(study.get_trials(deepcopy=False))  # `study.trials` deep-copies them all
    # A resumed study does not replay the first run's random start-up samples.
    study.sampler = sampler.build(settings.seed + stored, parallel=not is_sqlite(workers.storage))
    # Written once the resume check passed: export ships the tokenizer the trials were scored with.
    atomic_write(out_dir / "tokenizer.json", ready.tokenizer.to_str())
    reference = _reference(study, settings, ready)
    if ready.pruning is not None:
        prune.reference(study, ready.pruning, ready.data, settings)
    records.store_device(study, _device_info(settings.hardware, ready.cheap))
    # Judged at reporting time from the stored rung curves: it may change between runs.
    target = target_of(settings, ready.rungs)
    records.store_target(study, target)
    objective = _objective(settings, ready)
    objective.deadline = time.time() + settings.study.timeout_s
    _log_start(study, settings, ready, stored, target)
    progress = SearchProgress(
        settings.study.n_trials,
        quiet=settings.quiet,
        reference=reference,
        timeout_s=settings.study.timeout_s,
        target=target,
    )
    interrupted, here = False, settings.study.n_trials if workers.in_process else None
    try:
        run_trials(  # in this process or study.workers processes (nas/search/workers.py)
            workers,
            study,
            objective,
            n_trials=settings.study.n_trials,
            timeout=settings.study.timeout_s,
            callbacks=[progress],
            catch=(ProxyDiverged,),
            then=late.Closing(study, objective, ready.rungs, progress.extend, trials=here),
        )
    except BaseException as err:  # Ctrl-C, or Optuna's bookkeeping cut by it mid-write
        if not raised_by_interrupt(err):
            raise
        interrupted = True
    finally:
        progress.close()
    result = _finish(study, settings, ready, started)
    if interrupted:
        raise NasError(
            f"interrupted; the running trial is marked failed and queued again, "
            f"{result.finished} finished trials are safe in {settings.study.storage}. "
            "Run the same command again to resume."
        )
    return result


def _reference(study: optuna.Study, settings: Settings, ready: Prepared) -> Reference:
    """What the report and the live hypervolume need, kept in the study itself so that a study
    still running (or shared through a database) can be reported on. A resumed study keeps the
    reference it was started with (older studies: the device limits), so its numbers stay
    comparable with what it reported before."""
    stored = records.reference(study)
    if stored:
        return Reference.from_dict(stored)
    uniform = ready.data.uniform_bpb(settings.proxy.training)
    reference = space_reference(ready.space, ready.cheap, settings.hardware.deploy, uniform)
    records.store_reference(study, reference.to_dict())
    return reference


def _objective(settings: Settings, ready: Prepared) -> TrialObjective:
    return TrialObjective(
        space=ready.space,
        cheap=ready.cheap,
        data=ready.data,
        settings=ready.training,
        proxy_identity=ready.identity["proxy"],
        device=resolve_device(settings.device),
        seed=settings.seed,
        proxy=ready.scorer,
        early_stop=make_early_stopping(settings.proxy.early_stop),
        compression=settings.compression,
        rungs=ready.rungs,
        pruning=ready.pruning,
    )


def _log_start(
    study: optuna.Study, settings: Settings, ready: Prepared, stored: int, target: dict[str, Any]
) -> None:
    training, rungs = settings.proxy.training, ready.rungs
    if warning := ready.cheap.latency.elsewhere:
        log.warning(warning)
    beyond_top = target["tokens"] > target["top_rung_tokens"]
    if beyond_top and target["extrapolation"] == "late_slope":  # the default reads no prior
        if far := late_slope.prior().beyond(target["top_rung_tokens"], target["tokens"]):
            log.warning(far)
    steps = "/".join(str(rungs.total(k)) for k in range(rungs.count))
    log.info(
        "study %s: %s; %d trials stored, adding up to %d (timeout %.0f s); latency: %s; "
        "proxy: %s steps x %d x %d tokens on %s (rungs; top 1/%g promoted; %d seed(s) at the "
        "top)",
        study.study_name,
        f"{settings.hardware.description}; runtime {settings.runtime.name} (int8/int4 scored in "
        f"{settings.compression.quant_format} numerics)",
        stored,
        settings.study.n_trials,
        settings.study.timeout_s,
        ready.cheap.latency.provenance,
        steps,
        training.batch_size,
        training.seq_len,
        resolve_device(settings.device),
        rungs.eta,
        rungs.seeds,
    )


def _finish(
    study: optuna.Study, settings: Settings, ready: Prepared, started: float
) -> SearchResult:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = sum(1 for t in done if records.is_feasible(t))
    entries = pareto_entries(study)
    hardware, rungs = settings.hardware, ready.rungs
    target = records.target(study) or {}
    judged = judge(done, target)
    limits = hardware.deploy
    parent = records.parent(study)
    reach = device_reach(
        done,
        max_decode_ms=limits.max_decode_ms,
        max_memory_mb=limits.max_memory_mb,
        pruned=parent is not None,
    )
    header = {
        "study": study.study_name,
        **_device_info(hardware, ready.cheap),
        "budget": settings.budget.name,
        "proxy": ready.data_info,
        "fidelity": {
            "rung_steps": [rungs.total(k) for k in range(rungs.count)],
            "promoted_share": 1 / rungs.eta,
            "top_rung_seeds": rungs.seeds,
            "schedule": settings.proxy.schedule,
            "front_judged_on": judged[0].basis if judged else "no candidate at the top rung yet",
            "seed_noise_sd": noise_sd(judged),
        },
        "target": target,
        "device_reach": reach.to_dict(hardware.name) if reach else None,
        "finished_trials": len(done),
        "feasible_trials": feasible,
        "objectives": list(records.OBJECTIVES),
        "nas_version": __version__,
    }
    if parent:  # a prune study: its parent and the parent's own bits per byte
        header["parent"] = parent
    out_dir = settings.out_dir
    write_front(entries, out_dir, header)
    seconds = time.perf_counter() - started
    calibration = (
        "calibrated on the device"
        if ready.cheap.calibrated
        else "from the uncalibrated roofline prior"
    )
    print(
        f"\nPareto front of {study.study_name} ({len(entries)} of {len(done)} finished trials, "
        f"{feasible} feasible on {hardware.name}; latency {calibration}):"
    )
    print(format_table(entries) if entries else "  (empty: no feasible trained trial yet)")
    if parent:
        print(
            f"\nparent {parent['directory']} ({parent['params']:,} parameters): "
            f"{parent['bpb']:.4f} held-out bits per byte, the reference for its children"
        )
    if reach and reach.out_of_reach:
        print(f"\nnote: {reach.message(hardware.name)}")
    print(f"\nwrote {out_dir / 'pareto.json'} and pareto.csv in {seconds:.0f} s")
    where = "" if settings.runs_dir == "runs" else f" runs_dir={settings.runs_dir}"
    print(f"plots and a report: python -m nas.report study.name={study.study_name}{where}")
    return SearchResult(study.study_name, out_dir, len(done), feasible, entries, seconds)


def _device_info(hardware: HardwareProfile, cheap: CheapObjectives) -> dict[str, Any]:
    return {
        "hardware": hardware.name,
        "device_limits": {
            "max_memory_mb": hardware.deploy.max_memory_mb,
            "max_decode_ms": hardware.deploy.max_decode_ms,
            "context_len": hardware.deploy.context_len,
            "long_context_len": hardware.deploy.long_context,
            "prompt_len": hardware.deploy.prompt_len,
        },
        "latency_predictor": {
            "calibrated": cheap.calibrated,
            "provenance": cheap.latency.provenance,
            "runtime": hardware.runtime,  # decode ms and memory MB are this runtime's
        },
    }
