"""Small statistics helpers."""

__version__ = "1.2.0"


def mean(values):
    values = list(values)
    if not values:
        raise ValueError("mean of no values")
    return sum(values) / len(values)


def median(values):
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percent_change(old, new):
    if old == 0:
        raise ZeroDivisionError("percent change from zero")
    return round((new - old) / old * 100, 2)
