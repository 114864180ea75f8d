"""The `slm` space's "train this shape, then prune to that one": after the trained shape is
sampled, shares of its heads, FFN channels, experts and layers to remove, and the recovery the
pruned model gets (none, a short fine-tune, or distillation from the unpruned model).

Valid by construction like the rest of the space: a share is offered only where it applies to
the sampled shape (`nas.shrink.pruned_arch` works the pruned shape out without a
model), under a parameter named after what it depends on (`prune_heads|n_heads=8,n_kv_heads=4,
head_dim=32`), because Optuna requires one fixed distribution per parameter name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.shrink import RECOVERIES, Shrink, pruned_arch
from search_spaces.choices import Choices, checked

if TYPE_CHECKING:  # Optuna loads with the study: a space's settings are checked without it
    import optuna

RULES = {
    "structured": Choices(bool, rule="true or false"),
    **{
        f"prune_{unit}": Choices(float, lambda v: 0 <= v < 1, "shares in [0, 1)")
        for unit in ("heads", "ffn", "experts", "layers")
    },
    "recovery": Choices(str, lambda v: v in RECOVERIES, "any of " + ", ".join(RECOVERIES)),
}
NAMES = ("structured", "prune_heads", "prune_ffn", "prune_experts", "prune_layers", "recovery")


def _applies(arch: ArchConfig, **share: float) -> bool:
    try:
        pruned_arch(arch, **share)
    except NasError:
        return False
    return True


class ShrinkChoices:
    def __init__(
        self,
        *,
        structured: Sequence[bool],
        prune_heads: Sequence[float],
        prune_ffn: Sequence[float],
        prune_experts: Sequence[float],
        prune_layers: Sequence[float],
        recovery: Sequence[str],
    ) -> None:
        self.structured = sorted(set(checked("structured", structured, RULES)))
        self.prune_heads = self._shares("prune_heads", prune_heads)
        self.prune_ffn = self._shares("prune_ffn", prune_ffn)
        self.prune_experts = self._shares("prune_experts", prune_experts)
        self.prune_layers = self._shares("prune_layers", prune_layers)
        self.recovery = list(dict.fromkeys(checked("recovery", recovery, RULES)))

    @staticmethod
    def _shares(key: str, values: Any) -> list[float]:
        return sorted({float(v) for v in checked(key, values, RULES)})

    @property
    def offered(self) -> bool:
        return True in self.structured

    def check_ffn(self, smallest_ffn: int) -> None:
        """Every FFN share must leave channels in the narrowest FFN the space can sample."""
        probe = ArchConfig(n_layers=1, n_heads=1, n_kv_heads=1, head_dim=2, ffn_dim=smallest_ffn,
                           vocab_size=2)  # fmt: skip
        bad = [f for f in self.prune_ffn if f and not _applies(probe, ffn=f)]
        if self.offered and bad:
            raise NasError(
                f"search_space.prune_ffn={bad[0]} leaves no channel of the narrowest FFN the "
                f"space samples ({smallest_ffn}); lower it or widen ffn_ratio / head_dim"
            )

    def head_widths(self, shapes: Iterable[tuple[int, int, int]]) -> list[tuple[int, str]]:
        """The attention widths head pruning can leave, for (heads, kv-heads, head_dim) shapes:
        (width, what) pairs for the 2:4 check."""
        out = []
        for heads, kv, dim in shapes:
            arch = ArchConfig(n_layers=1, n_heads=heads, n_kv_heads=kv, head_dim=dim,
                              ffn_dim=8, vocab_size=2)  # fmt: skip
            for share in self._heads_for(arch):
                kept = pruned_arch(arch, heads=share).n_heads
                out.append(
                    (kept * dim, f"{kept} heads left by prune_heads={share} x head_dim={dim}")
                )
        return out if self.offered else []

    def _heads_for(self, arch: ArchConfig) -> list[float]:
        return [s for s in self.prune_heads if s == 0 or _applies(arch, heads=s)]

    def _experts_for(self, arch: ArchConfig) -> list[float]:
        return [s for s in self.prune_experts if s == 0 or _applies(arch, experts=s)]

    def _layers_for(self, arch: ArchConfig) -> list[float]:
        return [s for s in self.prune_layers if s == 0 or _applies(arch, layers=s)]

    def suggest(self, trial: optuna.Trial, trained: ArchConfig) -> tuple[ArchConfig, Shrink | None]:
        """The deployed shape and how it comes from `trained` (None: deployed as trained)."""
        if not self.offered or not trial.suggest_categorical("structured", self.structured):
            return trained, None
        a = trained
        heads = self._pick(trial, f"prune_heads|n_heads={a.n_heads},n_kv_heads={a.n_kv_heads},"
                                  f"head_dim={a.head_dim}", self._heads_for(a))  # fmt: skip
        ffn = self._pick(trial, "prune_ffn", self.prune_ffn)  # check_ffn: all apply
        experts = 0.0
        if a.is_moe:
            name = f"prune_experts|n_experts={a.n_experts},experts_per_token={a.experts_per_token}"
            experts = self._pick(trial, name, self._experts_for(a))
        every = f",moe_every={a.moe_every}" if a.is_moe and a.moe_every > 1 else ""
        layers = self._pick(trial, f"prune_layers|n_layers={a.n_layers}{every}",
                            self._layers_for(a))  # fmt: skip
        shares = {"heads": heads, "ffn": ffn, "experts": experts, "layers": layers}
        if not any(shares.values()):
            return trained, None
        recovery = trial.suggest_categorical("recovery", self.recovery)
        return pruned_arch(trained, **shares), Shrink(trained, **shares, recovery=recovery)

    @staticmethod
    def _pick(trial: optuna.Trial, name: str, shares: list[float]) -> float:
        """One of `shares` (those that apply to the shape; none: nothing is removed)."""
        if len(shares) < 2:
            return shares[0] if shares else 0.0
        return float(trial.suggest_categorical(name, shares))

    def choices(self) -> dict[str, list[Any]]:
        return {name: list(getattr(self, name)) for name in NAMES}
