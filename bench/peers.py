"""Peers of case 1 (information rows): the same ``select 1`` scope through Flask-SQLAlchemy
(an app context per request, its scoped ``db.session``, committed, removed at teardown) and
advanced-alchemy (``SQLAlchemySyncConfig.get_session()``, committed), each on an engine with
the same pool arguments as the hand-written one. Both are in the ``bench`` extra; a missing
one is reported, not fatal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench.envs import SELECT_1

Op = Callable[[], object]


class Peer:
    """One peer: its op, its engine (for the pool check) and how to dispose it."""

    def __init__(self, op: Op, engine: sa.Engine, dispose: Callable[[], None]) -> None:
        self.op, self.engine, self.dispose = op, engine, dispose


def flask_sqlalchemy(url: str, options: dict[str, Any]) -> Peer:
    """Flask-SQLAlchemy 3: ``with app.app_context(): db.session.execute(...); commit()``."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("bench")
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(options)
    db = SQLAlchemy(app)

    def op() -> None:
        with app.app_context():  # a request's context: the scoped session is removed after
            db.session.execute(SELECT_1)
            db.session.commit()

    with app.app_context():
        engine = db.engine

    def dispose() -> None:
        with app.app_context():
            db.engine.dispose()

    return Peer(op, engine, dispose)


def advanced_alchemy(url: str, options: dict[str, Any]) -> Peer:
    """advanced-alchemy: ``with config.get_session() as s: s.execute(...); s.commit()``."""
    from advanced_alchemy.config import EngineConfig, SQLAlchemySyncConfig

    config = SQLAlchemySyncConfig(connection_string=url, engine_config=EngineConfig(**options))

    def op() -> None:
        with config.get_session() as s:
            s.execute(SELECT_1)
            s.commit()

    engine = config.get_engine()
    return Peer(op, engine, engine.dispose)


PEERS: dict[str, Callable[[str, dict[str, Any]], Peer]] = {
    "flask-sqlalchemy": flask_sqlalchemy,
    "advanced-alchemy": advanced_alchemy,
}
