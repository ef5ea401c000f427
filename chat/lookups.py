"""``field__ucontains=text``: contains, ignoring case in every script, on every database.

PostgreSQL's ``UPPER`` (what ``icontains`` uses there) folds case by the database's locale, which
covers Unicode. SQLite's ``LIKE`` folds ASCII letters only, so on the default database a search for
"über" missed "Über" and "привет" missed "Привет". There the column and the pattern are both
lowered by Python's ``str.lower``, registered on each SQLite connection as ``py_lower``.
"""
from __future__ import annotations

from typing import Any

from django.db.backends.signals import connection_created
from django.db.models import CharField, TextField
from django.db.models.lookups import IContains


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


def register_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("py_lower", 1, _lower, deterministic=True)


class UnicodeIContains(IContains):
    """Registered as ``ucontains``; keeps ``icontains`` as its own name, so that every database
    but SQLite compiles it exactly as ``icontains``."""

    def as_sqlite(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        # the pattern is '%text%' with LIKE's wildcards escaped; lowering leaves '%', '_' and '\' alone
        params = [*lhs_params, *(p.lower() if isinstance(p, str) else p for p in rhs_params)]
        return f"py_lower({lhs}) LIKE {rhs} ESCAPE '\\'", params


def install() -> None:
    """Register the lookup and, for connections opened from now on, the SQLite function."""
    CharField.register_lookup(UnicodeIContains, lookup_name="ucontains")
    TextField.register_lookup(UnicodeIContains, lookup_name="ucontains")
    connection_created.connect(register_sqlite_functions, dispatch_uid="chat.lookups.py_lower")
