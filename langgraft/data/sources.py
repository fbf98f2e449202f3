"""Find input files and stream their rows, in a stable order, with file:line for every row.

The reader does no parsing: a jsonl row leaves here as the raw bytes of its line, so that JSON
decoding and validation can run in the tokenizer workers (`langgraft.data.rows`). Text files are
split into documents here (one per blank-line-separated block, or one per file). Problems found
while reading (invalid UTF-8 in a text file, an empty file, a corrupt gzip stream) travel in the
same ordered stream as `BAD_ROW` / `BAD_FILE` items, so that `--on-error fail` reports the first
problem in input order no matter how many workers run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from langgraft.errors import UserError

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".txt.gz")

# Item kinds in the row stream: (file_index, line, kind, payload).
JSON_ROW = 0  # payload: bytes of one non-blank jsonl line
TEXT_ROW = 1  # payload: str, one raw-text document
BAD_ROW = 2  # payload: (reason, message); a row that counts as read and rejected
BAD_FILE = 3  # payload: (reason, message); a file-level problem, not a row

Item = tuple[int, int, int, object]


@dataclass
class InputFile:
    path: Path
    display: str
    """The path as shown in messages and the manifest: the input as given + the relative path."""
    label: str
    """Category of raw-text rows from this file (NAME= prefix, or the input's name)."""
    fmt: str
    """"jsonl" or "txt"."""
    gz: bool
    sha256: str = ""
    bytes: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)


def _strip_suffix(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _input_file(path: Path, display: str, label: str) -> InputFile:
    name = path.name
    gz = name.endswith(".gz")
    fmt = "jsonl" if name.endswith((".jsonl", ".jsonl.gz")) else "txt"
    return InputFile(path=path, display=display, label=label, fmt=fmt, gz=gz)


def discover_inputs(specs: list[str]) -> list[InputFile]:
    """Expand `--input` values (files, directories, NAME=PATH) into an ordered file list.

    Inputs keep the order given; a directory contributes its supported files recursively, sorted
    by relative path (never `os.listdir` order, which differs between filesystems). Hidden files
    are ignored. Listing a file twice is an error: it would count its rows twice.
    """
    files: list[InputFile] = []
    seen: dict[Path, str] = {}
    for spec in specs:
        label, raw = None, spec
        if "=" in spec and not Path(spec).exists():
            label, raw = spec.split("=", 1)
            if not label:
                raise UserError(f"--input {spec!r}: empty NAME before '='")
        root = Path(raw)
        if not root.exists():
            raise UserError(f"--input {raw}: no such file or directory")
        if root.is_dir():
            label = label or root.resolve().name
            found = sorted(
                (p for p in root.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)),
                key=lambda p: p.relative_to(root).as_posix(),
            )
            found = [
                p for p in found if not any(s.startswith(".") for s in p.relative_to(root).parts)
            ]
            if not found:
                raise UserError(
                    f"--input {raw}: no {', '.join('*' + s for s in SUFFIXES)} files in this "
                    "directory"
                )
            pairs = [(p, str(root / p.relative_to(root))) for p in found]
        else:
            if not root.name.endswith(SUFFIXES):
                raise UserError(
                    f"--input {raw}: unsupported file type; expected one of {', '.join(SUFFIXES)}"
                )
            label = label or _strip_suffix(root.name)
            pairs = [(root, raw)]
        for path, display in pairs:
            key = path.resolve()
            if key in seen:
                raise UserError(
                    f"--input {display}: this file is already an input (as {seen[key]})"
                )
            seen[key] = display
            files.append(_input_file(path, display, label))
    if not files:
        raise UserError("--input: no input files")
    return files


class _HashingRaw(io.RawIOBase):
    """Raw file wrapper that hashes and counts the bytes as they are read (one pass over input)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = self._f.readinto(b)
        if n:
            self.sha.update(memoryview(b)[:n])
            self.nbytes += n
        return n

    def drain(self) -> None:
        """Hash the rest of the file (after a corrupt gzip stream, or read-ahead)."""
        while chunk := self._f.read(1 << 20):
            self.sha.update(chunk)
            self.nbytes += len(chunk)

    def close(self) -> None:
        # The BufferedReader/GzipFile on top close this when collected; the file must stay open
        # until drain() has hashed it to the end, so release() does the real close.
        pass

    def release(self) -> None:
        self._f.close()


def _lines(raw: _HashingRaw, gz: bool) -> Iterator[bytes]:
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    stream = gzip.GzipFile(fileobj=buffered, mode="rb") if gz else buffered
    yield from stream


def read_items(
    files: list[InputFile], whole_file_txt: bool = False, progress: object | None = None
) -> Iterator[Item]:
    """Yield (file_index, line, kind, payload) for every row of every file, in order.

    Fills in each InputFile's sha256, byte count and row count as it goes. `progress`, if given,
    is a tqdm bar advanced by the bytes read.
    """
    for idx, f in enumerate(files):
        raw = _HashingRaw(f.path)
        line_no = 0
        last = 0
        corrupt = False
        try:
            lines = _lines(raw, f.gz)
            items = (
                jsonl_items(idx, lines)
                if f.fmt == "jsonl"
                else txt_items(idx, lines, whole_file=whole_file_txt)
            )
            for item in items:
                line_no = item[1]
                if item[2] != BAD_FILE:
                    f.rows += 1
                if progress is not None and raw.nbytes != last:
                    progress.update(raw.nbytes - last)  # type: ignore[attr-defined]
                    last = raw.nbytes
                yield item
        except (OSError, EOFError, zlib.error) as e:
            # A truncated or corrupt gzip stream: the rows before it were read normally. One
            # problem per file: a .gz that is not gzip at all is not also an "empty file".
            corrupt = True
            what = (
                "not a valid gzip file"
                if isinstance(e, gzip.BadGzipFile) and not f.rows
                else "corrupt gzip data"
            )
            yield (idx, line_no + 1, BAD_FILE, ("corrupt_file", f"{what} ({e})"))
        raw.drain()
        f.sha256, f.bytes = raw.sha.hexdigest(), raw.nbytes
        raw.release()
        if progress is not None:
            progress.update(raw.nbytes - last)  # type: ignore[attr-defined]
        if f.rows == 0 and not corrupt:
            yield (idx, 0, BAD_FILE, ("empty_file", "empty file (no rows); remove it"))


def jsonl_items(idx: int, lines: Iterator[bytes]) -> Iterator[Item]:
    """Every non-blank line of a jsonl file, undecoded (workers decode and validate it)."""
    for line_no, line in enumerate(lines, 1):
        if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a UTF-8 byte-order mark, as Windows editors write
        if line.strip():
            yield (idx, line_no, JSON_ROW, line)


def _decode_line(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _bad_utf8(line_no: int, line: bytes) -> tuple[str, str]:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as e:
        return ("invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line ({e.reason})")
    raise AssertionError("line decodes")  # pragma: no cover


def txt_items(idx: int, lines: Iterator[bytes], whole_file: bool) -> Iterator[Item]:
    """Documents of a text file: blank-line-separated blocks (or the whole file).

    Line endings are normalised to "\\n" (a CRLF file would otherwise spend a byte-fallback token
    on every "\\r"). A block with invalid UTF-8 becomes one BAD_ROW naming its first bad line.
    """
    block: list[str] = []
    start = 0
    bad: tuple[int, tuple[str, str]] | None = None

    def flush() -> Iterator[Item]:
        if bad is not None:
            yield (idx, bad[0], BAD_ROW, bad[1])
        elif block:
            text = "".join(block).replace("\r\n", "\n").strip("\n")
            if text.strip():
                yield (idx, start, TEXT_ROW, text)

    for line_no, line in enumerate(lines, 1):
        if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        text = _decode_line(line)
        if not whole_file and (text is not None and not text.strip()):
            yield from flush()
            block, bad = [], None
            continue
        if not block and bad is None:
            start = line_no
        if text is None:
            if bad is None:
                bad = (line_no, _bad_utf8(line_no, line))
            block.append("")
        else:
            block.append(text)
    yield from flush()
