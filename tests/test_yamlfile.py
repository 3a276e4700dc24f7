"""dbconf.yamlfile: safe YAML with the line and column of every key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dbconf.errors import ConfigError
from dbconf.origin import Origin
from dbconf.yamlfile import read_yaml

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
        ("profiles:\n  p: [1, 2\n", ":3:1", "expected ',' or ']'"),
        ("profiles:\n  p: {a: 1\n  q: 2\n", ":3:4", "expected ',' or '}'"),
        ("profiles:\n  p: 1\n q: 2\n", ":3:2", "expected <block end>"),
        ("profiles:\n\tp: 1\n", ":2:1", "found character '\\t' that cannot start any token"),
    ],
)
def test_malformed_yaml_names_file_line_and_column(
    write_config: WriteConfig, text: str, where: str, what: str
) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert problem.origin == f"{path}{where}"
    assert what in problem.message


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
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        read_yaml(path)


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
    assert "cannot read the configuration file (No such file or directory)" in problem.message
    assert "DBCONF_CONFIG" in problem.message


def test_empty_file_reads_as_nothing(write_config: WriteConfig) -> None:
    assert read_yaml(write_config("")) == (None, {})
