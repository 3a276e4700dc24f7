"""Retried transactions must be idempotent: the pattern, on SQLite (no server needed).

Run from anywhere: ``python examples/idempotent_retry.py`` (a temporary SQLite file), or
``python examples/idempotent_retry.py postgresql+psycopg2://user@host/db`` for PostgreSQL.

Why: ``db.run_in_transaction(fn)`` re-runs ``fn`` in a new transaction after a serialization
failure, a deadlock or a lost connection. The first two are safe to retry: the server rolled the
transaction back. A connection lost *during COMMIT* is not: the server may have committed just
before the connection dropped, and the client cannot know. Retrying blindly would then apply
the work twice (charge a card twice, send two emails).

The pattern: the client generates a request id once, *before* the first attempt, and the
transaction records it with ``INSERT … ON CONFLICT (request_id) DO NOTHING`` (MariaDB/MySQL:
``INSERT IGNORE``) in the same transaction as the work. If the row already exists, an earlier
attempt committed: skip the work and return what it did. The id is the transaction's
"exactly once" key, whether the retry comes from dbconf, from the client or from a queue.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

import dbconf

CONFIG = """
profiles:
  example:
    databases:
      bank:
        url: {url}
        retry: {{retries: 5, backoff: 20ms, max_backoff: 1s}}   # run_in_transaction defaults
"""


def apply_payment(session: Session, request_id: str, account: str, amount: int) -> str:
    """Charge ``account`` once per ``request_id``, however many times this runs."""
    inserted = session.execute(
        sa.text(
            "INSERT INTO payments (request_id, account, amount) VALUES (:rid, :acc, :amt) "
            "ON CONFLICT (request_id) DO NOTHING"
        ),
        {"rid": request_id, "acc": account, "amt": amount},
    )
    if inserted.rowcount == 0:  # an earlier attempt committed: do not charge again
        return "already applied"
    session.execute(
        sa.text("UPDATE accounts SET balance = balance - :amt WHERE name = :acc"),
        {"amt": amount, "acc": account},
    )
    return "applied"


def main(url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "databases.yaml"
        config.write_text(textwrap.dedent(CONFIG.format(url=url or f"sqlite:///{tmp}/bank.db")))
        with dbconf.load("example", path=config) as dbs:
            bank = dbs["bank"]
            with bank.session() as s:
                s.execute(sa.text("DROP TABLE IF EXISTS payments"))
                s.execute(sa.text("DROP TABLE IF EXISTS accounts"))
                s.execute(
                    sa.text("CREATE TABLE accounts (name VARCHAR(20) PRIMARY KEY, balance INT)")
                )
                s.execute(
                    sa.text(
                        "CREATE TABLE payments (request_id VARCHAR(36) PRIMARY KEY, "
                        "account VARCHAR(20), amount INT)"
                    )
                )
                s.execute(sa.text("INSERT INTO accounts VALUES ('alice', 100)"))

            # 1. The request id is made once, outside the retried function.
            request_id = str(uuid.uuid4())
            first = bank.run_in_transaction(lambda s: apply_payment(s, request_id, "alice", 30))
            print(f"first attempt: {first}")

            # 2. Say the connection dropped during that COMMIT: the caller saw a DisconnectError
            #    and cannot tell whether it committed, so it runs the same request again.
            #    The decorator form, with the session passed in by dbconf:
            @bank.retrying()
            def pay(session: Session, request_id: str, account: str, amount: int) -> str:
                return apply_payment(session, request_id, account, amount)

            again = pay(request_id, "alice", 30)
            print(f"same request again: {again}")

            # 3. A new request (a new id) is charged.
            print(f"new request: {pay(str(uuid.uuid4()), 'alice', 30)}")

            with bank.session() as s:
                balance = s.execute(
                    sa.text("SELECT balance FROM accounts WHERE name = 'alice'")
                ).scalar_one()
                payments = s.execute(sa.text("SELECT count(*) FROM payments")).scalar_one()
                s.execute(sa.text("DROP TABLE payments"))
                s.execute(sa.text("DROP TABLE accounts"))
            print(f"balance: {balance} (100 - 2 x 30), payments recorded: {payments}")
            assert (first, again, balance, payments) == ("applied", "already applied", 40, 2)
    print("ok: each request applied exactly once")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
