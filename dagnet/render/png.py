"""PNG metadata: the resolution, so that ``\\includegraphics`` places a 300 dpi figure at its size.

Graphviz draws at ``-Gdpi`` but writes no ``pHYs`` chunk, so viewers and LaTeX
assume 72 (or 96) dpi and a column figure comes out four times too large.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunks(data: bytes):
    """(type, body) of every chunk of a PNG file."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG file")
    i = len(SIGNATURE)
    while i < len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind = data[i + 4:i + 8]
        yield kind, data[i + 8:i + 8 + length]
        i += 12 + length


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_dpi(data: bytes, dpi: float) -> bytes:
    """The PNG with a ``pHYs`` chunk saying ``dpi`` (pixels per metre), any old one replaced."""
    per_metre = round(dpi / 0.0254)
    out = [SIGNATURE]
    for kind, body in chunks(data):
        if kind == b"pHYs":
            continue
        out.append(chunk(kind, body))
        if kind == b"IHDR":
            out.append(chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)))
    return b"".join(out)


def dpi_of(data: bytes) -> float | None:
    """The resolution a PNG declares (dots per inch), or None."""
    for kind, body in chunks(data):
        if kind == b"pHYs" and body[8] == 1:
            return struct.unpack(">I", body[:4])[0] * 0.0254
    return None
