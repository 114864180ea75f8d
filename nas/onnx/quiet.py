"""Is the machine quiet enough to time on? Load and steal time, before and during a measurement.

On a shared VM another process (or the hypervisor, as steal time) takes cores from a timed run,
and the run only ever gets slower: a calibration fitted to such runs learns the neighbours' load.
`Quiet.now()` reads the 1-minute load average and the CPU counters; `steal_share_since(earlier)`
gives the steal share of the interval in between; `noise()` says in words what made a window
noisy, or returns "" for a quiet one. Linux `/proc` only; elsewhere nothing is known and
nothing is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# A window is noisy when its load leaves fewer free cores than the measurement uses, or when the
# hypervisor took more than this share of the CPU time (steal).
MAX_STEAL_SHARE = 0.05
LOAD_SLACK = 0.5  # load above (cores - threads) + this: someone else is running
PROC = Path("/proc")  # where the kernel's counters are read (a test points it at a loaded copy)


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
