"""JSON-schema constraints: the JSON texts a schema accepts, as a regular expression.

A schema without recursion (no `$ref`) over fixed-order object properties is a regular language
of texts, so `schema_regex` writes it as one regex and `schema_automaton` compiles that to a byte
automaton (`ppl.models.constraints.automata.regex`), whose prefix weight is -inf exactly
when no continuation can become a valid document. The regex uses only what `interegular` parses
(classes, groups, alternation, `*`, `+`, `?`, `{m,n}`), and Python's `re` reads it the same way.

Supported subset (anything else raises a ValueError naming the keyword and its location):

- `type` (one name or a list of names): "object", "array", "string", "integer", "number",
  "boolean", "null"; `enum` and `const` of strings, numbers, booleans and null (alone or with
  `type`, matched in their `json.dumps` spelling); annotations such as `title`, `description`,
  `default` and `examples` are ignored.
- object: `properties`, written in their declared order; those in `required` must appear, the
  others may be left out; `additionalProperties` is read as false whatever its value.
- array: `items` (one schema), `minItems`, `maxItems`.
- string: `minLength`, `maxLength` (counting code points: an escape is one, a surrogate pair of
  escapes too), or a trusted `pattern`: used as given for the text between the quotes (a
  leading `^` and a trailing `$` are dropped), so it must itself match only valid JSON string
  contents. Unescaped characters are printable ASCII; anything else is written as a `\\uXXXX`
  escape (lone surrogates are not allowed).
- integer: no leading zeros and no `-0`; `minimum`, `maximum`, `exclusiveMinimum` and
  `exclusiveMaximum` (numbers, as in drafts 6 and later) are exact, spelled as digit ranges.
- number: JSON numbers, without bounds (`minimum` and friends are rejected for numbers).

Whitespace between tokens: "compact" allows only one optional space after `:` and `,` (so both
`json.dumps(x)` and `json.dumps(x, separators=(",", ":"))` match); "flexible" allows up to
`FLEXIBLE_WHITESPACE` characters of JSON whitespace (space, tab, newline, carriage return) at
every token boundary inside the document (enough for `json.dumps(x, indent=2)` down to nesting
depth 3), never before or after it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ppl.models.constraints.automata import ByteAutomaton, regex
from ppl.models.constraints.sequence_potential import CONSTRAINTS

FLEXIBLE_WHITESPACE = 8

# one character of a JSON string: printable ASCII but `"` and `\`, or an escape: a \uXXXX
# escape of a code point outside the surrogates or a surrogate pair (one character, two escapes)
_HEX = "[0-9a-fA-F]"
_CHAR = (
    r'(?:[ !#-\[\]-~]|\\["\\/bfnrt]'
    rf"|\\u(?:[0-9a-cA-Ce-fE-F]{_HEX}{{3}}|[dD][0-7]{_HEX}{{2}})"
    rf"|\\u[dD][89abAB]{_HEX}{{2}}\\u[dD][c-fC-F]{_HEX}{{2}})"
)
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SPECIAL = set(".^$*+?{}[]\\|()")

_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
_KEYWORDS = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"minLength", "maxLength", "pattern"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": set(),
    "boolean": set(),
    "null": set(),
}
_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
}
_KNOWN = {"type", "enum", "const"} | _ANNOTATIONS | set().union(*_KEYWORDS.values())


def schema_regex(schema: dict, whitespace: str = "compact") -> str:
    """A regex whose full matches are the JSON texts valid under `schema` (see the module
    docstring for the supported subset and the whitespace modes)."""
    if whitespace == "compact":
        return _Writer(space="", colon=": ?", comma=", ?").value(schema, "#")
    if whitespace == "flexible":
        space = f"[ \\t\\n\\r]{{0,{FLEXIBLE_WHITESPACE}}}"
        writer = _Writer(space=space, colon=f"{space}:{space}", comma=f"{space},{space}")
        return writer.value(schema, "#")
    raise ValueError(f"whitespace must be 'compact' or 'flexible', got {whitespace!r}")


def schema_automaton(schema: dict, whitespace: str = "compact") -> ByteAutomaton:
    """The byte automaton of `schema_regex(schema, whitespace)`."""
    return regex(schema_regex(schema, whitespace))


@CONSTRAINTS.register("json-schema", "a JSON document valid under the given JSON schema")
def _json_schema(schema: str) -> ByteAutomaton:
    try:
        parsed = json.loads(schema)
    except json.JSONDecodeError as error:
        raise ValueError(f"the JSON schema is not valid JSON: {error}") from error
    return schema_automaton(parsed)


class _Writer:
    def __init__(self, space: str, colon: str, comma: str):
        self.space, self.colon, self.comma = space, colon, comma

    def value(self, schema: Any, path: str) -> str:
        if not isinstance(schema, dict):
            raise ValueError(f"a schema must be a dict, got {schema!r} at {path}")
        unknown = sorted(set(schema) - _KNOWN)
        if unknown:
            raise ValueError(f"unsupported JSON-schema keyword {unknown[0]!r} at {path}")
        types = schema.get("type")
        names = [types] if isinstance(types, str) else types
        if names is not None and (
            not isinstance(names, list) or not names or any(t not in _TYPES for t in names)
        ):
            raise ValueError(f"'type' must be one of {_TYPES} or a list of them at {path}")
        if "enum" in schema or "const" in schema:
            return self.literals(schema, names, path)
        if names is None:
            raise ValueError(f"a schema needs 'type', 'enum' or 'const' at {path}")
        keywords = set(schema) - _ANNOTATIONS - {"type"}
        for keyword in sorted(keywords):
            if not any(keyword in _KEYWORDS[t] for t in names):
                raise ValueError(f"keyword {keyword!r} does not apply to type {types!r} at {path}")
        branches = []
        for name in dict.fromkeys(names):
            own = {k: schema[k] for k in keywords & _KEYWORDS[name]}
            branches.append(getattr(self, name)(own, path))
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    def literals(self, schema: dict, names: list[str] | None, path: str) -> str:
        others = sorted(set(schema) - _ANNOTATIONS - {"type", "enum", "const"})
        if others:
            raise ValueError(f"'enum'/'const' cannot be combined with {others[0]!r} at {path}")
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        if not isinstance(values, list):
            raise ValueError(f"'enum' must be a list at {path}")
        if "const" in schema:
            values = [v for v in values if _same(v, schema["const"])]
        values = [v for v in values if names is None or any(_is_type(v, t) for t in names)]
        if not values:
            raise ValueError(f"the schema at {path} matches nothing")
        return "(?:" + "|".join(dict.fromkeys(_literal(v, path) for v in values)) + ")"

    def object(self, schema: dict, path: str) -> str:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, dict) or not isinstance(required, list):
            raise ValueError(f"'properties' must be a dict and 'required' a list at {path}")
        for name in required:
            if name not in properties:
                raise ValueError(f"required property {name!r} is not in 'properties' at {path}")
        members = [
            (_escape(json.dumps(name)) + self.colon + self.value(sub, f"{path}/properties/{name}"))
            for name, sub in properties.items()
        ]
        needed = [name in required for name in properties]
        if not members:
            return r"\{" + self.space + r"\}"
        # members appear in order, joined by commas: choose the first present member (it is
        # before or at the first required one), then each later member follows its comma
        tails = [""] * (len(members) + 1)
        for i in range(len(members) - 1, -1, -1):
            piece = self.comma + members[i]
            tails[i] = (piece if needed[i] else f"(?:{piece})?") + tails[i + 1]
        last_first = needed.index(True) if any(needed) else len(members) - 1
        body = "|".join(members[i] + tails[i + 1] for i in range(last_first + 1))
        inside = f"(?:{body}){self.space}"
        return r"\{" + self.space + (inside if any(needed) else f"(?:{inside})?") + r"\}"

    def array(self, schema: dict, path: str) -> str:
        items = schema.get("items")
        if not isinstance(items, dict):
            raise ValueError(f"an array needs 'items' with one schema (a dict) at {path}")
        low, high = _bounds(schema, "minItems", "maxItems", path)
        if high == 0:
            return r"\[" + self.space + r"\]"
        item = self.value(items, f"{path}/items")
        more = _repeat(self.comma + item, max(low - 1, 0), None if high is None else high - 1)
        inside = f"{item}{more}{self.space}"
        return r"\[" + self.space + (f"(?:{inside})?" if low == 0 else inside) + r"\]"

    def string(self, schema: dict, path: str) -> str:
        if "pattern" in schema:
            if "minLength" in schema or "maxLength" in schema:
                raise ValueError(f"'pattern' cannot be combined with a length bound at {path}")
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise ValueError(f"'pattern' must be a string at {path}")
            pattern = pattern.removeprefix("^")
            if pattern.endswith("$") and not pattern.endswith("\\$"):
                pattern = pattern[:-1]
            return f'"(?:{pattern})"'
        low, high = _bounds(schema, "minLength", "maxLength", path)
        return '"' + _repeat(_CHAR, low, high) + '"'

    def integer(self, schema: dict, path: str) -> str:
        for keyword, value in schema.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{keyword!r} must be a number, got {value!r} at {path}")
        bounds = [math.ceil(schema[k]) for k in ("minimum",) if k in schema]
        bounds += [math.floor(schema[k]) + 1 for k in ("exclusiveMinimum",) if k in schema]
        low = max(bounds) if bounds else None
        bounds = [math.floor(schema[k]) for k in ("maximum",) if k in schema]
        bounds += [math.ceil(schema[k]) - 1 for k in ("exclusiveMaximum",) if k in schema]
        high = min(bounds) if bounds else None
        if low is not None and high is not None and low > high:
            raise ValueError(f"the integer bounds at {path} admit no integer")
        return integer_regex(low, high)

    def number(self, schema: dict, path: str) -> str:
        return _NUMBER

    def boolean(self, schema: dict, path: str) -> str:
        return "(?:true|false)"

    def null(self, schema: dict, path: str) -> str:
        return "null"


def integer_regex(low: int | None = None, high: int | None = None) -> str:
    """A regex for the decimal integers in [low, high] (None: unbounded), without leading zeros
    or `-0`: nonnegative and negative parts, each split into ranges of equal digit counts."""
    if low is None and high is None:
        return "(?:0|-?[1-9][0-9]*)"
    parts = []
    if high is None or high >= 0:
        parts.append(_naturals(max(low or 0, 0), high))
    if low is None or low < 0:
        smallest = 1 if high is None or high >= 0 else -high
        parts.append("-" + _naturals(smallest, None if low is None else -low))
    return "(?:" + "|".join(parts) + ")"


def _naturals(low: int, high: int | None) -> str:
    if high is None:
        digits = len(str(low))
        return f"(?:{_same_length(str(low), '9' * digits)}|[1-9][0-9]{{{digits},}})"
    parts = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first, last = max(low, 10 ** (digits - 1) if digits > 1 else 0), min(high, 10**digits - 1)
        if first <= last:
            parts.append(_same_length(str(first), str(last)))
    return "(?:" + "|".join(parts) + ")"


def _same_length(low: str, high: str) -> str:
    """The numerals from `low` to `high`, both with the same number of digits."""
    if low == high:
        return low
    if low[0] == high[0]:
        return low[0] + _same_length(low[1:], high[1:])
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return f"[{low[0]}-{high[0]}]" + _repeat("[0-9]", rest, rest)
    parts = [low[0] + _same_length(low[1:], "9" * rest)]
    if int(high[0]) - int(low[0]) > 1:
        between = "".join(str(d) for d in range(int(low[0]) + 1, int(high[0])))
        parts.append(f"[{between}]" + _repeat("[0-9]", rest, rest))
    parts.append(high[0] + _same_length("0" * rest, high[1:]))
    return "(?:" + "|".join(parts) + ")"


def _repeat(atom: str, low: int, high: int | None) -> str:
    if high == 0:
        return ""
    group = atom if atom == "[0-9]" or atom == _CHAR else f"(?:{atom})"
    if high is None:
        return group + {0: "*", 1: "+"}.get(low, f"{{{low},}}")
    if low == high:
        return group if low == 1 else group + f"{{{low}}}"
    return group + ("?" if (low, high) == (0, 1) else f"{{{low},{high}}}")


def _bounds(schema: dict, low_key: str, high_key: str, path: str) -> tuple[int, int | None]:
    low, high = schema.get(low_key, 0), schema.get(high_key)
    for key, value in ((low_key, low), (high_key, high)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{key!r} must be an integer, got {value!r} at {path}")
        if value is not None and value < 0:
            raise ValueError(f"{key!r} must be >= 0, got {value} at {path}")
    if high is not None and low > high:
        raise ValueError(f"{low_key!r} exceeds {high_key!r} at {path}")
    return low, high


def _literal(value: Any, path: str) -> str:
    if isinstance(value, dict | list):
        raise ValueError(f"enum/const values must be scalars, got {value!r} at {path}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"enum/const values must be finite, got {value!r} at {path}")
    return _escape(json.dumps(value))


def _escape(text: str) -> str:
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    kinds: dict[str, Any] = {
        "string": str,
        "boolean": bool,
        "null": type(None),
        "object": dict,
        "array": list,
    }
    return isinstance(value, kinds[name])


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)
