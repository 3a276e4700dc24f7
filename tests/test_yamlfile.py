"""dbconf.loading.yamlfile: safe YAML with the line and column of every key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import assert_no_secret
from hypothesis import given
from hypothesis import strategies as st

from dbconf.config.origin import Origin
from dbconf.errors import ConfigError
from dbconf.loading.files import CONFIG_LIMIT_VAR, DEFAULT_LIMITS
from dbconf.loading.yamlfile import MAX_DEPTH, MAX_NODES, read_yaml, value_cap

WriteConfig = Callable[..., Path]


def test_data_and_the_position_of_every_key(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          development:
            databases:
              primary: {url: "sqlite:///x.db", pool: {size: 3}}
        """
    )
    data, origins = read_yaml(path)
    assert data == {
        "profiles": {
            "development": {
                "databases": {"primary": {"url": "sqlite:///x.db", "pool": {"size": 3}}}
            }
        }
    }
    assert origins[("profiles",)] == Origin("file", str(path), 1, 1)
    assert origins[("profiles", "development", "databases")] == Origin("file", str(path), 3, 5)
    primary = ("profiles", "development", "databases", "primary")
    assert origins[primary] == Origin("file", str(path), 4, 7)
    assert origins[(*primary, "url")] == Origin("file", str(path), 4, 17)
    assert origins[(*primary, "pool", "size")] == Origin("file", str(path), 4, 47)
    assert str(origins[(*primary, "pool", "size")]) == f"{path}:4:47"


def test_anchors_and_merge_keys(write_config: WriteConfig) -> None:
    path = write_config(
        """
        x-pool: &pool
          size: 5
          max_overflow: 10
        profiles:
          p:
            pool:
              <<: *pool
              size: 20
            copy: *pool
        """
    )
    data, origins = read_yaml(path)
    assert data["profiles"]["p"]["pool"] == {"size": 20, "max_overflow": 10}
    assert data["profiles"]["p"]["copy"] == {"size": 5, "max_overflow": 10}
    # The key written in place wins and is located there; merged keys point at the anchor.
    assert origins[("profiles", "p", "pool", "size")] == Origin("file", str(path), 8, 7)
    assert origins[("profiles", "p", "pool", "max_overflow")] == Origin("file", str(path), 3, 3)
    assert origins[("profiles", "p", "copy", "size")] == Origin("file", str(path), 2, 3)


def test_duplicate_key_is_an_error_at_the_second_key(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases: {}
            databases: {}
        """
    )
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(info.value) == (
        f"invalid database configuration: {path}:4:5: "
        "found duplicate key 'databases'; remove one of them"
    )


def test_merge_key_overridden_in_place_is_not_a_duplicate(write_config: WriteConfig) -> None:
    path = write_config(
        """
        base: &base {size: 1}
        pool: {<<: *base, size: 2}
        """
    )
    data, _ = read_yaml(path)
    assert data["pool"] == {"size": 2}


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("profiles:\n  p: [1, 2\n", ":3:1", "the '[' opened at 2:6 is never closed: add ']'"),
        ("profiles:\n  p: {a: 1\n", ":3:1", "the '{' opened at 2:6 is never closed: add '}'"),
        ("a: [1, [2, 3]\n", ":2:1", "the '[' opened at 1:4 is never closed"),
        ("a: [1, {b: [2]}\n", ":2:1", "the '[' opened at 1:4 is never closed"),
        ("a: [1,\n", ":2:1", "the '[' opened at 1:4 is never closed"),
        ("a: {b: 1\n  c: 2\n", ":2:4", "inside the '{' opened at 1:4, separate items with ','"),
        ("a: 'abc\nb: 1\n", ":3:1", "the ' opened at 1:4 is never closed: add the closing '"),
        ('a:\n  b: "abc\n', ":3:1", 'the " opened at 2:6 is never closed: add the closing "'),
        ("profiles:\n  p: 1\n q: 2\n", ":3:2", "check the indentation of this line"),
        ("a:\n  b: 1\n c: 2\n", ":3:2", "check the indentation of this line"),
        ("- a\nb: 1\n", ":2:1", "check the indentation of this line"),
        ("profiles:\n\tp: 1\n", ":2:1", "YAML indentation must use spaces, not tabs"),
        ("a:\n  b: 1\n\tc: 2\n", ":3:1", "YAML indentation must use spaces, not tabs"),
        ("a: b: c\n", ":1:5", "a value containing ': ' must be quoted"),
        ("a: 1\n b: 2\n", ":2:3", "a value containing ': ' must be quoted"),
        ("a\nb: 1\n", ":2:2", "a value containing ': ' must be quoted"),
        ("a: *nope\n", ":1:4", "an alias (*name) that refers to no anchor"),
        ("a: &x 1\nb: &x 2\n", ":2:4", "an anchor (&name) is defined a second time here"),
        ("a: 1\n---\nb: 2\n", ":2:1", "a second YAML document ('---') here"),
        ("a: !h!x 1\n", ":1:4", "a value starting with '!' is read as a YAML tag: quote"),
        ('path: "C:\\Users\\x"\n', ":1:12", "a backslash in a double-quoted value starts"),
        ('path: "a\\qb"\n', ":1:10", "write the value in single quotes, or double each"),
        ("a: *\n", ":1:5", "'*' (an alias) and '&' (an anchor) must be followed by a name"),
        ("a: & b\n", ":1:5", "'*' (an alias) and '&' (an anchor) must be followed by a name"),
        ("a: @x\n", ":1:4", "a value cannot start with this character: quote the value"),
        ("a: `x\n", ":1:4", "a value cannot start with this character: quote the value"),
        ("? [a]\n: 1\n", ":1:3", "a key must be a single value, not a list or a mapping"),
        ("a: 'it's'\n", ":1:8", "inside single quotes write '' for a '"),
        ('a: "x" y\n', ":1:8", "a quoted value ends at its closing quote"),
        ("a: [1, 2]]\n", ":1:10", "a ']' that closes nothing: remove it"),
        ("a: {b: 1}}\n", ":1:10", "a '}' that closes nothing: remove it"),
        ("a: !!binary ab\n", ":1:4", "!!binary needs base64 data"),
        ("a: !!binary ab\u00e9\n", ":1:4", "!!binary needs base64 data"),
        ("a: 1\nb: x\x00y\n", ":2:5", "the character #x0000 is not allowed in YAML"),
        ("a: 1\r\nb: \x07\n", ":2:4", "the character #x0007 is not allowed in YAML"),
    ],
)
def test_malformed_yaml_names_file_line_column_and_what_to_do(
    write_config: WriteConfig, text: str, where: str, what: str
) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert (problem.origin, problem.path) == (f"{path}{where}", "")
    assert what in problem.message


@pytest.mark.parametrize(
    "text",
    [
        "password: *Secr3t\n",  # an unquoted password starting with '*' is an alias
        "password: &Secr3t x\nother: &Secr3t y\n",
        "password: !Secr3t x\n",  # ... with '!' a tag
        "password: !Secr3t!x y\n",
        "password: !!Secr3t x\n",
        'password: "Secr3t\n',
        "password: [Secr3t\n",
    ],
)
def test_yaml_errors_never_quote_the_value(write_config: WriteConfig, text: str) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert_no_secret([info.value], "Secr3t")  # str, repr, traceback and the exception chain


def test_python_tags_are_rejected_and_never_run(write_config: WriteConfig, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_config(
        f"""
        profiles:
          p: !!python/object/apply:os.system ["touch {marker}"]
        """
    )
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert not marker.exists()
    (problem,) = info.value.problems
    assert problem.origin == f"{path}:2:6"
    assert "python/object/apply:os.system" in problem.message
    assert "only plain YAML is allowed" in problem.message


@pytest.mark.parametrize(
    "tagged",
    ["!!python/name:os.system", "!!python/object:builtins.dict {}", "!custom 1"],
)
def test_other_unsafe_or_custom_tags_are_rejected(write_config: WriteConfig, tagged: str) -> None:
    path = write_config(f"value: {tagged}\n")
    with pytest.raises(ConfigError, match="could not determine a constructor") as info:
        read_yaml(path)
    assert "only plain YAML is allowed" in str(info.value)


def test_non_string_key_is_an_error_with_its_position(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            1: x
            2: y
        """
    )
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert [(p.origin, p.path, p.message) for p in info.value.problems] == [
        (f"{path}:3:5", "profiles.p", "key 1 must be a string; quote it"),
        (f"{path}:4:5", "profiles.p", "key 2 must be a string; quote it"),
    ]


def test_missing_file_says_how_to_point_at_another(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert problem.origin == str(path)
    assert problem.message == (
        "cannot read the configuration file (No such file or directory); name the right file "
        "with --config on the command line, path= in code, or env DBCONF_CONFIG"
    )


def test_empty_file_reads_as_nothing(write_config: WriteConfig) -> None:
    assert read_yaml(write_config("")) == (None, {})


# --- values a YAML tag cannot construct ---------------------------------------------------------

BAD_SCALARS = [
    ("x-released: 2024-02-30", "a date or timestamp"),  # no such day
    ("x-released: 2023-02-29", "a date or timestamp"),
    ("x-released: 2024-13-01", "a date or timestamp"),
    ("x-released: 2024-01-01 25:61:00", "a date or timestamp"),
    ("x-at: !!timestamp junk", "a date or timestamp"),
    ("x-at: !!timestamp 2024-02-30", "a date or timestamp"),
    ("x-flag: !!bool maybe", "a boolean"),
    ("x-flag: !!bool 1", "a boolean"),
    ("x-n: !!int abc", "an integer"),
    ("x-n: !!int 1.5", "an integer"),
    ("x-n: !!int ''", "an integer"),
    ("x-n: " + "9" * 5000, "an integer"),  # Python's 4300-digit limit
    ("x-n: -" + "1_2" * 3000, "an integer"),
    ("x-f: !!float x", "a number"),
    ("x-f: !!float ''", "a number"),
]


@pytest.mark.parametrize(("line", "what"), BAD_SCALARS)
def test_value_a_tag_cannot_construct_is_an_error_at_its_position(
    write_config: WriteConfig, line: str, what: str
) -> None:
    path = write_config(f"profiles: {{}}\n{line}\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert problem.origin == f"{path}:2:{line.index(': ') + 3}"
    assert problem.message.startswith(f"this value cannot be read as {what}")
    assert problem.message.endswith("fix it, or quote it to keep it as text")
    assert_no_secret([info.value], line.partition(": ")[2])  # the value may be a password


TAGS = ["", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!null ", "!!str "]
TAGS += ["!!map ", "!!seq ", "!!set ", "!!omap ", "!!pairs ", "!!merge ", "!!value ", "!!yaml "]


@given(
    tag=st.sampled_from(TAGS),
    value=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
    | st.from_regex(r"\A[-+]?[0-9_]{1,12}([-:. T][0-9]{1,3}){0,6}\Z")
    | st.from_regex(r"\A[-+]?(0[xob])?[0-9a-fA-F_.:eE]{0,12}\Z"),
    style=st.sampled_from(["plain", "single", "double"]),
)
def test_any_tagged_scalar_reads_or_is_a_located_config_error(
    tmp_path: Path, tag: str, value: str, style: str
) -> None:
    quoted = {"plain": value, "single": "'" + value.replace("'", "''") + "'"}
    scalar = quoted.get(style, json.dumps(value))
    path = tmp_path / "c.yaml"
    path.write_text(f"key: {tag}{scalar}\n", encoding="utf-8")
    try:
        read_yaml(path)
    except ConfigError as e:
        problems = e.problems
    else:
        return
    assert all(p.origin.startswith(f"{path}:") for p in problems), problems


# --- aliases: recursion, bombs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: &x [*x]\n", ":1:8"),
        ("a: &x {b: *x}\n", ":1:11"),
        ("a: &x\n  b:\n    - c\n    - {d: [*x]}\n", ":4:12"),
        ("a: &x\n  <<: *x\n", ":2:7"),  # a merge key merging the mapping into itself
        ("&x [1, [2, *x]]\n", ":1:12"),
        ("a: &x [1]\nb: &y [*y, *x]\n", ":2:8"),
    ],
)
def test_recursive_alias_is_an_error_at_the_alias(
    write_config: WriteConfig, text: str, where: str
) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert problem.origin == f"{path}{where}"
    assert problem.message.startswith("this alias refers to a node that contains it")


def test_an_alias_to_a_finished_node_is_fine(write_config: WriteConfig) -> None:
    path = write_config("a: &x [1, &y {b: 2}]\nc: [*x, *y, *x]\n")
    data, _ = read_yaml(path)
    assert data["c"] == [[1, {"b": 2}], {"b": 2}, [1, {"b": 2}]]


def _billion_laughs(levels: int = 9) -> str:
    lines = ['lol0: &lol0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int = 8) -> str:
    """Each level: ten mappings merging the whole level below (``<<: *b``)."""
    lines = ["b0: &b0 {" + ", ".join(f"k{j}: {j}" for j in range(10)) + "}"]
    for i in range(1, levels + 1):
        items = ", ".join(f"m{j}: {{<<: *b{i - 1}}}" for j in range(10))
        lines.append(f"b{i}: &b{i} {{{items}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        _billion_laughs(),  # ~560 bytes, a billion values
        _billion_laughs().replace("[", "{").replace("]", "}").replace("*lol", "? *lol"),
        _merge_bomb(),
        "[" + "0, " * (MAX_NODES + 1) + "]\n",  # no alias, just too many values
    ],
    ids=["sequences", "mapping-keys", "merge-keys", "flat"],
)
def test_document_expanding_past_the_value_cap_is_an_error(
    write_config: WriteConfig, text: str
) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert problem.origin.startswith(f"{path}:")
    assert f"more than {MAX_NODES} values once aliases are expanded" in problem.message


def test_a_document_just_under_the_value_cap_is_read(write_config: WriteConfig) -> None:
    path = write_config("[" + "0, " * (MAX_NODES - 1) + "]\n")  # the list is one value too
    data, _ = read_yaml(path)
    assert len(data) == MAX_NODES - 1


def test_a_raised_size_cap_allows_more_values_but_no_bomb(write_config: WriteConfig) -> None:
    """A big generated configuration (10k databases) needs more than MAX_NODES values; raising
    DBCONF_MAX_CONFIG_BYTES raises the value cap in proportion."""
    cap = 4 * MAX_NODES
    big = write_config("[" + "0, " * (cap - 1) + "]\n")  # 1.2 MB: over the default 1 MiB
    twice = 2 * DEFAULT_LIMITS[CONFIG_LIMIT_VAR]
    assert value_cap(twice) == 2 * MAX_NODES
    with pytest.raises(ConfigError) as info:
        read_yaml(big, max_bytes=twice)  # the file fits, its 400k values do not
    assert f"more than {2 * MAX_NODES} values" in info.value.problems[0].message
    data, _ = read_yaml(big, max_bytes=4 * DEFAULT_LIMITS[CONFIG_LIMIT_VAR])
    assert len(data) == cap - 1
    bomb = write_config(_billion_laughs(), name="bomb.yaml")
    with pytest.raises(ConfigError) as info:
        read_yaml(bomb, max_bytes=1 << 30)
    assert "values once aliases are expanded" in info.value.problems[0].message


# --- nesting depth ---------------------------------------------------------------------------


def _nested(kind: str, depth: int) -> str:
    """A document whose innermost value sits at ``depth`` (the top node is level 1)."""
    if kind == "flow-seq":
        return "[" * (depth - 1) + "1" + "]" * (depth - 1) + "\n"
    if kind == "flow-map":
        return "{a: " * (depth - 1) + "1" + "}" * (depth - 1) + "\n"
    if kind == "block-map":
        return (
            "".join(f"{'  ' * i}k{i}:\n" for i in range(depth - 2)) + "  " * (depth - 2) + "k: 1\n"
        )
    if kind == "block-seq":
        return "- " * (depth - 1) + "1\n"
    # through an alias: an anchored value half as deep, used half-deep
    half = depth // 2
    return (
        "x-a: &a "
        + "[" * half
        + "1"
        + "]" * half
        + "\n"
        + "b: "
        + "[" * (depth - half - 2)
        + "*a"
        + "]" * (depth - half - 2)
        + "\n"
    )


KINDS = ["flow-seq", "flow-map", "block-map", "block-seq", "alias"]


@pytest.mark.parametrize("kind", KINDS)
def test_nesting_up_to_the_cap_is_read(write_config: WriteConfig, kind: str) -> None:
    data, _ = read_yaml(write_config(_nested(kind, MAX_DEPTH)))
    assert data is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900])
@pytest.mark.parametrize("kind", KINDS)
def test_nesting_past_the_cap_is_an_error(write_config: WriteConfig, kind: str, depth: int) -> None:
    path = write_config(_nested(kind, depth))
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert problem.origin.startswith(f"{path}:")
    assert problem.message.startswith(f"nested deeper than {MAX_DEPTH} levels")
