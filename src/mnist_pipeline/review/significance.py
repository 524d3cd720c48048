"""Is an accuracy change between two models real? Paired statistics on the same test images.

Both models are scored on the same images, so the comparison is paired: what matters is the
images on which they disagree. `compare_accuracy` gives the delta, a paired-bootstrap confidence
interval and McNemar's exact test, and a one-line verdict for the review report. `seed_summary`
condenses the metrics of several training seeds into mean ± std, min and max.

Pure numpy and the standard library, so the report needs neither torch nor scipy.
Inputs are per-image correctness arrays (bool, shape (N,)), e.g. `predicted == labels`.
"""

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

# Bootstrap resamples drawn per call to the generator: bounds the temporary (chunk, 3) count
# array to ~1.5 MB whatever `resamples` is.
RESAMPLES_PER_CHUNK = 1 << 16
# Below this a p-value is printed as "p < 0.0001": the exact tiny number changes no decision
# and only invites reading it as a size of effect.
SMALLEST_PRINTED_P = 1e-4

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on the discordant pairs of two paired correctness arrays."""

    b: int  # images the old model gets right and the new one wrong
    c: int  # images the old model gets wrong and the new one right
    p_value: float  # two-sided; 1.0 when the models never disagree


@dataclass(frozen=True)
class AccuracyComparison:
    """Test accuracy of two models on the same images: change, its interval and its test.

    Accuracies, delta and CI bounds are fractions (0.0031 is 0.31 percentage points).
    `significant` follows McNemar's test (p < alpha); the CI describes the size of the change.
    """

    n_images: int
    old_accuracy: float
    new_accuracy: float
    delta: float  # new_accuracy - old_accuracy
    confidence: float  # of the CI, 1 - alpha
    ci_low: float
    ci_high: float
    mcnemar: McNemar
    alpha: float
    significant: bool

    def verdict(self) -> str:
        """One plain-language line, e.g.
        "+0.31 points, 95% CI [-0.05, +0.67], p = 0.09: not significant at 0.05"."""
        if not self.significant:
            decision = f"not significant at {self.alpha:g}"
        else:
            # p < alpha needs b != c, so the delta (c - b) / N is never 0 here.
            better = "new" if self.delta > 0 else "old"
            decision = f"significant at {self.alpha:g} ({better} is better)"
        return (
            f"{_points(self.delta)} points, {100 * self.confidence:g}% CI "
            f"[{_points(self.ci_low)}, {_points(self.ci_high)}], "
            f"{_format_p_value(self.mcnemar.p_value, self.alpha)}: {decision}"
        )


@dataclass(frozen=True)
class SeedStat:
    """One metric over several training seeds; std is the sample std (ddof=1)."""

    mean: float
    std: float
    min: float
    max: float
    n: int  # number of seeds


def paired_bootstrap_ci(
    correct_old: BoolArray,
    correct_new: BoolArray,
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI (low, high) of the accuracy delta new - old, as fractions.

    Each resample draws N test images with replacement, the same images for both models.
    Deterministic for a seed; time and memory O(resamples), independent of N.
    """
    old, new = _correctness_pair(correct_old, correct_new)
    if resamples < 1:
        raise ValueError(f"bootstrap needs at least 1 resample, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n_images = len(old)
    # The delta of a resample is the mean of d_i = new_i - old_i over the drawn images, and
    # d_i is -1, 0 or +1. So only how many drawn images fall in each of the three categories
    # matters, and N independent uniform draws of an image put multinomial(N, [share of -1,
    # share of 0, share of +1]) draws into them: the same distribution as resampling indices,
    # at O(1) cost per resample instead of O(N) time and memory.
    worse = int(np.count_nonzero(old & ~new))  # d = -1
    better = int(np.count_nonzero(~old & new))  # d = +1
    category_share = np.array([worse, n_images - worse - better, better]) / n_images
    rng = np.random.default_rng(seed)
    net_gain = np.empty(resamples, dtype=np.int64)  # (+1 draws) - (-1 draws) per resample
    for start in range(0, resamples, RESAMPLES_PER_CHUNK):
        size = min(RESAMPLES_PER_CHUNK, resamples - start)
        counts = rng.multinomial(n_images, category_share, size=size)
        net_gain[start : start + size] = counts[:, 2] - counts[:, 0]
    tail = (1 - confidence) / 2
    low, high = np.quantile(net_gain / n_images, [tail, 1 - tail])
    return float(low), float(high)


def mcnemar_exact(correct_old: BoolArray, correct_new: BoolArray) -> McNemar:
    """McNemar's exact test: two-sided binomial test of b against b + c trials at 1/2,
    p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2)."""
    old, new = _correctness_pair(correct_old, correct_new)
    b = int(np.count_nonzero(old & ~new))
    c = int(np.count_nonzero(~old & new))
    discordant = b + c
    if discordant == 0:
        return McNemar(b=b, c=c, p_value=1.0)
    # 2 * sum_{k <= min(b, c)} C(n, k) / 2^n, summed in exact integers and divided once:
    # Python's int / int rounds correctly, so p is exact to the last bit for any n, and
    # becomes 0.0 only when the true value is below the smallest float (n > ~1075).
    tail_count = _binomial_coefficient_sum(discordant, min(b, c))
    p_value = min(1.0, (2 * tail_count) / (1 << discordant))
    return McNemar(b=b, c=c, p_value=p_value)


def compare_accuracy(
    correct_old: BoolArray,
    correct_new: BoolArray,
    *,
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
) -> AccuracyComparison:
    """Accuracy of both models, the delta with its (1 - alpha) paired-bootstrap CI and
    McNemar's exact test; `verdict()` words it. ValueError on unusable inputs."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    old, new = _correctness_pair(correct_old, correct_new)
    confidence = 1 - alpha
    ci_low, ci_high = paired_bootstrap_ci(
        old, new, resamples=resamples, confidence=confidence, seed=seed
    )
    mcnemar = mcnemar_exact(old, new)
    old_accuracy = float(old.mean())
    new_accuracy = float(new.mean())
    return AccuracyComparison(
        n_images=len(old),
        old_accuracy=old_accuracy,
        new_accuracy=new_accuracy,
        # From the discordant counts, exact up to one rounding: no cancellation of two means.
        delta=(mcnemar.c - mcnemar.b) / len(old),
        confidence=confidence,
        ci_low=ci_low,
        ci_high=ci_high,
        mcnemar=mcnemar,
        alpha=alpha,
        significant=mcnemar.p_value < alpha,
    )


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) of an accuracy of `correct` out of `total`, as
    fractions: unlike the normal approximation it stays within [0, 1] and is sound near
    100%, where good classifiers are."""
    if total < 1 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total >= 1, got {correct}/{total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    share = correct / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_summary(runs: Sequence[Mapping[str, float]]) -> dict[str, SeedStat]:
    """Mean, sample std, min and max over runs of each metric name that every run has
    (flat dotted names like "test.accuracy"), in the first run's order."""
    if len(runs) < 2:
        raise ValueError(f"multi-seed summary needs at least 2 runs, got {len(runs)}")
    shared_names = [name for name in runs[0] if all(name in run for run in runs[1:])]
    summary = {}
    for name in shared_names:
        values = np.array([_metric_value(run, name, index) for index, run in enumerate(runs)])
        summary[name] = SeedStat(
            mean=float(values.mean()),
            std=float(values.std(ddof=1)),
            min=float(values.min()),
            max=float(values.max()),
            n=len(values),
        )
    return summary


def format_mean_std(stat: SeedStat, digits: int = 4) -> str:
    """E.g. "0.8971 ± 0.0012 (min 0.8955, max 0.8990, 5 seeds)"."""
    return (
        f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f} "
        f"(min {stat.min:.{digits}f}, max {stat.max:.{digits}f}, {stat.n} seeds)"
    )


def _correctness_pair(
    correct_old: BoolArray, correct_new: BoolArray
) -> tuple[BoolArray, BoolArray]:
    """Both inputs as 1-D bool arrays of one non-zero length, or ValueError saying why not."""
    old = np.asarray(correct_old)
    new = np.asarray(correct_new)
    for name, array in (("correct_old", old), ("correct_new", new)):
        if array.ndim != 1:
            raise ValueError(f"{name} must be one value per test image, got shape {array.shape}")
    if len(old) != len(new):
        raise ValueError(
            f"the two models must be scored on the same test images, got {len(old)} "
            f"and {len(new)} per-image results"
        )
    if len(old) == 0:
        raise ValueError("no test images to compare: the per-image results are empty")
    for name, array in (("correct_old", old), ("correct_new", new)):
        if array.dtype != np.bool_:
            raise ValueError(f"{name} must hold booleans (right/wrong), got dtype {array.dtype}")
    return old, new


def _binomial_coefficient_sum(n: int, k_max: int) -> int:
    """sum_{k=0}^{k_max} C(n, k), exactly."""
    term = 1  # C(n, 0)
    total = 1
    for k in range(k_max):
        term = term * (n - k) // (k + 1)  # C(n, k + 1); the division is always exact
        total += term
    return total


def _points(fraction: float) -> str:
    """A fraction as signed percentage points with 2 decimals; "z" keeps -0.001 from
    printing as "-0.00"."""
    return f"{100 * fraction:+z.2f}"


def _format_p_value(p_value: float, alpha: float) -> str:
    """p with 2 significant digits, or "p < 0.0001", never contradicting the decision."""
    if p_value < SMALLEST_PRINTED_P <= alpha:
        return f"p < {SMALLEST_PRINTED_P:g}"
    # Rounding may carry p across alpha (0.0496 -> "0.05" next to "significant at 0.05"):
    # then print as many more digits as it takes; 17 always round-trip.
    for digits in range(2, 18):
        text = f"{p_value:.{digits}g}"
        if (float(text) < alpha) == (p_value < alpha):
            return f"p = {text}"
    return f"p = {p_value!r}"


def _metric_value(run: Mapping[str, float], name: str, index: int) -> float:
    """run[name] as a float, or ValueError if it is not a number."""
    value = run[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"run {index}: metric {name!r} is not a number: {value!r}")
    return float(value)
