"""Mutation fuzzing of the spec front ends: anything but a located SpecError is a bug.

Used by tests/test_fuzz.py (a few hundred cases) and by `make fuzz` (as many as
you like: `python tests/fuzz_specs.py --cases 20000`).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagnet  # noqa: E402
from dagnet.errors import SpecError  # noqa: E402

TOKENS = ["{", "}", "[", "]", ":", ",", "-", "->", "(", ")", "*", "**", "'", '"', "#", "&a", "*a",
          "!!python/object/apply:os.system", "repeat: 10000", "in: x", "op: add", "block: stage",
          "-1", "0", "1e999", "null", "true", "H", "i == 0", "9 ** 9 ** 9", "\t", "\n", "  ", "é", "\x00"]


def mutate(text: str, rng: random.Random) -> str:
    """One to three random edits: delete, duplicate or swap lines, insert tokens, flip characters."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
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
        elif lines:
            words = lines[i].split(" ")
            k = rng.randrange(len(words))
            words[k] = rng.choice(TOKENS)
            lines[i] = " ".join(words)
    return "\n".join(lines) + "\n"


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def check_one(text: str, seconds: int = 10, suffix: str = ".yaml") -> str | None:
    """None if the spec loads or fails with a SpecError; else a description of the bug."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        if suffix == ".dag":
            from dagnet.check import check
            from dagnet.ir import expand
            from dagnet.spec.dsl import load_dsl_spec
            check(expand(load_dsl_spec(text)))
        else:
            dagnet.load(text)
    except SpecError as exc:
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
    return None


def corpus(suffix: str = ".yaml") -> list[str]:
    """Example specs that stand alone (imports would resolve against the working directory)."""
    texts = [p.read_text() for p in sorted((ROOT / "specs").glob(f"*{suffix}"))]
    return [t for t in texts if "imports" not in t and "\nimport " not in t and not t.startswith("import ")]


def run(cases: int, seed: int, suffix: str = ".yaml") -> list[tuple[str, str]]:
    rng = random.Random(seed)
    texts = corpus(suffix)
    failures = []
    for _ in range(cases):
        text = mutate(rng.choice(texts), rng)
        problem = check_one(text, suffix=suffix)
        if problem:
            failures.append((problem, text))
    return failures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["yaml", "dag"], default="yaml")
    args = parser.parse_args()
    found = run(args.cases, args.seed, "." + args.format)
    for problem, text in found[:20]:
        print(f"--- {problem}\n{text}")
    print(f"{len(found)} failures in {args.cases} cases")
    sys.exit(1 if found else 0)
