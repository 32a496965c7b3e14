"""The time-aware bootstrap behind the gate's intervals.

Requests close in time are not independent: a burst, a breaker that opens, a fault window make
them fail or slow down together. Resampling single requests treats a clump of 40 failures in
one second as 40 independent draws and makes the interval too narrow (an A/A comparison then
"regresses"). So the run is cut into blocks of consecutive seconds by intended start, and each
replicate draws as many blocks as the run has, with replacement; a figure's replicate is the
figure over the requests (or steps) of the blocks drawn, each block counted as often as drawn.

Blocks are drawn within strata: the fault windows in force and the traffic phase (a spike), so
that each replicate holds as much of each as the run did.

Block length: ``block_seconds`` — 5 s, shortened for short runs so that there are at least 20
blocks, and never under 0.5 s.

Everything is computed per block first (sums, counts, histograms), so a replicate costs a
matrix product over blocks, not a pass over the records: a million requests take the same
time per replicate as a thousand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPLICATES = 200
BLOCK_SECONDS = 5.0
MIN_BLOCKS = 20
MIN_BLOCK_SECONDS = 0.5
BINS = 1024  # per quantile figure: geometric bins, ~1% wide over four decades


def block_seconds(duration: float) -> float:
    return max(min(BLOCK_SECONDS, duration / MIN_BLOCKS), MIN_BLOCK_SECONDS)


@dataclass(frozen=True)
class Blocks:
    """Which block each request falls in, and the replicates' draw counts per block."""

    of_request: np.ndarray  # int block index per request
    weights: np.ndarray  # (REPLICATES, blocks): how often each replicate drew each block
    seconds: float

    @classmethod
    def of(
        cls, offsets: np.ndarray, duration: float, seed: int, strata: np.ndarray | None = None
    ) -> Blocks:
        """``strata``: an integer label per request (its fault windows and traffic phase).
        Blocks are drawn within their stratum (a block's is that of its first request), so
        every replicate has as many seconds of each fault window and spike as the run had: a
        run's schedule is its design, not a source of noise."""
        seconds = block_seconds(duration)
        index = np.floor(np.nan_to_num(offsets, nan=0.0) / seconds).astype(np.int64)
        index = np.clip(index, 0, None)
        count = int(index.max()) + 1 if index.size else 1
        of_block = np.full(count, -1, dtype=np.int64)  # empty blocks: a stratum of their own
        if strata is not None and index.size:
            order = np.argsort(offsets, kind="stable")[::-1]  # the first request writes last
            of_block[index[order]] = strata[order]
        rng = np.random.default_rng(seed)
        weights = np.zeros((REPLICATES, count), dtype=np.float64)
        rows = np.arange(REPLICATES)
        for label in np.unique(of_block):
            members = np.flatnonzero(of_block == label)
            drawn = members[rng.integers(0, members.size, size=(REPLICATES, members.size))]
            np.add.at(weights, (np.repeat(rows, members.size), drawn.ravel()), 1.0)
        return cls(index, weights, seconds)

    @property
    def count(self) -> int:
        return int(self.weights.shape[1])

    def sums(self, values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """Per block: the sum of the known ``values`` (NaN skipped). A NaN weighs 0 instead
        of being masked out: the same sums (x + 0.0 is x), without copying both arrays."""
        if np.isnan(values).any():
            values = np.nan_to_num(values, nan=0.0)
        return np.bincount(blocks, weights=values, minlength=self.count)

    def counts(self, values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        known = ~np.isnan(values)
        if known.all():
            return np.bincount(blocks, minlength=self.count).astype(float)
        return np.bincount(blocks[known], minlength=self.count).astype(float)

    def ratio(self, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        """Replicates of sum(numerator) / sum(denominator), both given per block."""
        with np.errstate(invalid="ignore", divide="ignore"):
            result: np.ndarray = (self.weights @ numerator) / (self.weights @ denominator)
        return result

    def mean(self, values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        return self.ratio(self.sums(values, blocks), self.counts(values, blocks))

    def quantile(self, values: np.ndarray, blocks: np.ndarray, q: float) -> np.ndarray:
        """Replicates of the ``q``-th percentile (see ``quantiles``)."""
        return self.quantiles(values, blocks, (q,))[0]

    def quantiles(
        self, values: np.ndarray, blocks: np.ndarray, qs: tuple[float, ...]
    ) -> list[np.ndarray]:
        """Replicates of each ``q``-th percentile, from per-block histograms made once for
        them all (interpolated within a bin; the gate centres replicates on the exact figure,
        so only their spread counts)."""
        known = ~np.isnan(values)
        if not known.all():
            values, blocks = values[known], blocks[known]
        if values.size == 0:
            return [np.full(REPLICATES, np.nan) for _ in qs]
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return [np.full(REPLICATES, low) for _ in qs]
        shift = 1.0 - low  # geometric bins need positive values
        edges = np.geomspace(1.0, high + shift, BINS + 1) - shift
        slot = _slots(values, edges, shift, high)
        histogram = np.bincount(blocks * BINS + slot, minlength=self.count * BINS).reshape(
            self.count, BINS
        )
        cumulative = np.cumsum(self.weights @ histogram, axis=1)
        return [_read(cumulative, edges, q) for q in qs]


def _read(cumulative: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """Each replicate's ``q``-th percentile from its cumulative histogram."""
    target = cumulative[:, -1] * q / 100.0
    found = np.minimum((cumulative < target[:, None]).sum(axis=1), BINS - 1)
    before = np.where(found > 0, cumulative[np.arange(REPLICATES), found - 1], 0.0)
    within = cumulative[np.arange(REPLICATES), found] - before
    with np.errstate(invalid="ignore", divide="ignore"):
        part = np.where(within > 0, (target - before) / within, 0.0)
    result: np.ndarray = edges[found] + part * (edges[found + 1] - edges[found])
    result[cumulative[:, -1] == 0] = np.nan
    return result


def _slots(values: np.ndarray, edges: np.ndarray, shift: float, high: float) -> np.ndarray:
    """The geometric bin of each value, as ``searchsorted(edges, side="right") - 1`` clipped
    to the bins would give, from a logarithm (a pass over the values, not a binary search
    each) corrected by one bin where rounding put a value beside its bin."""
    scaled = np.log(values + shift) * (BINS / np.log(high + shift))
    slot: np.ndarray = np.clip(scaled.astype(np.int64), 0, BINS - 1)
    slot -= (values < edges[slot]) & (slot > 0)
    slot += (values >= edges[slot + 1]) & (slot < BINS - 1)
    return slot


def tidy(replicates: np.ndarray) -> list[float]:
    """Replicates as kept in scorecard.json and baselines: finite, six significant digits."""
    return [float(f"{x:.6g}") for x in replicates if np.isfinite(x)]
