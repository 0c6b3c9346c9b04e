"""PDF straight from the laid-out figure: no system Graphviz, no LaTeX, fonts embedded.

The layout engine's JSON carries every drawing operation (xdot: polygons,
ellipses, Bézier splines, text positions), the same operations tikz.py replays.
Here they become a PDF content stream, with text set in the bundled face that
measured it (typeface.py), embedded as a subset (a Type 0 font, Identity-H,
with a ToUnicode map so the text can be searched and copied).

The file is byte-stable: objects in a fixed order, fonts subset by content,
no date unless ``SOURCE_DATE_EPOCH`` asks for one (then that date), and the
file ``/ID`` a hash of the content.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib

from dagnet.render.layout import XDOT_STATE, set_state
from dagnet.render.typeface import face, face_name, subset_tag

KAPPA = 0.5522847498        # Bézier handle length of a quarter circle
PAD = 4.0                   # points of white round the drawing (Graphviz's pad, 0.04 in, rounded up)
SUB_SHIFT = 0.33            # a subscript sits this many of its own sizes below the baseline


def num(x: float) -> str:
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def rgb(color: str) -> tuple[float, float, float] | None:
    """``#rrggbb`` (``#rrggbbaa``: transparent when aa is 00) or a few names -> 0..1, or None."""
    names = {"black": "#000000", "white": "#ffffff", "gray": "#808080", "grey": "#808080",
             "red": "#ff0000", "blue": "#0000ff", "transparent": None, "none": None}
    if not color.startswith("#"):
        color = names.get(color.lower(), "#000000")
        if color is None:
            return None
    hexa = color[1:]
    if len(hexa) == 8:
        if hexa[6:].lower() == "00":
            return None
        hexa = hexa[:6]
    if len(hexa) == 3:
        hexa = "".join(c * 2 for c in hexa)
    return tuple(int(hexa[i:i + 2], 16) / 255 for i in (0, 2, 4))


class PdfPainter:
    """Replays xdot operations as PDF drawing operators, collecting the characters of each face."""

    def __init__(self, family: str, height: float, dx: float, dy: float, text_color: str | None = None):
        self.family = family
        self.ops: list[str] = []
        self.chars: dict[str, set[str]] = {}        # face name -> characters drawn with it
        self.dx, self.dy = dx, dy
        self.text_color = text_color                # tests draw all text in one colour to find it

    def xy(self, p) -> str:
        return f"{num(float(p[0]) + self.dx)} {num(float(p[1]) + self.dy)}"

    def replay(self, ops: list[dict] | None) -> None:
        state = dict(XDOT_STATE)
        for op in ops or []:
            kind = op["op"]
            if set_state(state, op, self.style):
                continue
            if kind in ("p", "P", "b", "B", "L"):
                self.path(kind, op["points"], state)
            elif kind in ("e", "E"):
                self.ellipse(kind, op["rect"], state)
            elif kind == "T":
                self.text(op, state)

    @staticmethod
    def style(state: dict, style: str) -> None:
        if style == "dashed":
            state["dash"] = "[3 2] 0 d"
        elif style == "dotted":
            state["dash"] = "[0.8 1.6] 0 d"
        elif style == "solid":
            state["dash"] = None
        elif style == "bold":
            state["width"] = max(2.0, state["width"] * 2)
        elif style.startswith("setlinewidth("):
            state["width"] = float(style[len("setlinewidth("):-1])

    def paint(self, body: list[str], state: dict, closed: bool, filled: bool) -> None:
        pen = rgb(state["pen"])
        fill = rgb(state["fill"]) if filled else None
        if pen is None and fill is None:
            return
        out = ["q"]
        if fill is not None:
            out.append(" ".join(num(c) for c in fill) + " rg")
        if pen is not None:
            out.append(" ".join(num(c) for c in pen) + f" RG {num(state['width'])} w")
            out.append(state["dash"] or "[] 0 d")
        out += body
        if closed:
            out.append("h")
        out.append("B" if fill is not None and pen is not None else "f" if fill is not None else "S")
        out.append("Q")
        self.ops.append("\n".join(out))

    def path(self, kind: str, points: list, state: dict) -> None:
        body = [self.xy(points[0]) + " m"]
        if kind in ("b", "B"):
            for i in range(1, len(points) - 2, 3):
                body.append(f"{self.xy(points[i])} {self.xy(points[i + 1])} {self.xy(points[i + 2])} c")
        else:
            body += [self.xy(p) + " l" for p in points[1:]]
        self.paint(body, state, closed=kind in ("p", "P", "B"), filled=kind in ("P", "B"))

    def ellipse(self, kind: str, rect: list, state: dict) -> None:
        cx, cy, rx, ry = (float(v) for v in rect)
        kx, ky = rx * KAPPA, ry * KAPPA
        body = [self.xy((cx + rx, cy)) + " m",
                f"{self.xy((cx + rx, cy + ky))} {self.xy((cx + kx, cy + ry))} {self.xy((cx, cy + ry))} c",
                f"{self.xy((cx - kx, cy + ry))} {self.xy((cx - rx, cy + ky))} {self.xy((cx - rx, cy))} c",
                f"{self.xy((cx - rx, cy - ky))} {self.xy((cx - kx, cy - ry))} {self.xy((cx, cy - ry))} c",
                f"{self.xy((cx + kx, cy - ry))} {self.xy((cx + rx, cy - ky))} {self.xy((cx + rx, cy))} c"]
        self.paint(body, state, closed=True, filled=kind == "E")

    def text(self, op: dict, state: dict) -> None:
        """One run of text, centred where the layout centred it, in the bundled face."""
        text = op["text"]
        if not text.strip():
            return
        (x, y), align, gv_width = (float(v) for v in op["pt"]), op["align"], float(op.get("width", 0))
        name = face_name(self.family, state["bold"], state["italic"])
        f = face(name)
        size = state["size"]
        width = f.width(text, size)
        centre = x + {"l": gv_width / 2, "c": 0.0, "r": -gv_width / 2}[align]
        if state["sub"]:
            y -= SUB_SHIFT * size
        elif state["sup"]:
            y += SUB_SHIFT * size
        color = rgb(self.text_color or state["pen"]) or (0.0, 0.0, 0.0)
        self.chars.setdefault(name, set()).update(text)
        font_id = "/" + name.replace("-", "")
        hexa = "".join(f"{f.gid[f.glyph(ch)]:04X}" for ch in text)
        self.ops.append(f"BT {' '.join(num(c) for c in color)} rg {font_id} {num(size)} Tf "
                        f"{self.xy((centre - width / 2, y))} Td <{hexa}> Tj ET")


def draw_layout(painter: PdfPainter, layout: dict) -> None:
    """Everything Graphviz drew, in its order: background, clusters, edges, nodes, the legend."""
    n_sub = int(layout.get("_subgraph_cnt", 0))
    objects = layout.get("objects", [])
    painter.replay(layout.get("_draw_"))
    for c in objects[:n_sub]:
        painter.replay(c.get("_draw_"))
        painter.replay(c.get("_ldraw_"))
    for e in layout.get("edges", []):
        for key in ("_draw_", "_hdraw_", "_tdraw_", "_ldraw_"):
            painter.replay(e.get(key))
    for n in objects[n_sub:]:
        painter.replay(n.get("_draw_"))
        painter.replay(n.get("_ldraw_"))
    painter.replay(layout.get("_ldraw_"))


def page_box(layout: dict) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in layout["bb"].split(","))
    return x0, y0, x1, y1


def layout_to_pdf(layout: dict, family: str = "Times-Roman", text_color: str | None = None,
                  title: str = "") -> bytes:
    """The laid-out figure as a one-page PDF, ``PAD`` points of white round the drawing."""
    from dagnet.render.typeface import available
    if not available():
        from dagnet.render.layout import RenderError
        raise RenderError("PDF needs fontTools to embed the bundled fonts: `pip install fonttools` "
                          "(a dependency of dagnet), or write .svg, .png or .tex")
    x0, y0, x1, y1 = page_box(layout)
    width, height = x1 - x0 + 2 * PAD, y1 - y0 + 2 * PAD
    painter = PdfPainter(family, height, PAD - x0, PAD - y0, text_color)
    painter.ops.append(f"1 1 1 rg 0 0 {num(width)} {num(height)} re f")
    painter.ops.append("1 J 1 j")                          # round caps and joins, as Graphviz draws
    draw_layout(painter, layout)
    return write_pdf(width, height, "\n".join(painter.ops), painter.chars, title)


# -- the file -------------------------------------------------------------------------

def _stream(data: bytes, extra: str = "") -> bytes:
    packed = zlib.compress(data, 9)
    return (f"<< /Length {len(packed)} /Filter /FlateDecode{extra} >>\nstream\n".encode()
            + packed + b"\nendstream")


def _pdf_string(text: str) -> str:
    """A PDF text string: UTF-16BE with its byte-order mark, as hex (any character is safe)."""
    return "<FEFF" + text.encode("utf-16-be").hex().upper() + ">"


def _to_unicode(gids: dict[int, str]) -> bytes:
    lines = ["/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap",
             "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
             "/CMapName /Adobe-Identity-UCS def", "/CMapType 2 def",
             "1 begincodespacerange", "<0000> <FFFF>", "endcodespacerange"]
    items = sorted(gids.items())
    for i in range(0, len(items), 100):
        chunk = items[i:i + 100]
        lines.append(f"{len(chunk)} beginbfchar")
        lines += [f"<{g:04X}> <{ch.encode('utf-16-be').hex().upper()}>" for g, ch in chunk]
        lines.append("endbfchar")
    lines += ["endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end"]
    return "\n".join(lines).encode()


def _date() -> str | None:
    """``SOURCE_DATE_EPOCH`` as a PDF date, or None: a figure carries no date unless asked."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch.isdigit():
        return None
    return time.strftime("D:%Y%m%d%H%M%SZ", time.gmtime(int(epoch)))


def write_pdf(width: float, height: float, content: str, chars: dict[str, set[str]],
              title: str = "") -> bytes:
    """A one-page PDF 1.4 with the given content stream and a subset of each face used."""
    objects: list[bytes] = []

    def add(body: bytes | str) -> int:
        objects.append(body.encode() if isinstance(body, str) else body)
        return len(objects)

    catalog = add("<< /Type /Catalog /Pages 2 0 R >>")
    pages = add("")                                           # filled in below
    fonts = []
    for name in sorted(chars):
        f = face(name)
        used = chars[name] | {"?"}
        gids = {f.gid[f.glyph(ch)]: ch for ch in sorted(used)}
        base = f"{subset_tag(name, used)}+{f.ps_name}"
        data = f.subset(used)
        file_id = add(_stream(data, f" /Length1 {len(data)}"))
        flags = 32 | (2 if "Serif" in name else 0) | (64 if f.italic_angle else 0)   # nonsymbolic, serif, italic
        descriptor = add(f"<< /Type /FontDescriptor /FontName /{base} /Flags {flags} "
                         f"/FontBBox [{' '.join(map(str, f.bbox))}] /ItalicAngle {num(f.italic_angle)} "
                         f"/Ascent {f.ascent} /Descent {f.descent} /CapHeight {f.cap_height} "
                         f"/StemV 80 /FontFile2 {file_id} 0 R >>")
        widths = " ".join(f"{g} [{round(f.advance[f.glyph(ch)] * 1000 / f.units)}]"
                          for g, ch in sorted(gids.items()))
        cid = add(f"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /{base} "
                  "/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> "
                  f"/FontDescriptor {descriptor} 0 R /CIDToGIDMap /Identity /DW 1000 /W [{widths}] >>")
        cmap = add(_stream(_to_unicode(gids)))
        fonts.append((name, add(f"<< /Type /Font /Subtype /Type0 /BaseFont /{base} /Encoding /Identity-H "
                                f"/DescendantFonts [{cid} 0 R] /ToUnicode {cmap} 0 R >>")))
    content_id = add(_stream(content.encode("latin-1")))
    font_dict = " ".join(f"/{name.replace('-', '')} {obj} 0 R" for name, obj in fonts)
    page = add(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {num(width)} {num(height)}] "
               f"/Resources << /Font << {font_dict} >> >> /Contents {content_id} 0 R >>")
    objects[pages - 1] = f"<< /Type /Pages /Kids [{page} 0 R] /Count 1 >>".encode()
    info = "<< /Producer (dagnet render) /Creator (dagnet render)"
    if title:
        info += f" /Title {_pdf_string(title)}"
    date = _date()
    if date:
        info += f" /CreationDate ({date}) /ModDate ({date})"
    info_id = add(info + " >>")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    digest = hashlib.md5(bytes(out)).hexdigest().upper()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R /Info {info_id} 0 R "
            f"/ID [<{digest}> <{digest}>] >>\nstartxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)
