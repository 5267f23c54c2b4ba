"""Fitting a pooling model: optimizer, learning-rate policy, eval-GAP early stopping."""

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from pooling_models import checkpoint
from pooling_models.builder import build_model, model_inputs
from pooling_models.evaluation import evaluate
from pooling_models.model_config import ModelConfig


@dataclass(frozen=True)
class FitSettings:
    epochs: int = 10
    learning_rate: float = 2e-4
    lr_decay_per_epoch: float = 0.95
    clip_norm: float = 1.0
    patience: int = 3
    mixed_precision: bool = False
    resume: bool = False
    checkpoint_output: str = ""  # where checkpoints go (gs:// allowed); default: the output


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
    """Metrics, learning-rate policy, early stopping (keeping the best-GAP weights, which the
    saved model.keras then holds), the resumable checkpoint and TensorBoard logs."""
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
        checkpoint.TrainingCheckpoint(settings.checkpoint_output or output),
        keras.callbacks.TensorBoard(os.path.join(output, "logs")),
    ]


def without_ids(dataset: tf.data.Dataset, model: keras.Model) -> tf.data.Dataset:
    return dataset.map(lambda inputs, labels: (model_inputs(model, inputs), labels))


def fit(
    model_config: ModelConfig,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset,
    output: str,
    settings: FitSettings,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Builds, compiles and fits; returns the model with its best-GAP weights and history.

    With settings.resume, training continues after the newest complete checkpoint (none:
    from the start). `extra_callbacks` run after ours, e.g. a test's interruption.
    """
    os.makedirs(output, exist_ok=True)
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
    initial_epoch = _resume(model, settings.checkpoint_output or output) if settings.resume else 0
    history = model.fit(
        without_ids(train_dataset, model),
        epochs=settings.epochs,
        initial_epoch=initial_epoch,
        callbacks=[
            *callbacks_for(output, eval_dataset, model_config.num_classes, settings),
            *extra_callbacks,
        ],
        verbose=2,
        shuffle=False,  # the dataset shuffles itself; Keras cannot shuffle a tf.data input
    )
    return model, {key: [float(v) for v in values] for key, values in history.history.items()}


def _resume(model: keras.Model, checkpoint_output: str) -> int:
    """Loads the newest complete checkpoint; returns the epochs it had done (0: none)."""
    found, skipped = checkpoint.latest_checkpoint(checkpoint_output)
    for note in skipped:
        warnings.warn(note, stacklevel=2)
    if found is None:
        note = f"{checkpoint_output}: no checkpoint to resume; training from the start"
        warnings.warn(note, stacklevel=2)
        return 0
    checkpoint.restore(model, found)
    print(f"train_pool: resuming after epoch {found.epochs_done} ({found.folder})")
    return found.epochs_done
