"""dbconf.loading.interpolation: only values from the file are expanded, and origins say how.

Values from env vars, secrets files and code are literal — every key inside a mapping they set
too, even where it merges into a mapping the file declares — and their origin is that source.
"""

from __future__ import annotations

import inspect
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Secret

from dbconf.config.origin import Origin
from dbconf.loading.loader import LoadedProfile, load_profile

WriteConfig = Callable[..., Path]
VAR = "DBCONF_DATABASES__PRIMARY__CONNECT_ARGS"

FILE = """
    profiles:
      p:
        databases:
          primary:
            url: "sqlite:///x.db"
            application_name: ${APP:-app}
            connect_args: {from_file: "${TOKEN}", nested: {deep: "${TOKEN}"}}
    """
ENV = {"TOKEN": "expanded"}


def load_with(
    source: str, path: Path, key_path: str, value: dict[str, Any], tmp: Path
) -> tuple[LoadedProfile, Origin]:
    """Set ``value`` (a mapping) at ``key_path`` from env, a secrets file, or code."""
    var = "DBCONF_" + key_path.upper().replace(".", "__")
    if source == "code":
        loaded = load_profile("p", path=path, environ=ENV, overrides={key_path: value})
        lines, first = inspect.getsourcelines(load_with)
        line = first + next(i for i, text in enumerate(lines) if "overrides={key_path" in text)
        return loaded, Origin("code", f"{__file__}:{line}")
    if source == "env":
        loaded = load_profile("p", path=path, environ={**ENV, var: yaml.safe_dump(value)})
        return loaded, Origin("env", var)
    root = Path(tempfile.mkdtemp(dir=tmp))
    (root / var).write_text(yaml.safe_dump(value))
    (root / var).chmod(0o600)
    loaded = load_profile("p", path=path, environ={**ENV, "DBCONF_SECRETS_DIR": str(root)})
    return loaded, Origin("secret", str(root / var))


def leaves(value: Any, path: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    """The key path of every value inside ``value`` that is not a mapping."""
    if not isinstance(value, dict):
        return {path: value}
    out: dict[tuple[str, ...], Any] = {}
    for key, item in value.items():
        out.update(leaves(item, (*path, key)))
    return out


@pytest.mark.parametrize("source", ["env", "secrets", "code"])
@pytest.mark.parametrize(
    ("key_path", "value"),
    [
        ("databases.primary.connect_args", {"application_name": "${TOKEN}"}),
        ("databases.primary.connect_args", {"nested": {"deep": "$${TOKEN}", "more": "${X"}}),
        ("databases.primary", {"application_name": "${TOKEN}"}),
        ("databases.primary", {"connect_args": {"from_file": "${TOKEN:-d}", "new": "${T}"}}),
        ("databases", {"primary": {"execution_options": {"x": {"y": "${TOKEN}"}}}}),
    ],
)
def test_mapping_from_env_secrets_or_code_is_literal_with_its_own_origin(
    write_config: WriteConfig, tmp_path: Path, source: str, key_path: str, value: dict[str, Any]
) -> None:
    loaded, origin = load_with(source, write_config(FILE), key_path, value, tmp_path)
    dumped = loaded.config.model_dump()
    prefix = tuple(key_path.split("."))
    for inner, leaf in leaves(value, prefix).items():
        assert loaded.origin(*inner) == origin, inner
        got: Any = dumped
        for part in inner:
            got = got[part]
        assert got == leaf  # taken literally
    # what the file wrote and the mapping did not replace is still expanded, from the file
    if "nested" not in value and key_path == "databases.primary.connect_args":
        assert dumped["databases"]["primary"]["connect_args"]["nested"] == {"deep": "expanded"}
        assert loaded.origin(*prefix, "nested", "deep").kind == "file"


TEMPLATES = st.sampled_from(["${TOKEN}", "${TOKEN:-d}", "${NOPE}", "$${X}", "${", "a${TOKEN}b"])
keys = st.text(string.ascii_lowercase, min_size=1, max_size=6)
mappings = st.recursive(
    TEMPLATES | st.text(max_size=8),
    lambda inner: st.dictionaries(keys, inner, min_size=1, max_size=3),
    max_leaves=8,
).filter(lambda v: isinstance(v, dict))


@given(mappings)
def test_no_key_of_an_env_mapping_is_ever_interpolated(
    write_config: WriteConfig, value: dict[str, Any]
) -> None:
    path = write_config(FILE)
    environ = {**ENV, VAR: yaml.safe_dump(value)}
    loaded = load_profile("p", path=path, environ=environ)
    connect_args = loaded.config.databases["primary"].connect_args
    for inner, leaf in leaves(value, ()).items():
        assert loaded.origin("databases", "primary", "connect_args", *inner) == Origin("env", VAR)
        got: Any = connect_args
        for part in inner:
            got = got[part]
        if isinstance(got, Secret):  # a secret-looking key (token, pass, …) is held masked
            got = got.get_secret_value()
        assert got == leaf


# -- origins say whether a variable or its default was used ---------------------------------


@pytest.mark.parametrize(
    ("template", "environ", "via"),
    [
        ("${HOST}", {"HOST": "h"}, "${HOST}"),
        ("${HOST:-h}", {}, "default of ${HOST} (unset)"),
        ("${HOST:-h}", {"HOST": ""}, "default of ${HOST} (empty)"),
        ("${HOST:-d}", {"HOST": "h"}, "${HOST}"),
        ("${HOST-h}", {}, "default of ${HOST} (unset)"),
        ("${HOST-d}", {"HOST": "h"}, "${HOST}"),
        ("${HOST:?need it}", {"HOST": "h"}, "${HOST}"),
        ("${A:-h}${B}", {"B": "x"}, "default of ${A} (unset), ${B}"),
        ("${A}-${B:-x}-${C:-y}", {"A": "h", "C": "z"}, "${A}, default of ${B} (unset), ${C}"),
    ],
)
def test_origin_says_when_the_default_was_used(
    write_config: WriteConfig, template: str, environ: dict[str, str], via: str
) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary: {{url: "sqlite:///x.db", application_name: "{template}"}}
        """
    )
    loaded = load_profile("p", path=path, environ=environ)
    origin = loaded.origin("databases", "primary", "application_name")
    assert origin.via == via
    assert str(origin).endswith(f"(via {via})")


def test_default_used_shows_in_an_error_about_the_value(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary: {url: "sqlite:///x.db", pool: {size: "${SIZE:-many}"}}
        """
    )
    with pytest.raises(ValueError, match=r"\(via default of \$\{SIZE\} \(unset\)\)"):
        load_profile("p", path=path, environ={})
