"""dbconf.loading.files: only regular files are read, without blocking, at most a capped size.

Every kind of path the user can give is covered: the configuration file (``path=``,
``--config``, ``DBCONF_CONFIG``), a ``password_file`` and an entry of ``DBCONF_SECRETS_DIR``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_no_secret
from hypothesis import given
from hypothesis import strategies as st

from dbconf.errors import ConfigError
from dbconf.loading.files import (
    CONFIG_LIMIT_VAR,
    SECRET_LIMIT_VAR,
    SizeLimits,
    UnreadableFileError,
    read_text,
    size_limits,
)
from dbconf.loading.loader import load_profile

SECRET = "Secr3t-value"
KiB = 1024


@contextmanager
def never_blocks(seconds: float = 20) -> Iterator[None]:
    """Fail (instead of hanging the suite) if reading blocks, e.g. on a FIFO without a writer."""

    def blocked(signum: int, frame: Any) -> None:
        raise AssertionError(f"still blocked after {seconds}s: the file read waits for a writer")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _dev_zero(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


def _sparse(size: int) -> Callable[[Path], Path]:
    """A regular file of ``size`` bytes that takes no disk (reading all of it would be huge)."""

    def make(path: Path) -> Path:
        with path.open("wb") as f:
            f.truncate(size)
        return path

    return make


# (maker, what the message says); each is a file dbconf must refuse without reading it whole.
REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fifo": (_fifo, "it is a named pipe (FIFO), not a regular file"),
    "dev-zero": (_dev_zero, "it is a character device, not a regular file"),
    "directory": (_directory, "it is a directory, not a regular file"),
    "socket": (_socket, "No such device or address"),  # open() itself refuses a socket
    "huge-sparse": (_sparse(64 << 30), "it is larger than"),
}


# --- read_text ---------------------------------------------------------------------------------


def test_read_text_returns_the_text_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes("héllo\r\n".encode())
    path.chmod(0o640)
    text, mode = read_text(path, 100, SECRET_LIMIT_VAR)
    assert text == "héllo\r\n"  # bytes as written: no newline translation
    assert mode & 0o777 == 0o640


@pytest.mark.parametrize("kind", list(REFUSED))
def test_read_text_refuses_what_is_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    make, message = REFUSED[kind]
    path = make(tmp_path / "f")
    with never_blocks(), pytest.raises(UnreadableFileError, match=re.escape(message)):
        read_text(path, 1 << 20, CONFIG_LIMIT_VAR)


@pytest.mark.parametrize("size", [0, 1, 10, 4096, 65536, 65537, 200_000])
@pytest.mark.parametrize("limit", [1, 10, 4096, 65536])
def test_read_text_cap_is_exact(tmp_path: Path, size: int, limit: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * size)
    if size <= limit:
        assert read_text(path, limit, SECRET_LIMIT_VAR)[0] == "x" * size
    else:
        with pytest.raises(UnreadableFileError) as info:
            read_text(path, limit, SECRET_LIMIT_VAR)
        assert str(info.value) == (
            f"it is larger than {limit} bytes; set {SECRET_LIMIT_VAR} to allow a bigger file"
        )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a\0b", "the path contains a NUL byte or a character that cannot be in a file name"),
        ("a\ud800b", "the path contains a NUL byte or a character that cannot be in a file name"),
        ("missing", "No such file or directory"),
    ],
)
def test_read_text_bad_paths(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(UnreadableFileError) as info:
        read_text(tmp_path / name, 100, SECRET_LIMIT_VAR)
    assert str(info.value) == message


def test_read_text_never_quotes_content_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\xff\xfe" + SECRET.encode())
    with pytest.raises(UnreadableFileError) as info:
        read_text(path, 100, SECRET_LIMIT_VAR)
    assert str(info.value) == "it is not UTF-8 text"
    assert_no_secret([info.value], SECRET)  # nor in its context: the decode error holds it


# --- the size limits --------------------------------------------------------------------------


def test_default_limits() -> None:
    assert size_limits({}) == SizeLimits(config=1 << 20, secret=64 * KiB)
    assert size_limits({CONFIG_LIMIT_VAR: "", SECRET_LIMIT_VAR: ""}) == size_limits({})


def test_limits_from_the_environment() -> None:
    environ = {CONFIG_LIMIT_VAR: "2048", SECRET_LIMIT_VAR: "007"}
    assert size_limits(environ) == SizeLimits(config=2048, secret=7)


@given(
    raw=st.text(max_size=20).filter(lambda s: not (s.isascii() and s.isdecimal()) and s != "")
    | st.sampled_from(["0", "00", "-1", "+5", "1.5", "1e6", " 12", "12 ", "1_000", "9" * 13])
    | st.text("٠١٢٣", min_size=1, max_size=3),  # Arabic-Indic digits: int() takes them
    var=st.sampled_from([CONFIG_LIMIT_VAR, SECRET_LIMIT_VAR]),
)
def test_a_bad_limit_is_a_config_error_naming_the_variable(raw: str, var: str) -> None:
    with pytest.raises(ConfigError) as info:
        size_limits({var: raw})
    (problem,) = info.value.problems
    assert problem.origin == f"env {var}"
    assert problem.message.startswith("must be a whole number of bytes from 1 to 999999999999")


def test_both_bad_limits_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        size_limits({CONFIG_LIMIT_VAR: "x", SECRET_LIMIT_VAR: "0"})
    assert [p.origin for p in info.value.problems] == [
        f"env {CONFIG_LIMIT_VAR}",
        f"env {SECRET_LIMIT_VAR}",
    ]


# --- through the loader: the configuration file ------------------------------------------------

GOOD = """\
profiles:
  p:
    databases:
      primary:
        driver: postgresql+psycopg2
        host: db.example
        username: app
        database: app
        password_file: {password_file}
"""


def _config(tmp_path: Path, password_file: str = "pw") -> Path:
    path = tmp_path / "databases.yaml"
    path.write_text(GOOD.format(password_file=password_file), encoding="utf-8")
    return path


def _password(loaded: Any) -> str:
    """The password the primary connects with: a ``password_file`` is only checked at load and
    read for each new connection (dbconf.runtime.credentials), so it is read here the same way."""
    primary = loaded.config.databases["primary"]
    if primary.password is not None:
        return str(primary.password.get_secret_value())
    return Path(primary.password_file).read_text(encoding="utf-8").rstrip("\r\n")


@pytest.mark.parametrize("kind", list(REFUSED))
@pytest.mark.parametrize("how", ["path", "DBCONF_CONFIG"])
def test_config_file_that_is_not_a_small_regular_file(tmp_path: Path, kind: str, how: str) -> None:
    make, message = REFUSED[kind]
    path = make(tmp_path / "databases.yaml")
    kwargs: dict[str, Any] = {"path": path} if how == "path" else {}
    with never_blocks(), pytest.raises(ConfigError) as info:
        load_profile("p", environ={"DBCONF_CONFIG": str(path)}, **kwargs)
    (problem,) = info.value.problems
    assert problem.origin == str(path)
    assert problem.message.startswith("cannot read the configuration file (")
    assert message in problem.message


@pytest.mark.parametrize("name", ["a\0b.yaml", "a\ud800b.yaml"])
def test_config_path_with_nul_or_surrogate(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / name)
    with pytest.raises(ConfigError) as info:
        load_profile("p", environ={"DBCONF_CONFIG": path})
    (problem,) = info.value.problems
    assert problem.origin == ascii(path)
    assert problem.message.startswith(
        "cannot read the configuration file (the path contains a NUL byte or a character that "
        "cannot be in a file name); name the right file with --config on the command line"
    )


def test_config_file_cap_is_configurable(tmp_path: Path) -> None:
    path = _config(tmp_path)
    (tmp_path / "pw").write_text(SECRET)
    size = path.stat().st_size
    assert _password(load_profile("p", path=path, environ={CONFIG_LIMIT_VAR: str(size)}))
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=path, environ={CONFIG_LIMIT_VAR: str(size - 1)})
    assert f"it is larger than {size - 1} bytes; set {CONFIG_LIMIT_VAR}" in str(info.value)


def test_config_file_over_the_default_cap(tmp_path: Path) -> None:
    path = _config(tmp_path)
    with path.open("a") as f:
        f.write("# padding\n" * (1 << 17))  # 1.25 MiB of comments
    with pytest.raises(ConfigError, match=f"larger than {1 << 20} bytes"):
        load_profile("p", path=path, environ={})


def test_bad_limit_variable_through_the_loader(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=_config(tmp_path), environ={SECRET_LIMIT_VAR: "lots"})
    assert [p.origin for p in info.value.problems] == [f"env {SECRET_LIMIT_VAR}"]


def test_limit_variables_are_not_configuration_keys(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET)
    environ = {CONFIG_LIMIT_VAR: "4096", SECRET_LIMIT_VAR: "64"}
    assert _password(load_profile("p", path=_config(tmp_path), environ=environ)) == SECRET


# --- password_file ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(REFUSED))
def test_password_file_that_is_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    make, message = REFUSED[kind]
    secret = make(tmp_path / "pw")
    with never_blocks(), pytest.raises(ConfigError) as info:
        load_profile("p", path=_config(tmp_path), environ={})
    (problem,) = info.value.problems
    assert problem.origin == f"{tmp_path / 'databases.yaml'}:9:9"
    assert problem.path == "profiles.p.databases.primary.password_file"
    assert problem.message.startswith(f"cannot read password file {secret} (")
    assert message in problem.message


def test_password_file_cap(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x" * (64 * KiB) + "\n")
    with pytest.raises(ConfigError, match=f"larger than {64 * KiB} bytes; set {SECRET_LIMIT_VAR}"):
        load_profile("p", path=_config(tmp_path), environ={})
    environ = {SECRET_LIMIT_VAR: str(64 * KiB + 1)}
    assert _password(load_profile("p", path=_config(tmp_path), environ=environ)) == "x" * 65536


@given(
    before=st.text(st.characters(exclude_characters="/$"), max_size=8),
    bad=st.sampled_from(["\0", "\ud800", "\udbff", "\udc00", "\udc7f"]),
    after=st.text(st.characters(exclude_characters="/$"), max_size=8),
)
def test_password_file_path_with_nul_or_surrogate_is_a_config_error(
    before: str, bad: str, after: str
) -> None:
    # No "\udc80"-"\udcff" (they stand for undecodable bytes: valid paths), no "$" (${...}).
    with tempfile.TemporaryDirectory() as tmp:
        path = _config(Path(tmp), password_file=json.dumps(before + bad + after))
        with pytest.raises(ConfigError) as info:
            load_profile("p", path=path, environ={})
    (problem,) = info.value.problems
    assert problem.origin == f"{path}:9:9"
    assert "the path contains a NUL byte or a character that cannot be in a file name" in (
        problem.message
    )


@pytest.mark.parametrize(
    "value",
    [
        "{url: 'postgresql://app:Secr3t-value@db/app'}",
        "[Secr3t-value]",
        "{password: Secr3t-value}",
    ],
)
def test_password_file_that_is_not_a_path_is_never_shown(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=_config(tmp_path, password_file=value), environ={})
    assert [p.path for p in info.value.problems] == ["profiles.p.databases.primary.password_file"]
    assert_no_secret([info.value], SECRET)


def test_password_file_content_is_never_quoted(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"\xff" + SECRET.encode())
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=_config(tmp_path), environ={})
    assert "it is not UTF-8 text" in str(info.value)
    assert_no_secret([info.value], SECRET)


# --- DBCONF_SECRETS_DIR -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(REFUSED))
def test_secrets_dir_entry_that_is_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    (tmp_path / "pw").write_text(SECRET)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    make, message = REFUSED[kind]
    entry = make(secrets / "DBCONF_DATABASES__PRIMARY__PASSWORD")
    environ = {"DBCONF_SECRETS_DIR": str(secrets)}
    with never_blocks(), pytest.raises(ConfigError) as info:
        load_profile("p", path=_config(tmp_path), environ=environ)
    (problem,) = info.value.problems
    assert problem.origin == f"secrets file {entry}"
    assert problem.message.startswith("cannot read it: ")
    assert message in problem.message


def test_secrets_dir_entry_cap(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DBCONF_DATABASES__PRIMARY__PASSWORD").write_text("x" * 101)
    environ = {"DBCONF_SECRETS_DIR": str(secrets), SECRET_LIMIT_VAR: "100"}
    with pytest.raises(ConfigError, match="larger than 100 bytes"):
        load_profile("p", path=_config(tmp_path), environ=environ)


def test_kubernetes_style_symlinked_secret_is_read(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    (secrets / "..data").mkdir(parents=True)
    (secrets / "..data" / "DBCONF_DATABASES__PRIMARY__PASSWORD").write_text(SECRET + "\n")
    (secrets / "DBCONF_DATABASES__PRIMARY__PASSWORD").symlink_to(
        "..data/DBCONF_DATABASES__PRIMARY__PASSWORD"
    )
    environ = {"DBCONF_SECRETS_DIR": str(secrets)}
    assert _password(load_profile("p", path=_config(tmp_path), environ=environ)) == SECRET


@pytest.mark.parametrize("directory", ["/tmp/a\0b", "/tmp/a\ud800b"])
def test_secrets_dir_path_with_nul_or_surrogate(tmp_path: Path, directory: str) -> None:
    (tmp_path / "pw").write_text(SECRET)
    with pytest.raises(ConfigError) as info:
        load_profile("p", path=_config(tmp_path), environ={"DBCONF_SECRETS_DIR": directory})
    (problem,) = info.value.problems
    assert problem.origin == "env DBCONF_SECRETS_DIR"
    assert problem.message == f"cannot list the directory {directory!a} (not a valid path)"


CHILD = """
import os, sys
from dbconf.errors import ConfigError
from dbconf.loading.loader import load_profile
if os.geteuid() == 0:  # root reads any directory: become nobody, for real
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    load_profile("p", path=sys.argv[1], environ={"DBCONF_SECRETS_DIR": sys.argv[2]})
except ConfigError as e:
    print(repr([(p.origin, p.message) for p in e.problems]))
"""


def test_unreadable_secrets_dir_is_a_config_error() -> None:
    # Not pytest's tmp_path: it is private to root, and the child runs as another user.
    top = Path(tempfile.mkdtemp(prefix="dbconf-files-"))
    try:
        top.chmod(0o755)
        path = top / "databases.yaml"
        path.write_text(
            "profiles:\n  p:\n    databases:\n      primary: {url: 'postgresql://u@h/db'}\n"
        )
        path.chmod(0o644)
        secrets = top / "secrets"
        secrets.mkdir(mode=0o700)
        secrets.chmod(0o000)
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(path), str(secrets)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(top)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout.strip() == repr(
        [("env DBCONF_SECRETS_DIR", f"cannot list the directory {secrets} (Permission denied)")]
    )
