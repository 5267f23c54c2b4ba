"""TFRecord framing read in Python, for sources TensorFlow's file systems cannot open.

A TFRecord file is a run of `uint64 length, uint32 masked crc32c(length), data,
uint32 masked crc32c(data)` (little endian). Reading the framing here lets a record stream
come from any binary file object (a google-cloud-storage reader against an emulator), and
lets a damaged record be named by the byte offset where it starts.
"""

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

HEADER_BYTES = 12  # the length and its checksum
FOOTER_BYTES = 4  # the data's checksum
FRAMING_BYTES = HEADER_BYTES + FOOTER_BYTES
_MASK_DELTA = 0xA282EAD8


class DamagedRecordError(ValueError):
    """A record is truncated or fails a checksum; `offset` is the byte where it starts."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(f"{what} at byte {offset}")
        self.what = what
        self.offset = offset


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: crc32c rotated right by 15 bits plus a constant (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def has_tfrecord_header(head: bytes) -> bool:
    """Whether a file's first bytes open a TFRecord: the length's checksum matches."""
    if len(head) < HEADER_BYTES:
        return False
    length_bytes, (checksum,) = head[:8], struct.unpack("<I", head[8:HEADER_BYTES])
    return masked_crc32c(length_bytes) == checksum


def frame_record(data: bytes) -> bytes:
    """One record's bytes as a TFRecord file holds them (as tf.io.TFRecordWriter writes)."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (
            length,
            struct.pack("<I", masked_crc32c(length)),
            data,
            struct.pack("<I", masked_crc32c(data)),
        )
    )


def iter_records(source: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(byte offset, data) of each record in turn, read sequentially (no seeks, so any
    stream will do). At the first truncated record or failed checksum, DamagedRecordError;
    the records before it have been yielded."""
    offset = 0
    while True:
        header = source.read(HEADER_BYTES)
        if not header:
            return
        if len(header) < HEADER_BYTES:
            raise DamagedRecordError("truncated TFRecord", offset)
        if not has_tfrecord_header(header):
            raise DamagedRecordError("corrupt TFRecord (bad length checksum)", offset)
        (length,) = struct.unpack("<Q", header[:8])
        data = source.read(length)
        footer = source.read(FOOTER_BYTES)
        if len(data) < length or len(footer) < FOOTER_BYTES:
            raise DamagedRecordError("truncated TFRecord", offset)
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise DamagedRecordError("corrupt TFRecord (bad data checksum)", offset)
        yield offset, data
        offset += FRAMING_BYTES + length


def iter_record_blocks(
    source: BinaryIO, block_bytes: int = 8 << 20
) -> Iterator[tuple[bytes, list[int], list[int]]]:
    """Whole records read about `block_bytes` at a time, checked as iter_records does:
    (block, starts, lengths), record i's data being block[starts[i]:starts[i] + lengths[i]].

    A block ends at a record boundary (a record larger than block_bytes comes whole in a
    larger block). Handing a reader one block and the offsets, instead of one object per
    record, is what makes this fast where each object crosses into TensorFlow. At the first
    damaged record the records before it have been yielded, then DamagedRecordError with the
    offset from the start of the file."""
    pending = b""  # the start of a record whose end is still to be read
    offset = 0  # where `pending` starts in the file
    while True:
        chunk = source.read(block_bytes)
        block = pending + chunk if pending else chunk
        starts: list[int] = []
        lengths: list[int] = []
        end, damage = 0, None
        while len(block) - end >= HEADER_BYTES:
            header = block[end : end + HEADER_BYTES]
            if not has_tfrecord_header(header):
                damage = "corrupt TFRecord (bad length checksum)"
                break
            (length,) = struct.unpack("<Q", header[:8])
            if len(block) - end < FRAMING_BYTES + length:
                break  # the rest of this record is in the next chunk
            data_end = end + HEADER_BYTES + length
            (checksum,) = struct.unpack("<I", block[data_end : data_end + FOOTER_BYTES])
            if masked_crc32c(block[end + HEADER_BYTES : data_end]) != checksum:
                damage = "corrupt TFRecord (bad data checksum)"
                break
            starts.append(end + HEADER_BYTES)
            lengths.append(length)
            end = data_end + FOOTER_BYTES
        if starts:
            yield block[:end], starts, lengths
        if damage:
            raise DamagedRecordError(damage, offset + end)
        pending, offset = block[end:], offset + end
        if not chunk:
            if pending:
                raise DamagedRecordError("truncated TFRecord", offset)
            return
