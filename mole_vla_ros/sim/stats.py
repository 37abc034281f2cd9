"""Statistics of closed-loop success rates: one setting (Wilson interval) and two settings on the same episodes.

Every setting `sim eval` runs meets the same scene and the same diffusion noise on the same seed (common random
numbers), so two settings are compared episode by episode: only the episodes where exactly one of them succeeds
(the discordant pairs) carry information about which is better. McNemar's exact test asks whether those split
unevenly; with 100 episodes it separates settings that an unpaired look at two overlapping Wilson intervals cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WILSON_Z = 1.959964  # 95 %


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a success rate (stays inside [0, 1] and is sensible for 0/n and n/n)."""
    if n <= 0:
        raise ValueError(f"a success rate needs at least one episode, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be between 0 and n={n}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the chance, if both settings were equally good, of a split of the
    discordant episodes at least this uneven (binomial(n = only_a + only_b, 1/2)). 1.0 when there are none."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """Setting B against setting A on the episodes both ran (matched by seed)."""

    episodes: int
    both: int  # both succeeded
    only_a: int
    only_b: int
    neither: int

    @property
    def difference(self) -> float:
        """Success rate of B minus that of A on the shared episodes."""
        return (self.only_b - self.only_a) / self.episodes

    def difference_interval(self, z: float = WILSON_Z) -> tuple[float, float]:
        """Approximate 95 % interval of `difference` from the paired (per-episode) variance, clipped to [-1, 1]."""
        n = self.episodes
        d = self.difference
        var = max(0.0, (self.only_a + self.only_b) / n - d * d) / n
        half = z * math.sqrt(var)
        return max(-1.0, d - half), min(1.0, d + half)

    @property
    def p_value(self) -> float:
        return mcnemar_exact_p(self.only_a, self.only_b)


def paired_comparison(a: dict[object, bool], b: dict[object, bool]) -> PairedComparison:
    """Compare two {episode key: success} maps on their shared keys; at least one key must be shared."""
    shared = sorted(set(a) & set(b), key=repr)
    if not shared:
        raise ValueError("the two settings share no episode (different seeds): nothing to compare pairwise")
    counts = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0}
    for key in shared:
        sa, sb = bool(a[key]), bool(b[key])
        counts["both" if sa and sb else "only_a" if sa else "only_b" if sb else "neither"] += 1
    return PairedComparison(episodes=len(shared), **counts)
