"""dbconf.loading.layers and dbconf.loading.merging: env vars, secrets files and overrides= as
layers.

Within a layer the order of its entries never matters; a key set twice, or a key under a value
that is not a mapping, is an error naming both; merging never scans the whole origins map; and
for ANY environment, loading returns or raises ConfigError, the same whatever the order of the
environment, with no password in any error text.
"""

from __future__ import annotations

import inspect
import itertools
import string
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbconf.config.origin import KeyPath, Origin
from dbconf.errors import ConfigError
from dbconf.loading.layers import Origins, merge, scalar
from dbconf.loading.loader import load_profile

WriteConfig = Callable[..., Path]
NoSecret = Callable[[Iterable[object], str], None]
P = "DBCONF_DATABASES__PRIMARY__"

FILE = """
    profiles:
      base:
        databases:
          primary:
            url: "sqlite:///base.db"
            pool: {size: 2}
            sessions:
              batch: {autoflush: false}
      p:
        extends: base
        databases:
          primary:
            connect_args: {timeout: 5}
          analytics:
            driver: postgresql+psycopg2
            host: ${ANALYTICS_HOST:-localhost}
            username: reporter
            password: ${ANALYTICS_PASSWORD:-unset}
            database: analytics
    """


def outcome(path: Path, environ: dict[str, str], **kwargs: Any) -> tuple[Any, ...]:
    """What a load gives: the config and every origin, or the error text."""
    try:
        loaded = load_profile("p", path=path, environ=environ, **kwargs)
    except ConfigError as e:
        return ("error", str(e))
    return ("ok", loaded.config, {key: str(o) for key, o in loaded.origins.items()})


def secrets_dir(files: dict[str, str], parent: Path) -> Path:
    root = Path(tempfile.mkdtemp(dir=parent))
    for name, text in files.items():
        (root / name).write_text(text)
        (root / name).chmod(0o600)
    return root


# -- order never matters within a layer -----------------------------------------------------

ORDERED_ENV = {
    P + "POOL": "{max_overflow: 2, timeout: 9}",
    P + "POOL__SIZE": "3",
    P + "POOL__TIMEOUT": "4",
    "DBCONF_DATABASES__PRIMARY": "{application_name: app, pool: {use_lifo: true}}",
}


def test_every_order_of_env_vars_gives_the_same_result(write_config: WriteConfig) -> None:
    path = write_config(FILE)
    results = [outcome(path, dict(order)) for order in itertools.permutations(ORDERED_ENV.items())]
    assert all(result == results[0] for result in results)
    pool = results[0][1].databases["primary"].pool
    # the shallower mapping first, the deeper keys over it
    assert (pool.size, pool.max_overflow, pool.timeout, pool.use_lifo) == (3, 2, 4.0, True)
    assert results[0][2][("databases", "primary", "pool", "size")] == f"env {P}POOL__SIZE"
    assert results[0][2][("databases", "primary", "pool", "max_overflow")] == f"env {P}POOL"


def test_every_order_of_overrides_gives_the_same_result(write_config: WriteConfig) -> None:
    path = write_config(FILE)
    overrides: dict[str, Any] = {
        "databases.primary.pool": {"max_overflow": 2},
        "databases.primary.pool.size": 3,
        "databases": {"primary": {"pool": {"timeout": 4}, "echo": True}},
    }
    results = [
        outcome(path, {}, overrides=dict(order))
        for order in itertools.permutations(overrides.items())
    ]
    assert all(result == results[0] for result in results)
    pool = results[0][1].databases["primary"].pool
    assert (pool.size, pool.max_overflow, pool.timeout) == (3, 2, 4.0)


def test_secrets_files_merge_like_env_vars(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(FILE)
    root = secrets_dir({P + "POOL__SIZE": "3", P + "POOL": "{max_overflow: 2}"}, tmp_path)
    loaded = load_profile("p", path=path, environ={"DBCONF_SECRETS_DIR": str(root)})
    pool = loaded.config.databases["primary"].pool
    assert (pool.size, pool.max_overflow) == (3, 2)
    assert loaded.origin("databases", "primary", "pool", "size") == Origin(
        "secret", str(root / f"{P}POOL__SIZE")
    )


# (layer, entries) where one entry sets a single value and another a key under it.
CONFLICTS = [
    ({P + "POOL": "5", P + "POOL__SIZE": "3"}, "pool", "databases.primary.pool.size"),
    ({P + "POOL": "", P + "POOL__SIZE": "3"}, "pool", "databases.primary.pool.size"),
    ({P + "POOL": "{size: 5}", P + "POOL__SIZE__X": "3"}, "pool.size", "pool.size.x"),
    ({"DBCONF_DATABASES__PRIMARY": "x", P + "URL": "sqlite://"}, "primary", "primary.url"),
    ({P + "SESSIONS": "[1]", P + "SESSIONS__BATCH__AUTOFLUSH": "1"}, "sessions", "autoflush"),
]


@pytest.mark.parametrize(("entries", "at", "under"), CONFLICTS)
@pytest.mark.parametrize("source", ["env", "secrets", "code"])
def test_a_key_under_a_single_value_is_an_error_naming_both(
    write_config: WriteConfig,
    tmp_path: Path,
    entries: dict[str, str],
    at: str,
    under: str,
    source: str,
) -> None:
    path = write_config(FILE)
    names = list(entries)
    if source == "code":
        overrides = {
            ".".join(n.removeprefix("DBCONF_").lower().split("__")): scalar("x", v)
            for n, v in entries.items()
        }
        texts = [
            outcome(path, {}, overrides=dict(o)) for o in itertools.permutations(overrides.items())
        ]
        lines, first = inspect.getsourcelines(outcome)
        at_line = first + next(i for i, text in enumerate(lines) if "load_profile(" in text)
        here = f"overrides= at {__file__}:{at_line}"
        named = [f"{here} and {here}"]  # the caller's file:line, of both entries
    else:
        if source == "env":
            environ = entries
        else:
            environ = {"DBCONF_SECRETS_DIR": str(secrets_dir(entries, tmp_path))}
        texts = [outcome(path, dict(reversed(environ.items()))), outcome(path, environ)]
        named = names
    assert texts[0] == texts[-1]
    kind, text = texts[0][:2]
    assert kind == "error"
    assert f".{at}: the first sets it to a single value" in text
    assert under in text
    assert all(name in text for name in named)


@pytest.mark.parametrize(
    ("environ", "overrides"),
    [
        ({P + "POOL__SIZE": "3", P.lower() + "pool__size": "4"}, None),
        ({}, {"databases.primary.pool.size": 3, "databases": {"primary": {"pool": {"size": 4}}}}),
    ],
)
def test_a_key_set_twice_in_one_layer_is_an_error(
    write_config: WriteConfig, environ: dict[str, str], overrides: dict[str, Any] | None
) -> None:
    text = outcome(write_config(FILE), environ, overrides=overrides)[1]
    assert "profiles.p.databases.primary.pool.size: both set this key; keep one" in text
    assert all(f"env {name}" in text for name in environ)


def test_layers_above_may_still_replace_a_mapping_with_a_value(write_config: WriteConfig) -> None:
    """Across layers the higher one wins: only one layer setting both is ambiguous."""
    loaded = load_profile(
        "p",
        path=write_config(FILE),
        environ={P + "POOL": "{size: 7}", P + "CONNECT_ARGS": "{a: 1}"},
        overrides={"databases.primary.connect_args": {"b": 2}},
    )
    assert loaded.config.databases["primary"].connect_args == {"timeout": 5, "a": 1, "b": 2}
    assert loaded.config.databases["primary"].pool.size == 7


OVERLAPPING = [
    ("databases", "primary"),
    ("databases", "primary", "pool"),
    ("databases", "primary", "pool", "size"),
    ("databases", "primary", "pool", "timeout"),
    ("databases", "primary", "connect_args"),
    ("databases", "primary", "connect_args", "a"),
]
VALUES = ["3", "", "{size: 4}", "{a: {b: 1}}", "[1]", "{pool: {size: 5}, echo: true}", "x"]


@given(
    st.dictionaries(st.sampled_from(OVERLAPPING), st.sampled_from(VALUES), max_size=5),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_any_overlapping_entries_give_one_result_in_every_order(
    write_config: WriteConfig, entries: dict[KeyPath, str], as_code: bool, rnd: Any
) -> None:
    path = write_config(FILE)
    items = list(entries.items())
    shuffled = rnd.sample(items, len(items))

    def run(chosen: list[tuple[KeyPath, str]]) -> tuple[Any, ...]:
        if as_code:
            overrides = {".".join(key): scalar("x", value) for key, value in chosen}
            return outcome(path, {}, overrides=overrides)
        return outcome(path, {"DBCONF_" + "__".join(key).upper(): value for key, value in chosen})

    assert run(items) == run(shuffled) == run(items[::-1])


# -- merging is linear: no scan of the whole origins map ------------------------------------


class CountingOrigins(dict[KeyPath, Origin]):
    """An origins map that counts how often it is walked as a whole."""

    scans = 0

    def __iter__(self) -> Iterator[KeyPath]:
        CountingOrigins.scans += 1
        return super().__iter__()

    def keys(self) -> Any:
        CountingOrigins.scans += 1
        return super().keys()

    def items(self) -> Any:
        CountingOrigins.scans += 1
        return super().items()

    def values(self) -> Any:
        CountingOrigins.scans += 1
        return super().values()


def layer_of(count: int, value: Any, source: str) -> tuple[dict[str, Any], Origins]:
    databases = {f"db_{i}": {"url": "sqlite://", "pool": {"size": value}} for i in range(count)}
    origins = CountingOrigins()
    origin = Origin("file", source)
    for name, db in databases.items():
        origins[("databases", name)] = origin
        for key in db:
            origins[("databases", name, key)] = origin
        origins[("databases", name, "pool", "size")] = origin
    return {"databases": databases}, origins


@pytest.mark.parametrize("value", [3, None, [1, {"a": 2}], {"inner": 1}])
def test_merge_never_scans_the_whole_origins_map(value: Any) -> None:
    tree, origins = layer_of(300, 1, "base")
    layer, layer_origins = layer_of(300, value, "top")
    layer["databases"]["db_0"]["pool"] = 5  # replaces a whole mapping
    layer["databases"]["db_1"] = None  # removes a database
    CountingOrigins.scans = 0
    merge(tree, origins, layer, layer_origins)
    assert CountingOrigins.scans == 0
    assert "db_1" not in tree["databases"]
    assert not any(key[:2] == ("databases", "db_1") for key in dict(origins))
    assert ("databases", "db_0", "pool", "size") not in dict(origins)
    if value is None:
        assert ("databases", "db_2", "pool", "size") not in dict(origins)
    else:
        assert origins[("databases", "db_2", "pool", "size")] == Origin("file", "top")


# -- scalar(): any text, never an exception -------------------------------------------------

ODD_SCALARS = [
    "1" * 5000,
    ".inf",
    "-.inf",
    ".nan",
    "!!binary x",
    "!!int x",
    "!!float x",
    "!!timestamp 2020-99-99",
    "!custom tag",
    "!!python/object:os.system x",
    "[" * 2000,
    "{a: [b, {c: *d}]}",
    "&a [*a]",
    "[&a [1, 2], *a]",
    "[" * 100 + "]" * 100,
    "? [a]\n: b",
]


@pytest.mark.parametrize("raw", ODD_SCALARS)
def test_odd_env_scalars_are_config_errors(write_config: WriteConfig, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=write_config(FILE), environ={P + "POOL__SIZE": raw})
    assert f"env {P}POOL__SIZE" in str(info.value)


@given(st.sampled_from(ODD_SCALARS) | st.text(max_size=80))
def test_scalar_never_raises(raw: str) -> None:
    assert scalar("url", raw) == raw  # string keys are taken as written
    value = scalar("size", raw)  # anything else parses like YAML, or stays the text
    if not raw.strip():
        assert value is None


# -- any environment: ConfigError or a result, independent of order, no password shown ------

REAL_PARTS = [
    "databases", "primary", "analytics", "pool", "size", "max_overflow", "sessions", "batch",
    "default", "autoflush", "url", "host", "port", "password", "password_file", "connect_args",
    "timeouts", "statement", "extends", "default_database", "workers", "echo", "query",
]  # fmt: skip
YAMLISH = [
    "", "5", "-1", "0", "true", "null", "~", "30s", "{size: 3}", "[1, 2]", "{a: {b: c}}",
    "!!binary x", "!!int x", ".inf", "1" * 400, "${SECRET_TOKEN}", "{1: 2}", "&a [*a]",
    "sqlite://", "postgresql://u@h/db", "'quoted'", "{url: 'sqlite://'}", "[[[",
]  # fmt: skip
URL_VARS = ["DATABASE_URL", "PRIMARY_DATABASE_URL", "ANALYTICS_DATABASE_URL", "NOPE_DATABASE_URL"]
SECRET_VARS = [P + "PASSWORD", P + "URL", "DBCONF_DATABASES__ANALYTICS__PASSWORD"]
PASSWORD = st.text(string.ascii_letters + string.digits + "@:%/#?&=+", min_size=6, max_size=12)
parts = st.one_of(st.sampled_from(REAL_PARTS), st.text("abcxyz_Z0", min_size=0, max_size=6))
env_name = st.lists(parts, min_size=1, max_size=5).map(lambda p: "DBCONF_" + "__".join(p)).map(
    str.upper
) | st.lists(parts, min_size=1, max_size=5).map(lambda p: "DBCONF_" + "__".join(p))
env_value = st.sampled_from(YAMLISH) | st.text(max_size=20)


@st.composite
def environments(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str], str]:
    """(environ, secrets files, password): random DBCONF_ vars, URL vars, DBCONF_PROFILE."""
    password = "Zq" + draw(PASSWORD)
    env = draw(st.dictionaries(env_name, env_value, max_size=6))
    url = f"postgresql://u:{password}@h/db"
    for var in draw(st.lists(st.sampled_from(URL_VARS), max_size=2)):
        env[var] = draw(st.sampled_from([url, "sqlite://", "not a url", ""]) | st.text(max_size=12))
    for var in draw(st.lists(st.sampled_from(SECRET_VARS), max_size=2)):
        env[var] = password if var.endswith("PASSWORD") else url
    if draw(st.booleans()):  # a mapping holding the password, well-formed or not
        mapping = draw(st.sampled_from(["{password: '%s'}", "{password: %s", "[%s]", "{url: %s}"]))
        env["DBCONF_DATABASES__PRIMARY"] = mapping % (url if "url" in mapping else password)
    if draw(st.booleans()):
        env["DBCONF_PROFILE"] = draw(st.sampled_from(["p", "base", "prod", "P", ""]))
    secrets = draw(st.dictionaries(env_name, env_value, max_size=3))
    if draw(st.booleans()):
        secrets[P + "PASSWORD"] = password
    return env, secrets, password


@given(environments(), st.randoms(use_true_random=False))
def test_any_environment_loads_or_raises_config_error(
    write_config: WriteConfig,
    tmp_path: Path,
    assert_no_secret: NoSecret,
    drawn: tuple[dict[str, str], dict[str, str], str],
    rnd: Any,
) -> None:
    env, secrets, password = drawn
    path = write_config(FILE)
    if secrets:
        env["DBCONF_SECRETS_DIR"] = str(secrets_dir(secrets, tmp_path))
    items = list(env.items())
    rnd.shuffle(items)
    try:
        first = outcome(path, env)
        again = outcome(path, dict(items))
        backwards = outcome(path, dict(reversed(items)))
    except Exception as e:  # anything but ConfigError is a bug
        pytest.fail(f"{type(e).__name__} escaped: {e}")
    assert first == again == backwards
    if first[0] == "error":
        assert_no_secret([first[1]], password)


MAPPING_TEMPLATES = [
    "{password: '%s'}",
    "{password: %s",
    "{password: %s, pool: {size: x}}",
    "[%s",
    "{url: 'postgresql://u:%s@h/db', pool: [}",
    "{connect_args: {a: 1}, password: %s]",
]


@given(st.sampled_from(MAPPING_TEMPLATES), PASSWORD, st.sampled_from(["env", "secrets"]))
def test_a_mapping_value_holding_a_password_is_never_shown(
    write_config: WriteConfig,
    tmp_path: Path,
    assert_no_secret: NoSecret,
    template: str,
    password: str,
    source: str,
) -> None:
    """A mapping-valued variable YAML cannot read is reported without quoting it."""
    password = "Zq" + password
    var, text = "DBCONF_DATABASES__PRIMARY", template % password
    if source == "env":
        environ = {var: text}
    else:
        environ = {"DBCONF_SECRETS_DIR": str(secrets_dir({var: text}, tmp_path))}
    result = outcome(write_config(FILE), environ)
    if result[0] == "ok":  # only the well-formed one loads
        assert template == MAPPING_TEMPLATES[0]
        assert result[1].databases["primary"].password.get_secret_value() == password
    else:
        assert_no_secret([result[1]], password)


# -- replicas and failover hosts across layers --------------------------------------------------


def test_host_and_hosts_replace_each_other_across_layers(write_config: WriteConfig) -> None:
    path = write_config(
        """
        profiles:
          p:
            databases:
              primary:
                driver: postgresql+psycopg2
                host: single
                database: app
                replicas:
                  - {hosts: [r1, r2]}
        """
    )
    environ = {
        P + "HOSTS": "a:5432,b:5433",
        "DBCONF_DATABASES__PRIMARY__REPLICAS__0__HOST": "r9",
    }
    loaded = load_profile("p", path=path, environ=environ)
    primary = loaded.config.databases["primary"]
    assert primary.host is None
    assert primary.sqlalchemy_url.query["host"] == ("a:5432", "b:5433")
    assert primary.replicas[0].hosts is None
    assert primary.replica_configs[0].masked_url() == "postgresql+psycopg2://r9/app"


def test_merge_sets_replicas_by_index_and_keeps_origins() -> None:
    file_origin = Origin("file", "f.yaml", 3, 5)
    env_origin = Origin("env", "X")
    tree: dict[str, Any] = {"databases": {"primary": {"replicas": [{"host": "r0", "port": 1}]}}}
    origins: Origins = {
        ("databases", "primary", "replicas", "0", "host"): file_origin,
        ("databases", "primary", "replicas", "0", "port"): file_origin,
    }
    layer = {"databases": {"primary": {"replicas": {"0": {"url": "postgresql://x/y"}, "1": {}}}}}
    replica: KeyPath = ("databases", "primary", "replicas", "0")
    layer_origins: Origins = {(*replica, "url"): env_origin, (*replica[:-1], "1"): env_origin}
    problems: list[Any] = []
    merge(tree, origins, layer, layer_origins, problems=problems)
    assert problems == []
    # the url replaces replica 0's location parts below it; index 1 adds a replica
    assert tree["databases"]["primary"]["replicas"] == [{"url": "postgresql://x/y"}, {}]
    assert origins == {(*replica, "url"): env_origin, (*replica[:-1], "1"): env_origin}
