"""sqlite failures of the job store as StoreErrors that name the file and say what to do.

The store's connection runs every statement through a cursor that translates them, also while
rows are read, so no command ever shows a raw sqlite traceback.
"""
from __future__ import annotations

import logging
import os
import shlex
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional

from .errors import StoreError

log = logging.getLogger(__name__)

# Kinds by sqlite's primary result code (sqlite3.Error.sqlite_errorcode & 0xff, Python 3.11+),
# else by its message: https://www.sqlite.org/rescode.html
_CODES = {11: "corrupt", 26: "corrupt", 8: "readonly", 14: "readonly", 23: "readonly", 13: "full",
          5: "locked", 6: "locked", 10: "io"}
_WORDS = (("not a database", "corrupt"), ("malformed", "corrupt"), ("readonly", "readonly"),
          ("unable to open", "readonly"), ("full", "full"), ("locked", "locked"), ("i/o", "io"))


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """What went wrong with the store at `path`, and what the user does about it."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    kind = _CODES.get(code & 0xFF, "") if isinstance(code, int) else ""
    kind = kind or next((k for word, k in _WORDS if word in text.lower()), "other")
    if kind in ("io", "other") and _disk_full(path):  # a full disk also shows as an I/O error (WAL index)
        kind = "full"
    log.debug("sqlite error on %s: %r", path, exc)
    here, folder = shlex.quote(str(path)), shlex.quote(str(path.parent))
    aside = f"mv {here} {shlex.quote(f'{path}.broken')}"  # commands to paste: quoted
    advice = {
        "corrupt": f"the job store {path} is damaged ({text}); it was left as it is. Move it aside "
                   f"({aside}, and its -wal and -shm files if any) and a new store is made on the "
                   f"next command; `sqlite3 {shlex.quote(f'{path}.broken')} .recover` may rescue its jobs",
        "readonly": f"the job store {path} cannot be written ({text}); give yourself write access "
                    f"to it and its folder (chmod u+w {here} {folder}) or set DPU_HOME to a "
                    "folder you can write",
        "full": f"the disk holding the job store {path} is full ({text}); the change being made was "
                "not saved and nothing recorded before was lost: free space there, then run it again",
        "locked": f"the job store {path} stayed locked by another dpu process for 30 s ({text}); "
                  f"run the command again (fuser {here} shows who holds it)",
        "io": f"reading or writing the job store {path} failed ({text}); check the disk, and on a "
              "network file system use the DELETE journal (DPU_STORE_JOURNAL=delete), then run it again",
        "other": f"the job store {path} gave an error ({text}); run the command again, and if it "
                 f"stays, move the store aside ({aside}) and report the message",
    }[kind]
    return StoreError(advice, kind)


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 65536 or (st.f_files > 0 and st.f_favail == 0)


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise  # mistakes in our SQL or a duplicate key: the caller's business, not the file's
    except sqlite3.DatabaseError as exc:
        raise store_error(path, exc) from None


class _Cursor(sqlite3.Cursor):
    """A cursor whose sqlite failures (also while rows are read) are StoreErrors."""

    def _path(self) -> Path:
        path = getattr(self.connection, "store_path", None)  # no Path built per call: hot path
        return path if path is not None else Path("jobs.sqlite")

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        with _translated(self._path()):
            super().execute(sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _Cursor:
        with _translated(self._path()):
            super().executemany(sql, seq_of_parameters)
        return self

    def executescript(self, sql_script: str, /) -> _Cursor:
        with _translated(self._path()):
            super().executescript(sql_script)
        return self

    def fetchone(self) -> Any:
        with _translated(self._path()):
            return super().fetchone()

    def fetchall(self) -> List[Any]:
        with _translated(self._path()):
            return super().fetchall()

    def fetchmany(self, size: Optional[int] = 1) -> List[Any]:
        with _translated(self._path()):
            return super().fetchmany(size)

    def __next__(self) -> Any:
        # Once per row: a plain try (no context manager, no path) unless reading fails.
        try:
            return super().__next__()
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:
            raise store_error(self._path(), exc) from None


class Connection(sqlite3.Connection):
    """Statements run through _Cursor, so no caller ever sees a raw sqlite error."""

    store_path = Path("jobs.sqlite")

    def cursor(self, factory: Any = _Cursor) -> Any:
        """A cursor whose failures are StoreErrors."""
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        """sqlite3's execute through a translating cursor."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        """sqlite3's executemany through a translating cursor."""
        return self.cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> _Cursor:
        """sqlite3's executescript through a translating cursor."""
        return self.cursor().executescript(sql_script)
