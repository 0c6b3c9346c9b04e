"""The one font decision every route shares: bundled Liberation faces, measured from the files.

A figure names a family (``Times-Roman`` in the paper theme, ``Helvetica`` in
slides). Every route resolves it to the same metrics:

- the direct PDF route embeds the bundled face (Liberation Serif / Sans, SIL
  OFL 1.1, metric-compatible with Times New Roman and Arial, and so with the
  Tinos and Arimo that graphviz-pure draws its svg and png with);
- system Graphviz is pointed at the bundled files through fontconfig;
- text is measured with the bundled file's own advance widths (hmtx), so a box
  sized before layout holds the text drawn after it.

The files are in ``dagnet/render/fonts`` with their licence (LICENSE-OFL.txt).
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path

FONT_DIR = Path(__file__).resolve().parent / "fonts"

# family as themes and Graphviz name it -> (regular, bold, italic) file stems
FACES = {
    "Times-Roman": ("LiberationSerif-Regular", "LiberationSerif-Bold", "LiberationSerif-Italic"),
    "Times": ("LiberationSerif-Regular", "LiberationSerif-Bold", "LiberationSerif-Italic"),
    "Helvetica": ("LiberationSans-Regular", "LiberationSans-Bold", "LiberationSans-Regular"),
}
# what system Graphviz (fontconfig) is told to use for a family: the bundled face's own name
SYSTEM_NAME = {"Times-Roman": "Liberation Serif", "Times": "Liberation Serif", "Helvetica": "Liberation Sans"}


def face_name(family: str, bold: bool = False, italic: bool = False) -> str:
    regular, bold_face, italic_face = FACES.get(family, FACES["Times-Roman"])
    return bold_face if bold else italic_face if italic else regular


def available() -> bool:
    """Whether the bundled fonts can be read (fontTools importable, files present)."""
    try:
        import fontTools.ttLib  # noqa: F401
    except ImportError:
        return False
    return (FONT_DIR / "LiberationSerif-Regular.ttf").is_file()


class Face:
    """One bundled TrueType face: widths and glyph ids by character, and subsets for embedding."""

    def __init__(self, name: str):
        from fontTools.ttLib import TTFont
        self.name = name
        self.path = FONT_DIR / f"{name}.ttf"
        font = TTFont(self.path, lazy=True)
        self.units = font["head"].unitsPerEm
        self.cmap = dict(font.getBestCmap())               # code point -> glyph name
        self.gid = {g: i for i, g in enumerate(font.getGlyphOrder())}
        hmtx = font["hmtx"]
        self.advance = {g: hmtx[g][0] for g in self.gid}
        head, hhea, os2, post = font["head"], font["hhea"], font["OS/2"], font["post"]
        scale = 1000 / self.units
        self.bbox = [round(v * scale) for v in (head.xMin, head.yMin, head.xMax, head.yMax)]
        self.ascent, self.descent = round(hhea.ascent * scale), round(hhea.descent * scale)
        self.cap_height = round(getattr(os2, "sCapHeight", 0) * scale) or self.ascent
        self.italic_angle = float(post.italicAngle)
        self.ps_name = font["name"].getDebugName(6) or name
        self.missing = self.cmap.get(ord("?"), ".notdef")
        font.close()

    def glyph(self, ch: str) -> str:
        return self.cmap.get(ord(ch), self.missing)

    def width(self, text: str, size: float) -> float:
        """Advance width of ``text`` in points at ``size`` points (no kerning: Graphviz sets none)."""
        return sum(self.advance[self.glyph(ch)] for ch in text) * size / self.units

    def subset(self, chars: set[str]) -> bytes:
        """The face cut down to ``chars``, glyph ids kept (so content streams use the full
        font's ids), with no timestamp of its own: the same characters give the same bytes."""
        from fontTools import subset
        from fontTools.ttLib import TTFont
        font = TTFont(self.path, recalcTimestamp=False)
        options = subset.Options()
        options.retain_gids = True
        options.notdef_outline = True
        options.name_IDs = ["*"]            # keep copyright and licence records (OFL)
        options.layout_features = []
        options.hinting = False
        options.drop_tables += ["DSIG", "GSUB", "GPOS", "GDEF", "kern", "FFTM"]
        sub = subset.Subsetter(options)
        sub.populate(unicodes=sorted({ord(c) for c in chars} | {ord("?")}))
        sub.subset(font)
        out = io.BytesIO()
        font.save(out)
        return out.getvalue()


@functools.lru_cache(maxsize=8)
def face(name: str) -> Face:
    return Face(name)


def subset_tag(name: str, chars: set[str]) -> str:
    """Six capitals for a subset's PDF name (``ABCDEF+LiberationSerif``), from its content."""
    digest = hashlib.sha256((name + "".join(sorted(chars))).encode()).digest()
    return "".join(chr(65 + b % 26) for b in digest[:6])


def fontconfig_file(folder: Path) -> Path:
    """A fontconfig file that adds the bundled faces to the system's, for system Graphviz."""
    conf = folder / "fonts.conf"
    conf.write_text('<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
                    '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
                    f"  <dir>{FONT_DIR}</dir>\n"
                    f"  <cachedir>{folder / 'cache'}</cachedir>\n</fontconfig>\n")
    return conf
