"""Where the service keeps what it is told while it runs: feedback events and items added live.

`SQLiteStore` is an embedded SQLite database in WAL mode with `synchronous=FULL`: a call returns
only after its transaction is on disk, so acknowledged feedback survives a crash or `kill -9` of
the server. One writer at a time (a lock in the process; SQLite's own lock across processes);
readers never block it. The schema is versioned (`PRAGMA user_version`): a database written by a
newer crossrec is refused, an older one is migrated forward.

Several server processes (`serve.workers`) share one store: each applies what the others wrote
by reading the rows after the last ones it applied (`changes_after`; serving/service.py `sync`).

The `Store` protocol is what the service needs; a PostgreSQL store would implement the same six
methods.

Example:
    >>> store = SQLiteStore("runs/serve/feedback.sqlite")                  # doctest: +SKIP
    >>> store.add_feedback("u1", "i9", "click", 1767225600.0)              # doctest: +SKIP
    >>> store.feedback_of("u1")                                            # doctest: +SKIP
    [('i9', 'click', 1767225600.0)]
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from crossrec.errors import ArtifactError

SCHEMA_VERSION = 1
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL, item TEXT NOT NULL, event TEXT NOT NULL,
        ts REAL NOT NULL, received REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user)",
    """CREATE TABLE IF NOT EXISTS items (
        item TEXT PRIMARY KEY, category TEXT NOT NULL, title TEXT NOT NULL,
        description TEXT, image TEXT, added REAL NOT NULL)""",
]


class StoreError(ArtifactError):
    """The store cannot be opened or used (a newer schema, a damaged file): bad input, exit 2."""


class Store(Protocol):
    def add_feedback(self, user: str, item: str, event: str, ts: float) -> int: ...
    def feedback_of(self, user: str) -> list[tuple[str, str, float]]: ...
    def all_feedback(self) -> list[tuple[str, str, str, float]]: ...
    def add_item(
        self, item: str, category: str, title: str, description: str | None, image: list[float] | None
    ) -> None: ...
    def items(self) -> list[dict[str, Any]]: ...
    def changes_after(
        self, item_row: int, feedback_id: int
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str, str]]]: ...


class SQLiteStore:
    """The embedded store (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a crossrec store ({e})") from e
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this crossrec's ({SCHEMA_VERSION}); upgrade crossrec"
            )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                self._db.execute(stmt)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            cur = self._db.execute(sql, args)  # autocommit: durable when this returns (synchronous=FULL)
            return int(cur.lastrowid or 0)

    def add_feedback(self, user: str, item: str, event: str, ts: float) -> int:
        """Record one event; returns its id once it is on disk."""
        return self._write(
            "INSERT INTO feedback (user, item, event, ts, received) VALUES (?, ?, ?, ?, ?)",
            (user, item, event, float(ts), time.time()),
        )

    def feedback_of(self, user: str) -> list[tuple[str, str, float]]:
        """(item, event, ts) of one user, oldest first."""
        rows = self._db.execute("SELECT item, event, ts FROM feedback WHERE user = ? ORDER BY ts, id", (user,))
        return [(str(i), str(e), float(t)) for i, e, t in rows.fetchall()]

    def all_feedback(self) -> list[tuple[str, str, str, float]]:
        """(user, item, event, ts) of every event, in arrival order."""
        rows = self._db.execute("SELECT user, item, event, ts FROM feedback ORDER BY id").fetchall()
        return [(str(u), str(i), str(e), float(t)) for u, i, e, t in rows]

    def add_item(
        self, item: str, category: str, title: str, description: str | None, image: list[float] | None
    ) -> None:
        """Record an item added while serving (replacing an earlier record of the same id)."""
        self._write(
            "INSERT OR REPLACE INTO items (item, category, title, description, image, added) VALUES (?, ?, ?, ?, ?, ?)",
            (item, category, title, description, json.dumps(image) if image is not None else None, time.time()),
        )

    def items(self) -> list[dict[str, Any]]:
        """Every item added while serving, in the order they were added."""
        rows = self._db.execute(
            "SELECT item, category, title, description, image FROM items ORDER BY added, rowid"
        ).fetchall()
        return [_item_row(*r) for r in rows]

    def changes_after(
        self, item_row: int, feedback_id: int
    ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str, str]]]:
        """What was stored after a point, by any process: the items with a row number above
        `item_row`, as (row number, item), and the feedback with an id above `feedback_id`, as
        (id, user, item), each in the order written. One read transaction: a consistent snapshot."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                items = self._db.execute(
                    "SELECT rowid, item, category, title, description, image FROM items WHERE rowid > ? ORDER BY rowid",
                    (item_row,),
                ).fetchall()
                feedback = self._db.execute(
                    "SELECT id, user, item FROM feedback WHERE id > ? ORDER BY id", (feedback_id,)
                ).fetchall()
            finally:
                self._db.execute("COMMIT")
        return [(int(r[0]), _item_row(*r[1:])) for r in items], [(int(i), str(u), str(it)) for i, u, it in feedback]


def _item_row(item: str, category: str, title: str, description: str | None, image: str | None) -> dict[str, Any]:
    return {
        "item": item,
        "category": category,
        "title": title,
        "description": description,
        "image": json.loads(image) if image else None,
    }


__all__ = ["SCHEMA_VERSION", "SQLiteStore", "Store", "StoreError"]
