"""Numbers as people read them (12.4k, 38%, $102k, 3.0x): one place, so tables and charts agree."""

from __future__ import annotations

import math

MISSING = "n/a"


Number = float | int | None


def _number(value: Number) -> float | None:
    """The value as a float, or None when missing (None, NaN, pandas NA)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _short(value: float) -> str:
    """12,400 -> 12.4k; 1,240,000 -> 1.2M; small values stay whole."""
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            scaled = value / limit
            return (
                f"{scaled:.0f}{suffix}" if abs(scaled) >= 100 else f"{scaled:.1f}{suffix}".replace(".0", "")
            )
    return f"{value:.0f}"


def count(value: Number) -> str:
    """Counts: exact below 10,000 (1,234), short above (12.4k, 1.2M)."""
    number = _number(value)
    if number is None:
        return MISSING
    return f"{number:,.0f}" if abs(number) < 10_000 else _short(number)


def pct(value: Number) -> str:
    """Shares: 38%; below 1% one decimal (0.4%) so a small but real share never reads as 0%."""
    number = _number(value)
    if number is None:
        return MISSING
    share = number * 100
    if share != 0 and abs(share) < 1:
        return f"{share:.1f}%"
    return f"{share:.0f}%"


def money(value: Number) -> str:
    number = _number(value)
    return MISSING if number is None else f"${_short(number)}"


def ratio(value: Number) -> str:
    """Multiples such as lift: 3.0x."""
    number = _number(value)
    return MISSING if number is None else f"{number:.1f}x"


def decimal(value: Number, places: int = 2) -> str:
    """Scores such as AUC (0.76) or PSI (0.012)."""
    number = _number(value)
    return MISSING if number is None else f"{number:.{places}f}"


def days(value: Number) -> str:
    number = _number(value)
    if number is None:
        return MISSING
    whole = round(number)
    return f"{whole:,} day" + ("" if whole == 1 else "s")


def p_value(value: Number) -> str:
    """Tiny p/q values as powers of ten (2e-73) rather than 0.000."""
    number = _number(value)
    return MISSING if number is None else f"{number:.2g}"
