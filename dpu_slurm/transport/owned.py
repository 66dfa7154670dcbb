"""Files other users can reach, on this machine: read only what their owner could have written,
write only through a fresh temp name. The remote helper (remote_helper.py) applies the same rules
on an SSH DPU; tests run both against the same hostile folders.

Reading ``base/rel`` for the uid U: ``base`` and every folder below it are opened one at a time
(``openat``) with ``O_NOFOLLOW``, each checked after an ``lstat`` and again after the open (same
inode) to be a folder, or for the last step a regular file, owned by U. FIFOs and devices are
never opened; what is read is capped. Folders above ``base`` are not checked: U owns ``base``,
so whatever U could put there, U could have written anyway.
"""
from __future__ import annotations

import os
import pwd
import secrets
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DPUError

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH
CARDS_PER_USER = 10000   # cards listed per user folder; a folder of a million files must not stall the page
LOOKUPS = 1000           # names looked up one by one (users the passwd listing lacks, e.g. LDAP)
REFUSALS = 100           # refusals reported per scan (the rest are counted)


@dataclass(frozen=True)
class OwnedFile:
    """``base/rel``, to be read only if base and every step below it is owned by `uid`.
    An empty `rel` checks the folder `base` itself (read as b"" when it passes)."""

    base: str
    rel: str
    uid: int

    @property
    def path(self) -> str:
        """The full path: base/rel, or base when rel is empty."""
        return f"{self.base}/{self.rel}" if self.rel else self.base


@dataclass
class OwnedRead:
    """What read_owned brought back: path -> bytes (None: missing or refused) and the refusals."""

    data: Dict[str, Optional[bytes]] = field(default_factory=dict)
    refused: Dict[str, str] = field(default_factory=dict)


@dataclass
class Listed:
    """One card found in the index: `user` is the folder name, `uid` that user's uid."""

    path: str
    user: str
    uid: int
    mtime: float


@dataclass
class IndexScan:
    """The cards of an index (modified after `since`) and the entries refused, with why."""

    cards: List[Listed] = field(default_factory=list)
    refused: List[Tuple[str, str]] = field(default_factory=list)   # (name below the root, why)


def who(uid: int) -> str:
    """A uid with its user name, for messages."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


class Refused(Exception):
    """A file or folder the reader must not use; the message says why."""


def _check(st: os.stat_result, uid: int, is_dir: bool, private: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise Refused("is a symbolic link")
    if is_dir and not stat.S_ISDIR(st.st_mode):
        raise Refused("is not a folder")
    if not is_dir and not stat.S_ISREG(st.st_mode):
        raise Refused("is not a regular file")
    if st.st_uid != uid:
        raise Refused(f"belongs to {who(st.st_uid)}, not to {who(uid)}")
    if private and st.st_mode & SHARED_WRITE:
        raise Refused(f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def open_checked(name: str, dir_fd: Optional[int], uid: int, is_dir: bool,
                 private: bool = False) -> int:
    """Open one step without following a symlink, after checking type and owner (twice)."""
    before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    _check(before, uid, is_dir, private)
    try:
        fd = os.open(name, DIR_FLAGS if is_dir else FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise Refused(f"cannot be opened ({exc.strerror})") from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise Refused("changed while it was checked")
    return fd


def read_capped(fd: int, cap: int, tail: bool) -> bytes:
    """At most `cap` bytes: the end of the file when `tail`, else the whole file or Refused."""
    size = os.fstat(fd).st_size
    if tail and size > cap:
        os.lseek(fd, size - cap, os.SEEK_SET)
    limit = cap if tail else cap + 1
    chunks: List[bytes] = []
    while limit > 0:
        block = os.read(fd, min(limit, 1 << 20))
        if not block:
            break
        chunks.append(block)
        limit -= len(block)
    data = b"".join(chunks)
    if not tail and len(data) > cap:
        raise Refused(f"is larger than {cap} bytes")
    return data


def read_one(item: OwnedFile, cap: int, tail: bool = False, private: bool = False) -> Optional[bytes]:
    """One owner-checked read; None when it does not exist, Refused when it must not be used."""
    parts = [p for p in item.rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise Refused("has . or .. in its path")
    try:
        fd = open_checked(item.base, None, item.uid, True, private)
    except FileNotFoundError:
        return None
    try:
        for part in parts[:-1]:
            step = open_checked(part, fd, item.uid, True, private)
            os.close(fd)
            fd = step
        if not parts:
            return b""
        last = open_checked(parts[-1], fd, item.uid, False, private)
        try:
            return read_capped(last, cap, tail)
        finally:
            os.close(last)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(fd)


def read_owned(files: Sequence[OwnedFile], cap: int, tail: bool = False,
               private: bool = False) -> OwnedRead:
    """Read each file only if it and its folders pass the owner checks; refusals listed by path."""
    out = OwnedRead()
    for item in files:
        try:
            out.data[item.path] = read_one(item, cap, tail, private)
        except Refused as exc:
            out.data[item.path] = None
            out.refused[item.path] = str(exc)
        except OSError as exc:
            out.data[item.path] = None
            out.refused[item.path] = f"cannot be read ({exc.strerror})"
    return out


def owner_of(path: str, owners: Dict[str, int]) -> Optional[OwnedFile]:
    """The OwnedFile for a path below one of the owned folders (keys without a trailing /)."""
    head = path
    while "/" in head:
        head = head.rsplit("/", 1)[0]
        uid = owners.get(head)
        if uid is not None:
            return OwnedFile(head, path[len(head) + 1:], uid)
    return None


def started_owned(jobdir: str, uid: int, wanted: Sequence[int]) -> List[int]:
    """The wanted process indices that have a folder jobdir/p/<i> (owner-checked listing)."""
    want = set(wanted)
    try:
        fd = open_checked(jobdir, None, uid, True)
    except (OSError, Refused):
        return []
    try:
        pfd = open_checked("p", fd, uid, True)
    except (OSError, Refused):
        return []
    finally:
        os.close(fd)
    try:
        names = os.listdir(pfd)
    finally:
        os.close(pfd)
    return sorted(int(n) for n in names if n.isdigit() and int(n) in want)


def account() -> Tuple[str, int]:
    """This process's effective user name and uid."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


def user_ids(names: Sequence[str]) -> Dict[str, Optional[int]]:
    """The uid of each user name (None: no such user)."""
    out: Dict[str, Optional[int]] = {}
    for name in names:
        try:
            out[name] = pwd.getpwnam(name).pw_uid
        except KeyError:
            out[name] = None
    return out


# -- the job index ---------------------------------------------------------------------------
def scan_index(root: str, since: float) -> IndexScan:
    """Every user folder of the index: named after a user, owned by that user's uid, not
    writable by others; each card in it a regular file owned by that uid, not writable by others."""
    scan = IndexScan()
    try:
        rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)  # the root is the admin's
    except FileNotFoundError:
        return scan
    except OSError as exc:
        raise DPUError(f"cannot read the job index {root}: {exc.strerror}") from None
    # Junk folders must not cost a passwd lookup each: the passwd listing first, few lookups.
    known = {p.pw_name: p.pw_uid for p in pwd.getpwall()}
    lookups = 0
    try:
        for name in sorted(os.listdir(rfd)):
            if name.startswith("."):
                continue
            uid = known.get(name)
            if uid is None and lookups < LOOKUPS:
                lookups += 1
                uid = user_ids([name])[name]
            _scan_user(rfd, root, name, uid, since, scan)
    finally:
        os.close(rfd)
    if len(scan.refused) > REFUSALS:
        more = len(scan.refused) - REFUSALS
        scan.refused[REFUSALS:] = [("...", f"and {more} more entries refused")]
    return scan


def _scan_user(rfd: int, root: str, name: str, uid: Optional[int], since: float,
               scan: IndexScan) -> None:
    if uid is None:
        scan.refused.append((name, "is named after no user of the DPU"))
        return
    try:
        dfd = open_checked(name, rfd, uid, True, private=True)
    except FileNotFoundError:
        return
    except Refused as exc:
        scan.refused.append((name, str(exc)))
        return
    try:
        count = 0
        for card in sorted(os.listdir(dfd)):
            if card.startswith(".") or not card.endswith(".json"):
                continue   # temp files of a card being written, and anything else
            try:
                st = os.stat(card, dir_fd=dfd, follow_symlinks=False)
                if st.st_mtime < since:
                    continue
                _check(st, uid, False, True)
            except FileNotFoundError:
                continue
            except Refused as exc:
                scan.refused.append((f"{name}/{card}", str(exc)))
                continue
            count += 1
            if count > CARDS_PER_USER:
                scan.refused.append((name, f"holds more than {CARDS_PER_USER} recent cards; "
                                           "the newest others are not read"))
                break
            scan.cards.append(Listed(f"{root}/{name}/{card}", name, uid, st.st_mtime))
    finally:
        os.close(dfd)


def write_own(root: str, folder: str, name: str, data: bytes, mode: int = 0o644) -> None:
    """Write root/folder/name: root is a shared sticky folder (made 1777 when missing), folder
    must be ours and not writable by others (made 0755 when missing). DPUError says what is wrong."""
    if not os.path.lexists(root):
        os.makedirs(os.path.dirname(root) or "/", exist_ok=True)
        try:
            os.mkdir(root, 0o700)
            os.chmod(root, 0o1777)  # noqa: S103 - shared and sticky, set after mkdir to beat the umask
        except FileExistsError:
            pass                     # another user made it first
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        me = os.geteuid()
        made = False
        try:
            os.mkdir(folder, 0o700, dir_fd=rfd)
            made = True
        except FileExistsError:
            pass
        except PermissionError:
            raise DPUError(f"cannot make your card folder in the job index {root}: permission "
                           "denied. The index is shared only when its admin made it so: "
                           f"install -d -m 1777 {root}") from None
        try:
            dfd = open_checked(folder, rfd, me, True, private=not made)
        except Refused as exc:
            raise DPUError(folder_refused(f"{root}/{folder}", str(exc))) from None
        try:
            if made:
                os.fchmod(dfd, 0o755)
            write_at(dfd, name, data, mode)
        finally:
            os.close(dfd)
    finally:
        os.close(rfd)


def folder_refused(path: str, why: str) -> str:
    """The message for a card folder that is not safely ours, with the command that fixes it."""
    return (f"your card folder {path} {why}; it may have been made by someone else. Remove it "
            f"(ask the admin if it is not yours: rm -r {path}); the next submit makes it again")


def write_at(dfd: int, name: str, data: bytes, mode: int) -> None:
    """Write name in the open folder dfd through a fresh temp name (O_EXCL|O_NOFOLLOW), then rename."""
    while True:
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"   # never *.json: a reader lists only those
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC,
                         0o600, dir_fd=dfd)
            break
        except FileExistsError:
            continue
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
