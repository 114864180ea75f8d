"""`nas.bench compression parts=latency` times each variant's final shape without training: the
shapes it works out are the ones the real pruning leaves."""

from __future__ import annotations

import pytest
import torch

from nas.arch import ArchConfig
from nas.bench.compression import bench_arches, shape_rows
from nas.bench.compression import main as bench_main
from nas.compression.structured import prune_structured
from nas.errors import NasError
from nas.quality.models import build_model
from tests.executorch.helpers import needs_executorch

OWN = {"tune_steps": 1}


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_latency_shapes_match_the_real_pruning(name: str) -> None:
    arch = bench_arches(256)[name]
    model = build_model(arch, seed=0).eval()
    calibration = torch.randint(0, 256, (2, 16))
    rows = shape_rows(name, arch, OWN, a8=True)
    assert {r["table"] for r in rows} == {"quantization", "sparsity", "structured", "qat",
                                          "combined"}  # fmt: skip
    for row in rows:
        shape = row["graph"].split(" | ", 1)[1]
        if shape == "full":
            assert row["arch"] == arch.to_dict()
            continue
        unit, share = shape.split()
        done = prune_structured(model, arch, calibration=calibration,
                                **{unit: float(share.rstrip("%")) / 100})  # fmt: skip
        assert ArchConfig.from_dict(row["arch"]) == done.arch, row["variant"]
    quantized = [r for r in rows if r["graph"].startswith("int4 g32")]
    assert quantized and all(
        r["recipe"]["quantization"]["activations"] == "int8" for r in quantized
    )


def test_bad_options_are_refused_before_anything_runs() -> None:
    with pytest.raises(NasError, match="must be >= 1"):
        bench_main(["steps=0"])


def test_unknown_parts_are_refused_before_anything_runs() -> None:
    with pytest.raises(NasError, match="parts= takes all or any of"):
        bench_main(["parts=quantisation"])


@needs_executorch
@pytest.mark.slow  # exports a program (~20 s here); tests/executorch checks the numerics fast
def test_formats_score_both_numerics_and_the_program_runs_the_xnnpack_scored_model(
    shared_cache,
) -> None:
    from dataclasses import replace

    from nas.bench._compression_eval import window_bits, window_bytes
    from nas.bench._compression_formats import format_rows, formats_table
    from nas.config.compose import load_settings
    from nas.quality.data import prepare_data

    cfg = load_settings(["budget=smoke", f"cache_dir={shared_cache}"])
    data, _, info = prepare_data(cfg.proxy, shared_cache)
    settings = replace(cfg.proxy.training, eval_windows=6, seq_len=24)
    arch = ArchConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                      vocab_size=info["vocab_size"])  # fmt: skip
    model = build_model(arch, seed=1, max_positions=32).eval()
    base = window_bits(model, data, settings)
    rows = format_rows("tiny", model, arch, data, settings, base, window_bytes(data, settings),
                       seed=0, pte_windows=2, formats=((4, 32),))  # fmt: skip
    assert [r["variant"] for r in rows] == ["rtn int4 g32"]
    for row in rows:
        assert row["matmulnbits"]["recipe"]["format"] == "matmulnbits"
        assert row["xnnpack"]["recipe"]["format"] == "xnnpack"
        assert row["matmulnbits"]["delta"] != row["xnnpack"]["delta"]
        pte = row["pte"]
        assert pte["windows"] == 2
        assert abs(pte["bpb"] - pte["scored_bpb"]) < 1e-3 * pte["scored_bpb"], pte
    assert "rtn int4 g32" in formats_table(rows)
