import keras
import numpy as np
import pytest

from pooling_models.heads import LogisticHead, MoeHead

BATCH, FEATURES, CLASSES = 3, 6, 5

HEADS = [
    pytest.param(LogisticHead, {"num_classes": CLASSES}, id="logistic"),
    pytest.param(MoeHead, {"num_classes": CLASSES, "num_mixtures": 3}, id="moe"),
    pytest.param(MoeHead, {"num_classes": CLASSES, "num_mixtures": 1}, id="moe-1"),
]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _pooled(*leading: int) -> np.ndarray:
    shape = (*(leading or (BATCH,)), FEATURES)
    return np.random.default_rng(1).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("head_class, kwargs", HEADS)
def test_probabilities_in_open_unit_interval(head_class, kwargs):
    probabilities = keras.ops.convert_to_numpy(head_class(**kwargs)(_pooled()))
    assert probabilities.shape == (BATCH, CLASSES)
    assert ((probabilities > 0) & (probabilities < 1)).all()


@pytest.mark.parametrize("head_class, kwargs", HEADS)
def test_per_frame_inputs_keep_leading_axes(head_class, kwargs):
    head = head_class(**kwargs)
    per_frame = keras.ops.convert_to_numpy(head(_pooled(BATCH, 4)))
    assert per_frame.shape == (BATCH, 4, CLASSES)
    np.testing.assert_allclose(per_frame[:, 2], head(_pooled(BATCH, 4)[:, 2]), atol=1e-6)


@pytest.mark.parametrize("head_class, kwargs", HEADS)
def test_regularizes_its_weights(head_class, kwargs):
    head = head_class(**kwargs)
    head(_pooled())
    assert len(head.losses) >= 1


def test_moe_gates_sum_to_one_and_mix_the_experts():
    head = MoeHead(num_classes=CLASSES, num_mixtures=2)
    inputs = _pooled()
    probabilities = keras.ops.convert_to_numpy(head(inputs))
    gates = keras.ops.convert_to_numpy(head.gates(inputs))
    assert gates.shape == (BATCH, CLASSES, 3)
    np.testing.assert_allclose(gates.sum(axis=-1), 1.0, atol=1e-6)

    expert_logits = keras.ops.convert_to_numpy(head.expert_logits(inputs))
    experts = 1 / (1 + np.exp(-expert_logits.reshape(BATCH, 2, CLASSES).transpose(0, 2, 1)))
    np.testing.assert_allclose(probabilities, (gates[..., :2] * experts).sum(-1), atol=1e-6)


@pytest.mark.parametrize("head_class, kwargs", HEADS)
def test_config_round_trip(head_class, kwargs):
    head = head_class(**kwargs)
    rebuilt = head_class.from_config(head.get_config())
    assert rebuilt.get_config() == head.get_config()


@pytest.mark.parametrize("head_class, kwargs", HEADS)
def test_keras_file_round_trip(head_class, kwargs, tmp_path):
    pooled_in = keras.Input(shape=(FEATURES,))
    model = keras.Model(pooled_in, head_class(**kwargs)(pooled_in))
    expected = model(_pooled())
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(_pooled()), expected, atol=1e-6)
