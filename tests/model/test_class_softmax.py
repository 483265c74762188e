"""The class-factored output layer: exact probabilities (every distribution sums to 1 over the
vocabulary), the loss is -log of them, numerical gradient checks (float64, central
differences), and the √count binning of the classes."""

from __future__ import annotations

import numpy as np
import pytest

from model.network.class_softmax import (
    WordClasses,
    class_log_probs,
    class_log_probs_at,
    class_softmax_loss,
    class_top_k,
)
from tests.gradcheck import numerical_gradient, relative_error

V, H, T, N = 13, 4, 3, 2


@pytest.fixture
def layer() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(0, 1, (T, N, H)),
        "W": rng.normal(0, 0.7, (V, H)),
        "b": rng.normal(0, 0.3, V),
        "Wc": rng.normal(0, 0.7, (4, H)),
        "bc": rng.normal(0, 0.3, 4),
    }


CLASSES = WordClasses((0, 2, 5, 9, 13))
SHORTLISTED = WordClasses((0, 1, 2, 3, 5, 9, 13), 3)  # words 0-2 alone, then 3 bands


@pytest.fixture(params=[CLASSES, SHORTLISTED], ids=["bands", "shortlist"])
def any_layer(request: pytest.FixtureRequest) -> dict[str, object]:
    """A layer for each layout: frequency bands only, and a shortlist before bands."""
    classes: WordClasses = request.param
    rng = np.random.default_rng(0)
    K = classes.num_bands  # the shortlist's head rows are word rows
    return {
        "x": rng.normal(0, 1, (T, N, H)),
        "W": rng.normal(0, 0.7, (V, H)),
        "b": rng.normal(0, 0.3, V),
        "Wc": rng.normal(0, 0.7, (K, H)),
        "bc": rng.normal(0, 0.3, K),
        "classes": classes,
    }


def _args(layer: dict[str, object]) -> tuple:  # type: ignore[type-arg]
    return tuple(layer[k] for k in ("x", "W", "b", "Wc", "bc", "classes"))


def test_probabilities_over_the_vocabulary_sum_to_one(layer: dict[str, np.ndarray]) -> None:
    lp = class_log_probs(layer["x"], layer["W"], layer["b"], layer["Wc"], layer["bc"], CLASSES)
    assert lp.shape == (T, N, V)
    np.testing.assert_allclose(np.exp(lp).sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    # the factors, spelt out for one word: P(class) · P(word | class)
    x = layer["x"][1, 0]
    zc = layer["Wc"] @ x + layer["bc"]
    zw = layer["W"][5:9] @ x + layer["b"][5:9]
    want = (zc[2] - np.log(np.exp(zc).sum())) + (zw[2] - np.log(np.exp(zw).sum()))
    assert lp[1, 0, 7] == pytest.approx(want, abs=1e-12)


def test_a_shortlisted_word_is_its_own_head_entry(any_layer: dict[str, object]) -> None:
    x, W, b, Wc, bc, classes = _args(any_layer)
    lp = class_log_probs(x, W, b, Wc, bc, classes)
    np.testing.assert_allclose(np.exp(lp).sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    every = np.arange(V)
    for state in np.asarray(x).reshape(-1, H):  # the scoring path: the same numbers
        at = class_log_probs_at(np.repeat(state[None], V, 0), every, W, b, Wc, bc, classes)
        np.testing.assert_allclose(at, class_log_probs(state, W, b, Wc, bc, classes), atol=1e-12)
    if classes is SHORTLISTED:  # a listed word's head entry is its own word row
        assert classes.shortlist == 3 and CLASSES.shortlist == 0
        zc = np.concatenate([x @ np.asarray(W)[:3].T + b[:3], x @ np.asarray(Wc).T + bc], -1)
        head = zc - np.log(np.exp(zc).sum(axis=-1, keepdims=True))
        np.testing.assert_allclose(lp[..., :3], head[..., :3], rtol=0, atol=1e-12)
        with pytest.raises(ValueError, match="a shortlist of 4 needs"):
            WordClasses(SHORTLISTED.bounds, 4)


def test_no_tokens_score_to_nothing(any_layer: dict[str, object]) -> None:
    _, W, b, Wc, bc, classes = _args(any_layer)
    none = class_log_probs_at(np.zeros((0, H)), np.zeros(0, dtype=np.int64), W, b, Wc, bc, classes)
    assert none.shape == (0,)


def test_the_loss_is_the_mean_negative_log_probability(any_layer: dict[str, object]) -> None:
    targets = np.array([[0, 12], [7, 3], [12, 5]])
    mask = np.array([[1.0, 0.0], [1.0, 1.0], [0.5, 1.0]])
    args = _args(any_layer)
    lp = class_log_probs(*args)
    picked = np.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]
    loss, _, _ = class_softmax_loss(*args, targets, mask)
    assert loss == pytest.approx(float(-(picked * mask).sum() / mask.sum()), abs=1e-12)
    with pytest.raises(ValueError, match="mask selects no position"):
        class_softmax_loss(*args, targets, np.zeros((T, N)))


@pytest.mark.parametrize("masked", [False, True])
def test_gradients_match_central_differences(any_layer: dict[str, object], masked: bool) -> None:
    targets = np.array([[0, 12], [7, 7], [1, 4]])  # bands: classes 0, 3, 2, 2, 0, 1
    mask = np.array([[1.0, 0.0], [0.5, 1.0], [1.0, 1.0]]) if masked else None
    args = _args(any_layer)

    def loss() -> float:
        return class_softmax_loss(*args, targets, mask)[0]

    _, dx, grads = class_softmax_loss(*args, targets, mask)
    analytic = {"x": dx, **grads}
    for name in ("x", "W", "b", "Wc", "bc"):
        numeric = numerical_gradient(loss, any_layer[name])  # type: ignore[arg-type]
        assert relative_error(analytic[name], numeric) < 1e-7, name
    if masked:  # an uncounted position gets no gradient
        assert not dx[0, 1].any()
    if any_layer["classes"] is SHORTLISTED:  # listed words' rows: their head entries' gradient
        assert grads["W"][:3].all() and grads["Wc"].shape == (3, H)


def test_classes_share_the_square_root_of_the_counts() -> None:
    # square roots 20, 10, 10, 5 (4 times), 2 (6 times), 1, 1
    counts = [400, 100, 100, 25, 25, 25, 25, 4, 4, 4, 4, 4, 4, 1, 1]
    classes = WordClasses.by_frequency(counts, 4)  # Σ√ = 74: about 18.5 a class
    assert classes.bounds == (0, 1, 3, 7, 15)
    assert classes.class_of(np.array([0, 1, 2, 3, 6, 7, 14])).tolist() == [0, 1, 1, 2, 2, 3, 3]
    one = WordClasses.by_frequency(counts, 1)
    assert one.bounds == (0, 15)
    many = WordClasses.by_frequency(counts, 15)  # never an empty class
    assert np.all(np.diff(many.bounds) >= 1) and many.num_classes <= 15
    assert WordClasses.default_count(10_000) == 100
    for bad in ((0,), (0, 3, 3), (1, 4)):
        with pytest.raises(ValueError, match="bounds"):
            WordClasses(bad)
    with pytest.raises(ValueError, match="classes must be"):
        WordClasses.by_frequency(counts, 16)


def test_a_shortlist_gives_the_most_frequent_words_a_class_each() -> None:
    counts = [900, 400, 100, 100, 25, 25, 25, 25, 4, 4, 4, 4, 4, 4, 1, 1]
    classes = WordClasses.by_frequency(counts, 4, shortlist=2)
    # the first two alone, then the rest in bands: square roots 10, 10, 5 (4 times), 2 (6
    # times), 1, 1 sum to 54, 13.5 a band, and a word opens a new band where the mass before
    # it crosses a multiple: ids 2-3, 4-5, 6-8, 9-15
    assert classes.bounds == (0, 1, 2, 4, 6, 9, 16)
    assert classes.shortlist == 2 and classes.num_classes == 6
    assert WordClasses.by_frequency(counts, 3, shortlist=0).shortlist == 0
    for bad in (-1, 16):
        with pytest.raises(ValueError, match="shortlist must be"):
            WordClasses.by_frequency(counts, 3, shortlist=bad)


@pytest.mark.parametrize("k", [0, 1, 3, 7, 13, 20])
@pytest.mark.parametrize("excluded", [(), (0, 1, 2), (4, 12)])
def test_top_k_is_the_exact_top_of_the_whole_distribution(
    any_layer: dict[str, object], k: int, excluded: tuple[int, ...]
) -> None:
    states, *args = _args(any_layer)
    classes: WordClasses = any_layer["classes"]  # type: ignore[assignment]
    for x in np.asarray(states).reshape(-1, H):
        full = class_log_probs(x, *args)
        full[list(excluded)] = -np.inf
        want = np.argsort(-full, kind="stable")[: min(k, V - len(excluded))]
        ids, lps, opened = class_top_k(x, *args, k, excluded)
        np.testing.assert_array_equal(ids, want)
        np.testing.assert_allclose(lps, full[want], rtol=0, atol=1e-12)
        assert opened <= classes.num_classes


def test_top_k_stops_opening_classes_once_none_can_hold_a_better_word() -> None:
    classes = WordClasses((0, 3, 6, 9, 12))
    rng = np.random.default_rng(1)
    W, b = rng.normal(0, 0.1, (12, H)), np.zeros(12)
    Wc, bc = np.zeros((4, H)), np.array([6.0, 0.0, -1.0, -2.0])  # class 0 holds most mass
    x = rng.normal(0, 1, H)
    ids, _, opened = class_top_k(x, W, b, Wc, bc, classes, 2)
    assert opened == 1 and set(ids.tolist()) <= {0, 1, 2}
    full = class_log_probs(x, W, b, Wc, bc, classes)
    np.testing.assert_array_equal(ids, np.argsort(-full, kind="stable")[:2])
    _, _, opened_all = class_top_k(x, W, b, Wc, bc, classes, 12)
    assert opened_all == 4  # every word asked for: every class opened


@pytest.mark.parametrize("share", [0.0, 0.25, 2.0])  # always, past a quarter, never one product
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_top_k_is_exact_on_a_larger_vocabulary_by_every_path(share: float, dtype: type) -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(3, 20, 16)
    sizes[-1] += 200 - sizes.sum()  # 16 classes of 3 to 19 words and one large one
    classes = WordClasses(tuple(np.concatenate([[0], np.cumsum(sizes)]).tolist()))
    Hs, K = 8, classes.num_classes
    W, b = rng.normal(0, 1.0, (200, Hs)).astype(dtype), rng.normal(0, 0.5, 200).astype(dtype)
    Wc = rng.normal(0, 0.5, (K, Hs)).astype(dtype)
    bc = (-0.7 * rng.permutation(K)).astype(dtype)  # class probabilities fall off gradually
    pruned, chunks_past_the_first = 0, 0
    for trial in range(40):
        x = rng.normal(0, 1.5, Hs).astype(dtype)
        excluded = (0, 1, 2) if trial % 2 else tuple(range(classes.bounds[1], classes.bounds[2]))
        every = np.arange(200)
        want_lp = class_log_probs_at(np.repeat(x[None], 200, 0), every, W, b, Wc, bc, classes)
        want_lp[list(excluded)] = -np.inf
        for k in (1, 2, 5, 17, 60, 250):
            ids, lps, opened = class_top_k(x, W, b, Wc, bc, classes, k, excluded, share)
            want = np.lexsort((every, -want_lp))[: min(k, 200 - len(excluded))]
            if dtype is np.float64:
                np.testing.assert_array_equal(ids, want)
                np.testing.assert_allclose(lps, want_lp[ids], rtol=0, atol=1e-12)
            else:  # found at float32 precision: the same words and numbers up to its rounding
                np.testing.assert_allclose(want_lp[ids], want_lp[want], rtol=0, atol=1e-5)
                np.testing.assert_allclose(lps, want_lp[ids], rtol=0, atol=1e-5)
            pruned += opened < K
            chunks_past_the_first += 3 <= opened < K  # classes 2 and 3 came in one product
            if share == 0.0:
                assert opened == K
    if share > 0:  # the search stops early on many of them, some after several chunks
        assert pruned > 60 and chunks_past_the_first > 20, (pruned, chunks_past_the_first)


def test_top_k_of_a_non_finite_state_is_empty(layer: dict[str, np.ndarray]) -> None:
    x = np.full(H, np.nan)
    ids, lps, _ = class_top_k(x, layer["W"], layer["b"], layer["Wc"], layer["bc"], CLASSES, 3)
    assert len(ids) == len(lps) == 0
