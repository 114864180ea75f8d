"""The compression part of a search space: weight bits and group size, sparsity, and the
methods that choose quantized values and zeroed weights. Every space samples it the same way
(`slm` and `prune` alike), so a study's compression parameters mean the same in both."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from nas.arch import CompressionConfig
from nas.errors import NasError
from search_spaces.choices import COMPRESSION_RULES, SPARSITY_CHOICES, checked

if TYPE_CHECKING:  # Optuna loads with the study: a space's settings are checked without it
    import optuna

NAMES = ("weight_bits", "group_size", "sparsity", "quant_method", "prune_method")


class CompressionChoices:
    def __init__(
        self,
        *,
        weight_bits: Sequence[int],
        group_size: Sequence[int],
        sparsity: Sequence[str],
        quant_method: Sequence[str],
        prune_method: Sequence[str],
        per_channel_bits: Sequence[int] = (),
    ) -> None:
        self.weight_bits = sorted(set(checked("weight_bits", weight_bits, COMPRESSION_RULES)))
        self.group_size = sorted(set(checked("group_size", group_size, COMPRESSION_RULES)))
        # Bits whose runtime format has one scale per output channel, so no group size is
        # sampled for them (ExecuTorch's XNNPACK int8: the runtime group sets [8]).
        none = isinstance(per_channel_bits, Sequence) and not per_channel_bits  # may be empty
        self.per_channel_bits = (
            []
            if none
            else sorted(set(checked("per_channel_bits", per_channel_bits, COMPRESSION_RULES)))
        )
        self.sparsity = self._ordered("sparsity", sparsity)
        self.quant_method = self._ordered("quant_method", quant_method)
        self.prune_method = self._ordered("prune_method", prune_method)

    @staticmethod
    def _ordered(key: str, values: Any) -> list[Any]:
        return list(dict.fromkeys(checked(key, values, COMPRESSION_RULES)))

    def check_widths(self, widths: Iterable[tuple[int, str]]) -> None:
        """2:4 sparsity needs every layer width divisible by 4: `widths` are (width, what)."""
        if "2:4" not in self.sparsity:
            return
        odd = [(width, what) for width, what in widths if width % 4]
        if odd:
            width, what = odd[0]
            raise NasError(
                f"search_space.sparsity holds 2:4, which needs layer widths divisible by 4, "
                f"but {what} = {width}: use head_dim multiples of 4 or drop 2:4"
            )

    def suggest(self, trial: optuna.Trial) -> CompressionConfig:
        bits = trial.suggest_categorical("weight_bits", self.weight_bits)
        grouped = bits < 16 and bits not in self.per_channel_bits
        group = trial.suggest_categorical("group_size", self.group_size) if grouped else 0
        sparsity, pattern = SPARSITY_CHOICES[trial.suggest_categorical("sparsity", self.sparsity)]
        quant = trial.suggest_categorical("quant_method", self.quant_method) if bits < 16 else "rtn"
        prune = (
            trial.suggest_categorical("prune_method", self.prune_method)
            if pattern != "none"
            else "magnitude"
        )
        return CompressionConfig(
            weight_bits=bits,
            group_size=group,
            sparsity=sparsity,
            sparsity_pattern=pattern,
            quant_method=quant,
            prune_method=prune,
        )

    def choices(self) -> dict[str, list[Any]]:
        chosen = {name: list(getattr(self, name)) for name in NAMES}
        if self.per_channel_bits:  # absent otherwise: the identity of every older study
            chosen["per_channel_bits"] = list(self.per_channel_bits)
        return chosen
