"""One metric of one configuration over its runs (``Cell``: mean, Student-t 95% interval,
spread) and how reports print it: numbers, spreads, significance, lines wrapped to 72 columns.

Below both reporters (``report``, ``copies_report``), which share it.
"""

from __future__ import annotations

from traces.text import escape


def fmt_number(value, scale: float = 1, decimals: int = 0) -> str:
    if value is None:
        return "n/a"
    value = value / scale
    if decimals == 0:
        return f"{value:,.0f}"
    return f"{value:,.{decimals}f}"


TEXT_WIDTH = 72
# Two-sided 95% Student t quantiles by degrees of freedom (above 30: the normal 1.96).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
       17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}
SIGNIFICANCE_RULE = ("* = significant: the 95% confidence intervals of the two means "
                     "(Student t, n runs each) do not overlap; n=1 is never marked.")


def t95(df: int) -> float:
    if df <= 0:
        return float("inf")
    for bound in sorted(T95):
        if df <= bound:
            return T95[bound]
    return 1.96


class Cell:
    """One metric of one configuration over its runs."""

    def __init__(self, values: list):
        import statistics

        self.values = values
        self.n = len(values)
        self.mean = statistics.fmean(values) if values else None
        self.stdev = statistics.stdev(values) if len(values) > 1 else 0.0

    def interval(self) -> tuple[float, float] | None:
        if self.n < 2:
            return None
        half = t95(self.n - 1) * self.stdev / self.n ** 0.5
        return self.mean - half, self.mean + half

    def spread_pct(self) -> float | None:
        if not self.stdev or not self.mean:
            return None
        return abs(self.stdev / self.mean * 100)


def significant(base: Cell, new: Cell) -> bool:
    a, b = base.interval(), new.interval()
    if a is None or b is None:
        return False
    return a[1] < b[0] or b[1] < a[0]


def percent_change(base: Cell, new: Cell) -> str:
    if base.mean is None or new.mean is None:
        return "n/a"
    if base.mean == 0:
        return "0.0%" if new.mean == 0 else "+inf%"
    return f"{(new.mean - base.mean) / abs(base.mean) * 100:+.1f}%"


def value_text(cell: Cell | None, scale: float, decimals: int, width: int) -> str:
    if cell is None or cell.mean is None:
        return "n/a"
    text = fmt_number(cell.mean, scale, decimals)
    if len(text) > width:
        text = f"{cell.mean / scale:.3g}"
    return text


def spread_text(cell: Cell | None) -> str:
    pct = cell.spread_pct() if cell is not None else None
    # Counts that do not vary print without a spread.
    return f" +-{min(pct, 99):2.0f}%" if pct is not None else " " * 6


def wrap_ascii(prefix: str, text: str, width: int = TEXT_WIDTH) -> list[str]:
    """Wrap ``text`` after ``prefix`` to ``width`` columns, continuation lines indented."""
    import textwrap

    text = escape(text, 2000).encode("ascii", "replace").decode()
    lines = textwrap.wrap(text, width=width - len(prefix), break_long_words=True,
                          break_on_hyphens=False) or [""]
    return [prefix + lines[0]] + [" " * len(prefix) + line for line in lines[1:]]
