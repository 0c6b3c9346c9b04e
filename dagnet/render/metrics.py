"""Advance widths of the fonts the figures use, so labels are measured before layout.

Text is measured with the bundled faces' own widths (typeface.py: Liberation
Serif and Sans, the faces the PDF route embeds and system Graphviz is given).
The tables below are the fallback where fontTools is missing.

The numbers are the glyph widths (1/1000 em) of Adobe's Core 14 AFM files for
Times and Helvetica, the metrics Graphviz itself uses to size text when it has
no font renderer, and those of their metric-compatible free clones (Tinos,
Arimo, Liberation, TeX Gyre Termes/Heros, Nimbus), which the viewers and
rasterisers substitute. Measuring with them means a box sized here fits the text
drawn there.

    Copyright (c) 1985, 1987, 1989, 1990, 1993, 1997 Adobe Systems Incorporated.
    All Rights Reserved. (AFM files: may be used, copied, and distributed for any
    purpose and without charge, with or without modification, provided that all
    copyright notices are retained.)
"""

from __future__ import annotations

import functools


def _widths(ascii_widths: str, extra: dict) -> dict:
    """Printable ASCII (32..126) in order, plus a few typographic characters."""
    table = {chr(32 + i): int(w) for i, w in enumerate(ascii_widths.split())}
    table.update(extra)
    return table


FONTS = {
    "Times-Roman": _widths("""
        250 333 408 500 500 833 778 180 333 333 500 564 250 333 250 278 500 500 500 500 500 500 500
        500 500 500 278 278 564 564 564 444 921 722 667 667 722 611 556 722 722 333 389 722 611 889
        722 722 556 722 667 556 611 722 722 944 722 722 611 333 278 333 469 500 333 444 500 444 500
        444 333 500 500 278 278 500 278 778 500 500 500 500 333 389 278 500 500 722 500 500 444 480
        200 480 541""",
        {'×': 564, '…': 1000, '−': 564, '·': 250, '–': 500, '’': 333}),
    "Times-Bold": _widths("""
        250 333 555 500 500 1000 833 278 333 333 500 570 250 333 250 278 500 500 500 500 500 500 500
        500 500 500 333 333 570 570 570 500 930 722 667 722 722 667 611 778 778 389 500 778 667 944
        722 778 611 778 722 556 667 722 722 1000 722 722 667 333 278 333 581 500 333 500 556 444 556
        444 333 500 556 278 333 556 278 833 556 500 556 556 444 389 333 556 500 722 500 500 444 394
        220 394 520""",
        {'×': 570, '…': 1000, '−': 570, '·': 250, '–': 500, '’': 333}),
    "Times-Italic": _widths("""
        250 333 420 500 500 833 778 214 333 333 500 675 250 333 250 278 500 500 500 500 500 500 500
        500 500 500 333 333 675 675 675 500 920 611 611 667 722 611 611 722 722 333 444 667 556 833
        667 722 611 722 611 500 556 722 611 833 611 556 556 389 278 389 422 500 333 500 500 444 500
        444 278 500 500 278 278 444 278 722 500 500 500 500 389 389 278 500 444 667 444 444 389 400
        275 400 541""",
        {'×': 675, '…': 889, '−': 675, '·': 250, '–': 500, '’': 333}),
    "Helvetica": _widths("""
        278 278 355 556 556 889 667 191 333 333 389 584 278 333 278 278 556 556 556 556 556 556 556
        556 556 556 278 278 584 584 584 556 1015 667 667 722 722 667 611 778 722 278 500 667 556 833
        722 778 667 778 722 667 611 722 667 944 667 667 611 278 278 278 469 556 333 556 556 500 556
        556 278 556 556 222 222 500 222 833 556 556 556 556 333 500 278 556 500 722 500 500 500 334
        260 334 584""",
        {'×': 584, '…': 1000, '−': 584, '·': 278, '–': 556, '’': 222}),
    "Helvetica-Bold": _widths("""
        278 333 474 556 556 889 722 238 333 333 389 584 278 333 278 278 556 556 556 556 556 556 556
        556 556 556 333 333 584 584 584 611 975 722 722 722 722 667 611 778 722 278 556 722 611 833
        722 778 667 778 722 667 611 722 667 944 667 667 611 333 278 333 584 556 333 556 611 556 611
        556 333 611 611 278 278 556 278 889 611 611 611 611 389 556 333 611 556 778 556 556 500 389
        280 389 584""",
        {'×': 584, '…': 1000, '−': 584, '·': 278, '–': 556, '’': 278}),
}

# A family name as Graphviz and the themes spell it -> (regular, bold, italic) AFM names.
FAMILIES = {
    "Times-Roman": ("Times-Roman", "Times-Bold", "Times-Italic"),
    "Times": ("Times-Roman", "Times-Bold", "Times-Italic"),
    "Helvetica": ("Helvetica", "Helvetica-Bold", "Helvetica"),
}
FALLBACK_WIDTH = 1000       # an unknown character counts as a full em: wide, never too narrow


@functools.lru_cache(maxsize=4096)
def text_width(text: str, family: str = "Times-Roman", size: float = 14.0,
               bold: bool = False, italic: bool = False) -> float:
    """Width in points of one line of ``text`` set in ``family`` at ``size`` points."""
    if _bundled():
        from dagnet.render.typeface import face, face_name
        return face(face_name(family, bold, italic)).width(text, size)
    regular, bold_name, italic_name = FAMILIES.get(family, FAMILIES["Times-Roman"])
    table = FONTS[bold_name if bold else italic_name if italic else regular]
    return sum(table.get(ch, FALLBACK_WIDTH) for ch in text) * size / 1000.0


@functools.lru_cache(maxsize=1)
def _bundled() -> bool:
    from dagnet.render.typeface import available
    return available()
