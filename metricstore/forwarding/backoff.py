"""Exponential backoff with jitter for an outage of any length."""

import random


class Backoff:
    """Delays ``base * factor**n`` capped at ``cap`` seconds, each drawn from
    ``[d/2, d]`` ("equal jitter": never a busy loop, never in lock step with
    other agents). ``reset()`` after a success. There is no attempt limit."""

    def __init__(self, base=0.5, cap=60.0, factor=2.0, rng=None):
        if not 0 < base <= cap or factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")
        self.base, self.cap, self.factor = base, cap, factor
        self.rng = rng or random.Random()
        self.failures = 0

    def next(self):
        """The pause (seconds) before the next attempt; counts one failure."""
        ceiling = min(self.cap, self.base * self.factor ** min(self.failures, 64))
        self.failures += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self):
        self.failures = 0
