"""95% intervals for a difference in accuracy between a method and a reference.

The accuracies come as matrices: one row per pretraining seed of the method
(per random initialisation of the random-encoder reference; raw pixels have one
row), one column per label draw, the same draws for both sides. The difference
is the mean over draws of (method mean over seeds) - (reference mean over inits).
Its variance adds four independent parts:

- label draws: the paired per-draw differences vary around their mean; the
  part is their sample variance / S (S-1 degrees of freedom), as in a paired t-test;
- pretraining seeds: the sample variance of the method's per-seed means / P;
- random initialisations: the sample variance of the reference's per-init means / I;
- the test split: a finite sample of images, the binomial variance of each
  accuracy, A(1-A)/n + R(1-R)/n (unpaired, so a little conservative; infinite
  degrees of freedom). It is what keeps the interval honest where nothing else
  varies (all labels, one pretraining seed, against raw pixels).

The degrees of freedom of the sum come from the Welch-Satterthwaite formula and
the half-width is Student's t quantile times the standard error. A part with one
sample has no estimate and adds nothing.
"""

from __future__ import annotations

import math
import statistics

from scipy import stats as _scipy_stats


def _var_of_mean(values: list[float]) -> tuple[float, float]:
    """(variance of the mean, degrees of freedom); (0, 0) for a single value."""
    if len(values) < 2:
        return 0.0, 0.0
    return statistics.variance(values) / len(values), float(len(values) - 1)


def difference_interval(method: list[list[float]], reference: list[list[float]], n_test: int | None = None,
                        level: float = 0.95) -> dict:
    """``method[p][s]`` and ``reference[i][s]``: accuracies (fractions) for pretraining
    seed p / random init i and label draw s. Returns ``diff``, ``low``, ``high``,
    ``df`` (None: infinite), ``se`` and ``significant`` (the interval excludes zero)."""
    draws = len(method[0])
    if draws == 0 or any(len(r) != draws for r in method + reference):
        raise ValueError("method and reference need the same label draws in every row")
    a = [statistics.fmean(col) for col in zip(*method)]  # per draw, mean over pretraining seeds
    r = [statistics.fmean(col) for col in zip(*reference)]  # per draw, mean over inits
    d = [x - y for x, y in zip(a, r)]
    diff = statistics.fmean(d)
    parts = [_var_of_mean(d), _var_of_mean([statistics.fmean(row) for row in method]),
             _var_of_mean([statistics.fmean(row) for row in reference])]
    if n_test:
        am, rm = statistics.fmean(a), statistics.fmean(r)
        parts.append(((am * (1 - am) + rm * (1 - rm)) / n_test, math.inf))
    var = sum(v for v, _ in parts)
    se = math.sqrt(var)
    if var == 0:
        return {"diff": diff, "low": diff, "high": diff, "df": None, "se": 0.0, "significant": diff != 0}
    denom = sum(v * v / df for v, df in parts if v > 0 and df != math.inf)
    df = var * var / denom if denom > 0 else math.inf
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, df)) * se
    return {"diff": diff, "low": diff - half, "high": diff + half, "df": None if df == math.inf else df, "se": se,
            "significant": diff - half > 0 or diff + half < 0}
