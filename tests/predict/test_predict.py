"""nas.predict: a Hugging Face config.json in, predicted latency/memory/energy out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.predict.__main__ import main
from nas.predict.run import arch_from_hf
from nas.quality.models import build_model, hf_config

HARDWARE = sorted(
    p.stem for p in (Path(__file__).parents[2] / "hydra_configs/hardware").glob("*.yaml")
)
SMOLLM_LIKE = {
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_attention_heads": 9, "num_key_value_heads": 3, "num_hidden_layers": 30,
    "vocab_size": 49152, "tie_word_embeddings": True,
}  # fmt: skip


@pytest.fixture
def llama_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMOLLM_LIKE))
    return path


@pytest.mark.parametrize("hardware", HARDWARE)
def test_answers_for_a_llama_config_on_every_shipped_profile(
    hardware: str, llama_config: Path, capsys
) -> None:
    main([f"hardware={hardware}", f"arch={llama_config}", "compression.weight_bits=4"])
    out = json.loads(capsys.readouterr().out)
    for key in ("decode_ms", "tokens_per_s", "prefill_ms", "memory_mb", "energy_mj_per_token"):
        assert out[key] > 0, key
    assert isinstance(out["calibrated"], bool)
    assert out["tokens_per_s"] == pytest.approx(1000 / out["decode_ms"], rel=1e-3)
    assert out["compression"]["weight_bits"] == 4 and out["compression"]["group_size"] == 128


def test_round_trips_our_own_configs() -> None:
    for arch in (
        ArchConfig(n_layers=3, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, vocab_size=500),
        ArchConfig(n_layers=4, n_heads=4, n_kv_heads=1, head_dim=16, ffn_dim=32, vocab_size=500,
                   n_experts=8, experts_per_token=2, moe_every=2, tie_embeddings=False),
    ):  # fmt: skip
        assert arch_from_hf(hf_config(arch).to_dict()) == arch


def test_fewer_bits_predict_less_memory(llama_config: Path, capsys) -> None:
    sizes = []
    for bits in (16, 4):
        main(["hardware=rpi5", f"arch={llama_config}", f"compression.weight_bits={bits}"])
        sizes.append(json.loads(capsys.readouterr().out)["memory_mb"])
    assert sizes[1] < sizes[0]


def test_errors_are_one_line(tmp_path: Path, llama_config: Path) -> None:
    with pytest.raises(NasError, match="pass arch="):
        main(["hardware=rpi5"])
    with pytest.raises(NasError, match="no config"):
        main(["hardware=rpi5", f"arch={tmp_path / 'missing'}"])
    with pytest.raises(NasError, match="'compression' has: weight_bits, group_size"):
        main(["hardware=rpi5", f"arch={llama_config}", "compression.bits=4"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(NasError, match="lacks"):
        main(["hardware=rpi5", f"arch={bad}"])
    with pytest.raises(NasError, match="unknown hardware"):
        main(["hardware=pixel99", f"arch={llama_config}"])


QWEN3_0_6B = {  # Qwen/Qwen3-0.6B config.json: attention 16 x 128 = 2048 wide, residual 1024
    "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
    "num_hidden_layers": 28, "vocab_size": 151936, "tie_word_embeddings": True,
}  # fmt: skip


def test_attention_width_apart_from_the_residual_width(tmp_path: Path, capsys) -> None:
    arch = arch_from_hf(QWEN3_0_6B)
    assert (arch.d_model, arch.n_heads * arch.head_dim) == (1024, 2048)
    # 0.44B parameters outside the embedding, as Qwen3's model card says (Qwen3 dense adds a
    # per-head q/k norm, 2 x 128 weights a layer, that Llama-style models lack).
    assert arch.non_embedding_params == pytest.approx(0.44e9, rel=0.01)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN3_0_6B))
    main(["hardware=rpi5", f"arch={path}"])
    assert json.loads(capsys.readouterr().out)["decode_ms"] > 0
    # A small model of that kind builds in transformers with exactly the counted parameters and
    # reads back from its own config.
    small = ArchConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, ffn_dim=96,
                       vocab_size=300, hidden_size=64)  # fmt: skip
    model = build_model(small)
    assert sum(p.numel() for p in model.parameters()) == small.params
    assert arch_from_hf(hf_config(small).to_dict()) == small


@pytest.mark.parametrize("hardware", ["rpi5", "local_cpu"])
def test_decode_is_quoted_at_a_long_context_too(hardware: str, tmp_path: Path, capsys) -> None:
    """At 4x the profile's context decode is slower, by more for a model whose KV cache is
    larger (all heads kept against 1 kv-head for 3 query heads); the KV cache's size is given."""
    out = {}
    for kv_heads in (9, 3):
        path = tmp_path / f"kv{kv_heads}.json"
        path.write_text(json.dumps(SMOLLM_LIKE | {"num_key_value_heads": kv_heads}))
        main([f"hardware={hardware}", f"arch={path}"])
        out[kv_heads] = json.loads(capsys.readouterr().out)
    for o in out.values():
        assert o["long_context_len"] == 4 * o["context_len"]
        assert o["decode_ms_long"] > o["decode_ms"]
        assert o["tokens_per_s_long"] == pytest.approx(1000 / o["decode_ms_long"], rel=1e-3)
    assert out[9]["kv_cache_mb_long"] == pytest.approx(3 * out[3]["kv_cache_mb_long"])
    growth = {k: o["decode_ms_long"] - o["decode_ms"] for k, o in out.items()}
    assert growth[9] > growth[3]
