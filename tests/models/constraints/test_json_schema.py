"""JSON-schema regexes: every full match is JSON that the schema accepts, hand-written documents
in and out, integer ranges, the state count of a small schema, the contract, and the errors."""

from __future__ import annotations

import functools
import json
import re
import time

import numpy as np
import pytest

from ppl.models.constraints.automata import ByteAutomaton
from ppl.models.constraints.json_schema import (
    FLEXIBLE_WHITESPACE,
    integer_regex,
    schema_automaton,
    schema_regex,
)
from ppl.models.constraints.sequence_potential import check_contract

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}},
    },
    "required": ["name", "age", "tags"],
}

SCHEMAS = {
    "person": PERSON,
    "optional": {
        "type": "object",
        "title": "some optional members",
        "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 120},
            "b": {"type": "boolean"},
            "c": {"type": "null"},
            "d": {"type": "string", "minLength": 1, "maxLength": 3},
        },
        "required": ["b"],
        "additionalProperties": True,
    },
    "all optional": {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"const": "k"}},
    },
    "nested": {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            },
            "path": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {"id": {"enum": [1, 2, "three", True, None, 2.5]}},
                    "required": ["id"],
                },
            },
        },
        "required": ["point", "path"],
    },
    "bounded array": {
        "type": "array",
        "items": {"type": "integer", "exclusiveMinimum": -3, "maximum": 12},
        "minItems": 2,
        "maxItems": 4,
    },
    "type list": {"type": ["string", "null"], "maxLength": 2},
    "pattern": {"type": "string", "pattern": "^[a-z]{2}-[0-9]+$"},
    "two characters": {"type": "string", "minLength": 2, "maxLength": 2},
}

TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "number": (int, float),
    "integer": int,
}


def same(a, b):
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def valid(value, schema) -> bool:
    """A checker for the supported subset of JSON schema."""
    if "const" in schema:
        return same(value, schema["const"])
    if "enum" in schema:
        return any(same(value, v) for v in schema["enum"])
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return any(valid_as(value, name, schema) for name in types)


def valid_as(value, name, schema) -> bool:
    if not isinstance(value, TYPES[name]) or (isinstance(value, bool) and name != "boolean"):
        return False
    if name == "object":
        properties = schema.get("properties", {})
        return (
            set(value) <= set(properties)
            and set(schema.get("required", [])) <= set(value)
            and all(valid(v, properties[k]) for k, v in value.items())
        )
    if name == "array":
        count_ok = schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
        return count_ok and all(valid(v, schema["items"]) for v in value)
    if name == "string":
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return False
        return schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
    if name == "integer":
        return (
            schema.get("minimum", value) <= value <= schema.get("maximum", value)
            and schema.get("exclusiveMinimum", value - 1) < value
            and value < schema.get("exclusiveMaximum", value + 1)
        )
    return True


@functools.cache
def compiled(name: str, whitespace: str = "compact") -> ByteAutomaton:
    return schema_automaton(SCHEMAS[name], whitespace)


def sample(automaton: ByteAutomaton, rng: np.random.Generator, count: int) -> list[bytes]:
    """Random full matches: walk on the live bytes, stopping at accepting states now and then."""
    texts = []
    while len(texts) < count:
        state, text = 0, bytearray()
        while len(text) < 400:
            live = np.flatnonzero(automaton.transitions[state] != automaton.dead)
            if automaton.accepting[state] and (live.size == 0 or rng.random() < 0.15):
                texts.append(bytes(text))
                break
            byte = int(rng.choice(live))
            text.append(byte)
            state = int(automaton.transitions[state, byte])
    return texts


@pytest.mark.parametrize("whitespace", ["compact", "flexible"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_match_is_json_the_schema_accepts(name, whitespace):
    schema = SCHEMAS[name]
    pattern = schema_regex(schema, whitespace)
    automaton = compiled(name, whitespace)
    rng = np.random.default_rng(0)
    for text in sample(automaton, rng, 150):
        value = json.loads(text)
        assert valid(value, schema), (name, text)
        assert re.fullmatch(pattern, text.decode()), (name, text)  # Python's re agrees


VALID = [
    ("person", '{"name": "Ann", "age": 41, "tags": ["red", "blue"]}'),
    ("person", '{"name":"","age":-7,"tags":[]}'),
    ("person", '{"name": "\\u00e9t\\"\\\\\\n!", "age": 0, "tags": ["red"]}'),
    ("optional", '{"b": true}'),
    ("optional", '{"a": 120, "b": false, "c": null, "d": "xyz"}'),
    ("optional", '{"a": 0, "b": true, "d": "q"}'),
    ("optional", '{"b": false, "c": null}'),
    ("all optional", "{}"),
    ("all optional", '{"y": "k"}'),
    ("all optional", '{"x": -0.5e+3}'),
    ("all optional", '{"x": 1, "y": "k"}'),
    ("nested", '{"point": {"x": 1, "y": -2}, "path": [{"id": 1}, {"id": "three"}]}'),
    ("nested", '{"point": {"x": 0, "y": 0}, "path": [{"id": null}, {"id": true}, {"id": 2.5}]}'),
    ("bounded array", "[-2, 12]"),
    ("bounded array", "[0,1,2,3]"),
    ("type list", "null"),
    ("type list", '"ab"'),
    ("pattern", '"ab-123"'),
    ("two characters", '"\\t\\u0041"'),
    ("two characters", '"a\\ud83d\\ude00"'),  # a surrogate pair is one character
]

INVALID = [
    ("person", '{"age": 41, "name": "Ann", "tags": []}'),  # not in the declared order
    ("person", '{"name": "Ann", "age": 41}'),  # a required property is missing
    ("person", '{"name": "Ann", "age": 41, "tags": [], "x": 1}'),  # an extra property
    ("person", '{"name": "Annabelle", "age": 41, "tags": []}'),  # 9 characters
    ("person", '{"name": "Ann", "age": 041, "tags": []}'),  # a leading zero
    ("person", '{"name": "Ann", "age": -0, "tags": []}'),
    ("person", '{"name": "Ann", "age": 4.5, "tags": []}'),
    ("person", '{"name": "Ann", "age": 41, "tags": ["red",]}'),
    ("person", '{"name": "Ann", "age": 41, "tags": ["pink"]}'),
    ("person", '{"name" : "Ann", "age": 41, "tags": []}'),  # a space before ':' (compact)
    ("person", '{"name":  "Ann", "age": 41, "tags": []}'),  # two spaces
    ("person", ' {"name": "Ann", "age": 41, "tags": []}'),  # whitespace before the document
    ("person", '{"name": "a\nb", "age": 41, "tags": []}'),  # a raw control character
    ("person", '{"name": "a\tb", "age": 41, "tags": []}'),
    ("person", '{"name": "a\\xb", "age": 41, "tags": []}'),  # not an escape
    ("person", '{"name": "\\u12", "age": 41, "tags": []}'),
    ("person", '{"name": "é", "age": 41, "tags": []}'),  # non-ASCII must be escaped
    ("person", '{"name": "a"b", "age": 41, "tags": []}'),
    ("optional", "{}"),
    ("optional", '{"a": 121, "b": true}'),
    ("optional", '{"a": -1, "b": true}'),
    ("optional", '{"b": true, "d": ""}'),
    ("optional", '{, "b": true}'),
    ("optional", '{"b": true,}'),
    ("all optional", '{"y": "k", "x": 1}'),
    ("all optional", '{"y": "K"}'),
    ("all optional", '{"x": 01}'),
    ("all optional", '{"x": 1.}'),
    ("nested", '{"point": {"x": 1}, "path": [{"id": 1}]}'),
    ("nested", '{"point": {"x": 1, "y": 2}, "path": []}'),
    ("nested", '{"point": {"x": 1, "y": 2}, "path": [{"id": 1}, {"id": 1}, {"id": 1}, {"id": 1}]}'),
    ("nested", '{"point": {"x": 1, "y": 2}, "path": [{"id": 3}]}'),
    ("nested", '{"point": {"x": 1, "y": 2}, "path": [{"id": "3"}]}'),
    ("bounded array", "[1]"),
    ("bounded array", "[-3, 1]"),
    ("bounded array", "[1, 13]"),
    ("bounded array", "[1, 2, 3, 4, 5]"),
    ("type list", '"abc"'),
    ("type list", "nul"),
    ("type list", "1"),
    ("pattern", '"ab-"'),
    ("pattern", '"abc-1"'),
    ("two characters", '"\\t"'),
    ("two characters", '"\\ud83d\\ude00"'),
    ("two characters", '"\\ud83d\\u0041"'),  # a lone surrogate
]


@pytest.mark.parametrize(("name", "text"), VALID)
def test_valid_documents_match(name, text):
    schema = SCHEMAS[name]
    assert valid(json.loads(text), schema)
    for whitespace in ("compact", "flexible"):
        assert compiled(name, whitespace).complete(text.encode()) == 0.0, whitespace


@pytest.mark.parametrize(("name", "text"), INVALID)
def test_invalid_documents_do_not_match(name, text):
    automaton = compiled(name)
    assert automaton.complete(text.encode()) == -np.inf
    assert re.fullmatch(schema_regex(SCHEMAS[name]), text) is None


def test_json_dumps_output_matches():
    value = {"point": {"x": 3, "y": -4}, "path": [{"id": "three"}, {"id": None}]}
    compact, flexible = compiled("nested"), compiled("nested", "flexible")
    for text in (json.dumps(value), json.dumps(value, separators=(",", ":"))):
        assert compact.complete(text.encode()) == 0.0
        assert flexible.complete(text.encode()) == 0.0
    pretty = json.dumps(value, indent=2)  # nesting depth 3: a newline and 6 spaces at most
    assert compact.complete(pretty.encode()) == -np.inf
    assert flexible.complete(pretty.encode()) == 0.0
    too_much = json.dumps(value, indent=FLEXIBLE_WHITESPACE)
    assert flexible.complete(too_much.encode()) == -np.inf


def test_prefixes_die_at_the_first_wrong_byte():
    automaton = compiled("person")
    assert automaton.prefix(b'{"name": "Ann", "a') == 0.0
    assert automaton.prefix(b'{"name": "Ann", "ag') == 0.0
    assert automaton.prefix(b'{"name": "Ann", "x') == -np.inf
    assert automaton.prefix(b'{"name": "12345678') == 0.0
    assert automaton.prefix(b'{"name": "123456789') == -np.inf
    assert automaton.prefix(b'{"name": "Ann", "age": 0') == 0.0
    assert automaton.prefix(b'{"name": "Ann", "age": 01') == -np.inf
    assert automaton.prefix(b'{"name": "Ann", "age": 1, "tags": ["gr') == 0.0
    assert automaton.prefix(b'{"name": "Ann", "age": 1, "tags": ["gray') == -np.inf


@pytest.mark.parametrize(
    ("low", "high"),
    [(None, None), (0, None), (-5, 17), (3, 250), (None, -3), (-120, None), (7, 7), (10, 99),
     (0, 0), (-1000, -999), (19, 1001)],
)  # fmt: skip
def test_integer_ranges_are_exact(low, high):
    pattern = re.compile(integer_regex(low, high))
    for n in range(-1500, 1500):
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(pattern.fullmatch(str(n))) == inside, n
    for text in ("-0", "00", "01", "-01", "+1", ""):
        assert pattern.fullmatch(text) is None


def test_state_count_of_a_small_schema():
    compact = compiled("person").accepting.shape[0]
    flexible = compiled("person", "flexible").accepting.shape[0]
    assert compact < 300, compact  # 241 when written
    assert flexible < 400, flexible  # 355 when written


def test_the_contract_holds():
    schema = {
        "type": "array",
        "items": {"type": "integer", "minimum": -1, "maximum": 10},
        "maxItems": 2,
    }
    automaton = schema_automaton(schema)
    start = time.perf_counter()
    assert check_contract(automaton, b"[]0,1-", 5) == []
    assert time.perf_counter() - start < 5.0
    assert automaton.complete(b"[10, -1]") == 0.0
    assert automaton.complete(b"[11]") == -np.inf


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "#/definitions/a"}, "'\\$ref' at #"),
        ({"oneOf": [{"type": "string"}]}, "'oneOf'"),
        ({"type": "object", "patternProperties": {}}, "'patternProperties'"),
        ({"type": "string", "format": "date"}, "'format'"),
        ({"type": "object", "properties": {"a": {"anyOf": []}}}, "'anyOf' at #/properties/a"),
        ({"type": "array", "items": {"type": "integer", "multipleOf": 2}}, "'multipleOf'"),
        ({"type": "number", "minimum": 0}, "'minimum' does not apply"),
        ({"type": "string", "minItems": 1}, "'minItems' does not apply"),
        ({"type": "tuple"}, "'type' must be"),
        ({"description": "no type"}, "needs 'type'"),
        ({"type": "array"}, "needs 'items'"),
        ({"type": "array", "items": [{"type": "null"}]}, "needs 'items'"),
        ({"type": "array", "items": {"type": "null"}, "minItems": 3, "maxItems": 2}, "exceeds"),
        ({"type": "string", "maxLength": -1}, ">= 0"),
        ({"type": "string", "maxLength": 2.5}, "must be an integer"),
        ({"type": "object", "properties": {}, "required": ["a"]}, "required property 'a'"),
        ({"enum": [{"a": 1}]}, "scalars"),
        ({"enum": ["a"], "maxLength": 3}, "cannot be combined"),
        ({"type": "integer", "enum": ["a"]}, "matches nothing"),
        ({"type": "integer", "minimum": 3, "maximum": 2}, "no integer"),
        ({"type": "string", "pattern": "a+", "maxLength": 3}, "cannot be combined"),
    ],
)
def test_unsupported_schemas_are_errors(schema, message):
    with pytest.raises(ValueError, match=message):
        schema_regex(schema)


def test_unknown_whitespace_mode():
    with pytest.raises(ValueError, match="whitespace"):
        schema_regex(PERSON, whitespace="pretty")
