"""Turning raw spec values into typed Python values, in a parameter scope.

A raw value is a number, a bool, a list, or a string. Where a number is
expected, a string is an expression over the scope (``channels * 4``),
evaluated by :mod:`dagnet.expr`. Where a string is expected, a bare name bound
in the scope is replaced by its value; anything else is taken literally.
"""

from __future__ import annotations

import yaml

from dagnet import expr
from dagnet.dims import symbol
from dagnet.errors import ErrorLog, Loc, closest, did_you_mean
from dagnet.ops.registry import OPS, REQUIRED, Arg, OpDef

_INVALID = object()
INT64 = 2**63           # PyTorch keeps sizes, strides and indices as C++ int64


class _Unbound:
    """The value of a parameter that has none: a block parameter its use did not give, or
    one whose expression failed. Its error is already reported where the root cause is;
    an expression that uses it is invalid without a second, confusing error."""

    def __repr__(self) -> str:
        return "<unbound>"


UNBOUND = _Unbound()


def _ops_taking(arg: Arg, word: str) -> str:
    """The ops whose numeric argument of this name also takes ``word`` (`padding: same`), listed."""
    if not arg.numeric:
        return ""
    names = [op.name for op in OPS.values() if word in getattr(op.arg(arg.name), "choices", ())]
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)


class Resolver:
    def __init__(self, env: dict, errors: ErrorLog):
        self.env = env
        self.errors = errors
        self.knock_ons = 0      # values left invalid, unreported, because a parameter they use is unbound

    # -- scalars -----------------------------------------------------------
    def evaluate(self, raw, loc: Loc, what: str):
        """Evaluate an expression string (numbers pass through); errors are logged."""
        if not isinstance(raw, str):
            return raw
        if self.uses_unbound(raw):
            self.knock_ons += 1
            return _INVALID
        try:
            return expr.evaluate(raw, self.env)
        except expr.ExprError as exc:
            hint = did_you_mean(exc.unknown, self.env) if exc.unknown else None
            self.errors.add(f"{what}: {exc}", loc, hint)
            return _INVALID

    def integer(self, raw, loc: Loc, what: str, low=None, high=None):
        value = self.evaluate(raw, loc, what)
        if value is _INVALID:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.add(f"{what} must be an integer, found `{value}`", loc)
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bound = f"between {low} and {high}" if low is not None and high is not None else \
                f">= {low}" if low is not None else f"<= {high}"
            self.errors.add(f"{what} must be {bound}, found {value}", loc)
            return None
        return value

    def boolean(self, raw, loc: Loc, what: str) -> bool:
        value = self.evaluate(raw, loc, what)
        return bool(value) if value is not _INVALID else True

    def uses_unbound(self, raw: str) -> bool:
        """Whether the expression ``raw`` refers to a parameter that has no value."""
        unbound = [name for name, value in self.env.items() if value is UNBOUND]
        return bool(unbound) and not expr.names_in(raw).isdisjoint(unbound)   # parse only if need be

    def literal_or_param(self, raw):
        """A bare name bound in scope is that value; other strings are literals."""
        if isinstance(raw, str) and raw.isidentifier() and raw in self.env:
            self.knock_ons += self.env[raw] is UNBOUND
            return self.env[raw]
        if isinstance(raw, str) and (raw.isidentifier() or not expr.parses(raw)
                                     or not expr.names_in(raw) <= set(self.env)):
            return raw
        return raw if not isinstance(raw, str) else self.evaluate(raw, Loc(), "value")

    # -- typed op arguments -------------------------------------------------
    def typed(self, arg: Arg, raw, loc: Loc, op: str):
        """``raw`` as the argument's kind, inside its declared range; _INVALID (logged) if not."""
        what = f"`{arg.name}` of `{op}`"
        value = self.of_kind(arg, raw, loc, what)
        if value is _INVALID or arg.range is None or self.in_range(arg, value, loc, what):
            return value
        return _INVALID

    def of_kind(self, arg: Arg, raw, loc: Loc, what: str):
        kind = arg.kind
        if kind.endswith("_or_none"):
            if raw is None or raw == "none":
                return None
            kind = kind[: -len("_or_none")]
        if kind == "any":
            return self.any(raw, loc, what)
        if arg.choices and kind != "str" and isinstance(raw, str):      # `padding: same`
            word = self.word_choice(arg, raw, loc, what)
            if word is not None:
                return word
        takers = _ops_taking(arg, raw) if isinstance(raw, str) and raw not in self.env else ""
        if takers:                                                      # `padding: same` in a pool
            self.errors.add(f"{what} must be a number, found `{raw}`", loc,
                            f"{arg.name} `{raw}` is for {takers} only: give a number here"
                            + (f" ({arg.doc})" if arg.doc else ""))
            return _INVALID
        if isinstance(raw, str) and isinstance(self.env.get(raw), list) and kind in ("ints", "shape", "floats"):
            raw = self.env[raw]                                         # a parameter holding a list
        if kind in ("ints", "shape"):
            items = raw if isinstance(raw, list) else [raw]
            if kind == "shape" and not isinstance(raw, list):
                self.errors.add(f"{what} must be a list of integers", loc)
                return _INVALID
            values = [None if (v is None and arg.kind == "ints") else self.integer(v, loc, what) for v in items]
            if any(v is None for v in values) and not (arg.kind == "ints" and None in items):
                return _INVALID
            return values if isinstance(raw, list) else values[0]
        if kind == "int":
            value = self.integer(raw, loc, what)
            return _INVALID if value is None else value
        if kind == "floats":
            values = [self.number(v, loc, what) for v in (raw if isinstance(raw, list) else [raw])]
            if any(v is _INVALID for v in values):
                return _INVALID
            return values if isinstance(raw, list) else values[0]
        if kind == "float":
            return self.number(raw, loc, what)
        if kind == "bool":
            if isinstance(raw, str) and raw.isidentifier() and raw not in self.env and raw not in ("true", "false"):
                self.errors.add(f"{what} must be true or false, found `{raw}`", loc)
                return _INVALID
            value = self.evaluate(raw, loc, what)
            if not isinstance(value, bool):
                if value is not _INVALID:
                    self.errors.add(f"{what} must be true or false, found `{value}`", loc)
                return _INVALID
            return value
        value = self.literal_or_param(raw)           # kind == "str"
        if not isinstance(value, str):
            self.errors.add(f"{what} must be a name, found `{value}`", loc)
            return _INVALID
        if arg.choices and value not in arg.choices:
            self.errors.add(f"{what} must be one of {', '.join(arg.choices)}, found `{value}`", loc,
                            did_you_mean(value, arg.choices))
            return _INVALID
        return value

    def number(self, raw, loc: Loc, what: str):
        """A float (an int is widened); _INVALID, logged, for anything else."""
        value = self.evaluate(raw, loc, what)
        if value is _INVALID:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.errors.add(f"{what} must be a number, found `{value}`", loc)
            return _INVALID
        return float(value)

    def word_choice(self, arg: Arg, raw: str, loc: Loc, what: str):
        """One of a numeric argument's words (``same``), or None to read ``raw`` as a number.

        A bare name that is neither a word nor a parameter is an error here, so
        that the message lists the words instead of calling it an unknown name.
        """
        if not raw.isidentifier():
            return None                                 # an expression: a number
        value = self.env.get(raw, raw)                  # a parameter may hold the word
        if isinstance(value, str) and value in arg.choices:
            return value
        if raw not in self.env:
            self.errors.add(f"{what} must be a number or one of {', '.join(arg.choices)}, found `{raw}`", loc,
                            did_you_mean(raw, arg.choices) or did_you_mean(raw, self.env))
            return _INVALID
        return None

    def in_range(self, arg: Arg, value, loc: Loc, what: str) -> bool:
        """Check every number of a typed value against ``arg.range``; log the first one outside."""
        numbers = value if isinstance(value, list) else [value]
        for i, number in enumerate(numbers):
            where = f"{what}: entry {i + 1} of {len(numbers)}" if isinstance(value, list) else what
            if isinstance(number, int) and not -INT64 <= number < INT64:
                digits = str(abs(number))
                self.errors.add(f"{where} does not fit in 64 bits, found a {len(digits)}-digit number "
                                f"({'-' if number < 0 else ''}{digits[:6]}...)", loc,
                                "PyTorch stores sizes and steps as 64-bit integers: below 2**63")
                return False
            if number is None or isinstance(number, str) or number in arg.range:
                continue
            found = f"{number:g}" if isinstance(number, float) else number
            hint = arg.range.meaning
            if not arg.required and arg.default is not None:
                hint += f"; leave `{arg.name}` out for the default, {arg.default}"
            self.errors.add(f"{where} must be {arg.range}, found {found}", loc, hint or None)
            return False
        return True

    def any(self, raw, loc, what):
        if isinstance(raw, list):
            return [self.any(v, loc, what) for v in raw]
        if isinstance(raw, str):
            return self.literal_or_param(raw)
        return raw

    def op_args(self, opdef: OpDef, ns) -> dict:
        """Bind positional and keyword arguments to the op's schema, typed and defaulted."""
        given = dict(ns.args)
        locs = dict(ns.arg_locs)
        names = opdef.positional
        if len(ns.posargs) > len(names):
            self.errors.add(f"`{opdef.name}` takes at most {len(names)} positional arguments "
                            f"({', '.join(names) or 'none'}), found {len(ns.posargs)}", ns.loc)
        for name, value in zip(names, ns.posargs):
            if name in given:
                self.errors.add(f"`{name}` of `{opdef.name}` given twice", ns.loc)
            given[name] = value
            locs.setdefault(name, ns.loc)
        out, meant = {}, set()         # `meant`: arguments a misspelt name stands for
        for name, raw in given.items():
            arg = opdef.arg(name)
            if arg is None:
                meant.add(closest(name, names))
                hint = did_you_mean(name, names)
                if opdef.infers(name):
                    hint = f"`{name}` is inferred from the input shape; remove it"
                self.errors.add(f"`{opdef.name}` has no argument `{name}`", locs.get(name, ns.loc),
                                hint or f"its arguments: {', '.join(names) or 'none'}")
                continue
            value = self.typed(arg, raw, locs.get(name, ns.loc), opdef.name)
            if value is not _INVALID:
                out[name] = value
        for arg in opdef.args:
            if arg.name not in out and arg.name not in given:
                if arg.default is REQUIRED and arg.name in meant:
                    continue            # reported as the misspelling, with this name as the hint
                if arg.default is REQUIRED:
                    self.errors.add(f"`{opdef.name}` needs `{arg.name}`", ns.loc,
                                    f"add `{arg.name}: ...` ({arg.doc or arg.kind})")
                else:
                    out[arg.name] = arg.default
        return out

    # -- scopes --------------------------------------------------------------
    def spec_params(self, spec, overrides: dict) -> dict:
        """The top-level parameter scope, with ``--set`` overrides applied."""
        raw = dict(spec.params)
        for key, value in overrides.items():
            if key not in raw:
                self.errors.add(f"--set {key}: the spec has no parameter `{key}`", Loc("<command line>", 1, 1),
                                did_you_mean(key, raw) or f"parameters: {', '.join(raw) or 'none'}")
                continue
            raw[key] = yaml.safe_load(value) if isinstance(value, str) else value
        return self.bind(raw, spec.param_locs)

    def bind(self, raw: dict, locs: dict) -> dict:
        """Evaluate parameters in order; each may use those before it."""
        for name, value in raw.items():
            loc = locs.get(name, Loc())
            if isinstance(value, str) and not value.isidentifier():
                value = self.evaluate(value, loc, f"parameter `{name}`")
            elif isinstance(value, str) and value in self.env:
                value = self.env[value]
            # a failed parameter is reported once, here; what uses it is not reported again
            self.env = {**self.env, name: UNBOUND if value is _INVALID else value}
        return self.env

    def block_params(self, block, ns) -> dict:
        """Parameters of a block use: defaults, overridden by the call's arguments."""
        names = list(block.params)
        given = dict(zip(names, ns.posargs))
        if len(ns.posargs) > len(names):
            self.errors.add(f"block `{block.name}` takes {len(names)} parameters, "
                            f"found {len(ns.posargs)} positional", ns.loc)
        for key, value in ns.args.items():
            if key not in block.params:
                self.errors.add(f"block `{block.name}` has no parameter `{key}`",
                                ns.arg_locs.get(key, ns.loc),
                                did_you_mean(key, names) or f"its parameters: {', '.join(names) or 'none'}")
                continue
            if key in given:
                self.errors.add(f"`{key}` of block `{block.name}` given twice", ns.arg_locs.get(key, ns.loc),
                                "give it once: by position or by name")
            given[key] = value
        call = {}
        for key, value in given.items():
            value = self.any(value, ns.arg_locs.get(key, ns.loc), f"`{key}` of `{ns.name}`")
            if isinstance(value, str) and not value.isidentifier():
                value = self.evaluate(value, ns.arg_locs.get(key, ns.loc), f"`{key}` of `{ns.name}`")
            call[key] = UNBOUND if value is _INVALID else value
        inner = Resolver({"i": self.env.get("i", 0)}, self.errors)
        defaults = {k: v for k, v in block.params.items() if k not in call}
        for key, value in defaults.items():
            if value is None:           # a parameter without a default: the root cause, reported at the use
                fix = f"`{block.name}({key}=...)`" if ns.loc.file.endswith(".dag") else f"`{key}: ...` to `{ns.name}`"
                self.errors.add(f"block `{block.name}` needs parameter `{key}`", ns.loc, f"add {fix}")
                defaults[key] = UNBOUND
        inner.env.update(call)
        return inner.bind(defaults, block.param_locs)

    def input_shape(self, inp) -> tuple:
        """Input dims: integers, parameter expressions, or new symbolic names (``H``)."""
        dims = []
        for raw in inp.shape:
            if isinstance(raw, str) and raw.isidentifier() and raw not in self.env:
                dims.append(symbol(raw))
                continue
            value = self.integer(raw, inp.loc, f"a dim of input `{inp.name}`", low=1)
            dims.append(value if value is not None else 1)
        return tuple(dims)
