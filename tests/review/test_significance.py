"""Paired accuracy statistics: hand-computed cases, scipy as the reference for
McNemar's exact test, a naive index-resampling bootstrap as the reference for the CI."""

import statistics
import tracemalloc
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats

from mnist_pipeline.review.significance import (
    AccuracyComparison,
    McNemar,
    SeedStat,
    compare_accuracy,
    format_mean_std,
    mcnemar_exact,
    paired_bootstrap_ci,
    seed_summary,
)


def paired(
    b: int, c: int, both_right: int = 0, both_wrong: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Correctness arrays (old, new) with b images only old gets right, c only new gets right."""
    old = np.array([True] * b + [False] * c + [True] * both_right + [False] * both_wrong)
    new = np.array([False] * b + [True] * c + [True] * both_right + [False] * both_wrong)
    return old, new


def random_pair(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An old model at ~90% and a new one that flips ~8% of its results, a little for the better."""
    rng = np.random.default_rng(seed)
    old = rng.random(n_images) < 0.9
    flip = rng.random(n_images) < np.where(old, 0.06, 0.3)
    return old, old ^ flip


# --- McNemar's exact test -------------------------------------------------------------------


def test_mcnemar_without_disagreement_is_p_one() -> None:
    assert mcnemar_exact(*paired(0, 0, both_right=5, both_wrong=3)) == McNemar(0, 0, 1.0)


@pytest.mark.parametrize(
    ("b", "c", "p_value"),
    [
        (1, 9, 0.021484375),  # 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
        (9, 1, 0.021484375),
        (0, 5, 2 / 32),
        (0, 1, 1.0),  # 2 * 1/2
        # 2 * (1 + 10 + 45 + 120 + 210 + 252) / 1024 = 1276/1024, capped at 1
        (5, 5, 1.0),
    ],
)
def test_mcnemar_hand_computed(b: int, c: int, p_value: float) -> None:
    result = mcnemar_exact(*paired(b, c, both_right=7, both_wrong=2))
    assert (result.b, result.c) == (b, c)
    assert result.p_value == p_value


@pytest.mark.parametrize(
    ("b", "c", "p_value"),
    [
        (0, 1000, 2.0**-999),  # 2 * 2^-1000: exact, where C(n, k) floats or 2^n overflow
        (0, 1074, 2.0**-1073),  # subnormal, still exact
        (1, 1099, float(Fraction(2 * (1 + 1100), 2**1100))),  # subnormal, correctly rounded
        (0, 1100, 0.0),  # 2^-1099 is below half the smallest float: 0.0 is the right rounding
    ],
)
def test_mcnemar_tail_stays_exact_far_out(b: int, c: int, p_value: float) -> None:
    assert mcnemar_exact(*paired(b, c)).p_value == p_value


def mcnemar_cases() -> list[tuple[int, int]]:
    """(b, c) with b + c from 0 to 5000: near-balanced ones give mid-range p-values,
    uniform ones mostly tiny p-values."""
    rng = np.random.default_rng(2024)
    cases = [(0, 0), (0, 1), (1, 0), (2500, 2500), (0, 5000)]
    for _ in range(60):
        discordant = int(rng.integers(1, 5001))
        b = int(rng.binomial(discordant, rng.uniform(0.45, 0.55)))
        cases.append((b, discordant - b))
        b = int(rng.integers(0, discordant + 1))
        cases.append((b, discordant - b))
    return cases


@pytest.mark.parametrize(("b", "c"), mcnemar_cases())
def test_mcnemar_agrees_with_scipy(b: int, c: int) -> None:
    both_right, both_wrong = 300, 40  # concordant pairs must not matter
    result = mcnemar_exact(*paired(b, c, both_right, both_wrong))
    # rel: the reference agrees to ~1e-13 on normal floats; abs: it loses digits on
    # subnormal p-values (below 1e-308), where only "tiny" is checked.
    if b + c == 0:  # binomtest needs at least one trial; no discordant pair: p = 1
        assert result.p_value == 1.0
    else:
        scipy_p = scipy.stats.binomtest(b, b + c, 0.5).pvalue
        assert result.p_value == pytest.approx(scipy_p, rel=1e-11, abs=1e-300)


# --- paired bootstrap CI --------------------------------------------------------------------


def test_bootstrap_of_models_that_always_agree_is_zero() -> None:
    assert paired_bootstrap_ci(*paired(0, 0, both_right=90, both_wrong=10)) == (0.0, 0.0)


def test_bootstrap_of_one_image_is_its_delta() -> None:
    assert paired_bootstrap_ci(*paired(1, 0)) == (-1.0, -1.0)
    assert paired_bootstrap_ci(*paired(0, 1)) == (1.0, 1.0)


def test_bootstrap_tiny_case_reaches_the_ends_of_the_support() -> None:
    # d = [+1, 0]: a resample's delta is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4. Both
    # end values are far more likely than 2.5%, so the 95% percentile CI is exactly [0, 1].
    assert paired_bootstrap_ci(*paired(0, 1, both_right=1)) == (0.0, 1.0)


def test_bootstrap_stays_inside_the_support_of_the_deltas() -> None:
    # Only d in {0, +1}: no resample can show the new model worse, or better than c / N.
    old, new = paired(0, 3, both_right=40, both_wrong=7)
    low, high = paired_bootstrap_ci(old, new, resamples=2000)
    assert 0.0 <= low < 3 / 50 < high <= 1.0


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    old, new = random_pair(1000, seed=1)
    first = paired_bootstrap_ci(old, new, seed=7)
    assert paired_bootstrap_ci(old, new, seed=7) == first
    assert len({paired_bootstrap_ci(old, new, seed=seed) for seed in range(5)}) > 1


def naive_bootstrap_ci(
    old: np.ndarray, new: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """The textbook way: resample image indices, the same ones for both models."""
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, resamples, 500):
        indices = rng.integers(0, len(old), size=(min(500, resamples - start), len(old)))
        deltas.append(new[indices].mean(axis=1) - old[indices].mean(axis=1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(deltas), [tail, 1 - tail])
    return float(low), float(high)


@pytest.mark.parametrize("confidence", [0.95, 0.8])
def test_bootstrap_agrees_with_index_resampling(confidence: float) -> None:
    # Monte-Carlo error of each bound here is ~0.03 points; 0.3 points would be a real bug
    # (e.g. categories swapped, or a one-sided quantile).
    old, new = random_pair(2000, seed=3)
    expected = naive_bootstrap_ci(old, new, resamples=4000, confidence=confidence, seed=11)
    low, high = paired_bootstrap_ci(old, new, resamples=4000, confidence=confidence, seed=5)
    assert low == pytest.approx(expected[0], abs=0.003)
    assert high == pytest.approx(expected[1], abs=0.003)
    delta = new.mean() - old.mean()
    assert low < delta < high


def test_bootstrap_memory_does_not_grow_with_images_times_resamples() -> None:
    # Resampling indices would need 10,000 x 200,000 x 8 bytes = 16 GB here.
    old, new = random_pair(10_000, seed=4)
    tracemalloc.start()
    try:
        paired_bootstrap_ci(old, new, resamples=200_000)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 16 * 2**20


# --- compare_accuracy and its verdict -------------------------------------------------------


def test_compare_accuracy_by_hand() -> None:
    # 50 images: 40 both right, 1 only old, 9 only new.
    result = compare_accuracy(*paired(1, 9, both_right=40))
    assert (result.n_images, result.old_accuracy, result.new_accuracy) == (50, 0.82, 0.98)
    assert result.delta == pytest.approx(0.16)
    assert result.mcnemar == McNemar(1, 9, 0.021484375)
    assert result.significant
    assert result.ci_low <= result.delta <= result.ci_high
    assert result.verdict().startswith("+16.00 points, 95% CI [")
    assert result.verdict().endswith("], p = 0.021: significant at 0.05 (new is better)")


def test_compare_accuracy_alpha_sets_test_level_and_ci_level() -> None:
    result = compare_accuracy(*paired(1, 9, both_right=40), alpha=0.01)
    assert not result.significant  # p = 0.0215
    assert result.confidence == pytest.approx(0.99)
    assert "99% CI" in result.verdict()
    assert result.verdict().endswith("p = 0.021: not significant at 0.01")


def test_verdict_when_models_agree_everywhere() -> None:
    result = compare_accuracy(*paired(0, 0, both_right=95, both_wrong=5))
    assert result.verdict() == "+0.00 points, 95% CI [+0.00, +0.00], p = 1: not significant at 0.05"


def test_verdict_when_old_is_wrong_everywhere_and_new_right() -> None:
    # CI [1, 1] as every image has d = +1; p = 2 / 2^20.
    result = compare_accuracy(*paired(0, 20))
    assert result.verdict() == (
        "+100.00 points, 95% CI [+100.00, +100.00], p < 0.0001: significant at 0.05 (new is better)"
    )


def comparison(
    delta: float, ci: tuple[float, float], p_value: float, alpha: float = 0.05
) -> AccuracyComparison:
    """An AccuracyComparison with the numbers the verdict prints; the rest is filler."""
    return AccuracyComparison(
        n_images=10_000,
        old_accuracy=0.9,
        new_accuracy=0.9 + delta,
        delta=delta,
        confidence=1 - alpha,
        ci_low=ci[0],
        ci_high=ci[1],
        mcnemar=McNemar(b=40, c=71, p_value=p_value),
        alpha=alpha,
        significant=p_value < alpha,
    )


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (
            comparison(0.0031, (-0.0005, 0.0067), 0.09),
            "+0.31 points, 95% CI [-0.05, +0.67], p = 0.09: not significant at 0.05",
        ),
        (
            comparison(-0.0125, (-0.0171, -0.0079), 3e-5),
            "-1.25 points, 95% CI [-1.71, -0.79], p < 0.0001: significant at 0.05 (old is better)",
        ),
        (  # 2 significant digits
            comparison(0.0042, (0.0011, 0.0075), 0.012345),
            "+0.42 points, 95% CI [+0.11, +0.75], p = 0.012: significant at 0.05 (new is better)",
        ),
        (  # 0.0496 would round to "0.05" next to "significant at 0.05": one digit more
            comparison(0.0042, (0.0001, 0.0080), 0.0496),
            "+0.42 points, 95% CI [+0.01, +0.80], p = 0.0496: significant at 0.05 (new is better)",
        ),
        (
            comparison(0.0042, (-0.0001, 0.0080), 0.0504),
            "+0.42 points, 95% CI [-0.01, +0.80], p = 0.05: not significant at 0.05",
        ),
        (  # a change that rounds to zero is not printed as "-0.00"
            comparison(-0.00001, (-0.00003, 0.00001), 0.7),
            "+0.00 points, 95% CI [+0.00, +0.00], p = 0.7: not significant at 0.05",
        ),
        (
            comparison(0.0031, (0.0001, 0.0061), 0.09, alpha=0.1),
            "+0.31 points, 90% CI [+0.01, +0.61], p = 0.09: significant at 0.1 (new is better)",
        ),
    ],
)
def test_verdict_text(result: AccuracyComparison, text: str) -> None:
    assert result.verdict() == text


def bad_inputs() -> list[tuple[object, object, str]]:
    right = np.array([True, False, True])
    return [
        (right, right[:2], "same test images, got 3 and 2"),
        (np.array([], dtype=bool), np.array([], dtype=bool), "empty"),
        ([], [], "empty"),
        (right.astype(int), right, "correct_old must hold booleans.*int64"),
        (right, right.astype(float), "correct_new must hold booleans.*float64"),
        (right.reshape(3, 1), right, r"correct_old must be one value per test image.*\(3, 1\)"),
        (True, True, "correct_old must be one value per test image"),
    ]


@pytest.mark.parametrize(("old", "new", "message"), bad_inputs())
@pytest.mark.parametrize("function", [compare_accuracy, mcnemar_exact, paired_bootstrap_ci])
def test_unusable_inputs_are_one_line_value_errors(
    function: Callable[..., object], old: object, new: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as error:
        function(old, new)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resamples": 0}, "at least 1 resample, got 0"),
        ({"confidence": 1.0}, "confidence must lie strictly between 0 and 1, got 1.0"),
        ({"confidence": 0.0}, "confidence must lie strictly between 0 and 1, got 0.0"),
    ],
)
def test_bootstrap_options_are_checked(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_ci(*paired(1, 1), **options)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.05])
def test_alpha_is_checked(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
        compare_accuracy(*paired(1, 1), alpha=alpha)


# --- multi-seed summary ---------------------------------------------------------------------


def test_seed_summary_by_hand() -> None:
    runs = [
        {"test.accuracy": 0.90, "test.loss": 0.30, "only_here": 1.0},
        {"test.accuracy": 0.92, "test.loss": 0.25},
        {"test.accuracy": 0.91, "test.loss": 0.28, "also_only_here": 2.0},
    ]
    summary = seed_summary(runs)
    assert list(summary) == ["test.accuracy", "test.loss"]  # names every run has
    accuracy = summary["test.accuracy"]
    # deviations -0.01, +0.01, 0: sample variance 2e-4 / (3 - 1)
    assert accuracy.mean == pytest.approx(0.91)
    assert accuracy.std == pytest.approx(0.01)
    assert (accuracy.min, accuracy.max, accuracy.n) == (0.90, 0.92, 3)
    loss = summary["test.loss"]
    assert loss.mean == pytest.approx(statistics.mean([0.30, 0.25, 0.28]))
    assert loss.std == pytest.approx(statistics.stdev([0.30, 0.25, 0.28]))


def test_seed_summary_std_is_the_sample_std() -> None:
    # ddof=1: sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2); the population std would be 1.
    stat = seed_summary([{"x": 1}, {"x": 3}])["x"]
    assert stat == SeedStat(mean=2.0, std=pytest.approx(2**0.5), min=1.0, max=3.0, n=2)


@pytest.mark.parametrize("count", [0, 1])
def test_seed_summary_needs_two_runs(count: int) -> None:
    with pytest.raises(
        ValueError, match=f"^multi-seed summary needs at least 2 runs, got {count}$"
    ):
        seed_summary([{"test.accuracy": 0.9}] * count)


@pytest.mark.parametrize("value", ["0.9", None, True])
def test_seed_summary_rejects_values_that_are_not_numbers(value: object) -> None:
    with pytest.raises(ValueError, match=r"run 1: metric 'test\.accuracy' is not a number"):
        seed_summary([{"test.accuracy": 0.9}, {"test.accuracy": value}])


def test_format_mean_std() -> None:
    stat = SeedStat(mean=0.8971, std=0.0012, min=0.8955, max=0.8990, n=5)
    assert format_mean_std(stat) == "0.8971 ± 0.0012 (min 0.8955, max 0.8990, 5 seeds)"
    assert format_mean_std(stat, digits=2) == "0.90 ± 0.00 (min 0.90, max 0.90, 5 seeds)"
