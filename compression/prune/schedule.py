"""The cubic sparsity schedule of Zhu & Gupta (2017), laid over the optimizer steps of a run."""

from __future__ import annotations

from dataclasses import dataclass

from compression.config import PruneConfig


def cubic_sparsity(step: int, initial: float, final: float, start_step: int, n_updates: int, every: int) -> float:
    """Zhu & Gupta's s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, updated every dt steps; s_i before t0."""
    if step < start_step:
        return initial
    # Hold the value between updates: t is rounded down to the last update step t0 + k dt.
    done = min(n_updates, (step - start_step) // every)
    if done == n_updates:
        return final  # exact, not final + 0.0 * (...) rounding
    return final + (initial - final) * (1.0 - done / n_updates) ** 3 if done else initial


@dataclass
class Schedule:
    """A cubic sparsity schedule laid over `total_steps` training steps."""

    initial: float
    final: float
    start_step: int
    n_updates: int
    every: int

    @classmethod
    def over(cls, cfg: PruneConfig, total_steps: int) -> Schedule:
        """t0, n and dt from the config's fractions, so that s_f is reached at or before `prune_end`."""
        last = max(0, total_steps - 1)
        start = min(last, int(cfg.prune_start * total_steps))
        end = min(last, max(start + 1, int(cfg.prune_end * total_steps)))
        span = max(1, end - start)
        every = min(cfg.prune_every, span)  # short runs: still several updates, never past the end
        return cls(cfg.initial_sparsity, cfg.sparsity, start, max(1, span // every), every)

    def __call__(self, step: int) -> float:
        """Sparsity to use at `step`."""
        return cubic_sparsity(step, self.initial, self.final, self.start_step, self.n_updates, self.every)

    @property
    def end_step(self) -> int:
        """The first step at the final sparsity."""
        return self.start_step + self.n_updates * self.every
