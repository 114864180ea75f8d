"""`slm`: decoder-only small language models with grouped-query attention, optional mixture of
experts, tied or untied embeddings, and their compression: structured pruning of the trained shape
to a smaller deployed one (`search_spaces.shrink`), then weight quantization and sparsity.

Valid by construction: choices that depend on an earlier one get their own Optuna parameter per
parent value (`n_kv_heads|n_heads=8` offers only divisors of 8), because Optuna requires one fixed
distribution per parameter name. Choices that cannot occur under the budget's caps are removed when
the space is built, and an empty choice list is a configuration error, not a runtime reject.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nas.arch import ArchConfig, Candidate
from nas.errors import NasError
from search_spaces.base import SearchSpace
from search_spaces.choices import COMPRESSION_RULES, Choices, count
from search_spaces.choices import checked as checked_by
from search_spaces.compression import CompressionChoices
from search_spaces.shrink import ShrinkChoices

if TYPE_CHECKING:  # Optuna loads with the study: a space's settings are checked without it
    import optuna

FFN_MULTIPLE = 8  # SwiGLU hidden sizes are rounded to a multiple of 8, as hardware kernels like

# Every sample is valid by construction only if every choice is: checked once, when built.
RULES = {
    "n_layers": count(),
    "n_heads": count(),
    # Rotary embeddings (Llama, Qwen3-MoE) rotate pairs of dimensions: an odd head_dim breaks.
    "head_dim": Choices(int, lambda v: v >= 2 and v % 2 == 0, "even integers >= 2"),
    "n_kv_heads": count(),
    "ffn_ratio": Choices(float, lambda v: v > 0, "numbers > 0"),
    "n_experts": count(),
    "experts_per_token": count(),
    "moe_every": count(),
    "tie_embeddings": Choices(bool, rule="true or false"),
    **COMPRESSION_RULES,
}


def checked(key: str, values: Any) -> list[Any]:
    """The choices given for `key` as a list; a `NasError` naming the key and its rule."""
    return checked_by(key, values, RULES)


class SLMSpace(SearchSpace):
    def __init__(
        self,
        *,
        name: str = "slm",
        vocab_size: int,
        n_layers: Sequence[int],
        n_heads: Sequence[int],
        head_dim: Sequence[int],
        n_kv_heads: Sequence[int],
        ffn_ratio: Sequence[float],
        n_experts: Sequence[int],
        experts_per_token: Sequence[int],
        moe_every: Sequence[int],
        tie_embeddings: Sequence[bool],
        weight_bits: Sequence[int],
        group_size: Sequence[int],
        sparsity: Sequence[str],
        quant_method: Sequence[str] = ("rtn",),
        prune_method: Sequence[str] = ("magnitude",),
        per_channel_bits: Sequence[int] = (),
        structured: Sequence[bool] = (False,),
        prune_heads: Sequence[float] = (0.0,),
        prune_ffn: Sequence[float] = (0.0,),
        prune_experts: Sequence[float] = (0.0,),
        prune_layers: Sequence[float] = (0.0,),
        recovery: Sequence[str] = ("none",),
        caps: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(name=name, vocab_size=vocab_size)
        caps = dict(caps or {})
        unknown = set(caps) - {"max_layers", "max_heads", "max_head_dim", "max_experts"}
        if unknown:
            raise NasError(f"unknown budget caps {sorted(unknown)}")

        def capped(key: str, values: Any, cap: str | None = None) -> list[Any]:
            values = checked(key, values)
            kept = sorted({v for v in values if cap is None or v <= caps.get(cap, v)})
            if not kept:
                limit = f" <= {cap}={caps.get(cap)}" if cap else ""
                raise NasError(f"search_space.{key} has no choice{limit}; widen it or the budget")
            return kept

        self.n_layers = capped("n_layers", n_layers, "max_layers")
        self.n_heads = capped("n_heads", n_heads, "max_heads")
        self.head_dim = capped("head_dim", head_dim, "max_head_dim")
        self.n_kv_heads = capped("n_kv_heads", n_kv_heads)
        self.ffn_ratio = capped("ffn_ratio", ffn_ratio)
        self.n_experts = capped("n_experts", n_experts, "max_experts")
        self.experts_per_token = capped("experts_per_token", experts_per_token)
        layers = min(self.n_layers)
        self.moe_every = capped(
            "moe_every", [k for k in checked("moe_every", moe_every) if k <= layers]
        )
        self.tie_embeddings = sorted(set(checked("tie_embeddings", tie_embeddings)))
        self.compression = CompressionChoices(
            weight_bits=weight_bits,
            group_size=group_size,
            sparsity=sparsity,
            quant_method=quant_method,
            prune_method=prune_method,
            per_channel_bits=per_channel_bits,
        )
        self.shrink = ShrinkChoices(
            structured=structured,
            prune_heads=prune_heads,
            prune_ffn=prune_ffn,
            prune_experts=prune_experts,
            prune_layers=prune_layers,
            recovery=recovery,
        )
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Rules across parameters: kv-heads dividing the heads, top-k within the experts,
        2:4 sparsity on widths that divide by 4."""
        for heads in self.n_heads:
            if not self._kv_choices(heads):
                raise NasError(
                    f"search_space.n_kv_heads {self.n_kv_heads} holds no divisor of n_heads="
                    f"{heads}: grouped-query attention needs kv-heads that divide the heads"
                )
        for experts in self.n_experts:
            if experts > 1 and not self._top_k_choices(experts):
                raise NasError(
                    f"search_space.experts_per_token {self.experts_per_token} has no value <= "
                    f"n_experts={experts}"
                )
        shapes = [
            (h, k, d) for h in self.n_heads for k in self._kv_choices(h) for d in self.head_dim
        ]
        self.compression.check_widths(
            [(h * d, f"n_heads={h} x head_dim={d}") for h, _, d in shapes]
            + self.shrink.head_widths(shapes)
        )
        self.shrink.check_ffn(
            self._ffn_dim(min(self.ffn_ratio), min(self.n_heads) * min(self.head_dim))
        )

    @staticmethod
    def _ffn_dim(ratio: float, d_model: int) -> int:
        return max(FFN_MULTIPLE, round(ratio * d_model / FFN_MULTIPLE) * FFN_MULTIPLE)

    def _kv_choices(self, heads: int) -> list[int]:
        return [k for k in self.n_kv_heads if heads % k == 0]

    def _top_k_choices(self, experts: int) -> list[int]:
        return [k for k in self.experts_per_token if k <= experts]

    def suggest(self, trial: optuna.Trial) -> Candidate:
        n_layers = trial.suggest_categorical("n_layers", self.n_layers)
        n_heads = trial.suggest_categorical("n_heads", self.n_heads)
        head_dim = trial.suggest_categorical("head_dim", self.head_dim)
        kv = trial.suggest_categorical(f"n_kv_heads|n_heads={n_heads}", self._kv_choices(n_heads))
        ffn_ratio = trial.suggest_categorical("ffn_ratio", self.ffn_ratio)
        n_experts = trial.suggest_categorical("n_experts", self.n_experts)
        top_k, moe_every = 1, 1
        if n_experts > 1:
            top_k = trial.suggest_categorical(
                f"experts_per_token|n_experts={n_experts}", self._top_k_choices(n_experts)
            )
            moe_every = trial.suggest_categorical("moe_every", self.moe_every)
        tie = trial.suggest_categorical("tie_embeddings", self.tie_embeddings)
        trained = ArchConfig(
            n_layers=n_layers,
            n_heads=n_heads,
            n_kv_heads=kv,
            head_dim=head_dim,
            ffn_dim=self._ffn_dim(ffn_ratio, n_heads * head_dim),
            vocab_size=self.vocab_size,
            n_experts=n_experts,
            experts_per_token=top_k,
            moe_every=moe_every,
            tie_embeddings=tie,
        )
        arch, shrink = self.shrink.suggest(trial, trained)
        return Candidate(arch=arch, compression=self.compression.suggest(trial), shrink=shrink)

    def choices(self) -> dict[str, list[Any]]:
        names = (
            "n_layers n_heads head_dim n_kv_heads ffn_ratio n_experts experts_per_token "
            "moe_every tie_embeddings"
        ).split()
        mine = {name: list(getattr(self, name)) for name in names}
        return mine | self.shrink.choices() | self.compression.choices()
