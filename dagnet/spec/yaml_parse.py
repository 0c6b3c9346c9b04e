"""Reading YAML with every source location, within bounds: text -> LocMap/LocList/scalars.

PyYAML is used in safe mode only (no python tags, nothing executed) with a
loader that records where each key and value came from, rejects duplicate
keys (which plain PyYAML silently overwrites), and bounds what a small text can
make: aliases, nesting and the length of numbers. Each bound ends in a
SpecError at the place in the text that crossed it.
"""

from __future__ import annotations

import yaml

from dagnet.errors import ErrorLog, Loc, SpecError

MAX_DEPTH = 200            # levels of nesting: composing and constructing recurse once per level
MAX_ALIASES = 100
MAX_VALUES = 100_000       # values that aliases may add, counted as if written out; also a value's items
MAX_NUMBER_CHARS = 100     # Python refuses to read an int of over 4,300 digits: stop well before


class LocMap(dict):
    """A dict that remembers where each key and value was written."""

    def __init__(self, loc: Loc):
        super().__init__()
        self.loc = loc
        self.key_locs: dict = {}
        self.value_locs: dict = {}

    def key_loc(self, key) -> Loc:
        return self.key_locs.get(key, self.loc)

    def value_loc(self, key) -> Loc:
        return self.value_locs.get(key, self.key_loc(key))


class LocList(list):
    """A list that remembers where each item was written."""

    def __init__(self, loc: Loc):
        super().__init__()
        self.loc = loc
        self.locs: list[Loc] = []

    def item_loc(self, i: int) -> Loc:
        return self.locs[i] if i < len(self.locs) else self.loc


def _loader_for(file: str, errors: ErrorLog):
    """A SafeLoader subclass bound to ``file`` that builds LocMap/LocList."""

    class Loader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            # counters live on the instance: writing a class attribute invalidates Python's
            # method cache for the class, which made every later lookup 45% slower
            self.aliases = 0
            self.expanded = 0   # values added by aliases, had each been written out in full
            self.depth = 0
            self.sizes = {}     # id(node) -> values in it, aliases expanded

        def compose_node(self, parent, index):
            """Compose one node, bounding what aliases and nesting can make of a small text.

            YAML aliases can nest into exponentially large documents ("billion
            laughs"); every later stage copies values as if written out, so the
            expanded size is counted here, and the error points at the alias.
            """
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise _OverLimit(f"more than {MAX_ALIASES} YAML aliases", event.start_mark,
                                     "write the values out, or use a block for repeated structure")
                self.expanded += self.sizes.get(id(self.anchors.get(event.anchor)), 1)
                if self.expanded > MAX_VALUES:
                    raise _OverLimit(f"YAML aliases expand to more than {MAX_VALUES:,} values "
                                     f"(at `*{event.anchor}`)", event.start_mark,
                                     "aliases that nest aliases double the text at each level; "
                                     "use a block or `repeat` for repeated structure")
                return super().compose_node(parent, index)
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _OverLimit(f"YAML nested more than {MAX_DEPTH} levels deep", event.start_mark,
                                 "a spec needs a few levels; look for unclosed brackets")
            node = super().compose_node(parent, index)
            self.depth -= 1
            self.sizes[id(node)] = _expanded_size(node, self.sizes)
            return node

        def mark(self, node) -> Loc:
            return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1)

        def construct_short_number(self, node):
            """An int or float, refused past MAX_NUMBER_CHARS (Python will not read a 5,000-digit int)."""
            if len(node.value) > MAX_NUMBER_CHARS:
                raise _OverLimit(f"a number of {len(node.value):,} characters; numbers have at most "
                                 f"{MAX_NUMBER_CHARS}", node.start_mark,
                                 "sizes, counts and rates in a spec need only a few digits")
            if node.tag.endswith(":int"):
                return self.construct_yaml_int(node)
            return self.construct_yaml_float(node)

        def refuse_type(self, node):
            raise _OverLimit(f"a YAML `{node.tag.rsplit(':', 1)[-1]}` is not a spec value", node.start_mark,
                             "spec values are names, numbers, lists and mappings: drop the `!!` tag")

        def construct_located_map(self, node):
            self.flatten_mapping(node)
            result = LocMap(self.mark(node))
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    errors.add("mapping keys must be plain names", self.mark(key_node))
                    continue
                if key in result:
                    first = result.key_locs[key]
                    errors.add(f"duplicate key `{key}` (first written at line {first.line})",
                               self.mark(key_node), "give each key once; YAML keeps only the last")
                    continue
                result[key] = self.construct_object(value_node, deep=True)
                result.key_locs[key] = self.mark(key_node)
                result.value_locs[key] = self.mark(value_node)
            return result

        def construct_located_seq(self, node):
            result = LocList(self.mark(node))
            for child in node.value:
                result.append(self.construct_object(child, deep=True))
                result.locs.append(self.mark(child))
            return result

    for tag in ("binary", "set", "omap", "pairs"):     # YAML types no spec value is made of
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", Loader.refuse_type)
    # a date is text in a spec (`doc: 2001-12-14`), never a datetime
    Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_scalar)
    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_short_number)
    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_short_number)
    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_located_map)
    Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_located_seq)
    return Loader


class _OverLimit(yaml.MarkedYAMLError):
    """A bound of the loader exceeded: not a syntax error, but reported like one, with a hint."""

    def __init__(self, problem: str, mark, hint: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.hint = hint


def _expanded_size(node, sizes: dict) -> int:
    """Values in ``node`` with aliases written out, from its children's sizes (composed first)."""
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        return 1
    return 1 + sum(sizes.get(id(child), 1) for child in children)   # an unfinished (recursive) one: 1


def parse_yaml(text: str, file: str, errors: ErrorLog):
    """Parse YAML text into LocMap/LocList/scalars; syntax errors become SpecErrors."""
    try:
        return yaml.load(text, Loader=_loader_for(file, errors))  # noqa: S506 - SafeLoader subclass
    except _OverLimit as exc:
        mark = exc.problem_mark
        raise SpecError(exc.problem, Loc(file, mark.line + 1, mark.column + 1), exc.hint) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(file, mark.line + 1, mark.column + 1) if mark else Loc(file, 1, 1)
        raise SpecError(f"invalid YAML: {exc.problem or exc.context}", loc) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", Loc(file, 1, 1)) from None
    except RecursionError:
        raise SpecError("YAML nested too deeply", Loc(file, 1, 1)) from None
