"""Plain-Python reference computations the tests check metricstore against."""


def exact_quantile(values, q):
    """``percentile_cont(q)`` of ``values``: rank ``q * (n - 1)`` in sorted
    order, interpolated between its two neighbours."""
    values = sorted(values)
    rank = q * (len(values) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (rank - lo)
