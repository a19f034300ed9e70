"""Plain-text rendering for the command line: aligned tables and sparklines."""

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values):
    """One character per value; None (no data) is a space."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return "".join(" " if v is None else BARS[min(7, int((v - low) / span * 8))]
                   for v in values)


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.2f" % value
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def table(headers, rows):
    """An aligned text table (numbers right-aligned)."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(headers))]
    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])]
                     + [line(r) for r in cells])
