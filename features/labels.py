"""Label files: `--labels` CSV rows and the `Index,Name` vocabulary, which only grows."""

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class LabelError(ValueError):
    """A label file or label name that cannot be used; the message names it."""


_BOM = "\ufeff"
_ID_HEADERS = frozenset(["id", "video_id", "videoid"])


@dataclass(frozen=True)
class LabelTable:
    """The rows of a `--labels` CSV: id -> label tokens (names or indices).

    An id on several rows gets the union of their tokens, in the order first met; ids whose
    rows disagree are counted in `conflicting` (the manifest's conflicting_label_rows), so a
    merge is never silent. Identical repeated rows are not a conflict."""

    rows: dict[str, tuple[str, ...]]
    conflicting: int = 0


def read_label_table(text: str | bytes, source: str = "--labels") -> LabelTable:
    """Parses a whole `id,labels` CSV as Excel or a script saves it: UTF-8 with or without a
    BOM, CRLF or LF line ends, quoted fields holding commas or newlines; an optional header
    row `id,labels`. Tokens in the labels field are `;`-separated."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise LabelError(
                f'{source}: not UTF-8 (byte {error.start}); save it as "CSV UTF-8"'
            ) from None
    reader = csv.reader(io.StringIO(text.removeprefix(_BOM), newline=""))
    rows: dict[str, tuple[str, ...]] = {}
    conflicting: set[str] = set()
    for number, fields in enumerate(reader, start=1):
        while len(fields) > 2 and not fields[-1].strip():
            fields.pop()  # Excel pads rows with empty cells of wider sheets
        if not any(field.strip() for field in fields) or (number == 1 and _is_header(fields)):
            continue
        if len(fields) != 2:
            raise LabelError(
                f"{source}: row {number}: expected 2 columns `id,labels`, got {len(fields)}"
            )
        video_id = fields[0].strip()
        if not video_id:
            raise LabelError(f"{source}: row {number}: the id (first column) is empty")
        tokens = tuple(token.strip() for token in fields[1].split(";") if token.strip())
        if video_id in rows:
            if set(tokens) != set(rows[video_id]):
                conflicting.add(video_id)
            tokens = tuple(dict.fromkeys(rows[video_id] + tokens))
        rows[video_id] = tokens
    return LabelTable(rows, len(conflicting))


def _is_header(fields: list[str]) -> bool:
    names = [field.strip().lower().replace(" ", "") for field in fields]
    return len(names) == 2 and names[0] in _ID_HEADERS and names[1].startswith("label")


@dataclass(frozen=True)
class Vocabulary:
    """Label names; a name's index is its position."""

    names: tuple[str, ...]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "Vocabulary":
        """Sorted order, so two runs over the same names agree."""
        return cls(tuple(sorted(set(names))))

    def __len__(self) -> int:
        return len(self.names)

    def indices(self, tokens: Sequence[str]) -> list[int]:
        """Names or integer indices -> sorted unique indices; an unknown one raises LabelError."""
        lookup = {name: index for index, name in enumerate(self.names)}
        found: set[int] = set()
        for token in tokens:
            if token in lookup:
                found.add(lookup[token])
            elif (
                token.isascii()
                and token.isdigit()
                and (not self.names or int(token) < len(self.names))
            ):
                found.add(int(token))
            else:
                raise LabelError(f"label {token!r} is not in the vocabulary")
        return sorted(found)

    def extended(self, new_names: Iterable[str]) -> "Vocabulary":
        """This vocabulary with the names it lacks appended (sorted among themselves): every
        existing index keeps its name, since committed records already hold them."""
        known = set(self.names)
        return Vocabulary(self.names + tuple(sorted(set(new_names) - known)))

    def sha256(self) -> str:
        """Of vocabulary.csv as to_csv writes it; the manifest records it per run."""
        return hashlib.sha256(self.to_csv().encode()).hexdigest()

    def to_csv(self) -> str:
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(["Index", "Name"])
        writer.writerows(enumerate(self.names))
        return rows.getvalue()

    @classmethod
    def from_csv(cls, text: str, source: str = "vocabulary") -> "Vocabulary":
        """Reads `Index,Name` rows (YouTube-8M's vocabulary.csv has more columns; extra ones
        are ignored). Indices must be 0..N-1."""
        reader = csv.DictReader(io.StringIO(text.removeprefix(_BOM), newline=""))
        if not reader.fieldnames or not {"Index", "Name"} <= set(reader.fieldnames):
            raise LabelError(f"{source}: expected a header with Index,Name")
        by_index = {int(row["Index"]): row["Name"] for row in reader}
        if sorted(by_index) != list(range(len(by_index))):
            raise LabelError(f"{source}: indices must run 0..{len(by_index) - 1} without gaps")
        return cls(tuple(by_index[index] for index in range(len(by_index))))
