"""Caffe's two file formats, read without caffe or compiled protos.

A ``.prototxt`` is protobuf text format: :func:`parse_text` turns it into
:class:`Message` trees that remember each field's line, so every later error
can point at it. A ``.caffemodel`` is a binary ``NetParameter``: :func:`read_weights`
walks the protobuf wire format for just the fields weights live in
(``layer[].name``, ``layer[].blobs[].shape/data``) and returns
``{layer name: [arrays]}``. Both only read data; nothing in a file executes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


class CaffeImportError(ValueError):
    """A prototxt or caffemodel dagnet cannot read; one line, naming the file and line."""


class Message:
    """One text-format message: its fields in order, each with the line it is on."""

    def __init__(self, line: int):
        self.line = line
        self.fields: list[tuple[str, object, int]] = []

    def all(self, name: str) -> list:
        return [value for key, value, _ in self.fields if key == name]

    def get(self, name: str, default=None):
        values = self.all(name)
        return values[-1] if values else default

    def msg(self, name: str) -> "Message":
        value = self.get(name)
        return value if isinstance(value, Message) else Message(self.line)

    def has(self, name: str) -> bool:
        return any(key == name for key, _, _ in self.fields)

    def line_of(self, name: str) -> int:
        return next((line for key, _, line in self.fields if key == name), self.line)


_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\f\v]+)|(?P<newline>\n)|(?P<comment>\#[^\n]*)"""
    r"""|(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"""|(?P<punct>[{}:<>;,\[\]])|(?P<word>[A-Za-z0-9_.+\-]+)"""
)
_CLOSE = {"{": "}", "<": ">"}


def _tokens(text: str, path: Path):
    line, pos = 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise CaffeImportError(f"{path}:{line}: unexpected character {text[pos]!r}")
        kind, value = match.lastgroup, match.group()
        if kind == "newline":
            line += 1
        elif kind in ("string", "punct", "word"):
            yield kind, value, line
        pos = match.end()
    yield "end", "", line


def parse_text(text: str, path: Path) -> Message:
    """A prototxt's top-level message (protobuf text format)."""
    tokens = list(_tokens(text, path))
    index = 0

    def fail(message: str, line: int):
        raise CaffeImportError(f"{path}:{line}: {message}")

    def parse_message(message: Message, closer: str | None) -> None:
        nonlocal index
        while True:
            kind, value, line = tokens[index]
            if kind == "end":
                if closer:
                    fail(f"expected '{closer}' to close the message opened on line {message.line}, found end of file", line)
                return
            if kind == "punct" and value == closer:
                index += 1
                return
            if kind == "punct" and value in ";,":
                index += 1
                continue
            if kind != "word" or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
                fail(f"expected a field name, found {value!r}", line)
            index += 1
            name = value
            kind, value, _ = tokens[index]
            if value == ":":
                index += 1
                kind, value, _ = tokens[index]
            if kind == "punct" and value in _CLOSE:
                index += 1
                child = Message(line)
                parse_message(child, _CLOSE[value])
                message.fields.append((name, child, line))
            elif kind == "punct" and value == "[":
                index += 1
                while tokens[index][1] != "]":
                    message.fields.append((name, scalar(), line))
                    if tokens[index][1] == ",":
                        index += 1
                index += 1
            else:
                message.fields.append((name, scalar(), line))

    def scalar():
        nonlocal index
        kind, value, line = tokens[index]
        if kind == "string":
            index += 1
            return bytes(value[1:-1], "utf-8").decode("unicode_escape")
        if kind == "word":
            index += 1
            return value
        fail(f"expected a value, found {value!r}" if value else "expected a value, found end of file", line)

    root = Message(1)
    parse_message(root, None)
    return root


# -- the binary .caffemodel -------------------------------------------------

def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def fields(buf: memoryview):
    """``(field number, wire type, value)`` for each field of one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire} is not used by caffe.proto")
        if pos > len(buf):
            raise IndexError("truncated field")
        yield number, wire, value


def _repeated(values: list, dtype: str) -> np.ndarray:
    """A repeated float/double field, packed (one bytes value) or not (one per value)."""
    chunks = [np.frombuffer(bytes(v), dtype=dtype) for v in values]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)


def _blob(buf: memoryview) -> np.ndarray:
    dims, legacy, floats, doubles = [], {}, [], []
    for number, wire, value in fields(buf):
        if number == 7:  # BlobShape
            for n, w, v in fields(value):
                if n == 1 and w == 2:
                    sub, pos = bytes(v), 0
                    while pos < len(sub):
                        d, pos = _varint(memoryview(sub), pos)
                        dims.append(d)
                elif n == 1:
                    dims.append(v)
        elif number in (1, 2, 3, 4) and wire == 0:
            legacy[number] = value
        elif number == 5:
            floats.append(value)
        elif number == 8:
            doubles.append(value)
    data = _repeated(floats, "<f4") if floats else _repeated(doubles, "<f8").astype(np.float32)
    if not dims:
        dims = [legacy.get(k, 1) for k in (1, 2, 3, 4)] if legacy else [data.size]
    if int(np.prod(dims)) != data.size:
        raise ValueError(f"a blob of shape {tuple(dims)} holds {data.size} values")
    return data.reshape(dims)


def read_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """``{layer name: [blob arrays]}`` from a binary NetParameter (new ``layer`` or V1 ``layers``)."""
    try:
        buf = memoryview(path.read_bytes())
    except OSError as err:
        raise CaffeImportError(f"{path}: cannot read ({err.strerror or err})") from None
    weights: dict[str, list[np.ndarray]] = {}
    try:
        for number, wire, value in fields(buf):
            if number not in (2, 100) or wire != 2:
                continue
            name_field, blob_field = (1, 7) if number == 100 else (4, 6)
            name, blobs = None, []
            for n, w, v in fields(value):
                if n == name_field and w == 2:
                    name = bytes(v).decode("utf-8")
                elif n == blob_field and w == 2:
                    blobs.append(_blob(v))
            if name is not None and blobs:
                weights[name] = blobs
    except (IndexError, ValueError, UnicodeDecodeError) as err:
        raise CaffeImportError(f"{path}: not a caffemodel (binary NetParameter): {err}") from None
    return weights
