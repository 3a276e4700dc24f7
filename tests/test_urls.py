"""dbconf.config.urls: URL parts lifted from the query, decoded hosts, URLs a driver would reject.

Loading goes through ``load_profile`` (``overrides=`` in code or env vars; a tmp file), so each
problem is checked as the user sees it: a ConfigError naming the key, never the secret.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pymysql
import pytest
import sqlalchemy as sa
from conftest import assert_no_secret
from hypothesis import event, given
from hypothesis import strategies as st
from pydantic import SecretStr

from dbconf.cli import main
from dbconf.config import DatabaseConfig
from dbconf.errors import ConfigError
from dbconf.loading.loader import LoadedProfile, load_profile
from dbconf.runtime.registry import Database

WriteConfig = Callable[[str], Path]
SECRET = "Zq9-s3cr3t"
FILE = """
profiles:
  p:
    databases:
      primary:
        url: sqlite://
"""


@pytest.fixture
def config(write_config: WriteConfig) -> Path:
    return write_config(FILE)


def load(path: Path, **primary: Any) -> LoadedProfile:
    return load_profile("p", path=path, environ={}, overrides={"databases": {"primary": primary}})


def problems(path: Path, **primary: Any) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        load(path, **primary)
    return [
        (p.origin, p.path.removeprefix("profiles.p.databases.primary."), p.message)
        for p in info.value.problems
    ]


@pytest.fixture
def engines() -> Iterator[Callable[[LoadedProfile], sa.Engine]]:
    """The engine of a loaded profile's primary database, disposed after the test."""
    built: list[sa.Engine] = []

    def engine(loaded: LoadedProfile) -> sa.Engine:
        built.append(Database("primary", loaded.config.databases["primary"]).engine)
        return built[-1]

    yield engine
    for e in built:
        e.dispose()


# -- connection parts in the query are lifted into the URL (item 3) ---------------------------


@pytest.mark.parametrize(
    ("url", "driver_kw"),
    [
        (f"postgresql://h/db?user=bob&password={SECRET}", {"user": "bob", "password": SECRET}),
        (f"postgresql+psycopg2://h/x?dbname=db&password={SECRET}", {"dbname": "db"}),
        (f"mariadb+pymysql://h/db?user=bob&password={SECRET}", {"user": "bob"}),
        (f"mysql+pymysql://h/x?passwd={SECRET}&database=db", {"password": SECRET}),
        (f"mysql+pymysql://h/x?db=db&password={SECRET}", {"database": "db"}),
    ],
)
def test_query_user_and_password_become_url_fields_and_are_masked(
    config: Path, engines: Callable[[LoadedProfile], sa.Engine], url: str, driver_kw: dict[str, Any]
) -> None:
    loaded = load(config, url=url)
    engine = engines(loaded)
    assert engine.url.password == SECRET
    assert "password" not in engine.url.query
    assert "passwd" not in engine.url.query
    assert_no_secret([str(engine.url), repr(engine), repr(loaded.config)], SECRET)
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    assert driver_kw.items() <= kwargs.items()  # the same meaning for the driver


@pytest.mark.parametrize("where", ["url", "query"])
def test_explicit_parts_beat_query_parts(config: Path, where: str) -> None:
    query = {"user": "q_user", "password": "q_pass", "dbname": "q_db", "host": "qh", "port": "7"}
    url = "postgresql://u_user:u_pass@uh:1/u_db"
    fields: dict[str, Any] = {"url": url + "?" + "&".join(f"{k}={v}" for k, v in query.items())}
    if where == "query":
        fields = {"url": url, "query": query}
    explicit = {"username": "e", "password": "e_pass", "host": "eh", "port": 2, "database": "e_db"}
    got = load(config, **fields, **explicit).config.databases["primary"].sqlalchemy_url
    assert (got.username, got.password, got.host, got.port, got.database) == tuple(
        explicit.values()
    )
    assert dict(got.query) == {}  # ?host/?port dropped: the explicit host and port replace them


def test_query_part_beats_the_urls_own_part_as_the_driver_would(config: Path) -> None:
    got = load(config, url="postgresql://a:pa@h/da?user=b&password=pb&dbname=db")
    url = got.config.databases["primary"].sqlalchemy_url
    assert (url.username, url.password, url.database) == ("b", "pb", "db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?password=a&password=b", "gives ?password 2 times"),
        ("mysql+pymysql://h/db?password=a&passwd=b", "gives both ?password and ?passwd"),
    ],
)
def test_a_part_given_twice_in_the_query_is_an_error(config: Path, url: str, message: str) -> None:
    ((origin, path, text),) = problems(config, url=url)
    lines, first = inspect.getsourcelines(load)  # overrides= is told at the caller's line
    line = first + next(i for i, text in enumerate(lines) if "load_profile(" in text)
    assert (origin, path) == (f"overrides= at {__file__}:{line}", "url")
    assert message in text
    assert "a" not in text.split("; ")[-1].replace("give", "")  # no value echoed


# -- percent-encoded hosts (item 4) -----------------------------------------------------------

SOCKET_DIR = "/var/run/postgresql"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://%2Fvar%2Frun%2Fpostgresql/test",
        "postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/test",
        "postgresql+psycopg2://postgres@%2fvar%2frun%2fpostgresql:5432/test",
    ],
)
def test_percent_encoded_host_reaches_the_driver_decoded(
    config: Path, engines: Callable[[LoadedProfile], sa.Engine], url: str
) -> None:
    engine = engines(load(config, url=url))
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    assert kwargs["host"] == SOCKET_DIR
    # libpq takes it as a socket directory (not a host name to resolve): it connects if the
    # server listens there, else it names the socket file it tried.
    if Path(SOCKET_DIR, ".s.PGSQL.5432").exists():
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    else:
        with pytest.raises(sa.exc.OperationalError, match=f"{SOCKET_DIR}/.s.PGSQL.5432"):
            engine.connect()


def test_query_host_socket_form_is_kept_for_the_driver(config: Path) -> None:
    loaded = load(config, url="postgresql://u@/db?host=/cloudsql/proj:region:inst")
    url = loaded.config.databases["primary"].sqlalchemy_url
    _, kwargs = sa.create_engine(url).dialect.create_connect_args(url)
    assert kwargs["host"] == "/cloudsql/proj:region:inst"


# -- URLs that would fail only at connect (item 5) -------------------------------------------


@pytest.mark.parametrize(
    ("fields", "at", "hint"),
    [
        ({"url": "sqlite://app.db"}, "url", "write it as sqlite:///app.db"),
        ({"url": "sqlite://data/app.db"}, "url", "write it as sqlite:///data/app.db"),
        ({"url": "sqlite://u:pw@/x.db"}, "url", "has a username/password"),
        ({"url": "sqlite://h:5/x.db"}, "url", "has a host/port"),
        ({"url": "sqlite:///x.db", "host": "h"}, "host", "has a host"),
        ({"url": "sqlite:///x.db", "password": "pw"}, "password", "has a password"),
        ({"driver": "sqlite", "port": 5, "database": "x.db"}, "port", "has a port"),
    ],
)
def test_sqlite_url_with_a_server_part_is_rejected_at_load(
    config: Path, fields: dict[str, Any], at: str, hint: str
) -> None:
    ((_, path, message),) = problems(config, **fields)
    assert path == at
    assert "a SQLite URL names a file, not a server" in message
    assert hint in message
    assert "pw" not in message


@pytest.mark.parametrize("port", ["0", "65536", "99999", "123456789"])
def test_url_port_out_of_range_is_rejected(config: Path, port: str) -> None:
    ((_, path, message),) = problems(config, url=f"postgresql://h:{port}/db")
    assert (path, message) == ("url", "the URL's port must be 1-65535")


@pytest.mark.parametrize("url", ["postgresql://u:pw@h:abc/db", "postgresql://u:pw@h:5432x/db"])
def test_url_port_that_is_not_a_number_is_rejected(config: Path, url: str) -> None:
    ((_, path, message),) = problems(config, url=url)
    assert path == "url"
    assert "is not a valid database URL" in message
    assert "port of 1-65535" in message


@pytest.mark.parametrize(
    ("url", "key", "hint"),
    [
        ("mysql+pymysql://h/db?reconnect=true", "reconnect", "defer_connect"),
        ("mariadb://h/db?conect_timeout=3", "conect_timeout", "connect_timeout"),
        ("postgresql://h/db?sslmod=require", "sslmod", "sslmode"),
        ("postgresql://h/db?Connect_Timeout=3", "Connect_Timeout", "connect_timeout"),
        ("postgresql+psycopg://h/db?applicationname=x", "applicationname", "application_name"),
        ("sqlite:///x.db?timout=3", "timout", "timeout"),
    ],
)
def test_query_parameter_the_driver_does_not_take_is_rejected(
    config: Path, url: str, key: str, hint: str
) -> None:
    ((_, path, message),) = problems(config, url=url)
    assert path == "url"
    assert f"the URL query parameter {key!r} is not taken by the" in message
    assert f"did you mean {hint!r}?" in message


def test_unknown_key_beside_a_query_secret_is_not_echoed(config: Path) -> None:
    """A raw '&' in ?password= splits the password: its tail looks like an unknown key."""
    ((_, _, message),) = problems(config, url="mysql+pymysql://u@h/db?password=Zq9&tail9=x")
    assert "tail9" not in message
    assert "(not shown: it may be part of a password)" in message
    ((_, _, message),) = problems(config, url="mysql+pymysql://u:pw@h/db?reconect=1")
    assert "'reconect'" in message  # a URL password cannot spill into the query


def test_unknown_parameter_in_the_query_key_points_at_query(config: Path) -> None:
    ((_, path, _),) = problems(config, url="postgresql://h/db", query={"sslmod": "require"})
    assert path == "query"


def test_query_keys_of_another_driver_are_not_checked() -> None:
    url = "postgresql+asyncpg://h/db?prepared_statement_cache_size=0"
    assert DatabaseConfig(url=SecretStr(url)).sqlalchemy_url.query  # no table for asyncpg


def test_every_libpq_keyword_is_one_the_installed_libpq_takes() -> None:
    from dbconf.dialects.postgresql import LIBPQ_KEYWORDS

    for key in LIBPQ_KEYWORDS:
        psycopg2.extensions.parse_dsn(f"{key}=1")  # raises for a keyword libpq does not know
    with pytest.raises(psycopg2.ProgrammingError, match="invalid connection option"):
        psycopg2.extensions.parse_dsn("reconnect=1")


def test_every_pymysql_keyword_is_a_connect_argument_or_read_by_sqlalchemy() -> None:
    from dbconf.dialects.mysql import PYMYSQL_KEYWORDS

    params = set(inspect.signature(pymysql.connections.Connection.__init__).parameters)
    sqlalchemy_ssl = {"ssl_capath", "ssl_cipher", "ssl_check_hostname"}  # folded into ssl={}
    assert PYMYSQL_KEYWORDS - sqlalchemy_ssl <= params
    # every string-valued parameter pymysql has is allowed (objects cannot come from a URL)
    assert params - PYMYSQL_KEYWORDS == {"self", "conv", "cursorclass", "ssl", "auth_plugin_map"}


def test_pysqlite_keywords_are_read_by_sqlalchemy(config: Path) -> None:
    from dbconf.dialects.sqlite import PYSQLITE_KEYWORDS

    keys = "uri=true&timeout=3&check_same_thread=false&cached_statements=10&mode=ro&cache=shared"
    loaded = load(config, url=f"sqlite:///x.db?{keys}&detect_types=0&isolation_level=DEFERRED")
    assert set(loaded.config.databases["primary"].sqlalchemy_url.query) <= PYSQLITE_KEYWORDS


def test_accepted_query_parameters_connect_to_postgresql(
    config: Path, engines: Callable[[LoadedProfile], sa.Engine], pg_url: str
) -> None:
    query = (
        "sslmode=disable&connect_timeout=5&keepalives=1&application_name=dbconf_url&user=postgres"
    )
    engine = engines(load(config, url=pg_url.replace("postgres@", "") + "?" + query))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select current_user")).scalar_one() == "postgres"
        name = conn.execute(sa.text("show application_name")).scalar_one()
    assert name == "dbconf_url"


def test_accepted_query_parameters_connect_to_mariadb(
    config: Path, engines: Callable[[LoadedProfile], sa.Engine], maria_url: str
) -> None:
    query = "charset=utf8mb4&connect_timeout=5&read_timeout=10&user=root&database=test"
    engine = engines(
        load(config, url=maria_url.replace("root@", "").replace("/test", "/x") + "?" + query)
    )
    with engine.connect() as conn:
        assert conn.execute(sa.text("select database()")).scalar_one() == "test"


@pytest.mark.parametrize(
    ("url", "args", "key", "hint"),
    [
        ("mysql+pymysql://h/db", {"reconnect": True}, "reconnect", "defer_connect"),
        ("mariadb://h/db", {"conect_timeout": 3}, "conect_timeout", "connect_timeout"),
        ("postgresql://h/db", {"sslmod": "require"}, "sslmod", "sslmode"),
        ("postgresql://h/db", {"statement_timeout": 5}, "statement_timeout", "connect_timeout"),
    ],
)
def test_connect_arg_the_driver_does_not_take_is_rejected(
    config: Path, url: str, args: dict[str, Any], key: str, hint: str
) -> None:
    ((_, path, message),) = problems(config, url=url, connect_args=args)
    assert path == f"connect_args.{key}"
    assert f"{key!r} is not an argument of the" in message
    assert f"did you mean {hint!r}?" in message


def test_pymysql_connect_args_are_its_connect_parameters() -> None:
    from dbconf.config.urls import CONNECT_ARGS

    params = set(inspect.signature(pymysql.connections.Connection.__init__).parameters)
    assert params - {"self"} == CONNECT_ARGS["pymysql"]
    with pytest.raises(TypeError, match="reconnect"):
        pymysql.connect(reconnect=True)  # what an unchecked connect_args key would do


def test_psycopg2_connect_args_are_libpq_keywords_and_its_own() -> None:
    from dbconf.config.urls import CONNECT_ARGS

    python_level = {"connection_factory", "cursor_factory", "async", "async_"}
    for key in CONNECT_ARGS["psycopg2"] - python_level:
        psycopg2.extensions.make_dsn(**{key: "1"})  # libpq parses it


def test_accepted_connect_args_connect(
    config: Path, engines: Callable[[LoadedProfile], sa.Engine], pg_url: str, maria_url: str
) -> None:
    pg = engines(load(config, url=pg_url, connect_args={"keepalives": 1, "sslmode": "disable"}))
    with pg.connect() as conn:
        assert conn.execute(sa.text("select current_database()")).scalar_one() == "test"
    args = {"read_timeout": 5, "charset": "utf8mb4", "ssl_disabled": True}
    maria = engines(load(config, url=maria_url, connect_args=args))
    with maria.connect() as conn:
        assert conn.execute(sa.text("select 1")).scalar_one() == 1


# -- property: many URLs (item 10) -----------------------------------------------------------

RESERVED = "@:/%?#&=+ ;[]!$'()*,"
secrets = st.text(alphabet=st.sampled_from("abcXYZ019" + RESERVED), min_size=4, max_size=12).map(
    lambda s: "Zq9" + s
)
names = st.text(alphabet=st.sampled_from("abcdefgh_09" + RESERVED), min_size=1, max_size=8)
hosts = st.sampled_from(
    ["db.example", "127.0.0.1", "[::1]", "%2Fvar%2Frun%2Fpostgresql", "", "h-1.internal"]
)
ports = st.one_of(
    st.none(),
    st.integers(min_value=1, max_value=65535).map(str),
    st.sampled_from(["0", "65536", "x1"]),
)
schemes = st.sampled_from(
    [
        "postgresql",
        "postgres",
        "postgresql+psycopg2",
        "postgresql+psycopg",
        "mysql+pymysql",
        "mariadb",
        "sqlite",
        "sqlite+pysqlite",
    ]
)
extra_query = st.lists(
    st.sampled_from(["sslmode=disable", "charset=utf8mb4", "timeout=3", "bogus=1", "uri=true"]),
    max_size=2,
)


@st.composite
def configs(draw: st.DrawFn) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A database's fields (URL and maybe explicit parts), its secret, the explicit parts."""
    secret = draw(secrets)
    user = draw(names)
    host = draw(hosts)
    port = draw(ports)
    place = draw(st.sampled_from(["userinfo", "raw_userinfo", "query", "query_key", "explicit"]))
    userinfo = quote(user, safe="")
    if place == "userinfo":
        userinfo += ":" + quote(secret, safe="")
    elif place == "raw_userinfo":
        userinfo += ":" + secret  # not encoded: a common mistake
    query = draw(extra_query)
    if place == "query":
        query.append(draw(st.sampled_from(["password", "passwd"])) + "=" + quote(secret, safe=""))
    database = quote(draw(names), safe="")
    url = f"{draw(schemes)}://{userinfo}@{host}{':' + port if port else ''}/{database}"
    if query:
        url += "?" + "&".join(query)
    fields: dict[str, Any] = {"url": url}
    if place == "query_key":
        fields["query"] = {"password": secret}
    explicit: dict[str, Any] = {}
    if place == "explicit" or draw(st.booleans()):
        explicit = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "username": names,
                    "host": st.just("explicit.host"),
                    "port": st.integers(min_value=1, max_value=65535),
                    "database": names,
                },
            )
        )
        if place == "explicit":
            explicit["password"] = secret
    return {**fields, **explicit}, secret, explicit


@given(case=configs())
def test_any_url_loads_or_is_a_config_error_and_never_shows_its_password(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[dict[str, Any], str, dict[str, Any]],
) -> None:
    fields, secret, explicit = case
    try:
        loaded = load(config, **fields)
    except ConfigError as e:
        event("config error")
        assert_no_secret([e], secret)
        return
    event("loaded")
    cfg = loaded.config.databases["primary"]
    url = cfg.sqlalchemy_url
    for key, value in explicit.items():
        assert getattr(url, key) == value, key  # explicit parts beat the URL's
    db = Database("primary", cfg)
    try:
        engine = db.engine
        shown = [repr(db), str(engine.url), repr(engine), repr(cfg), repr(loaded)]
        shown += [str(cfg.model_dump()), cfg.model_dump_json(), str(loaded.config.model_dump())]
    finally:
        db.dispose()
    code = main(["show", "-p", "p", "-c", str(config), "--format", "json"], environ={})
    out, err = capsys.readouterr()
    assert code == 0, err
    assert_no_secret([*shown, out, err], secret)
    if "password" in fields or url.password == secret:
        assert url.password == secret  # what the driver gets is the password given


EC2 = "ec2-107-21-253-135.compute-1.amazonaws.com"


def test_known_url_vectors_load_with_the_parts_they_mean(config: Path) -> None:
    """dj-database-url / django-environ / libpq documentation examples."""
    vectors = {
        f"postgres://uf07k1i6d8ia0v:wegauwhgeuioweg@{EC2}:5431/d8r82722r2kuvn": (
            "uf07k1i6d8ia0v",
            "wegauwhgeuioweg",
            EC2,
            5431,
            "d8r82722r2kuvn",
        ),
        "postgres://%2Fvar%2Frun%2Fpostgresql/d8r82722r2kuvn": (
            None,
            None,
            "/var/run/postgresql",
            None,
            "d8r82722r2kuvn",
        ),
        "postgresql://other@localhost/otherdb?connect_timeout=10&application_name=myapp": (
            "other",
            None,
            "localhost",
            None,
            "otherdb",
        ),
        "postgresql:///mydb?host=localhost&port=5433": (None, None, None, None, "mydb"),
        "postgresql://user:secret@localhost": ("user", "secret", "localhost", None, None),
        "postgresql://[2001:db8::1234]/database": (None, None, "2001:db8::1234", None, "database"),
        # ClearDB's Heroku URL: PyMySQL has no reconnect (a TypeError at connect)
        "mysql://bea6eb025ca0d8:69772142@us-cdbr-east.cleardb.com/heroku_db?reconnect=true": None,
        f"mysql://uf07k1i6d8ia0v:wegauwhgeuioweg@{EC2}:3306/d8r82722r2kuvn": (
            "uf07k1i6d8ia0v",
            "wegauwhgeuioweg",
            EC2,
            3306,
            "d8r82722r2kuvn",
        ),
        "sqlite:////full/path/to/your/database/file.sqlite": (
            None,
            None,
            None,
            None,
            "/full/path/to/your/database/file.sqlite",
        ),
        "sqlite://:memory:": "host",
    }
    for text, parts in vectors.items():
        if not isinstance(parts, tuple):
            with pytest.raises(ConfigError):
                load(config, url=text)
            continue
        url = load(config, url=text).config.databases["primary"].sqlalchemy_url
        assert (url.username, url.password, url.host, url.port, url.database) == parts, text


def test_show_json_masks_query_and_connect_args_secrets(
    config: Path, capsys: pytest.CaptureFixture[str], write_config: WriteConfig
) -> None:
    path = write_config(
        f"""
        profiles:
          p:
            databases:
              primary:
                url: mariadb+pymysql://u@h/db?password={SECRET}&ssl_key_password={SECRET}2
                connect_args:
                  password: 424242
                  ssl: {{key_password: {SECRET}3}}
                  read_timeout: 1
        """
    )
    for fmt in ("json", "text"):
        assert main(["show", "-p", "p", "-c", str(path), "--format", fmt], environ={}) == 0
        out = capsys.readouterr().out
        assert SECRET not in out
        assert "424242" not in out
    main(["show", "-p", "p", "-c", str(path), "--format", "json"], environ={})
    connect_args = json.loads(capsys.readouterr().out)["config"]["databases"]["primary"]
    assert connect_args["connect_args"] == {
        "password": "***",
        "ssl": {"key_password": "***"},
        "read_timeout": 1,
    }


# -- failover hosts in the masked URL (dbconf.config.failover renders them)
# ---------------------------


def test_masked_url_lists_every_failover_host_with_password_masked() -> None:
    from dbconf.config.urls import mask_url

    config = DatabaseConfig(
        url=SecretStr("postgresql://app:s3cret-pw@/app?sslpassword=k3y-pw"),
        hosts=["a:5432", "b:5433"],
        target_session_attrs="read-write",
    )
    shown = config.masked_url()
    assert shown == (
        "postgresql+psycopg2://app:***@/app?host=a:5432&host=b:5433&sslpassword=***"
        "&target_session_attrs=read-write"
    )
    assert sa.make_url(shown).query["host"] == ("a:5432", "b:5433")  # still a valid URL
    # without hosts, nothing else is decoded
    plain = sa.make_url("postgresql://app@db/app?options=-c%20x%3Ay")
    assert mask_url(plain) == plain.render_as_string(hide_password=True)
