"""`python -m nas.search hardware=pixel8`: the hardware-aware architecture + compression search.

Re-running the same command resumes the same study (its name derives from hardware, search space
and budget); every finished trial is kept and none is repeated.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from nas import __version__
from nas.cli import configure_logging
from nas.compression import CompressionSettings
from nas.config import as_dict, compose_config, require_float, require_int
from nas.corpus import encode, load_corpus, load_tokenizer, token_bytes
from nas.early_stop import make_early_stopping
from nas.errors import NasError, RedactingFilter, redact, run_cli
from nas.hardware import HardwareProfile
from nas.hypervolume import Reference, space_reference
from nas.objectives import CheapObjectives
from nas.pareto import atomic_write, format_table, pareto_entries, write_front
from nas.progress import SearchProgress
from nas.proxies import make_proxy
from nas.proxy import ProxyData, ProxyDiverged, ProxySettings, resolve_device
from nas.study import is_feasible, open_study
from nas.trial import TrialObjective
from nas.workers import check_workers, run_trials
from predictors.factory import latency_predictor, memory_predictor
from search_spaces import SearchSpace

log = logging.getLogger("nas.search")

USAGE = """usage: python -m nas.search [KEY=VALUE ...]

Searches small-LM architectures and compression for a device. Common overrides:
  hardware=NAME          pixel8 (default), rpi5, iphone15pro, jetson_orin_nano, laptop_x86,
                         local_cpu, a100, h100, h200
  budget=NAME            auto (default: gpu with CUDA, else cpu), cpu, gpu, smoke
  sampler=NAME           cost_aware (default), tpe, nsga2, gp, random
  study.name=NAME        default: <hardware>-<search_space>-<budget>; the same name resumes
  study.n_trials=N       trials to add in this run      study.timeout_s=S   stop starting trials
  study.storage=URL      default sqlite:///runs/<name>/study.db; postgresql://... to share
  proxy.corpus=PATH      a .txt file or folder (default: the Python standard library's source)
  proxy.tokenizer=PATH   a tokenizer.json (default: BPE trained on the corpus, cached)
  runs_dir=PATH          where studies and caches go (default: runs)
  quiet=true             log lines instead of a progress bar
  --cfg                  print the composed configuration and exit
Outputs: runs/<study.name>/study.db, pareto.json, pareto.csv"""


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    out_dir: Path
    finished: int
    feasible: int
    pareto: list[dict[str, Any]]
    seconds: float


def prepare_data(cfg: DictConfig, cache_dir: Path) -> tuple[ProxyData, Tokenizer, dict[str, Any]]:
    """Corpus -> tokenizer -> token streams, all cached under `cache_dir`."""
    proxy = cfg.proxy
    corpus = load_corpus(
        str(proxy.corpus),
        max_mb=require_float(cfg, "proxy.corpus_mb", minimum=0.001),
        heldout_fraction=require_float(cfg, "proxy.heldout_fraction", minimum=0.001),
    )
    vocab = require_int(cfg, "proxy.vocab_size", minimum=len("01") + 256)
    tokenizer = load_tokenizer(str(proxy.tokenizer), corpus, vocab, cache_dir)
    tag = hashlib.sha256(f"{corpus.fingerprint}{tokenizer.to_str()}".encode()).hexdigest()[:16]
    data = ProxyData(
        train_ids=encode(tokenizer, corpus.train, cache_dir / f"train-{tag}.npy"),
        heldout_ids=encode(tokenizer, corpus.heldout, cache_dir / f"heldout-{tag}.npy"),
        token_bytes=token_bytes(tokenizer),
    )
    info = {
        "corpus": corpus.source,
        "corpus_fingerprint": corpus.fingerprint,
        "corpus_bytes": corpus.n_bytes,
        "vocab_size": tokenizer.get_vocab_size(),
        "train_tokens": len(data.train_ids),
        "heldout_tokens": len(data.heldout_ids),
    }
    return data, tokenizer, info


def proxy_settings(cfg: DictConfig) -> ProxySettings:
    for key in ("steps", "seq_len", "batch_size", "eval_windows"):
        require_int(cfg, f"proxy.{key}", minimum=1)
    return ProxySettings.from_config(as_dict(cfg.proxy))


def build_space(cfg: DictConfig, vocab_size: int) -> SearchSpace:
    try:
        return instantiate(cfg.search_space, vocab_size=vocab_size, caps=cfg.budget.caps)
    except NasError:
        raise
    except Exception as err:  # Hydra wraps constructor errors; show the root cause in one line
        cause = err.__cause__ or err
        if isinstance(cause, NasError):
            raise cause from None
        raise NasError(f"search_space cannot be built: {cause}") from None


def run_search(cfg: DictConfig) -> SearchResult:
    """Run (or resume) the study that `cfg` describes and write its Pareto front."""
    started = time.perf_counter()
    runs_dir = Path(cfg.runs_dir)
    n_trials = require_int(cfg, "study.n_trials", minimum=0)
    timeout = require_float(cfg, "study.timeout_s", minimum=1)
    check_workers(cfg)  # before any work: several writers need a storage that takes them
    seed = require_int(cfg, "seed")
    hardware = HardwareProfile.from_config(as_dict(cfg.hardware))
    settings = proxy_settings(cfg)
    out_dir = runs_dir / str(cfg.study.name)
    cache_dir = Path(cfg.cache_dir)
    _check_writable(out_dir)

    data, tokenizer, data_info = prepare_data(cfg, cache_dir)
    # The study's own copy: export ships exactly the tokenizer its trials were scored with.
    atomic_write(out_dir / "tokenizer.json", tokenizer.to_str())
    if len(data.train_ids) <= settings.seq_len + 1:
        raise NasError(
            f"corpus too short for the budget: {len(data.train_ids)} training tokens, "
            f"need more than proxy.seq_len={settings.seq_len}"
        )
    space = build_space(cfg, data_info["vocab_size"])
    # The device's calibration (predictors/calibrations/<name>.json) when it exists, else priors.
    cheap = CheapObjectives(latency_predictor(hardware), memory_predictor(hardware))
    proxy_identity = {**asdict(settings), **data_info, "seed": seed}
    proxy = make_proxy(as_dict(cfg.proxy))
    if proxy.name != "train":  # the default keeps the identity of studies started before proxies
        proxy_identity["quality_proxy"] = proxy.identity()
    identity = {
        "hardware": hardware.name,
        "search_space": {"name": space.name, **space.choices()},
        "proxy": proxy_identity,
    }
    study = open_study(
        name=str(cfg.study.name),
        storage=str(cfg.study.storage),
        sampler_cfg=cfg.sampler,
        seed=seed,
        identity=identity,
        heartbeat_s=require_int(cfg, "study.heartbeat_s", minimum=1),
        grace_s=require_int(cfg, "study.grace_s", minimum=2),
        retries=require_int(cfg, "study.retries", minimum=0),
    )
    # What the report and the live hypervolume need, kept in the study itself so that a study
    # still running (or shared through a database) can be reported on. A resumed study keeps the
    # reference it was started with (older studies: the device limits), so its numbers stay
    # comparable with what it reported before.
    stored = study.user_attrs.get("hypervolume_reference")
    if stored:
        reference = Reference.from_dict(stored)
    else:
        reference = space_reference(space, cheap, hardware.deploy, data.uniform_bpb(settings))
        study.set_user_attr("hypervolume_reference", reference.to_dict())
    study.set_user_attr("device", _device_info(hardware, cheap))
    device = resolve_device(str(cfg.device))
    objective = TrialObjective(
        space=space,
        cheap=cheap,
        data=data,
        settings=settings,
        proxy_identity=proxy_identity,
        device=device,
        seed=seed,
        proxy=proxy,
        early_stop=make_early_stopping(as_dict(cfg.proxy).get("early_stop")),
        compression=CompressionSettings.from_config(as_dict(cfg.get("compression") or {})),
    )
    resumed = len(study.get_trials(deepcopy=False))  # `study.trials` deep-copies them all
    log.info(
        "study %s: %s; %d trials stored, adding up to %d (timeout %.0f s); latency: %s; "
        "proxy: %d steps x %d x %d tokens on %s",
        study.study_name,
        hardware.description,
        resumed,
        n_trials,
        timeout,
        cheap.latency.provenance,
        settings.steps,
        settings.batch_size,
        settings.seq_len,
        device,
    )
    progress = SearchProgress(
        n_trials, quiet=bool(cfg.quiet), reference=reference, timeout_s=timeout
    )
    interrupted = False
    try:
        run_trials(  # in this process or study.workers processes (nas/workers.py)
            cfg,
            study,
            objective,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=[progress],
            catch=(ProxyDiverged,),
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()

    result = _finish(study, hardware, cheap, cfg, out_dir, data_info, started)
    if interrupted:
        raise NasError(
            f"interrupted; the running trial is marked failed and queued again, "
            f"{result.finished} finished trials are safe in {cfg.study.storage}. "
            "Run the same command again to resume."
        )
    return result


def _finish(
    study: optuna.Study,
    hardware: HardwareProfile,
    cheap: CheapObjectives,
    cfg: DictConfig,
    out_dir: Path,
    data_info: dict[str, Any],
    started: float,
) -> SearchResult:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = sum(1 for t in done if is_feasible(t))
    entries = pareto_entries(study)
    header = {
        "study": study.study_name,
        **_device_info(hardware, cheap),
        "budget": str(cfg.budget.name),
        "proxy": data_info,
        "finished_trials": len(done),
        "feasible_trials": feasible,
        "objectives": ["bpb", "decode_ms", "memory_mb"],
        "nas_version": __version__,
    }
    write_front(entries, out_dir, header)
    seconds = time.perf_counter() - started
    print(
        f"\nPareto front of {study.study_name} ({len(entries)} of {len(done)} finished trials, "
        f"{feasible} feasible on {hardware.name}; latency {_calibration_word(cheap)}):"
    )
    print(format_table(entries) if entries else "  (empty: no feasible trained trial yet)")
    print(f"\nwrote {out_dir / 'pareto.json'} and pareto.csv in {seconds:.0f} s")
    where = "" if str(cfg.runs_dir) == "runs" else f" runs_dir={cfg.runs_dir}"
    print(f"plots and a report: python -m nas.report study.name={study.study_name}{where}")
    return SearchResult(study.study_name, out_dir, len(done), feasible, entries, seconds)


def _device_info(hardware: HardwareProfile, cheap: CheapObjectives) -> dict[str, Any]:
    return {
        "hardware": hardware.name,
        "device_limits": {
            "max_memory_mb": hardware.deploy.max_memory_mb,
            "max_decode_ms": hardware.deploy.max_decode_ms,
            "context_len": hardware.deploy.context_len,
            "prompt_len": hardware.deploy.prompt_len,
        },
        "latency_predictor": {
            "calibrated": cheap.calibrated,
            "provenance": cheap.latency.provenance,
        },
    }


def _calibration_word(cheap: CheapObjectives) -> str:
    return (
        "calibrated on the device" if cheap.calibrated else "from the uncalibrated roofline prior"
    )


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise NasError(
            f"cannot write to {out_dir}: {err.strerror}; pass runs_dir=PATH somewhere writable"
        ) from None


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    overrides = [a for a in argv if a != "--cfg"]
    cfg = compose_config(overrides)
    if "--cfg" in argv:
        print(redact(OmegaConf.to_yaml(cfg)))
        return 0
    configure_logging()
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())  # no database password in any log line
    run_search(cfg)
    return 0


if __name__ == "__main__":
    run_cli(main)
