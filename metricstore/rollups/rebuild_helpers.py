"""Merging finer states into coarser buckets (write path, rebuild, benchmarks)."""

from .state import merge_ordered


def coarsen(states, width_us):
    """Merge ``{(sid, mid, b): State}`` into buckets of ``width_us`` (in time order)."""
    groups = {}
    for key in sorted(states):
        s, m, b = key
        groups.setdefault((s, m, b - b % width_us), []).append(states[key])
    return {k: merge_ordered(k[2], parts) for k, parts in groups.items()}
