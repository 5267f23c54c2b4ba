"""Checks the ImageNet weights in $KERAS_HOME/models, as baked into the worker image.

    python infra/check_weights.py    # exit 1, naming the file, when one is wrong

Every `.h5` file there must be a backbone's keras-applications notop file, and its md5 must be
the one keras-applications expects. That is the check `--weights imagenet` makes at run time,
so a wrong file fails the image build rather than a Dataflow job.
"""

import os
import sys

from features import backbones


def check(models_dir: str) -> list[str]:
    """One line per baked weights file, saying which --backbone it serves.

    Raises BackboneError for a file that serves none or has the wrong md5."""
    backbone_of = {
        spec.imagenet_file: name for name, spec in backbones.BACKBONES.items() if spec.imagenet_url
    }
    baked = sorted(name for name in os.listdir(models_dir) if name.endswith(".h5"))
    lines = []
    for file_name in baked:
        if file_name not in backbone_of:
            raise backbones.BackboneError(
                f"{models_dir}/{file_name}: not the ImageNet file of any backbone; expected one "
                f"of {', '.join(sorted(backbone_of))}"
            )
        backbones.resolve_weights(backbone_of[file_name], "imagenet")
        lines.append(f"{file_name}: --backbone {backbone_of[file_name]} --weights imagenet")
    return lines


def main() -> int:
    models_dir = os.path.dirname(backbones.imagenet_cache_path(backbones.DEFAULT_BACKBONE))
    if not os.path.isdir(models_dir):
        print(f"check_weights: no ImageNet weights baked ({models_dir} does not exist)")
        return 0
    try:
        lines = check(models_dir)
    except backbones.BackboneError as error:
        print(f"check_weights: error: {error}", file=sys.stderr)
        return 1
    for line in lines or [f"no ImageNet weights baked in {models_dir}"]:
        print(f"check_weights: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
