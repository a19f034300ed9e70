"""Rollup tiers: 5-minute, hourly and daily mergeable states of every series.

tiers (definitions) -> sketch, state (the mergeable state) -> update (the
write path) -> planner, read (which tier answers a query, stitched) ->
rebuild (recompute from raw, status, expiry).
"""
