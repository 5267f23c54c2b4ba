"""Bytes extract_features reads from a bucket against the library's size (target ≤ 1.1).

    python benchmarks/gcs_bytes_read.py [--clips 8] [--height 360] [--width 640]
        [--cache_dir /tmp/framevlad-bench] [Beam flags for the jobs...]

A real GCS emulator (tests/gcs_emulator.py) holds the corpus under gs://BUCKET/videos/. A
counting reverse proxy on another loopback port stands in front of it, and the jobs get
STORAGE_EMULATOR_HOST=<proxy>, so every byte they read from the bucket passes through it. The
proxy sums the response bodies of media downloads (GET ...?alt=media) of objects under videos/.
Two jobs run, each in a fresh process (DirectRunner, --backbone tiny --weights random):
  pre-fitted PCA   --pca <pca.npz fitted beforehand>: the steady case, one extraction pass
  PCA fit pass     --pca fit: a first pass embeds the sampled videos to fit the PCA, then the
                   extraction pass reads them again
Clips last 20 to 30 s (real H.264, benchmarks/corpus.py) and are uploaded straight to the
emulator, outside the count.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from corpus import DEFAULT_CACHE_DIR, ClipSpec, ensure_clips
from extract_throughput import decode_only, run_job

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

from features import gcs  # noqa: E402
from features.backbones import BACKBONES, build_backbone  # noqa: E402
from features.embedder import FrameEmbedder  # noqa: E402
from features.formats import MAX_PCA_DIMS  # noqa: E402
from features.pca import PcaRankWarning, fit_pca  # noqa: E402
from tests.gcs_emulator import BUCKET, client, running_emulator, upload_tree  # noqa: E402

FPS = 30
MIN_SECONDS, MAX_SECONDS = 20, 30
VIDEO_PREFIX = "videos/"
BYTES_TARGET = 1.1  # bytes read from the bucket / library bytes
# Hop-by-hop headers, and the one the proxy recomputes after buffering a body. Host is kept:
# the emulator writes it into each object's mediaLink, which the client then downloads from.
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class Download:
    """One media GET of a video object, as the proxy saw it."""

    name: str
    requested_range: str
    status: int
    body_bytes: int


@dataclass
class Traffic:
    """What went through the proxy: media downloads of videos/ objects, other requests."""

    downloads: list[Download] = field(default_factory=list)
    other_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[list[Download], int]:
        """The traffic so far, resetting the count."""
        with self.lock:
            taken = self.downloads, self.other_requests
            self.downloads, self.other_requests = [], 0
        return taken


def video_download(method: str, target: str) -> str | None:
    """The object name when `target` is a media GET of an object under videos/, else None."""
    parts = urlsplit(target)
    if method != "GET" or parse_qs(parts.query).get("alt") != ["media"]:
        return None
    _, _, name = parts.path.partition("/o/")
    name = unquote(name)
    return name if name.startswith(VIDEO_PREFIX) else None


def counting_handler(upstream: tuple[str, int], traffic: Traffic) -> type[BaseHTTPRequestHandler]:
    """A handler that forwards every request to `upstream` and records it in `traffic`."""

    class CountingProxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the GCS client expects

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding"):
                raise ValueError(f"{self.command} {self.path}: chunked requests not supported")
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
            connection = http.client.HTTPConnection(*upstream, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _NOT_FORWARDED:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            name = video_download(self.command, self.path)
            with traffic.lock:
                if name is None:
                    traffic.other_requests += 1
                else:
                    traffic.downloads.append(
                        Download(name, self.headers.get("Range", ""), response.status, len(payload))
                    )

        # BaseHTTPRequestHandler dispatches to do_<METHOD>.
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward  # noqa: N815

        def log_message(self, format: str, *args) -> None:
            pass

    return CountingProxy


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client closing an idle keep-alive connection is not an error worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionResetError):
            super().handle_error(request, client_address)


@contextmanager
def counting_proxy(emulator_host: str) -> Iterator[tuple[str, Traffic]]:
    """A counting reverse proxy in front of the emulator -> (its host URL, its traffic)."""
    upstream = urlsplit(emulator_host)
    traffic = Traffic()
    handler = counting_handler((upstream.hostname, upstream.port), traffic)
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", traffic
    finally:
        server.shutdown()
        server.server_close()


def prefit_pca(paths: list[str], backbone: str, batch_size: int, pca_path: str) -> None:
    """Fits a PCA on `backbone`'s random-weight features of `paths` and saves it.

    The jobs then skip their fit pass (--pca pca_path).
    """
    spec = BACKBONES[backbone]
    frames = decode_only(paths, spec.input_size)
    features = FrameEmbedder(build_backbone(backbone, "random"), batch_size).embed(frames)
    with warnings.catch_warnings():
        # Fewer samples than dims leaves zero-variance components; reading does not care.
        warnings.simplefilter("ignore", PcaRankWarning)
        fit_pca(features, min(MAX_PCA_DIMS, spec.feature_dims)).save(pca_path)


def clip_specs(count: int, height: int, width: int) -> list[ClipSpec]:
    """`count` clips whose lengths spread evenly over 20..30 s."""
    span = MAX_SECONDS - MIN_SECONDS
    return [
        ClipSpec(height, width, FPS, MIN_SECONDS + index * span // max(count - 1, 1), 400 + index)
        for index in range(count)
    ]


def report(name: str, downloads: list[Download], other: int, sizes: dict[str, int]) -> float:
    """Prints one job's per-object table; returns bytes read / library bytes."""
    library = sum(sizes.values())
    read = sum(download.body_bytes for download in downloads)
    print(f"\n### {name}\n")
    print("| object | size B | media GETs | bytes read | read / size | ranges requested |")
    print("|---|---:|---:|---:|---:|---|")
    for object_name, size in sorted(sizes.items()):
        mine = [download for download in downloads if download.name == object_name]
        got = sum(download.body_bytes for download in mine)
        ranges = ", ".join(f"{d.requested_range or 'whole'} → {d.body_bytes}" for d in mine)
        print(f"| {object_name} | {size} | {len(mine)} | {got} | {got / size:.2f} | {ranges} |")
    ratio = read / library
    verdict = "met" if ratio <= BYTES_TARGET else "MISSED"
    print(f"\nmedia GETs of videos/: {len(downloads)}; other requests (listing, metadata, "
          f"writes): {other}; bytes read {read} / library {library} = **{ratio:.3f}** "
          f"(target ≤ {BYTES_TARGET:g}: {verdict})")  # fmt: skip
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--frames_per_batch", type=int, default=32)
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    args, args.job_args = parser.parse_known_args(argv)
    args.backbone = "tiny"

    corpus_dir = os.path.join(args.cache_dir, f"{args.width}x{args.height}_{FPS}fps_gcs")
    paths = ensure_clips(clip_specs(args.clips, args.height, args.width), corpus_dir)
    sizes = {VIDEO_PREFIX + os.path.basename(path): os.path.getsize(path) for path in paths}
    extra = sorted(set(os.listdir(corpus_dir)) - {os.path.basename(path) for path in paths})
    if extra:
        sys.exit(f"--cache_dir {corpus_dir}: unexpected files {extra}; remove them")
    print(f"{args.clips} clips, {args.width}x{args.height} {FPS} fps H.264, "
          f"{MIN_SECONDS}-{MAX_SECONDS} s, {sum(sizes.values())} B; tiny backbone")  # fmt: skip

    ratios = {}
    with tempfile.TemporaryDirectory(prefix="framevlad-gcs-bytes-") as work:
        pca_path = os.path.join(work, "pca.npz")
        prefit_pca(paths, args.backbone, args.frames_per_batch, pca_path)
        with (
            running_emulator(Path(work) / "emulator.log") as emulator_host,
            counting_proxy(emulator_host) as (proxy_host, traffic),
        ):
            # Everything goes through the proxy, uploads too: each object's mediaLink then
            # names the proxy. Uploads and this process's manifest reads are not media GETs
            # of videos/, so they are not counted.
            os.environ[gcs.EMULATOR_ENV] = proxy_host
            client().create_bucket(BUCKET)
            upload_tree(Path(corpus_dir), f"gs://{BUCKET}/{VIDEO_PREFIX}")
            traffic.take()
            for name, pca in (("pre-fitted PCA", pca_path), ("PCA fit pass", "fit")):
                output = f"gs://{BUCKET}/features-{'fit' if pca == 'fit' else 'prefit'}"
                frames, timing = run_job(f"gs://{BUCKET}/videos", output, args, pca)
                print(f"{name}: {frames} frames written in {timing.wall_s:.1f} s")
                downloads, other_requests = traffic.take()
                if not downloads:
                    sys.exit(f"{name}: no media GET of {VIDEO_PREFIX} reached the proxy; "
                             "reads bypassed it, so nothing was counted")  # fmt: skip
                ratios[name] = report(name, downloads, other_requests, sizes)

    print("\n| job | bytes read / library bytes | target |\n|---|---:|---|")
    for name, ratio in ratios.items():
        print(f"| {name} | {ratio:.3f} | ≤ {BYTES_TARGET:g} "
              f"{'met' if ratio <= BYTES_TARGET else 'MISSED'} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
