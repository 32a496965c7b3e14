"""Figures over the values that were reported: NaN is "not reported", and a figure with nothing
reported behind it is None, never 0."""

from __future__ import annotations

import numpy as np


def quantile(values: np.ndarray, q: float) -> float | None:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if values.size else None


def quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float | None]:
    """Several quantiles of the reported values in one pass."""
    values = values[~np.isnan(values)]
    if not values.size:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(values, qs)]


def largest(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.max()) if values.size else None


def mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def total(values: np.ndarray) -> int | None:
    """A count summed over the requests that reported it; None if none did."""
    known = values[~np.isnan(values)]
    return int(known.sum()) if known.size else None
