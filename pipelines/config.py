"""Settings of one extraction run, parsed from flags by the entry point."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ExtractConfig:
    input_pattern: str  # what Beam matches: a glob, or `<folder>/**` for a folder
    match_folder: bool  # True when --input named a folder: keep video extensions only
    output: str
    id_root: str
    run_id: str
    fps: float
    max_frames: int  # 0 = no cap
    backbone: str
    weights: str  # imagenet | random | a local weights file
    seed: int
    batch_size: int
    pca: str  # auto | fit | PATH
    pca_dims: int
    pca_sample_frames: int
    labels_csv: str = ""
    labels_from_folders: bool = False
    vocabulary: str = ""
    num_shards: int = 0
    skip_existing: bool = False
