"""Mutation fuzzing of the spec front ends: anything but a located SpecError is a bug.

Used by tests/test_fuzz.py (a few hundred cases) and by `make fuzz` (as many as
you like: `python tests/fuzz_specs.py --cases 20000`). Mutations edit lines,
insert tokens, rename a name to a hostile one (`forward`, `__class__`, a quote,
U+2028, ...) and spoil the bytes (invalid UTF-8, a foreign byte-order mark, a
Latin-1 or UTF-16 re-encoding); spoiled bytes are written to a file and loaded
from it, as the CLI reads them.
"""

from __future__ import annotations

import argparse
import codecs
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagnet  # noqa: E402
from dagnet.errors import SpecError  # noqa: E402

TOKENS = ["{", "}", "[", "]", ":", ",", "-", "->", "(", ")", "*", "**", "'", '"', "#", "&a", "*a",
          "!!python/object/apply:os.system", "repeat: 10000", "in: x", "op: add", "block: stage",
          "-1", "0", "1e999", "null", "true", "H", "i == 0", "9 ** 9 ** 9", "\t", "\n", "  ", "é", "\x00",
          "\u2028", "\u2029", "\\", "\\n", '\\"', '"""', "'''", '"ab" * 10**10', "\ufeff"]
# What a name may be renamed to: nn.Module attributes, Python keywords, quotes,
# backslashes, line separators, a letter NFKC folds (U+210C), a lone surrogate.
HOSTILE_NAMES = ["forward", "training", "__class__", "class", "None", "self", "parameters", "_modules",
                 'a"b', "a'b", "a\\b", "a\u2028b", "a\u2029b", "\u210c", "a b", '"""', "x#y", "\udc80"]
# Names that run code if they ever reach generated code unescaped: each touches MARKER. The
# first broke out of torch.fx's getattr(self, "..."), the others out of a docstring or a line.
MARKER = Path(tempfile.gettempdir()) / f"dagnet-fuzz-payload-ran-{os.getpid()}"
PAYLOADS = [f'training"),getattr(__import__("os"),"system")("touch {MARKER}"),getattr(self,"training',
            f'x""";__import__("os").system("touch {MARKER}");"""',
            f'x\u2028__import__("os").system("touch {MARKER}")']
HOSTILE_NAMES += PAYLOADS
BAD_BYTES = [b"\xff", b"\xfe", b"\xe9", b"\xc3(", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
             codecs.BOM_UTF8, b"\x00"]
BOMS = [codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
ENCODINGS = ["latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32"]


def mutate(text: str, rng: random.Random) -> str | bytes:
    """One to three random edits: delete, duplicate or swap lines, insert tokens, flip characters,
    rename a name to a hostile one; one edit in eight spoils the bytes of the result."""
    lines = text.splitlines()
    spoil = False
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        i = rng.randrange(len(lines)) if lines else 0
        if kind == 0 and lines:
            del lines[i]
        elif kind == 1 and lines:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif kind == 2 and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 3 and lines:
            pos = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:pos] + rng.choice(TOKENS) + lines[i][pos:]
        elif kind == 4 and lines and lines[i]:
            pos = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:pos] + chr(rng.randrange(32, 127)) + lines[i][pos + 1:]
        elif kind == 5:
            lines = rename(lines, rng)
        elif kind == 6:
            spoil = True
        elif lines:
            words = lines[i].split(" ")
            k = rng.randrange(len(words))
            words[k] = rng.choice(TOKENS)
            lines[i] = " ".join(words)
    text = "\n".join(lines) + "\n"
    return spoil_bytes(text, rng) if spoil else text


def rename(lines: list[str], rng: random.Random) -> list[str]:
    """Every whole-word use of one name becomes a hostile name."""
    text = "\n".join(lines)
    names = sorted(set(re.findall(r"\b[A-Za-z_]\w*\b", text)))
    if not names:
        return lines
    old, new = rng.choice(names), rng.choice(HOSTILE_NAMES)
    return re.sub(rf"\b{re.escape(old)}\b", lambda _: new, text).split("\n")


def spoil_bytes(text: str, rng: random.Random) -> bytes:
    """The text as bytes that are not plain UTF-8: a bad byte, a byte-order mark, another encoding."""
    data = text.encode("utf-8", "surrogatepass")
    kind = rng.randrange(3)
    if kind == 0:
        pos = rng.randint(0, len(data))
        return data[:pos] + rng.choice(BAD_BYTES) + data[pos:]
    if kind == 1:
        return rng.choice(BOMS) + data
    return text.encode(rng.choice(ENCODINGS), "replace")


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def _load(spec: str | bytes, suffix: str):
    """Parse, expand and check: text as given, bytes from a file named ``*suffix``."""
    if isinstance(spec, bytes):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"fuzzed{suffix}"
            path.write_bytes(spec)
            return dagnet.load(path)
    if suffix == ".dag":
        from dagnet.check import check
        from dagnet.ir import expand
        from dagnet.spec.dsl import load_dsl_spec
        return check(expand(load_dsl_spec(spec)))
    return dagnet.load(spec)


def check_one(spec: str | bytes, seconds: int = 10, suffix: str = ".yaml", build: bool = False,
              tally: Counter | None = None) -> str | None:
    """None if the spec loads or fails with a SpecError; else a description of the bug.

    ``build`` also compiles the module of a spec that checks (slower: it imports torch);
    ``tally`` counts the outcomes (``checked``, ``refused``).
    """
    tally = tally if tally is not None else Counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        ir = _load(spec, suffix)
        tally["checked"] += 1
        if build:
            _build(ir, carries_payload=str(MARKER) in str(spec))
    except SpecError as exc:
        tally["refused"] += 1
        errors = getattr(exc, "errors", [exc])
        if any(e.loc.line < 0 for e in errors):
            return f"error without a location: {exc}"
    except Timeout:
        return f"hang (over {seconds} s)"
    except RecursionError:
        return "RecursionError"
    except Exception as exc:  # noqa: BLE001 - the point is to catch everything
        return f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        if MARKER.exists():
            MARKER.unlink()
            return "a name in the spec ran code"
    return None


def _build(ir, carries_payload: bool) -> None:
    """Compile, write the standalone file and, for a spec carrying a payload, run it.

    The payloads run on import of the standalone file or on the first forward
    call, so those are exercised whenever such a spec gets this far (which the
    naming rule should make never).
    """
    import torch

    from dagnet.emit import standalone_source
    from dagnet.export import example_inputs
    module = dagnet.compile(ir)
    try:
        source = standalone_source(module)
    except ValueError:              # structured nodes and checkpointed parts have no standalone form
        return
    if carries_payload:
        exec(compile(source, "<standalone>", "exec"), {})       # noqa: S102 - the point of the test
        with torch.no_grad():
            module.eval()(**example_inputs(ir, batch=2, dims={}))


def corpus(suffix: str = ".yaml") -> list[str]:
    """Example specs that stand alone (imports would resolve against the working directory)."""
    texts = [p.read_text() for p in sorted((ROOT / "specs").glob(f"*{suffix}"))]
    return [t for t in texts if "imports" not in t and "\nimport " not in t and not t.startswith("import ")]


def run(cases: int, seed: int, suffix: str = ".yaml", build: bool = False,
        tally: Counter | None = None) -> list[tuple[str, str | bytes]]:
    """Fuzz ``cases`` mutated example specs; the failures, with the spec that showed each.

    ``tally`` counts what the cases held (spoiled bytes, hostile names, payloads) and
    how each ended.
    """
    rng = random.Random(seed)
    texts = corpus(suffix)
    tally = tally if tally is not None else Counter()
    failures = []
    for _ in range(cases):
        original = rng.choice(texts)
        spec = mutate(original, rng)
        text = spec.decode("utf-8", "replace") if isinstance(spec, bytes) else spec
        tally["spoiled bytes"] += isinstance(spec, bytes)
        tally["hostile names"] += any(name in text and name not in original for name in HOSTILE_NAMES)
        tally["payloads"] += str(MARKER) in text
        problem = check_one(spec, suffix=suffix, build=build, tally=tally)
        if problem:
            failures.append((problem, spec))
    return failures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["yaml", "dag"], default="yaml")
    parser.add_argument("--compile", action="store_true", help="also build the module of specs that check")
    args = parser.parse_args()
    tally, start = Counter(), time.perf_counter()
    found = run(args.cases, args.seed, "." + args.format, args.compile, tally)
    for problem, spec in found[:20]:
        shown = repr(spec) if isinstance(spec, bytes) else spec.encode("utf-8", "backslashreplace").decode()
        print(f"--- {problem}\n{shown}")
    print(f"{args.format}, seed {args.seed}{', compiled' if args.compile else ''}: {args.cases:,} cases "
          f"({tally['spoiled bytes']:,} with spoiled bytes, {tally['hostile names']:,} with hostile names, "
          f"{tally['payloads']:,} carrying a code payload); {tally['checked']:,} checked clean, "
          f"{tally['refused']:,} refused with a located error; {time.perf_counter() - start:.0f} s")
    print(f"{len(found)} failures in {args.cases} cases")
    sys.exit(1 if found else 0)
