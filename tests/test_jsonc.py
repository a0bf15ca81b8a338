"""JSONC parsing: a corpus of valid and invalid documents, and round-trip properties.

Invalid documents must fail at the line and column of the user's file, not of a stripped copy.
"""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.config import parse_jsonc
from emulator.config.jsonc import blank_jsonc, line_col, locate_values
from emulator.errors import ConfigError

WRANGLER_GENERATED = """\
/**
 * For more details on how to configure Wrangler, refer to:
 * https://developers.cloudflare.com/workers/wrangler/configuration/
 */
{
\t"$schema": "node_modules/wrangler/config-schema.json",
\t"name": "my-worker",
\t"main": "src/entry.py",
\t"compatibility_date": "2025-04-01",
\t"compatibility_flags": ["python_workers"],
\t"observability": {
\t\t"enabled": true,
\t},
\t/**
\t * Smart Placement
\t * Docs: https://developers.cloudflare.com/workers/configuration/smart-placement/#smart-placement
\t */
\t// "placement": { "mode": "smart" },
\t"routes": [{ "pattern": "https://example.com/*", "zone_name": "example.com" }],
\t/* "vars": { "MY_VARIABLE": "production_value" }, */
}
"""

VALID = [
    pytest.param('{"a": 1} // trailing note', {"a": 1}, id="line-comment-after-value"),
    pytest.param('{"a": 1}\n// last line, no newline', {"a": 1}, id="line-comment-at-eof"),
    pytest.param('{"a": 1}\n/* end */', {"a": 1}, id="block-comment-at-eof"),
    pytest.param('/* lead */ {"a": /* inline */ 1}', {"a": 1}, id="block-comments"),
    pytest.param('{\n  /* spans\n     lines */\n  "a": 1\n}', {"a": 1}, id="multiline-block"),
    pytest.param('{\r\n  // c\r\n  "a": 1, // x\r\n  "b": [1, 2,]\r\n}\r\n', {"a": 1, "b": [1, 2]},
                 id="crlf-line-comments"),
    pytest.param('{\r\n/* a\r\n b */ "a": 1\r\n}', {"a": 1}, id="crlf-block-comment"),
    pytest.param('{"a": 1, // c\r"b": 2}', {"a": 1, "b": 2}, id="lone-cr-ends-line-comment"),
    pytest.param('{"a": 1 // c\r\n}', {"a": 1}, id="crlf-comment-before-closer"),
    pytest.param('{"a": 1,}', {"a": 1}, id="trailing-comma-object"),
    pytest.param('[1, 2,]', [1, 2], id="trailing-comma-array"),
    pytest.param('{"a": [1, {"b": 2,},], }', {"a": [1, {"b": 2}]}, id="trailing-comma-nested"),
    pytest.param('{"a": 1, // last\n}', {"a": 1}, id="trailing-comma-before-line-comment"),
    pytest.param('[1, /* two */ ]', [1], id="trailing-comma-before-block-comment"),
    pytest.param('[1, // a\n /* b */ // c\n]', [1], id="trailing-comma-then-many-comments"),
    pytest.param('{"url": "https://example.com"}', {"url": "https://example.com"},
                 id="double-slash-in-string"),
    pytest.param('{"pattern": "https://example.com/*"} // route',
                 {"pattern": "https://example.com/*"}, id="route-pattern-in-string"),
    pytest.param('["*/", "/*", "//", "/**/"]', ["*/", "/*", "//", "/**/"],
                 id="comment-markers-in-strings"),
    pytest.param('["a\\"//not a comment"]', ['a"//not a comment'], id="escaped-quote-then-slashes"),
    pytest.param('{"k": "x\\" /* y */ z"}', {"k": 'x" /* y */ z'}, id="escaped-quote-then-block"),
    pytest.param('{"path": "c:\\\\"} // comment', {"path": "c:\\"},
                 id="escaped-backslash-before-quote"),
    pytest.param('["\\\\", // c\n 2]', ["\\", 2], id="escaped-backslash-then-comment"),
    pytest.param('["a,]", "b", ",}"]', ["a,]", "b", ",}"], id="commas-and-closers-in-strings"),
    pytest.param('["\\u002f\\u002f", "a\\/\\/b"]', ["//", "a//b"], id="escaped-slashes"),
    pytest.param('{"a":1//c\n}', {"a": 1}, id="comment-glued-to-value"),
    pytest.param('{"a" /* k */ : /* v */ 1}', {"a": 1}, id="comments-around-colon"),
    pytest.param('// header\n// more\n42', 42, id="comments-before-scalar"),
    pytest.param('{ /* nothing */ }', {}, id="empty-object-with-comment"),
    pytest.param('[1 /* a */, 2]', [1, 2], id="comment-before-comma"),
    pytest.param('\ufeff{"a": 1}', {"a": 1}, id="utf8-bom"),
    pytest.param('{\n  "name": "x",\n  // "main": "old.py",\n  /* "vars": {} */\n}', {"name": "x"},
                 id="commented-out-keys"),
    pytest.param('{"a": "/*"} /* "b": "x\\"" */', {"a": "/*"}, id="block-comment-holding-quotes"),
    pytest.param(WRANGLER_GENERATED, {
        "$schema": "node_modules/wrangler/config-schema.json", "name": "my-worker",
        "main": "src/entry.py", "compatibility_date": "2025-04-01",
        "compatibility_flags": ["python_workers"], "observability": {"enabled": True},
        "routes": [{"pattern": "https://example.com/*", "zone_name": "example.com"}],
    }, id="wrangler-generated-file"),
]

INVALID = [
    pytest.param('[1/**/2]', "Expecting ',' delimiter", 1, 7, id="comment-does-not-glue-tokens"),
    pytest.param("{'a': 1}", "double quotes", 1, 2, id="single-quoted-key"),
    pytest.param('{"a": \'b\'}', "double quotes", 1, 7, id="single-quoted-value"),
    pytest.param('{a: 1}', "Expecting property name enclosed in double quotes", 1, 2,
                 id="unquoted-key"),
    pytest.param('{\n  "a": 1\n  "b": 2\n}', "Expecting ',' delimiter", 3, 3, id="missing-comma"),
    pytest.param('{\r\n  "a": 1 // c\r\n  "b": 2\r\n}', "Expecting ',' delimiter", 3, 3,
                 id="missing-comma-crlf"),
    pytest.param('{\n  "a": 1 /* unclosed\n}', "unterminated /* comment", 2, 10,
                 id="unterminated-block-comment"),
    pytest.param('[1,\r\n 2 /* open', "unterminated /* comment", 2, 4,
                 id="unterminated-block-comment-crlf"),
    pytest.param('{"a": "abc}', "Unterminated string", 1, 7, id="unterminated-string"),
    pytest.param('{"a": "line\nbreak"}', "line break inside a string", 1, 12,
                 id="line-break-in-string"),
    pytest.param('[,]', "Expecting value", 1, 2, id="lone-comma"),
    pytest.param('[1,,2]', "Expecting value", 1, 4, id="double-comma"),
    pytest.param('{"a": 1,,}', "Expecting property name", 1, 9, id="double-trailing-comma"),
    pytest.param('{"a":,}', "Expecting value", 1, 6, id="comma-after-colon"),
    pytest.param('/* a "*/" */ 1', "Unterminated string", 1, 9,
                 id="block-comment-ends-at-first-close-even-in-quotes"),
    pytest.param('[1 / 2]', "Expecting ',' delimiter", 1, 4, id="lone-slash"),
    pytest.param('', "empty", 1, 1, id="empty-file"),
    pytest.param('// only a comment\n', "empty", 2, 1, id="only-comments"),
    pytest.param('{"a": 1}\n}', "unexpected text after", 2, 1, id="extra-data"),
    pytest.param('\ufeff[1 2]', "Expecting ',' delimiter", 1, 4, id="bom-not-counted-in-columns"),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_documents_parse(text, expected):
    assert parse_jsonc(text) == expected


@pytest.mark.parametrize(("text", "fragment", "line", "column"), INVALID)
def test_invalid_documents_fail_at_the_original_position(text, fragment, line, column):
    with pytest.raises(ConfigError) as caught:
        parse_jsonc(text, source="wrangler.jsonc")
    error = caught.value
    assert fragment in error.message
    assert (error.path, error.line, error.column) == ("wrangler.jsonc", line, column)
    assert error.code == "config.invalid"


def test_error_text_names_the_source_file():
    with pytest.raises(ConfigError) as caught:
        parse_jsonc("[1/**/2]", source="custom.jsonc")
    assert str(caught.value) == "[config.invalid] custom.jsonc:1:7: Expecting ',' delimiter"


def test_blanking_keeps_length_and_every_line_break():
    text = '{\r\n  /* a\r\n b */ "x": [1,], // c\r\n}'
    blanked = blank_jsonc(text)
    assert len(blanked) == len(text)
    assert [i for i, ch in enumerate(blanked) if ch in "\r\n"] == \
        [i for i, ch in enumerate(text) if ch in "\r\n"]
    assert json.loads(blanked) == {"x": [1]}


def test_line_col_treats_crlf_as_one_break():
    text = "a\r\nb\rc\nd"
    assert [line_col(text, text.index(ch)) for ch in "abcd"] == [(1, 1), (2, 1), (3, 1), (4, 1)]


def test_locate_values_points_at_keys_and_values():
    text = '// head\r\n{\r\n  "a": [1, {"b": 2}],\r\n  /* "a": 0 */ "c": null,\r\n}'
    found = locate_values(text)
    assert found[()].value == (2, 1)
    assert found[("a",)] == ((3, 3), (3, 8))
    assert found[("a", 1, "b")].value == (3, 18)
    assert found[("c",)].key == (4, 16)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values, indent=st.sampled_from([None, 0, 2, 4, "\t"]),
       ensure_ascii=st.booleans())
def test_any_json_survives_with_comments_after_every_newline(value, indent, ensure_ascii):
    text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
    assert parse_jsonc(text) == value
    # json.dumps escapes newlines inside strings, so every raw newline is between tokens.
    assert parse_jsonc(text.replace("\n", "\n// comment */ \"x\n")) == value
    assert parse_jsonc(text.replace("\n", "\r\n/* c // \" */")) == value


@settings(max_examples=200, deadline=None)
@given(value=json_values, indent=st.sampled_from([0, 2]))
def test_any_json_survives_trailing_commas(value, indent):
    text = json.dumps(value, indent=indent)
    # With indent, a line starting (after indentation) with } or ] is a closer, never string text.
    with_commas = re.sub(r"\n(\s*[}\]])", r",\n\1", text)
    assert parse_jsonc(with_commas) == value
