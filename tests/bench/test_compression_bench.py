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
