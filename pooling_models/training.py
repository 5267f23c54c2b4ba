"""Fitting a pooling model: optimizer, learning-rate policy, eval-GAP early stopping."""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from pooling_models.builder import ModelConfig, build_model, model_inputs
from pooling_models.evaluation import evaluate

# Test hook shared with the extraction job's: makes a run fail at a chosen point.
FAULT_ENV = "FRAMEVLAD_FAULT"


@dataclass(frozen=True)
class FitSettings:
    epochs: int = 10
    learning_rate: float = 2e-4
    lr_decay_per_epoch: float = 0.95
    clip_norm: float = 1.0
    patience: int = 3
    mixed_precision: bool = False
    resume: bool = False


class EvalMetricsCallback(keras.callbacks.Callback):
    """Adds val_gap, val_hit_at_1, ..., val_loss to the epoch logs.

    Must come before the callbacks that read them (early stopping, LR on plateau)."""

    def __init__(self, dataset: tf.data.Dataset, num_classes: int) -> None:
        super().__init__()
        self._dataset = dataset
        self._num_classes = num_classes

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = evaluate(self.model, self._dataset, self._num_classes)
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in metrics.items()})
        print(
            f"epoch {epoch + 1}: eval gap {metrics['gap']:.4f} hit@1 {metrics['hit_at_1']:.4f} "
            f"map {metrics['map']:.4f} ({metrics['num_videos']} videos)"
        )


def exponential_decay(decay: float) -> Callable[[int, float], float]:
    """Per-epoch decay applied to the current rate, so ReduceLROnPlateau's cuts persist.

    (Keras 3 cannot combine a LearningRateSchedule object with ReduceLROnPlateau.)"""

    def schedule(epoch: int, learning_rate: float) -> float:
        return learning_rate * decay if epoch > 0 else learning_rate

    return schedule


def distribution_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy across GPUs when there are several, else the default strategy."""
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def callbacks_for(
    output: str, eval_dataset: tf.data.Dataset, num_classes: int, settings: FitSettings
) -> list[keras.callbacks.Callback]:
    backup_dir = os.path.join(output, "backup")
    if not settings.resume and os.path.isdir(backup_dir):
        shutil.rmtree(backup_dir)  # a fresh run must not silently continue an old one
    return [
        EvalMetricsCallback(eval_dataset, num_classes),
        keras.callbacks.LearningRateScheduler(exponential_decay(settings.lr_decay_per_epoch)),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_gap",
            mode="max",
            factor=0.5,
            patience=max(1, settings.patience // 2),
            min_lr=settings.learning_rate / 100,
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_gap", mode="max", patience=settings.patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(
            os.path.join(output, "checkpoints", "best.keras"),
            monitor="val_gap",
            mode="max",
            save_best_only=True,
        ),
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.TensorBoard(os.path.join(output, "logs")),
        *fault_injection(),
    ]


class FailAfterEpochs(keras.callbacks.Callback):
    """Test hook: interrupts training once the backup of epoch N is written."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self._epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self._epochs:
            raise RuntimeError(f"{FAULT_ENV}: failing after {self._epochs} epochs, as asked")


def fault_injection() -> list[keras.callbacks.Callback]:
    """FRAMEVLAD_FAULT=after_epochs:N (tests of --resume); nothing otherwise."""
    fault = os.environ.get(FAULT_ENV, "")
    return [FailAfterEpochs(int(fault.split(":")[1]))] if fault.startswith("after_epochs:") else []


def without_ids(dataset: tf.data.Dataset, model: keras.Model) -> tf.data.Dataset:
    return dataset.map(lambda inputs, labels: (model_inputs(model, inputs), labels))


def fit(
    model_config: ModelConfig,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset,
    output: str,
    settings: FitSettings,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Builds, compiles and fits; returns the model with its best-GAP weights and history."""
    os.makedirs(os.path.join(output, "checkpoints"), exist_ok=True)
    previous_policy = keras.mixed_precision.global_policy()
    if settings.mixed_precision:  # layers keep the policy they were built with
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with distribution_strategy().scope():
            model = build_model(model_config)
            model.compile(
                optimizer=keras.optimizers.Adam(
                    settings.learning_rate, clipnorm=settings.clip_norm
                ),
                loss=keras.losses.BinaryCrossentropy(),
            )
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    history = model.fit(
        without_ids(train_dataset, model),
        epochs=settings.epochs,
        callbacks=callbacks_for(output, eval_dataset, model_config.num_classes, settings),
        verbose=2,
        shuffle=False,  # the dataset shuffles itself; Keras cannot shuffle a tf.data input
    )
    return model, {key: [float(v) for v in values] for key, values in history.history.items()}
