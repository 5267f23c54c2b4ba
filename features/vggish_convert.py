"""Convert the published VGGish TF1 checkpoint into a Keras `.weights.h5` for --audio_weights.

    python -m features.vggish_convert vggish_model.ckpt [--output PATH]

The checkpoint (https://storage.googleapis.com/audioset/vggish_model.ckpt) is read by variable
name (`vggish/conv1/weights`, `vggish/fc1/fc1_2/biases`, ...); TF-Slim's kernel layouts
([3, 3, in, out] and [in, out]) are Keras' own, so tensors copy over unchanged. The default
output is where `--audio_weights vggish` looks: $KERAS_HOME/models/vggish.weights.h5.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from features import cli

if TYPE_CHECKING:
    import numpy as np

PROG = "vggish_convert"
_PARTS = ("weights", "biases")  # TF-Slim's variable names for kernel and bias


class ConversionError(ValueError):
    """A checkpoint that does not hold VGGish's variables, or an output we cannot write."""


def read_checkpoint(checkpoint: str) -> dict[str, np.ndarray]:
    """Every VGGish variable of a TF1 checkpoint, by name: {"vggish/conv1/weights": ...}.

    Other variables (optimizer slots, a classifier on top, global_step) are ignored; a
    missing VGGish variable is an error naming all that are missing.
    """
    # TensorFlow and Keras load here, not at import: `--help` must answer at once.
    import tensorflow as tf

    from features.vggish import WEIGHT_LAYERS, checkpoint_scope

    try:
        reader = tf.train.load_checkpoint(checkpoint)
    except (tf.errors.OpError, ValueError) as error:
        raise ConversionError(f"{checkpoint}: not a readable TF checkpoint ({error})") from error
    available = reader.get_variable_to_shape_map()
    wanted = [f"{checkpoint_scope(layer)}/{part}" for layer in WEIGHT_LAYERS for part in _PARTS]
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ConversionError(
            f"{checkpoint}: not a VGGish checkpoint; missing {', '.join(missing)}"
        )
    return {name: reader.get_tensor(name) for name in wanted}


def convert(checkpoint: str, output: str) -> None:
    """Write `checkpoint`'s VGGish variables into a `.weights.h5` that build_vggish loads."""
    from features.vggish import WEIGHT_LAYERS, checkpoint_scope, vggish_architecture

    if not output.endswith(".weights.h5"):
        raise ConversionError(f"--output {output}: must end in '.weights.h5' (Keras 3)")
    tensors = read_checkpoint(checkpoint)
    model = vggish_architecture()
    for name in WEIGHT_LAYERS:
        layer = model.get_layer(name)
        scope = checkpoint_scope(name)
        for variable, part in zip((layer.kernel, layer.bias), _PARTS, strict=True):
            value = tensors[f"{scope}/{part}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise ConversionError(
                    f"{checkpoint}: {scope}/{part} has shape {list(value.shape)}, "
                    f"VGGish layer {name} expects {list(variable.shape)}"
                )
            variable.assign(value.astype("float32"))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    # Written beside the target, then renamed, so a crash never leaves a half file that
    # --audio_weights vggish would find.
    partial = output[: -len(".weights.h5")] + ".partial.weights.h5"
    model.save_weights(partial)
    os.replace(partial, output)


def build_parser() -> cli.Parser:
    parser = cli.Parser(
        PROG,
        "Convert the published VGGish checkpoint (vggish_model.ckpt) into the Keras "
        "weights file that --audio_weights vggish loads.",
    )
    parser.add_argument("checkpoint", help="vggish_model.ckpt (a TF1 checkpoint path/prefix)")
    parser.add_argument(
        "--output",
        default=None,
        help="where to write (default: the Keras cache, $KERAS_HOME/models/vggish.weights.h5)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors are one line and exit with status 2."""
    args, _ = build_parser().parse(argv)

    def run() -> int:
        from features.vggish import vggish_cache_path

        output = args.output or vggish_cache_path()
        convert(args.checkpoint, output)
        print(f"{PROG}: wrote {output}")
        return 0

    return cli.run_main(PROG, run, args.verbose, known_errors=(ConversionError,))


if __name__ == "__main__":
    raise SystemExit(main())
