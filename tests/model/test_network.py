"""The whole network: gradient checks for every cell type, stacked and tied; initialisation;
configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from model.network.class_softmax import WordClasses
from model.network.layers import RowSparse
from model.network.recurrent import RNNLM, ModelConfig
from tests.conftest import perturbed
from tests.gradcheck import numerical_gradient, relative_error

V, T, N = 9, 4, 3


def dense(g: np.ndarray | RowSparse) -> np.ndarray:
    return g.to_dense() if isinstance(g, RowSparse) else g


def check_network_gradients(config: ModelConfig, dropout_seed: int | None = None) -> None:
    """Every parameter's analytic gradient against central differences of the mean loss.

    The window starts from a random carried-in state and some targets are masked out. With a
    dropout seed, each evaluation redraws the very same dropout masks.
    """
    net = perturbed(RNNLM(config, seed=1, dtype=np.float64), seed=2)
    rng = np.random.default_rng(5)
    inputs, targets = rng.integers(0, V, size=(T, N)), rng.integers(0, V, size=(T, N))
    mask = (rng.random((T, N)) > 0.25).astype(np.float64)
    state = [
        tuple(rng.normal(0, 0.5, (N, config.hidden_size)) for _ in layer)
        for layer in net.init_state(N)
    ]
    drop = lambda: None if dropout_seed is None else np.random.default_rng(dropout_seed)  # noqa: E731
    _, grads, _ = net.loss_and_grads(inputs, targets, mask, state, drop())
    assert set(grads) == set(net.params)
    for name, p in net.params.items():
        num = numerical_gradient(
            lambda: net.loss_and_grads(inputs, targets, mask, state, drop())[0], p
        )
        assert relative_error(dense(grads[name]), num) < 1e-6, name


@pytest.mark.parametrize(
    ("cell", "activation"), [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_network_gradients(cell: str, activation: str, num_layers: int) -> None:
    check_network_gradients(
        ModelConfig(V, cell, activation, num_layers, embed_size=4, hidden_size=5)
    )


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_network_gradients_with_tied_weights(cell: str) -> None:
    check_network_gradients(
        ModelConfig(V, cell, num_layers=2, embed_size=5, hidden_size=5, tie_weights=True)
    )


CLASS_BOUNDS = (0, 2, 5, V)  # three word classes of the 9 ids
SHORTLISTED = (0, 1, 2, 5, V)  # words 0 and 1 alone (a shortlist of 2), then two bands


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shortlist", [0, 2])
def test_network_gradients_with_a_class_factored_output(
    cell: str, tied: bool, shortlist: int
) -> None:
    check_network_gradients(
        ModelConfig(
            V,
            cell,
            num_layers=2,
            embed_size=5,
            hidden_size=5,
            tie_weights=tied,
            softmax="class",
            class_bounds=SHORTLISTED if shortlist else CLASS_BOUNDS,
            class_shortlist=shortlist,
        )
    )
    check_network_gradients(
        ModelConfig(
            V,
            cell,
            num_layers=1,
            embed_size=4,
            hidden_size=5,
            dropout=0.3,
            softmax="class",
            class_bounds=CLASS_BOUNDS,
        ),
        11,
    )


def test_a_class_factored_output_is_normalised_and_keeps_its_classes() -> None:
    config = ModelConfig(V, "lstm", embed_size=4, hidden_size=5, softmax="class",
                         class_bounds=CLASS_BOUNDS)  # fmt: skip
    net = perturbed(RNNLM(config, seed=1, dtype=np.float64), seed=2)
    assert net.params["output.class.W"].shape == (3, 5) and net.params["output.class.b"].shape == (
        3,
    )
    log_p, _ = net.log_probs(np.array([[1, 4, 7]]).T, net.init_state(1))
    np.testing.assert_allclose(np.exp(log_p).sum(axis=-1), 1.0, atol=1e-12)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["class_bounds"] == [0, 2, 5, 9]  # a JSON list in the checkpoint
    old = {
        k: v for k, v in ModelConfig(V).to_dict().items() if k not in ("softmax", "class_bounds")
    }
    assert ModelConfig.from_dict(old).softmax == "full"  # a checkpoint from before the option
    with pytest.raises(ValueError, match="class_bounds must be a list of integers"):
        ModelConfig.from_dict({**config.to_dict(), "class_bounds": [0, 2.0, 9]})
    with pytest.raises(ValueError, match="no single logits"):
        net.logits(np.zeros((1, 1, 5)))


def test_a_shortlist_heads_with_the_word_rows_and_is_kept() -> None:
    config = ModelConfig(V, "lstm", embed_size=5, hidden_size=5, tie_weights=True,
                         softmax="class", class_bounds=SHORTLISTED, class_shortlist=2)  # fmt: skip
    net = perturbed(RNNLM(config, seed=1, dtype=np.float64), seed=2)
    assert net.params["output.class.W"].shape == (2, 5)  # the two bands only
    log_p, _ = net.log_probs(np.array([[1, 4, 7]]).T, net.init_state(1))
    np.testing.assert_allclose(np.exp(log_p).sum(axis=-1), 1.0, atol=1e-12)
    # word 0's probability is its head entry: its embedding row against the head's normaliser
    hidden = net.forward(np.array([[1]]), net.init_state(1))[0][0, 0]
    E, b = net.params["embedding.W"], net.params["output.b"]
    Wc, bc = net.params["output.class.W"], net.params["output.class.b"]
    head = np.concatenate([E[:2] @ hidden + b[:2], Wc @ hidden + bc])
    want = head[0] - np.log(np.exp(head).sum())
    assert log_p[0, 0, 0] == pytest.approx(want, abs=1e-12)
    assert ModelConfig.from_dict(config.to_dict()) == config
    no_shortlist = {k: v for k, v in config.to_dict().items() if k != "class_shortlist"}
    assert ModelConfig.from_dict(no_shortlist).classes == WordClasses(SHORTLISTED)  # older file
    with pytest.raises(ValueError, match="a shortlist of 3 needs"):
        ModelConfig(V, softmax="class", class_bounds=SHORTLISTED, class_shortlist=3)
    with pytest.raises(ValueError, match="for softmax 'class' only"):
        ModelConfig(V, class_shortlist=2)


def test_network_gradients_with_dropout_masks_held_fixed() -> None:
    check_network_gradients(
        ModelConfig(V, "lstm", num_layers=2, embed_size=4, hidden_size=5, dropout=0.3), 11
    )


def test_dropout_is_off_at_inference() -> None:
    net = RNNLM(ModelConfig(V, "lstm", embed_size=4, hidden_size=5, dropout=0.5), dtype=np.float64)
    ids = np.arange(8).reshape(4, 2)
    a, _ = net.log_probs(ids, net.init_state(2))
    b, _ = net.log_probs(ids, net.init_state(2))
    np.testing.assert_array_equal(a, b)
    trained, _, _ = net.forward(ids, net.init_state(2), np.random.default_rng(0))
    inferred, _, _ = net.forward(ids, net.init_state(2))
    assert not np.allclose(trained, inferred)  # training does drop units


def test_next_token_probabilities_sum_to_one() -> None:
    net = RNNLM(ModelConfig(V, "gru", embed_size=4, hidden_size=5))
    log_probs, _ = net.log_probs(np.array([[1, 2], [3, 4], [5, 6]]), net.init_state(2))
    assert log_probs.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_probs.astype(np.float64)).sum(axis=-1), 1.0, atol=1e-5)


def test_initialisation_suits_each_cell() -> None:
    H = 6
    lstm = RNNLM(ModelConfig(V, "lstm", embed_size=4, hidden_size=H), dtype=np.float64)
    b = lstm.params["rnn.0.b"]
    np.testing.assert_array_equal(b[H : 2 * H], 1.0)  # forget gate open
    np.testing.assert_array_equal(np.delete(b, np.s_[H : 2 * H]), 0.0)
    for k in range(4):  # each gate's recurrent block is orthogonal
        block = lstm.params["rnn.0.Wh"][:, k * H : (k + 1) * H]
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-12)
    irnn = RNNLM(ModelConfig(V, "rnn", "relu", embed_size=4, hidden_size=H), dtype=np.float64)
    np.testing.assert_array_equal(irnn.params["rnn.1.Wh"], np.eye(H))  # identity for ReLU RNN
    assert np.abs(lstm.params["embedding.W"]).max() <= 0.1


def test_same_seed_same_weights_and_tied_model_has_no_output_matrix() -> None:
    config = ModelConfig(V, "lstm", embed_size=5, hidden_size=5, tie_weights=True)
    a, b = RNNLM(config, seed=7), RNNLM(config, seed=7)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert "output.W" not in a.params
    assert a.output_weight is a.params["embedding.W"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cell": "cnn"}, "unknown cell"),
        ({"activation": "gelu", "cell": "rnn"}, "unknown activation"),
        ({"num_layers": 0}, "num_layers must be at least 1"),
        ({"dropout": 1.0}, "dropout must be in"),
        (
            {"tie_weights": True, "embed_size": 4, "hidden_size": 5},
            "tie_weights needs embed_size == hidden_size",
        ),
        ({"vocab_size": 2}, "vocab_size must be at least 3"),
        ({"softmax": "sampled"}, "unknown softmax"),
        ({"softmax": "class", "class_bounds": (0, 4)}, "class_bounds must end at vocab_size 9"),
        ({"softmax": "class", "class_bounds": (0, 5, 5, 9)}, "bounds must rise strictly"),
        ({"softmax": "class"}, "bounds must rise strictly"),
        ({"class_bounds": (0, 9)}, "class_bounds and class_shortlist are for softmax 'class'"),
    ],
)
def test_bad_configs_are_rejected_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{"vocab_size": V, **kwargs})


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    config = ModelConfig(V, "gru", num_layers=3, dropout=0.2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model config keys: \\['heads'\\]"):
        ModelConfig.from_dict({**config.to_dict(), "heads": 4})


def test_parameters_that_do_not_fit_the_config_are_rejected() -> None:
    net = RNNLM(ModelConfig(V, "lstm", embed_size=4, hidden_size=5))
    params = dict(net.params)
    params["rnn.0.Wh"] = np.zeros((5, 5))
    with pytest.raises(ValueError, match="rnn.0.Wh has shape \\(5, 5\\), expected \\(5, 20\\)"):
        RNNLM(net.config, params)
    del params["output.b"]
    with pytest.raises(ValueError, match="missing \\['output.b'\\]"):
        RNNLM(net.config, params)
