"""`prune`: children pruned out of a pretrained parent (Minitron-style), and their compression.

A child keeps a share of the parent's layers, of the query heads in each kv group, of the kv
groups, of the FFN channels and of the experts (and routes each token to at most as many experts
as it keeps); `nas.parent` decides which units stay, by their activation importance. Head width,
residual width, vocabulary and tying stay the parent's, so the candidate's `ArchConfig` is the
child's exact shape: predictors, parameter counts, the cache key and the front all see the child.

The shares given in the config become unit counts once, here (duplicates merged); the sampled
parameters are those counts. Valid by construction, as `slm`: a choice that depends on an earlier
one has its own parameter per earlier value (`heads_per_group|n_kv_heads=2`). A plugin imports
only the vocabulary, so the parent is read from its config.json, never loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nas.arch import Candidate, read_parent
from nas.errors import NasError
from search_spaces.base import SearchSpace
from search_spaces.choices import COMPRESSION_RULES, checked, fraction
from search_spaces.compression import CompressionChoices

if TYPE_CHECKING:  # Optuna loads with the study: a space's settings are checked without it
    import optuna

FFN_MULTIPLE = 8  # kept FFN widths are multiples of 8, as hardware kernels like (and slm's are)
# Families whose config class refuses a residual width that is no multiple of the head count
# (transformers' LlamaConfig.validate_architecture): their children keep such head counts only.
HEADS_DIVIDE_HIDDEN = ("llama",)
RULES = {
    "layers_kept": fraction(),
    "heads_kept": fraction(),
    "kv_heads_kept": fraction(),
    "ffn_kept": fraction(),
    "experts_kept": fraction(),
    "experts_per_token_kept": fraction(),
    **COMPRESSION_RULES,
}


def kept(share: float, units: int, least: int = 1) -> int:
    """How many of `units` a share keeps: rounded half up, at least `least`."""
    return min(units, max(least, int(share * units + 0.5)))


def kept_ffn(share: float, width: int) -> int:
    """A kept FFN width: the whole width, or a multiple of 8 below it (at least 8)."""
    if share == 1.0 or width <= FFN_MULTIPLE:
        return width
    return min(width, max(FFN_MULTIPLE, int(share * width / FFN_MULTIPLE + 0.5) * FFN_MULTIPLE))


class PruneSpace(SearchSpace):
    def __init__(
        self,
        *,
        name: str = "prune",
        vocab_size: int,
        parent: str | None = None,
        layers_kept: Sequence[float],
        heads_kept: Sequence[float],
        kv_heads_kept: Sequence[float],
        ffn_kept: Sequence[float],
        experts_kept: Sequence[float],
        experts_per_token_kept: Sequence[float],
        weight_bits: Sequence[int],
        group_size: Sequence[int],
        sparsity: Sequence[str],
        quant_method: Sequence[str] = ("rtn",),
        prune_method: Sequence[str] = ("magnitude",),
        per_channel_bits: Sequence[int] = (),
        caps: Mapping[str, int] | None = None,
    ) -> None:
        # `caps` (the budget's max layers/heads/head_dim/experts) bound slm's from-scratch shapes;
        # here the parent bounds them (no child is larger), and capping a pretrained parent's
        # head_dim would leave no child at all, so they are accepted and not applied.
        super().__init__(name=name, vocab_size=vocab_size)
        if not parent:
            raise NasError("search_space=prune needs search_space.parent=DIR")
        self.parent = str(parent)
        self.parent_arch, self.family = read_parent(
            parent,
            f"search_space.parent={parent}",
            "pass search_space.parent=DIR, a local Hugging Face checkpoint directory",
        )
        arch = self.parent_arch
        if vocab_size > arch.vocab_size:
            raise NasError(
                f"the tokenizer has {vocab_size} tokens but the parent embeds {arch.vocab_size}; "
                "use the parent's own tokenizer (its tokenizer.json)"
            )
        group = arch.n_heads // arch.n_kv_heads

        def counts(key: str, shares: Any, units: int, least: int = 1) -> list[int]:
            return sorted({kept(s, units, least) for s in checked(key, shares, RULES)})

        self.n_layers = counts("layers_kept", layers_kept, arch.n_layers)
        self.n_kv_heads = counts("kv_heads_kept", kv_heads_kept, arch.n_kv_heads)
        self.heads_per_group = counts("heads_kept", heads_kept, group)
        self.ffn_dim = sorted(
            {kept_ffn(s, arch.ffn_dim) for s in checked("ffn_kept", ffn_kept, RULES)}
        )
        self.n_experts, self.top_k_kept = [1], [1.0]
        if arch.n_experts > 1:  # an MoE child keeps at least 2 experts (1 would be dense)
            self.n_experts = counts("experts_kept", experts_kept, arch.n_experts, least=2)
            self.top_k_kept = checked("experts_per_token_kept", experts_per_token_kept, RULES)
        self.compression = CompressionChoices(
            weight_bits=weight_bits,
            group_size=group_size,
            sparsity=sparsity,
            quant_method=quant_method,
            prune_method=prune_method,
            per_channel_bits=per_channel_bits,
        )
        self._check_combinations()

    def _check_combinations(self) -> None:
        if not any(self._group_choices(kv) for kv in self.n_kv_heads):
            raise NasError(
                f"search_space.heads_kept and kv_heads_kept leave no head count dividing the "
                f"parent's hidden_size {self.parent_arch.d_model}, which {self.family} requires; "
                "add 1.0 to both"
            )
        hd = self.parent_arch.head_dim
        heads = {kv * g for kv in self.n_kv_heads for g in self._group_choices(kv)}
        self.compression.check_widths(
            [(self.parent_arch.d_model, "the parent's hidden_size")]
            + [(h * hd, f"{h} heads x head_dim={hd}") for h in sorted(heads)]
            + [(f, f"ffn_dim={f}") for f in self.ffn_dim]
        )

    def _group_choices(self, kv: int) -> list[int]:
        """Query heads per kv group a child with `kv` groups may keep."""
        d_model = self.parent_arch.d_model
        if self.family not in HEADS_DIVIDE_HIDDEN:
            return list(self.heads_per_group)
        return [g for g in self.heads_per_group if d_model % (kv * g) == 0]

    def _top_k_choices(self, experts: int) -> list[int]:
        top_k = self.parent_arch.experts_per_token
        return sorted({min(experts, kept(s, top_k)) for s in self.top_k_kept})

    def suggest(self, trial: optuna.Trial) -> Candidate:
        n_layers = trial.suggest_categorical("n_layers", self.n_layers)
        kv_choices = [kv for kv in self.n_kv_heads if self._group_choices(kv)]
        kv = trial.suggest_categorical("n_kv_heads", kv_choices)
        group = trial.suggest_categorical(
            f"heads_per_group|n_kv_heads={kv}", self._group_choices(kv)
        )
        ffn_dim = trial.suggest_categorical("ffn_dim", self.ffn_dim)
        experts, top_k = self.parent_arch.n_experts, self.parent_arch.experts_per_token
        if experts > 1:
            experts = trial.suggest_categorical("n_experts", self.n_experts)
            top_k = trial.suggest_categorical(
                f"experts_per_token|n_experts={experts}", self._top_k_choices(experts)
            )
        parent = self.parent_arch
        heads = kv * group
        arch = replace(
            parent,
            n_layers=n_layers,
            n_heads=heads,
            n_kv_heads=kv,
            ffn_dim=ffn_dim,
            n_experts=experts,
            experts_per_token=top_k,
            # the residual stream stays the parent's width, whatever the heads add up to
            hidden_size=0 if heads * parent.head_dim == parent.d_model else parent.d_model,
        )
        return Candidate(arch=arch, compression=self.compression.suggest(trial))

    def choices(self) -> dict[str, list[Any]]:
        units = {
            "parent": [self.parent],
            "n_layers": list(self.n_layers),
            "n_kv_heads": list(self.n_kv_heads),
            "heads_per_group": list(self.heads_per_group),
            "ffn_dim": list(self.ffn_dim),
            "n_experts": list(self.n_experts),
            "experts_per_token_kept": list(self.top_k_kept),
        }
        return units | self.compression.choices()
