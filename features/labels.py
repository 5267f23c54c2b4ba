"""Label files: `--labels` CSV rows and the `Index,Name` vocabulary."""

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class LabelError(ValueError):
    """A label file or label name that cannot be used; the message names it."""


def parse_labels_row(line: str) -> tuple[str, list[str]]:
    """One `id,labels` CSV line -> (id, label tokens); tokens are `;`-separated names or indices."""
    fields = next(csv.reader([line]))
    if len(fields) != 2:
        raise LabelError(f"expected 2 columns `id,labels`, got {len(fields)} in line {line!r}")
    video_id, labels = (field.strip() for field in fields)
    return video_id, [token.strip() for token in labels.split(";") if token.strip()]


def is_header(line: str) -> bool:
    return line.strip().lower().replace(" ", "").startswith("id,label")


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
            elif token.isdigit() and (not self.names or int(token) < len(self.names)):
                found.add(int(token))
            else:
                raise LabelError(f"label {token!r} is not in the vocabulary")
        return sorted(found)

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
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"Index", "Name"} <= set(reader.fieldnames):
            raise LabelError(f"{source}: expected a header with Index,Name")
        by_index = {int(row["Index"]): row["Name"] for row in reader}
        if sorted(by_index) != list(range(len(by_index))):
            raise LabelError(f"{source}: indices must run 0..{len(by_index) - 1} without gaps")
        return cls(tuple(by_index[index] for index in range(len(by_index))))
