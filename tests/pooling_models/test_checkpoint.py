"""The training checkpoint: whole after every epoch, damaged or half-written ones skipped."""

import keras
import numpy as np
import pytest

from features.cli import UsageError
from pooling_models import checkpoint
from pooling_models.builder import build_model
from pooling_models.model_config import ModelConfig

CONFIG = ModelConfig(pooling="mean", num_classes=3, feature_sizes=(4,), head="logistic")


def compiled_model() -> keras.Model:
    model = build_model(CONFIG)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    return model


def batch() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = {
        "rgb": rng.normal(size=(8, 5, 4)).astype(np.float32),
        "num_frames": np.full(8, 5, np.int32),
    }
    return inputs, (rng.random((8, 3)) < 0.5).astype(np.float32)


def train(model: keras.Model, output: str, epochs: int, *callbacks) -> None:
    inputs, labels = batch()
    callback_list = [checkpoint.TrainingCheckpoint(output), *callbacks]
    model.fit(inputs, labels, epochs=epochs, verbose=0, callbacks=callback_list)


def test_keeps_the_two_newest_and_restores_weights_and_optimizer(tmp_path):
    model = compiled_model()
    train(model, str(tmp_path), 3)
    folders = checkpoint.find_checkpoints(str(tmp_path))
    assert [folder.rsplit("/", 1)[1] for folder in folders] == ["epoch-0003", "epoch-0002"]
    found, skipped = checkpoint.latest_checkpoint(str(tmp_path))
    assert found.epochs_done == 3 and skipped == []
    fresh = compiled_model()
    checkpoint.restore(fresh, found)
    for restored, trained in zip(fresh.weights, model.weights, strict=True):
        np.testing.assert_array_equal(restored, trained)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 3
    checkpoint.delete_checkpoints(str(tmp_path))
    assert checkpoint.find_checkpoints(str(tmp_path)) == []
    assert not (tmp_path / "checkpoint").exists()


@pytest.mark.parametrize(
    "damage",
    ["truncated_weights", "empty_state", "missing_state", "garbage_state", "flipped_weights"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    train(compiled_model(), str(tmp_path), 3)
    newest = tmp_path / "checkpoint/epoch-0003"
    weights, state = newest / "state.weights.h5", newest / "state.json"
    if damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "empty_state":
        state.write_bytes(b"")  # what BackupAndRestore left after a Ctrl-C
    elif damage == "missing_state":
        state.unlink()
    elif damage == "garbage_state":
        state.write_text('{"epochs_done": 3')
    else:
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    found, skipped = checkpoint.latest_checkpoint(str(tmp_path))
    assert found.epochs_done == 2
    assert len(skipped) == 1 and "epoch-0003" in skipped[0]
    checkpoint.restore(compiled_model(), found)


def test_an_interrupted_write_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    model = compiled_model()
    train(model, str(tmp_path), 2)

    def save_half_then_interrupt(path: str) -> None:
        with open(path, "wb") as partial:
            partial.write(b"\x89HDF")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", save_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(model, str(tmp_path), 1)  # would write epoch-0001 again
    found, skipped = checkpoint.latest_checkpoint(str(tmp_path))
    assert found.epochs_done == 2 and skipped == []
    leftovers = [p for p in (tmp_path / "checkpoint").rglob("*") if p.is_file()]
    assert sorted(p.name for p in leftovers) == sorted(["state.json", "state.weights.h5"] * 2)


def test_no_checkpoint(tmp_path):
    assert checkpoint.latest_checkpoint(str(tmp_path)) == (None, [])


def test_a_checkpoint_of_another_model_is_one_usage_error(tmp_path):
    train(compiled_model(), str(tmp_path), 1)
    found, _ = checkpoint.latest_checkpoint(str(tmp_path))
    other = build_model(ModelConfig(pooling="mean", num_classes=5, feature_sizes=(4,)))
    other.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(UsageError, match="does not fit this model"):
        checkpoint.restore(other, found)
