"""Bad input to every other command (export, report, dashboard, calibrate, predict, train, bench):
one line that says what to fix, exit code 2, and the stored study untouched."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bad_input.conftest import Stored
from tests.bad_input.sweep import Case, case, check


def alone(command: str, *args: str, **kwargs: Any) -> Any:
    """A case for a command that reads no study: its arguments stand alone."""
    return case(command, *args, study=False, **kwargs)


EXPORT = [
    case(
        "export",
        "trial=x",
        expect="trial=x is not a trial number, 'pareto' or 'best:METRIC'",
        id="trial-text",
    ),
    case("export", "trial=99", expect="study 'B' has no trial 99 (trials: 0-", id="trial-absent"),
    case(
        "export",
        "trial=best:nope",
        expect="unknown metric 'nope' for trial=best:METRIC",
        id="unknown-metric",
    ),
    case("export", expect="pass trial=N, trial=pareto or trial=best:bpb", id="no-trial"),
    case(
        "export",
        "trial=0",
        "study.name=zz",
        expect="no study 'zz' in {runs}/; it holds: B",
        id="unknown-study",
    ),
    case(
        "export", "trial=0", "out=/proc/x", expect="cannot write out=/proc/x", id="out-unwritable"
    ),
    case(
        "export", "trial=0", "out={bad}/plain", expect="is a file; pass out=DIR", id="out-is-a-file"
    ),
    case(
        "export",
        "trial=0",
        "out={bad}/plain/x",
        expect="{bad}/plain is a file",
        id="out-under-a-file",
    ),
    case(
        "export",
        "trial=0",
        "out={bad}/full",
        expect="exists and is not empty; pass force=true",
        id="out-not-empty",
    ),
    case(
        "export",
        "trial=0",
        "onnx=maybe",
        expect="onnx must be true or false, got 'maybe'",
        id="onnx-not-bool",
    ),
    case(
        "export", "studies=[B,B]", "trial=0", expect="export reads one study", id="several-studies"
    ),
    case("export", "trial", expect="expected KEY=VALUE, got 'trial'", id="no-equals-sign"),
    case(
        "export",
        "trial=0",
        "runs_dir={bad}/damaged-page",
        expect="study.db is damaged",
        id="damaged-db",
    ),
]

REPORT = [
    case(
        "report",
        "study.name=zz",
        expect="no study 'zz' in {runs}/; it holds: B",
        id="unknown-study",
    ),
    case("report", "out", expect="expected KEY=VALUE, got 'out'", id="no-equals-sign"),
    case("report", "hardware=nope", expect="unknown hardware 'nope'", id="unknown-hardware"),
    case(
        "report",
        "runs_dir={bad}/damaged-header",
        expect="study.db is damaged (file is not a database)",
        id="damaged-db",
    ),
]

DASHBOARD = [
    case(
        "dashboard",
        "port=99999",
        expect="port must be an integer within [1, 65535], got 99999",
        id="port-too-high",
    ),
    case(
        "dashboard",
        "port=abc",
        expect="port must be an integer within [1, 65535], got 'abc'",
        id="port-text",
    ),
    case("dashboard", "study.name=zz", expect="no study 'zz'", id="unknown-study"),
    case(
        "dashboard", "study.name=[B,C]", expect="the dashboard opens one storage", id="two-studies"
    ),
]

CAL = "hardware=local_cpu"
CALIBRATE = [
    alone(
        "calibrate",
        CAL,
        "mode=bundle",
        "out=/proc/x",
        expect="cannot write out=/proc/x",
        id="bundle-out-unwritable",
    ),
    alone(
        "calibrate",
        CAL,
        "runs_dir=/proc/x",
        "n_fit=1",
        "n_heldout=0",
        expect="cannot write runs_dir=/proc/x",
        id="measure-runs-dir-unwritable",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=fly",
        expect="mode must be one of: measure, bundle, ingest, got 'fly'",
        id="unknown-mode",
    ),
    alone(
        "calibrate",
        CAL,
        "rounds=0",
        expect="rounds must be an integer >= 1, got 0",
        id="zero-rounds",
    ),
    alone(
        "calibrate", CAL, "mode=bundle", expect="mode=bundle needs out=DIR", id="bundle-without-out"
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        expect="mode=ingest needs results=FILE",
        id="ingest-without-results",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/none.jsonl",
        expect="no such file",
        id="results-missing",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/nan.jsonl",
        expect="decode_ms must be a positive number, got nan",
        id="nan-time",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/inf.jsonl",
        expect="prefill_ms must be a positive number, got inf",
        id="infinite-time",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/negative.jsonl",
        expect="memory_mb must be a positive number, got -3.0",
        id="negative-memory",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/unknown_id.jsonl",
        expect="unknown model id",
        id="unknown-id",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/other_device.jsonl",
        expect="device 'rpi5' but the bundle is for 'local_cpu'",
        id="other-device",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/not_json.jsonl",
        expect="line 1 is not JSON",
        id="results-not-json",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/list.jsonl",
        expect="results row 1 is not a JSON object",
        id="results-row-a-list",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/broken/results.jsonl",
        expect="manifest.json is not JSON",
        id="manifest-broken",
    ),
    alone(
        "calibrate",
        CAL,
        "mode=ingest",
        "results={bad}/cal/empty/results.jsonl",
        expect="manifest.json is not a bundle manifest",
        id="manifest-empty",
    ),
    alone(
        "calibrate",
        "hardware=rpi5",
        "mode=ingest",
        "results={bad}/cal/nan.jsonl",
        expect="is for local_cpu, not rpi5",
        id="other-bundle",
    ),
]

PREDICT = [
    alone(
        "predict",
        "arch={bad}/none.json",
        expect="no config.json at {bad}/none.json",
        id="arch-missing",
    ),
    alone(
        "predict",
        "arch={bad}/gpt2.json",
        expect="describes a 'gpt2' model; supported: llama, mistral, qwen2, qwen3 (dense, Llama-",
        id="gpt2",
    ),
    alone(
        "predict",
        "arch={bad}/zero_heads.json",
        expect="num_attention_heads must be an integer >= 1, got 0",
        id="zero-heads",
    ),
    alone(
        "predict",
        "arch={bad}/text_layers.json",
        expect="num_hidden_layers must be an integer >= 1, got 'two'",
        id="text-layers",
    ),
    alone(
        "predict",
        "arch={bad}/bad_width.json",
        expect="hidden_size=250 is not a multiple of num_attention_heads=4 and config.json gives "
        "no head_dim",
        id="width-not-heads-x-dim",
    ),
    alone(
        "predict",
        "arch={bad}/bad_kv.json",
        expect="n_kv_heads=3 must divide n_heads=4",
        id="kv-not-dividing",
    ),
    alone("predict", "arch={bad}/garbage.json", expect="is not JSON", id="garbage-json"),
    alone("predict", "arch={bad}/list.json", expect="holds no JSON object", id="json-list"),
    alone(
        "predict",
        "arch={bad}/llama.json",
        "compression.sparsity=1.5",
        expect="compression.sparsity must be a number within [0, 1], got 1.5",
        id="sparsity-over-one",
    ),
    alone(
        "predict",
        "arch={bad}/llama.json",
        "compression.sparsity=0.3",
        expect="bad compression setting",
        id="sparsity-without-pattern",
    ),
    alone(
        "predict",
        "arch={bad}/llama.json",
        "compression.weight_bits=3",
        expect="compression.weight_bits must be one of: 16, 8, 4, got 3",
        id="unsupported-bits",
    ),
    alone(
        "predict",
        "arch={bad}/llama.json",
        "hardware=nope",
        expect="unknown hardware 'nope'",
        id="unknown-hardware",
    ),
    alone("predict", "hardware=rpi5", expect="pass arch=PATH/config.json", id="no-arch"),
]

TRAIN = [
    alone(
        "train",
        "{bad}/model",
        "{bad}/full",
        expect="pass exactly one model directory",
        id="two-dirs",
    ),
    alone("train", "{bad}/none", expect="{bad}/none has no config.json", id="dir-missing"),
    alone(
        "train",
        "{bad}/model",
        "steps=0",
        expect="steps must be an integer >= 1, got 0",
        id="zero-steps",
    ),
    alone("train", "{bad}/model", "epochs=3", expect="unknown key 'epochs'", id="unknown-key"),
    alone(
        "train",
        "{bad}/model",
        "steps=1",
        expect="config.json",
        id="garbage-config",
    ),
]

BENCH = [
    alone(
        "bench", "nope", expect="unknown benchmark 'nope'; choose one of:", id="unknown-benchmark"
    ),
]


@pytest.mark.parametrize("item", EXPORT + REPORT + DASHBOARD + CALIBRATE + PREDICT + TRAIN + BENCH)
def test_command_refuses(
    item: Case, stored: Stored, values: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    check(item, stored.study_args, values, stored.runs, capsys)
