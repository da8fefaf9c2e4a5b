"""Never pay twice: results of deterministic queries, kept in SQLite inside the run directory.

The key covers everything that decides the output: the model, the template (its prompt text and
its constraints), the arguments that fill it, and the decoder with its options. Sampled queries are
never cached: asking again must give a new sample.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path


def cache_key(model: str, template_code: str, args: dict, decoder_clause: str) -> str:
    material = json.dumps([model, template_code, args, decoder_clause], sort_keys=True, ensure_ascii=False,
                          default=str)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class QueryCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        # Autocommit: each stored answer is durable at once, so a killed run loses none of them.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS queries (key TEXT PRIMARY KEY, result TEXT NOT NULL)")

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT result FROM queries WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, result: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO queries (key, result) VALUES (?, ?)",
                         (key, json.dumps(result, ensure_ascii=False)))

    def close(self) -> None:
        self._db.close()
