"""Reading spec text: the one place where spec bytes become text, for every front end.

Everything that reads a spec (``check``, ``fmt``, ``convert``, ``render``,
``summary``, imports, the library's ``dagnet.load``) goes through
:func:`read_source`, so the bounds below hold everywhere: a spec is at most
:data:`MAX_SPEC_BYTES` long, and it is UTF-8 text. Anything else is a
:class:`SpecError` located at the offending byte, never a traceback.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from dagnet.errors import Loc, SpecError

# A spec a person writes is a few KB (the largest example, specs/fcn8s.yaml, is
# 2 KB; blocks and `repeat` keep even ResNet-152 short). The YAML loader keeps
# every source location in pure Python and reads about 100 KB a second on a busy
# core, so 512 KiB (250 times the largest example, some 20,000 nodes written out
# one per line) ends in seconds, where a 50 MB file ran for minutes at 1.2 GB.
MAX_SPEC_BYTES = 512 * 1024

# the suffixes of spec files and the front end each names (dagnet.spec.frontends dispatches on it)
FORMATS = {".dag": "dag", ".yaml": "yaml", ".yml": "yaml"}
SPEC_SUFFIXES = tuple(FORMATS)

# Byte-order marks of encodings that are not UTF-8, longest first (UTF-32 LE starts like UTF-16 LE).
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32 (little-endian)"),
    (codecs.BOM_UTF32_BE, "UTF-32 (big-endian)"),
    (codecs.BOM_UTF16_LE, "UTF-16 (little-endian)"),
    (codecs.BOM_UTF16_BE, "UTF-16 (big-endian)"),
)


def _save_as_utf8(file: str, encoding: str) -> str:
    fixed = Path(file).with_name("fixed" + Path(file).suffix)
    return f"save the file as UTF-8, e.g. `iconv -f {encoding} -t UTF-8 {file} > {fixed}`"


def read_source(source) -> tuple[str, str]:
    """``source`` is a path or spec text; return (text, file name for messages).

    A path is read as bytes, at most :data:`MAX_SPEC_BYTES` of them, and
    decoded by :func:`decode_spec`; text given directly is held to the same size.
    """
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and source.endswith(SPEC_SUFFIXES)):
        file = str(source)
        return decode_spec(read_spec_bytes(Path(source)), file), file
    text = str(source)
    check_size(len(text.encode("utf-8", "surrogatepass")), text, "<spec>")
    return text, "<spec>"


def read_spec_bytes(path: Path) -> bytes:
    """The bytes of a spec file; a directory, an unreadable or an oversized file is a SpecError.

    Reads at most one byte past the limit, so that neither a huge file nor an
    endless one (``/dev/zero``) is ever held in memory.
    """
    file = str(path)
    if path.is_dir():
        raise SpecError(f"`{file}` is a directory, not a spec file", Loc(file, 0, 0),
                        "give the path of one .yaml or .dag file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror}", Loc(file, 0, 0)) from None
    if len(data) > MAX_SPEC_BYTES:
        size = _file_size(path)
        check_size(size if size is not None else len(data), data, file)
    return data


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size or None        # a device or pipe reports 0
    except OSError:
        return None


def check_size(size: int, content, file: str) -> None:
    """Refuse a spec over :data:`MAX_SPEC_BYTES`, located where the limit falls.

    ``content`` (the text or its first bytes) is only used to find that place.
    """
    if size <= MAX_SPEC_BYTES:
        return
    head = content[:MAX_SPEC_BYTES]
    newline = b"\n" if isinstance(head, bytes) else "\n"
    line = head.count(newline) + 1
    col = len(head) - (head.rfind(newline) + 1) + 1
    raise SpecError(f"the spec is {size:,} bytes, over the limit of {MAX_SPEC_BYTES:,} "
                    f"({MAX_SPEC_BYTES >> 10} KiB); the limit falls here", Loc(file, line, col),
                    "a spec this size is almost certainly generated or not a spec; "
                    "use blocks and `repeat` to write large models in a few lines")


def decode_spec(data: bytes, file: str) -> str:
    """UTF-8 bytes -> text (a UTF-8 byte-order mark is dropped); anything else is a located error."""
    for bom, encoding in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise SpecError(f"the spec is {encoding} text (it starts with that byte-order mark); "
                            "dagnet reads UTF-8", Loc(file, 1, 1),
                            _save_as_utf8(file, encoding.split()[0]))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(data, exc.start, file) from None


def not_utf8(data: bytes, offset: int, file: str) -> SpecError:
    """The error for the byte at ``offset`` that is not UTF-8, at its line and column."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", "replace")) + 1
    return SpecError(f"the spec is not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} "
                     "is not valid UTF-8", Loc(file, line, col),
                     _save_as_utf8(file, "LATIN1") + " (for a file written as Latin-1)")


def display_text(file: str) -> str | None:
    """A spec file's text for showing source lines in messages, or None.

    Lenient where :func:`read_source` is strict: bytes that are not UTF-8 show
    as U+FFFD, so that the error about them can still point at them.
    """
    path = Path(file)
    try:
        if path.is_dir():
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError:
        return None
    if any(data.startswith(bom) for bom, _ in _FOREIGN_BOMS):
        return None
    return data.decode("utf-8-sig", "replace")
