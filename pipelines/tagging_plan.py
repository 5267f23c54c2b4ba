"""What tag_videos settles on the launcher before a job starts: the model (or the ensemble of
models), read once from their directories, and the input, matched and told apart (videos or
frame-level records) by content.

Every check that can fail here fails with one line before any frame is decoded.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from features import manifest, storage, streams
from features.cli import UsageError, warn
from features.decoding import DECODE_MODES
from features.formats import DEFAULT_FPS, MANIFEST_FILE, RGB_KEY
from framevlad_proto import framevlad_pb2
from pipelines import inputs, tagging_records
from pipelines.elements import Failure, VideoInput
from pooling_models import ensemble, model_dir

SNIFF_FILES = 8  # files read (12 bytes each) to tell records from videos


@dataclass(frozen=True)
class TaggingModel:
    """A model directory as tag_videos uses it."""

    url: str  # --model as given, made absolute: what tagging.json records
    max_frames: int  # clip length the model was trained on
    feature_names: tuple[str, ...]  # the model's frame-level inputs, in order: rgb[, audio]
    feature_sizes: tuple[int, ...]
    label_names: tuple[str, ...]  # empty: labels are bare indices
    # The streams the model takes, rebuilt from its manifest (no more: a model trained on rgb
    # tags with rgb only); empty: no manifest, so records only.
    specs: tuple[streams.FeatureSpec, ...]
    fps: float  # of the features the model was trained on; 0 when unknown (no manifest)
    no_videos_reason: str  # why raw videos cannot be tagged; "" when they can
    num_classes: int = 0
    # The manifest's record of every stream (empty: no manifest): how its features were
    # made, compared between the members of an ensemble.
    streams: tuple[framevlad_pb2.StreamInfo, ...] = ()


@dataclass(frozen=True)
class TaggingEnsemble:
    """The models tag_videos scores with, one or more: their probabilities are averaged with
    `weights` (sum 1). Features are the union of the models' (a stream two models share was
    extracted alike, checked by `load_ensemble`), so each video is decoded and embedded once."""

    models: tuple[TaggingModel, ...]
    weights: tuple[float, ...]
    feature_names: tuple[str, ...]  # every model's inputs, the first model's first
    feature_sizes: tuple[int, ...]
    specs: tuple[streams.FeatureSpec, ...]  # the streams to rebuild from raw videos
    spec_models: tuple[str, ...]  # the url of the model whose manifest gave each spec
    fps: float  # of the features the models were trained on; 0 when none knows
    label_names: tuple[str, ...]


@dataclass(frozen=True)
class TaggingInputs:
    kind: str  # "videos" | "records"
    videos: tuple[VideoInput, ...] = ()
    failures: tuple[Failure, ...] = ()  # matched videos that cannot be read, duplicate ids
    record_files: tuple[str, ...] = ()
    records_total: int = 0  # records counted up front (local files); 0 when unknown


def load_model(url: str) -> TaggingModel:
    """Reads the model directory's train_config.json, manifest and vocabulary (local or
    gs://, through storage); errors name --model as given."""
    where = f"--model {url}"
    train_config = model_dir.read_train_config(url)
    if train_config.model.data_level != "frame":
        fix = "tag with a frame-level model (train_pool on frame/*.tfrecord)"
        raise UsageError("a video-level model cannot tag frames", where, fix)
    names = tuple(train_config.model.feature_names)
    sizes = tuple(train_config.model.feature_sizes)
    specs: tuple[streams.FeatureSpec, ...] = ()
    recorded: tuple[framevlad_pb2.StreamInfo, ...] = ()
    fps, reason = 0.0, train_config.note or f"it has no {MANIFEST_FILE}"
    manifest_path = storage.join(url, MANIFEST_FILE)
    if train_config.raw_video_tagging and storage.exists(manifest_path):
        features = manifest.read_manifest(manifest_path)
        if streams.decode_mode(features) not in DECODE_MODES:
            what = f"its {MANIFEST_FILE} records decode_mode {features.decode_mode!r}"
            fix = f"a newer framevlad wrote it: upgrade (this one knows {', '.join(DECODE_MODES)})"
            raise UsageError(what, where, fix)
        specs = model_streams(streams.specs_from_manifest(features, url), names, sizes, where)
        recorded = tuple(features.streams)
        fps, reason = features.fps, ""
    return TaggingModel(
        url=url,
        max_frames=train_config.max_frames,
        feature_names=names,
        feature_sizes=sizes,
        label_names=model_dir.label_names(url),
        specs=specs,
        fps=fps,
        no_videos_reason=reason,
        num_classes=train_config.model.num_classes,
        streams=recorded,
    )


def load_ensemble(urls: Sequence[str], weights: Sequence[float]) -> TaggingEnsemble:
    """The models of --model (one or more) with their normalized weights; one-line errors
    when they disagree on the vocabulary (checked first), on the frame rate, or on how a
    stream they share was extracted."""
    models = tuple(load_model(url) for url in urls)
    if len(models) > 1:
        ensemble.check_same_vocabulary(urls, [model.num_classes for model in models])
    _check_same_fps(models)
    _check_same_decode(models)
    sizes: dict[str, int] = {}
    users: dict[str, TaggingModel] = {}  # the first model that takes each feature
    for model in models:
        for name, size in zip(model.feature_names, model.feature_sizes, strict=True):
            if name in users:
                _check_same_stream(name, users[name], model)
            else:
                sizes[name], users[name] = size, model
    specs, spec_models = _union_specs(models)
    return TaggingEnsemble(
        models=models,
        weights=tuple(weights),
        feature_names=tuple(sizes),
        feature_sizes=tuple(sizes.values()),
        specs=specs,
        spec_models=spec_models,
        fps=next((model.fps for model in models if model.fps), 0.0),
        label_names=models[0].label_names,
    )


def _check_same_fps(models: tuple[TaggingModel, ...]) -> None:
    known = [model for model in models if model.fps]
    for model in known[1:]:
        if model.fps != known[0].fps:
            what = (
                f"its features are at {model.fps:g} fps, {known[0].fps:g} in --model {known[0].url}"
            )
            fix = "ensemble models trained on features of one frame rate"
            raise UsageError(what, f"--model {model.url}", fix)


def _check_same_decode(models: tuple[TaggingModel, ...]) -> None:
    """Raw videos decode once for every model, so their features' decode modes must agree."""
    known = [model for model in models if model.specs]
    for model in known[1:]:
        mode, first_mode = model.specs[0].decode, known[0].specs[0].decode
        if mode != first_mode:
            what = f"its features were decoded {mode}, {first_mode} in --model {known[0].url}"
            fix = "ensemble models trained on features of one decode mode (--decode)"
            raise UsageError(what, f"--model {model.url}", fix)


def _check_same_stream(name: str, first: TaggingModel, model: TaggingModel) -> None:
    """One feature list feeds both models, so both must have been trained on it as it is
    made: same width, and (where both manifests say) the same backbone, weights, frame
    size and PCA."""
    where, fix = f"--model {model.url}", "ensemble models whose shared streams were extracted alike"
    first_size = first.feature_sizes[first.feature_names.index(name)]
    size = model.feature_sizes[model.feature_names.index(name)]
    if size != first_size:
        what = f"its {name} input is {size}-d, {first_size}-d in --model {first.url}"
        raise UsageError(what, where, fix)
    recorded = {stream.name: stream for stream in first.streams}
    other = {stream.name: stream for stream in model.streams}
    if name not in recorded or name not in other:
        return  # a model without a manifest: nothing recorded to compare
    difference = ensemble.stream_difference(other[name], model.url, recorded[name], first.url)
    if difference:
        field, value, first_value = difference
        what = (
            f"its {name} features were extracted differently ({field} {value!r}, "
            f"{first_value!r} in --model {first.url})"
        )
        raise UsageError(what, where, fix)


def _union_specs(
    models: tuple[TaggingModel, ...],
) -> tuple[tuple[streams.FeatureSpec, ...], tuple[str, ...]]:
    """Every stream some model's manifest asks for, once, in manifest order, with the model
    it came from. A stream a model takes wins over one only decoded alongside (rgb, which
    every extraction computes), so the features a model reads are the ones it was trained
    on."""
    chosen: dict[str, tuple[streams.FeatureSpec, TaggingModel]] = {}
    for model in models:
        for spec in model.specs:
            held = chosen.get(spec.name)
            if held is None or (
                spec.name in model.feature_names and spec.name not in held[1].feature_names
            ):
                chosen[spec.name] = (spec, model)
    return (
        tuple(spec for spec, _ in chosen.values()),
        tuple(model.url for _, model in chosen.values()),
    )


def model_streams(
    recorded: tuple[streams.FeatureSpec, ...],
    names: tuple[str, ...],
    sizes: tuple[int, ...],
    where: str,
) -> tuple[streams.FeatureSpec, ...]:
    """The manifest's streams the model takes, in the manifest's order, each checked against
    the model's input width; rgb always, since the other streams ride on its decode."""
    by_name = {spec.name: spec for spec in recorded}
    for name, size in zip(names, sizes, strict=True):
        spec = by_name.get(name)
        if spec is None or spec.dims != size:
            dims = f"{spec.dims}-d" if spec else "missing"
            what = f"its manifest's {name} features are {dims}, the model takes {size}"
            raise UsageError(what, where, "retrain the model on these features")
    return tuple(spec for spec in recorded if spec.name in names or spec.name == RGB_KEY)


def check_video_ensemble(models: TaggingEnsemble) -> None:
    """Raw videos need a manifest in every model, and the weights and PCA file of every
    stream to rebuild: checked here, so that a missing one is one line naming the model it
    comes from before any decoding, not a worker's traceback."""
    for model in models.models:
        if model.no_videos_reason:
            fix = "tag its frame-level records instead, or retrain on features with a manifest"
            raise UsageError(
                f"cannot tag raw videos: {model.no_videos_reason}", f"--model {model.url}", fix
            )
    for spec, url in zip(models.specs, models.spec_models, strict=True):
        _check_spec_files(spec, f"--model {url}")


def _check_spec_files(spec: streams.FeatureSpec, where: str) -> None:
    from features import backbones
    from pipelines import stream_weights

    try:
        stream_weights.resolve_spec_weights(spec)
    except (backbones.BackboneError, FileNotFoundError) as error:
        what = f"the {spec.name} stream's {spec.backbone} weights cannot be loaded: {error}"
        fix = "restore the weights file its manifest names (or the Keras cache for imagenet)"
        raise UsageError(what, where, fix) from None
    if not storage.exists(spec.pca):
        fix = "copy the features' PCA file into the model directory, or retrain"
        raise UsageError(f"{spec.pca} is missing", where, fix)


def features_fps(
    model: TaggingModel | TaggingEnsemble, tagging: TaggingInputs, input_arg: str
) -> float:
    """Frames per second of the features tagged, which segment times need: the model's
    manifest, else (records input) the records' own manifest, else YouTube-8M's 1 fps,
    with a warning since nothing recorded it."""
    if model.fps:
        return model.fps
    found = manifest.find_manifest(tagging.record_files[0]) if tagging.record_files else None
    if found is not None:
        return manifest.read_manifest(found).fps
    warn(
        "tag_videos",
        f"neither --model nor --input {input_arg} has a {MANIFEST_FILE}; segment times "
        f"assume YouTube-8M's {DEFAULT_FPS:g} frame per second",
    )
    return DEFAULT_FPS


def find_inputs(
    input_arg: str, kind: str, feature_names: tuple[str, ...] = (RGB_KEY,)
) -> TaggingInputs:
    """Matches --input and decides what it holds: `kind` auto reads the first files' first
    bytes (TFRecord framing), whatever their names. Records must hold `feature_names`."""
    resolved = inputs.resolve_input(input_arg)
    files = _matched_files(resolved)
    if kind == "auto":
        kind = _sniff_kind(files, input_arg)
    if kind == "records":
        return _record_inputs(files, input_arg, feature_names)
    found = inputs.find_inputs(resolved)
    if not found.videos and not found.failures:
        raise inputs.no_videos_error(resolved, found)
    videos = tuple(VideoInput(video_id, path, (), False) for video_id, path in found.videos)
    return TaggingInputs("videos", videos=videos, failures=tuple(found.failures))


def _matched_files(resolved: inputs.ResolvedInput) -> list[str]:
    if resolved.is_folder:
        return [path for path, error in storage.walk_files(resolved.pattern) if not error]
    return storage.match(resolved.pattern)


def _sniff_kind(files: list[str], input_arg: str) -> str:
    kinds = {}
    for path in files:
        kind = tagging_records.file_kind(path)
        if kind != "empty":
            kinds[path] = kind
        if len(kinds) == SNIFF_FILES:
            break
    if not kinds:
        what = "no files matched" if not files else "only empty files matched"
        fix = "point it at videos or at frame-level records (frame/*.tfrecord)"
        raise UsageError(what, f"--input {input_arg}", fix)
    if len(set(kinds.values())) > 1:
        record = next(path for path, kind in kinds.items() if kind == "records")
        other = next(path for path, kind in kinds.items() if kind == "other")
        what = f"matches TFRecords ({record}) and other files ({other})"
        fix = "narrow it to one kind (e.g. <features>/frame/*.tfrecord) or pass --input_kind"
        raise UsageError(what, f"--input {input_arg}", fix)
    return next(iter(kinds.values()))


def _record_inputs(
    files: list[str], input_arg: str, feature_names: tuple[str, ...]
) -> TaggingInputs:
    """Frame-level record files, checked up front: each one's framing (local files, by
    seeking: cheap) and the first record's content."""
    where = f"--input {input_arg}"
    if not files:
        fix = "check the pattern, e.g. <features>/frame/*.tfrecord"
        raise UsageError("no record files matched", where, fix)
    kinds = {path: tagging_records.file_kind(path) for path in files}
    for path, kind in kinds.items():
        if kind == "other":
            fix = "narrow it to TFRecord files, e.g. <features>/frame/*.tfrecord"
            raise UsageError(f"{path} is not a TFRecord file", where, fix)
    total = 0
    if not any(storage.is_remote(path) for path in files):
        total = sum(tagging_records.count_records(path) for path in files)
    first = next((path for path, kind in kinds.items() if kind == "records"), None)
    if first is not None:
        for name in feature_names:
            tagging_records.check_frame_level(first, name, input_arg)
    return TaggingInputs("records", record_files=tuple(files), records_total=total)
