"""Is the machine quiet enough to time on? Load, steal time and memory bandwidth, before and
during a measurement.

On a shared VM another process (or the hypervisor, as steal time) takes cores from a timed run,
and the run only ever gets slower: a calibration fitted to such runs learns the neighbours' load.
`Quiet.now()` reads the 1-minute load average and the CPU counters; `steal_share_since(earlier)`
gives the steal share of the interval in between; `noise()` says in words what made a window
noisy, or returns "" for a quiet one. Linux `/proc` only; elsewhere nothing is known and
nothing is refused.

Load and steal time do not show another guest streaming memory through the host's shared caches
and memory bus, which slows a memory-bound decode step by 10-80% on the shared VMs (BENCHMARKS.md,
issue 15). `MemoryProbe` times a fixed copy far larger than a last-level cache;
`round_slowdowns` sets each round's probes against the quietest round's, and `memory_noise` flags
a round that ran slower. It does not see slowdowns that come and go within a round, in under a
second: on the VMs of 2026-12-07 a point's probe did not predict its timing (BENCHMARKS.md).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# A window is noisy when its load leaves fewer free cores than the measurement uses, or when the
# hypervisor took more than this share of the CPU time (steal).
MAX_STEAL_SHARE = 0.05
LOAD_SLACK = 0.5  # load above (cores - threads) + this: someone else is running
PROC = Path("/proc")  # where the kernel's counters are read (a test points it at a loaded copy)
# A round is noisy when its memory probes' median is this much slower than the run's fastest probe.
MAX_MEMORY_SLOWDOWN = 0.10
PROBE_MB = 128  # 4x a server's last-level cache: the copy streams memory as a decode step does


@dataclass(frozen=True)
class Quiet:
    """One reading of the machine: load average, CPU counters (jiffies), core count."""

    load_1m: float | None
    steal: int
    total: int
    cpus: int

    @classmethod
    def now(cls, proc: Path | None = None) -> Quiet:
        proc = proc or PROC
        cpus = os.cpu_count() or 1
        try:
            load = float((proc / "loadavg").read_text().split()[0])
            fields = [int(x) for x in (proc / "stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return cls(None, 0, 0, cpus)
        # user nice system idle iowait irq softirq steal (guest time is already in user)
        return cls(load, fields[7] if len(fields) > 7 else 0, sum(fields[:8]), cpus)

    def steal_share_since(self, earlier: Quiet) -> float:
        elapsed = self.total - earlier.total
        return (self.steal - earlier.steal) / elapsed if elapsed > 0 else 0.0

    def noise(self, threads: int, earlier: Quiet | None = None, *, own_load: float = 0.0) -> str:
        """Why this window is too noisy to time `threads`-thread runs in ("" when quiet).

        `own_load` is what the measurement itself adds to the load average (its threads, while
        it runs), so that a check during the run does not count the run."""
        if self.load_1m is None:
            return ""
        reasons = []
        allowed = max(0.0, self.cpus - threads) + LOAD_SLACK + own_load
        if self.load_1m > allowed:
            reasons.append(
                f"load average {self.load_1m:.2f} on {self.cpus} cores (at most {allowed:.2f} "
                f"leaves {threads} core(s) free for the timed runs)"
            )
        if earlier is not None and self.steal_share_since(earlier) > MAX_STEAL_SHARE:
            reasons.append(
                f"steal time {self.steal_share_since(earlier):.0%} of the CPU (the hypervisor "
                f"ran other guests; at most {MAX_STEAL_SHARE:.0%})"
            )
        return "; ".join(reasons)


@dataclass
class MemoryProbe:
    """`probe()` gives the milliseconds one copy of `megabytes` takes now (the fastest of
    `reps`): the memory bandwidth this process gets. The buffers are allocated once."""

    megabytes: int = PROBE_MB
    reps: int = 3
    _buffers: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __call__(self) -> float:
        if self._buffers is None:
            source = np.ones(self.megabytes * 2**20 // 4, np.float32)
            self._buffers = (source, np.empty_like(source))
        source, target = self._buffers
        fastest = float("inf")
        for _ in range(self.reps):
            started = time.perf_counter()
            np.copyto(target, source)
            fastest = min(fastest, time.perf_counter() - started)
        return fastest * 1000.0


def round_slowdowns(probes: list[list[float]]) -> list[float]:
    """Each round's median probe over the quietest round's (1.0: as quiet as that round).

    The reference is a round's median, not the run's single fastest probe: on an idle VM single
    probes vary by 10-20%, and the fastest of 250 sat 16-27% below every round's median
    (BENCHMARKS.md, 2026-12-07), so every round was flagged. What repeatability asks is whether
    the rounds ran with the same memory bandwidth."""
    medians = [statistics.median(p) for p in probes]
    quietest = min(medians)
    return [m / quietest for m in medians]


def memory_noise(slowdown: float) -> str:
    """Why a round was noisy whose memory probes' median took `slowdown` times the quietest
    round's ("" when quiet)."""
    if slowdown <= 1.0 + MAX_MEMORY_SLOWDOWN:
        return ""
    return (
        f"memory bandwidth {slowdown - 1.0:.0%} below the quietest round's (another guest "
        f"streaming memory, which load and steal time do not show; at most "
        f"{MAX_MEMORY_SLOWDOWN:.0%})"
    )
