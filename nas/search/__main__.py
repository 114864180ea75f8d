"""`python -m nas.search hardware=pixel8`: the hardware-aware architecture + compression search.

Re-running the same command resumes the same study (its name derives from hardware, search space
and budget); every finished trial is kept and none is repeated.
"""

from __future__ import annotations

from nas.cli import wants_help
from nas.errors import redact, run_cli

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


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(USAGE)
        return 0
    from omegaconf import OmegaConf

    from nas.cli import configure_logging
    from nas.config.compose import compose_config, to_settings

    cfg = compose_config([a for a in argv if a != "--cfg"])
    settings = to_settings(cfg)  # every value checked before any work starts
    if "--cfg" in argv:
        print(redact(OmegaConf.to_yaml(cfg)))
        return 0
    configure_logging()  # with every log line redacted: no database password in the logs
    from nas.search.run import run_search  # deferred: torch and transformers load here

    run_search(settings)
    return 0


if __name__ == "__main__":
    run_cli(main)
