"""The extraction job's graph: match → dedupe → (skip done) → label → embed → write → commit."""

import os

import apache_beam as beam

from features import video_ids
from features.formats import (
    FRAME_DIR,
    PCA_FILE,
    RECORD_SUFFIX,
    VIDEO_DIR,
    VOCABULARY_FILE,
)
from features.labels import Vocabulary
from pipelines import manifest, runs, storage
from pipelines.config import ExtractConfig
from pipelines.transforms import (
    COUNTS,
    FAILED,
    FAULT_ENV,
    OK_ID,
    SUMMARY,
    VIDEO_LEVEL,
    AssembleVideo,
    EmbedVideos,
    JoinLabels,
    KeepFirstPath,
    MatchVideos,
    WhitenAndQuantize,
    count_outcomes,
    read_label_rows,
    write_failures,
)


class SkipDone(beam.DoFn):
    """Drops videos whose id a committed run already holds (--skip_existing)."""

    def process(self, joined: tuple[str, dict]):
        video_id, sides = joined
        for path in sides["paths"]:
            if sides["done"]:
                yield beam.pvalue.TaggedOutput(COUNTS, ("skipped", 1))
            else:
                yield video_id, path


def skip_done(pipeline: beam.Pipeline, unique, done_ids_files: list[str]):
    """(to-do (id, path) collection, skipped counts)."""
    done = (
        pipeline
        | "DoneIdFiles" >> beam.Create(done_ids_files)
        | "ReadDoneIds" >> beam.io.ReadAllFromText()
        | "KeyDone" >> beam.Map(lambda video_id: (video_id, True))
    )
    todo = (
        {"paths": unique, "done": done}
        | "JoinDone" >> beam.CoGroupByKey()
        | "SkipDone" >> beam.ParDo(SkipDone()).with_outputs(COUNTS, main="todo")
    )
    return todo.todo, todo[COUNTS]


def build_pipeline(
    pipeline: beam.Pipeline,
    config: ExtractConfig,
    manifest_parts: dict,
    given_vocabulary: Vocabulary,
    done_ids_files: list[str],
) -> None:
    """Adds the extraction steps to `pipeline`; `manifest_parts` are build_manifest's
    run-independent arguments (weights, frame_size, pca_dims, pca_epsilon, pca_source,
    pca_sample_frames, pca_sha256); the workers read pca.npz from the output;
    `done_ids_files` list the ok ids of committed runs to skip."""
    keyed_paths = pipeline | "Match" >> MatchVideos(config)
    unique = (
        keyed_paths
        | "GroupById" >> beam.GroupByKey()
        | "KeepFirstPath" >> beam.ParDo(KeepFirstPath()).with_outputs(FAILED, main="unique")
    )
    todo, skipped = unique.unique, []
    if done_ids_files:
        todo, skipped_counts = skip_done(pipeline, unique.unique, done_ids_files)
        skipped = [skipped_counts]
    if config.labels_csv:
        label_rows = read_label_rows(pipeline, config.labels_csv)
    elif config.labels_from_folders:
        label_rows = todo | "FolderLabels" >> beam.MapTuple(
            lambda video_id, path: (video_id, [video_ids.folder_label(path)])
        )
    else:
        label_rows = pipeline | "NoLabels" >> beam.Create([])
    if len(given_vocabulary):
        vocabulary = pipeline | "GivenVocabulary" >> beam.Create([given_vocabulary])
    else:
        vocabulary = (
            label_rows
            | "LabelNames"
            >> beam.FlatMap(lambda row: [token for token in row[1] if not token.isdigit()])
            | "DistinctNames" >> beam.Distinct()
            | "AllNames" >> beam.combiners.ToList()
            | "Vocabulary" >> beam.Map(Vocabulary.from_names)
        )
    labeled = (
        {"paths": todo, "rows": label_rows}
        | "JoinLabels" >> beam.CoGroupByKey()
        | "ResolveLabels"
        >> beam.ParDo(JoinLabels(), beam.pvalue.AsSingleton(vocabulary)).with_outputs(
            FAILED, COUNTS, main="videos"
        )
    )
    frame_size = manifest_parts["frame_size"]
    pca_path = storage.join(config.output, PCA_FILE)
    embedded, summaries, decode_failures = labeled.videos | "Embed" >> EmbedVideos(
        config, frame_size
    )
    assembled = (
        {
            "chunks": embedded | "Quantize" >> beam.ParDo(WhitenAndQuantize(pca_path)),
            SUMMARY: summaries,
        }
        | "JoinChunks" >> beam.CoGroupByKey()
        | "Assemble"
        >> beam.ParDo(AssembleVideo()).with_outputs(VIDEO_LEVEL, COUNTS, OK_ID, main="frame")
    )
    shards = {"num_shards": config.num_shards, "file_name_suffix": RECORD_SUFFIX}
    written = {
        "frame_records": assembled.frame
        | "WriteFrames"
        >> beam.io.WriteToTFRecord(storage.join(config.output, FRAME_DIR, config.run_id), **shards),
        "video_records": assembled[VIDEO_LEVEL]
        | "WriteVideos"
        >> beam.io.WriteToTFRecord(storage.join(config.output, VIDEO_DIR, config.run_id), **shards),
    }
    failures = (
        unique[FAILED],
        labeled[FAILED],
        decode_failures,
    ) | "AllFailures" >> beam.Flatten()
    written["failed_records"] = write_failures(failures, config.output, config.run_id)
    written["ok_ids_files"] = assembled[OK_ID] | "WriteOkIds" >> beam.io.WriteToText(
        storage.join(config.output, runs.MANIFESTS_DIR, f"{config.run_id}-ids"),
        file_name_suffix=".txt",
        num_shards=1,
    )
    counts = count_outcomes(keyed_paths, failures, labeled[COUNTS], assembled[COUNTS], *skipped)
    _ = vocabulary | "WriteVocabulary" >> beam.Map(write_vocabulary, config.output)
    written_lists = {key: beam.pvalue.AsList(files) for key, files in written.items()}
    _ = counts | "Commit" >> beam.Map(
        commit_step,
        config=config,
        manifest_parts=manifest_parts,
        vocabulary=beam.pvalue.AsSingleton(vocabulary),
        **written_lists,
    )


def write_vocabulary(vocabulary: Vocabulary, output: str) -> None:
    if len(vocabulary):
        storage.write_bytes(storage.join(output, VOCABULARY_FILE), vocabulary.to_csv().encode())


def commit_step(
    counts: dict,
    config: ExtractConfig,
    manifest_parts: dict,
    vocabulary: Vocabulary,
    **written: list[str],
) -> None:
    """Runs after every shard is final (they are side inputs): writes the commit marker."""
    if os.environ.get(FAULT_ENV) == "before_commit":
        raise RuntimeError(f"{FAULT_ENV}=before_commit: failing before the commit, as asked")
    built = manifest.build_manifest(
        config, counts=counts, vocabulary=vocabulary, written=written, **manifest_parts
    )
    runs.commit(config.output, built)
