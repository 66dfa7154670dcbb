"""Private folders and files (DPU_HOME and the store) and writes that replace a file whole."""
from __future__ import annotations

import fcntl
import logging
import os
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import StoreError

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """The folder, created 0700 when missing (parents as mkdir -p makes them); a looser one of
    ours is tightened with a warning, one of another user refused."""
    path = Path(path)
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True)  # the mode applies to the folder itself
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create {path} ({exc.strerror}); create it yourself "
                         "(mkdir -m 700) or set DPU_HOME to a folder you can write", "readonly") from None
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path} is not a folder; move it away or set DPU_HOME elsewhere")
    _check_owner(path, st)
    tighten(path, PRIVATE_DIR, st)
    return path


def tighten(path: Path, allowed: int, st: os.stat_result | None = None) -> None:
    """chmod away the bits beyond `allowed` (0700 or 0600), saying so in one line."""
    st = st if st is not None else os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~allowed:
        try:
            os.chmod(path, mode & allowed)
        except OSError as exc:
            log.warning("%s is open to other users (mode %04o) and could not be made private: %s",
                        path, mode, exc.strerror)
            return
        log.warning("%s was open to other users (mode %04o); made it %04o", path, mode, mode & allowed)


def _check_owner(path: Path, st: os.stat_result) -> None:
    if st.st_uid != os.getuid():
        raise StoreError(f"{path} belongs to another user (uid {st.st_uid}); your jobs are kept in a "
                         "folder of your own: set DPU_HOME to one")


def private_file(path: Path) -> None:
    """Create the file 0600 when missing (never through a symlink); tighten it when looser."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE))
        return
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{path} is not a regular file; move it away (mv {path} {path}.broken)")
    _check_owner(path, st)
    tighten(path, PRIVATE_FILE, st)


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE, durable: bool = True) -> None:
    """Replace `path` whole: a unique temp file beside it (O_EXCL, no symlink), then rename.
    Writers racing on one path each rename a complete file; the last one wins. A killed writer
    never leaves a partial file; `durable` also fsyncs, so a power cut cannot either."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextmanager
def held_lock(path: Path, timeout: float, waiting: Callable[[], None],
              too_long: Callable[[], Exception]) -> Iterator[None]:
    """Hold an exclusive flock on `path` (in a private folder) for the block. The kernel releases
    it when the holder dies, so a killed run never leaves it held. `waiting` is called once when
    another holder makes us wait; after `timeout` seconds `too_long()` is raised."""
    private_dir(path.parent)
    with open(path, "a") as fh:
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise too_long() from None
                if not told:
                    waiting()
                told = True
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
