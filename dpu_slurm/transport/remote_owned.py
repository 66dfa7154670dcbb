"""The remote helper's reads and writes of files other users may reach (job cards, their job
folders, the shared index): the rules of owned.py, kept in step with it, for Python 3.6+ and the
standard library only. Not run alone: remote_helper.SOURCE embeds it (one program per round
trip), so it uses that program's imports and constants (CLOEXEC, write_all, RECORD_CAP...).
"""

SOURCE = r'''
# -- other users' files: the rules of dpu_slurm/transport/owned.py, kept in step with it ----
def who(uid):
    try:
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return "uid %d" % uid

class Refused(Exception):
    pass

def check(st, uid, is_dir, private):
    if stat.S_ISLNK(st.st_mode):
        raise Refused("is a symbolic link")
    if is_dir and not stat.S_ISDIR(st.st_mode):
        raise Refused("is not a folder")
    if not is_dir and not stat.S_ISREG(st.st_mode):
        raise Refused("is not a regular file")
    if st.st_uid != uid:
        raise Refused("belongs to %s, not to %s" % (who(st.st_uid), who(uid)))
    if private and st.st_mode & SHARED_WRITE:
        raise Refused("is writable by group or others (mode %o)" % stat.S_IMODE(st.st_mode))

def open_checked(name, dir_fd, uid, is_dir, private=False):
    before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    check(before, uid, is_dir, private)
    try:
        fd = os.open(name, DIR_FLAGS if is_dir else FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise Refused("cannot be opened (%s)" % exc.strerror)
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise Refused("changed while it was checked")
    return fd

def read_capped(fd, cap, tail):
    size = os.fstat(fd).st_size
    if tail and size > cap:
        os.lseek(fd, size - cap, os.SEEK_SET)
    limit = cap if tail else cap + 1
    chunks = []
    while limit > 0:
        block = os.read(fd, min(limit, 1 << 20))
        if not block:
            break
        chunks.append(block)
        limit -= len(block)
    data = b"".join(chunks)
    if not tail and len(data) > cap:
        raise Refused("is larger than %d bytes" % cap)
    return data

def read_one(base, rel, uid, cap, tail=False, private=False):
    parts = [p for p in rel.split("/") if p]
    if [p for p in parts if p in (".", "..")]:
        raise Refused("has . or .. in its path")
    try:
        fd = open_checked(base, None, uid, True, private)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        for part in parts[:-1]:
            step = open_checked(part, fd, uid, True, private)
            os.close(fd)
            fd = step
        if not parts:
            return b""
        last = open_checked(parts[-1], fd, uid, False, private)
        try:
            return read_capped(last, cap, tail)
        finally:
            os.close(last)
    except (IOError, OSError) as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    finally:
        os.close(fd)

def read_owned(files, cap, tail=False, private=False):
    data, refused = {}, {}
    for base, rel, uid in files:
        path = base + "/" + rel if rel else base
        try:
            data[path] = b64(read_one(base, rel, uid, cap, tail, private))
        except Refused as exc:
            data[path] = None
            refused[path] = str(exc)
        except (IOError, OSError) as exc:
            data[path] = None
            refused[path] = "cannot be read (%s)" % exc.strerror
    return {"data": data, "refused": refused}

def owner_of(path, owners):
    head = path
    while "/" in head:
        head = head.rsplit("/", 1)[0]
        if head in owners:
            return head, path[len(head) + 1:], owners[head]
    return None

def started_owned(jobdir, uid, wanted):
    try:
        fd = open_checked(jobdir, None, uid, True)
    except (Refused, IOError, OSError):
        return []
    try:
        pfd = open_checked("p", fd, uid, True)
    except (Refused, IOError, OSError):
        return []
    finally:
        os.close(fd)
    try:
        names = os.listdir(pfd)
    finally:
        os.close(pfd)
    return sorted(int(n) for n in names if n.isdigit() and int(n) in wanted)

def user_ids(names):
    out = {}
    for name in names:
        try:
            out[name] = pwd.getpwnam(name).pw_uid
        except KeyError:
            out[name] = None
    return out

def scan_index(root, since):
    cards, refused = [], []
    try:
        rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return {"cards": cards, "refused": refused, "error": None}
        return {"cards": cards, "refused": refused,
                "error": "cannot read the job index %s: %s" % (root, exc.strerror)}
    known = dict((p.pw_name, p.pw_uid) for p in pwd.getpwall())
    lookups = 0
    try:
        for name in sorted(os.listdir(rfd)):
            if name.startswith("."):
                continue
            uid = known.get(name)
            if uid is None and lookups < LOOKUPS:
                lookups += 1
                uid = user_ids([name])[name]
            scan_user(rfd, root, name, uid, since, cards, refused)
    finally:
        os.close(rfd)
    if len(refused) > REFUSALS:
        refused[REFUSALS:] = [["...", "and %d more entries refused" % (len(refused) - REFUSALS)]]
    return {"cards": cards, "refused": refused, "error": None}

def scan_user(rfd, root, name, uid, since, cards, refused):
    if uid is None:
        refused.append([name, "is named after no user of the DPU"])
        return
    try:
        dfd = open_checked(name, rfd, uid, True, True)
    except Refused as exc:
        refused.append([name, str(exc)])
        return
    except (IOError, OSError):
        return
    try:
        count = 0
        for card in sorted(os.listdir(dfd)):
            if card.startswith(".") or not card.endswith(".json"):
                continue
            try:
                st = os.stat(card, dir_fd=dfd, follow_symlinks=False)
                if st.st_mtime < since:
                    continue
                check(st, uid, False, True)
            except (IOError, OSError):
                continue
            except Refused as exc:
                refused.append([name + "/" + card, str(exc)])
                continue
            count += 1
            if count > CARDS_PER_USER:
                refused.append([name, "holds more than %d recent cards; the newest others are "
                                      "not read" % CARDS_PER_USER])
                break
            cards.append(["%s/%s/%s" % (root, name, card), name, uid, st.st_mtime])
    finally:
        os.close(dfd)

def write_own(root, folder, name, data):
    if not os.path.lexists(root):
        parent = os.path.dirname(root) or "/"
        if not os.path.isdir(parent):
            os.makedirs(parent)
        try:
            os.mkdir(root, 0o700)
            os.chmod(root, 0o1777)  # after mkdir: the umask must not take the sticky, shared mode
        except (IOError, OSError) as exc:
            if exc.errno != errno.EEXIST:
                raise
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
    try:
        made = False
        try:
            os.mkdir(folder, 0o700, dir_fd=rfd)
            made = True
        except (IOError, OSError) as exc:
            if exc.errno == errno.EACCES:
                return ("cannot make your card folder in the job index %s: permission denied. The "
                        "index is shared only when its admin made it so: install -d -m 1777 %s"
                        % (root, root))
            if exc.errno != errno.EEXIST:
                raise
        try:
            dfd = open_checked(folder, rfd, os.geteuid(), True, not made)
        except Refused as exc:
            path = root + "/" + folder
            return ("your card folder %s %s; it may have been made by someone else. Remove it "
                    "(ask the admin if it is not yours: rm -r %s); the next submit makes it again"
                    % (path, exc, path))
        try:
            if made:
                os.fchmod(dfd, 0o755)
            write_at(dfd, name, data, 0o644)
        finally:
            os.close(dfd)
    finally:
        os.close(rfd)
    return None

def write_at(dfd, name, data, mode):
    while True:
        tmp = ".%s.%s.tmp" % (name, binascii.hexlify(os.urandom(8)).decode())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | CLOEXEC,
                         0o600, dir_fd=dfd)
            break
        except (IOError, OSError) as exc:
            if exc.errno != errno.EEXIST:
                raise
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise

def own_workdir(path, subs):
    # The rules of folders.workdir_problem, kept in step with it.
    try:
        if not os.path.isdir(path):
            os.makedirs(path)
        return check_workdir(path, subs)
    except (IOError, OSError) as exc:
        return ("cannot make or check the workdir %s: %s (%s); name a folder of yours in the "
                "DPU's YAML" % (path, exc.strerror, exc.filename))

def check_workdir(path, subs):
    me, gid = os.geteuid(), os.getegid()
    bad = shared_folder(os.stat("/"), me, gid, False)
    if bad:
        return unsafe(path, "/", bad)
    todo = [p for p in path.split("/") if p]
    done, hops = "", 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = done.rsplit("/", 1)[0]
            continue
        step = done + "/" + part
        st = os.lstat(step)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, me):
                return unsafe(path, step, "is a symbolic link of %s" % who(st.st_uid))
            hops += 1
            if hops > 40:
                return unsafe(path, step, "leads through too many symbolic links")
            target = os.readlink(step)
            done = "" if target.startswith("/") else done
            todo[:0] = [p for p in target.split("/") if p]
            continue
        if not stat.S_ISDIR(st.st_mode):
            bad = "is not a folder"
        else:
            bad = shared_folder(st, me, gid, False)
        if bad:
            return unsafe(path, step, bad)
        done = step
    real = done or "/"
    bad = shared_folder(os.lstat(real), me, gid, True)
    if bad:
        return unsafe(path, real, bad)
    for sub in subs:
        folder = real + "/" + sub
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o755)
        except (IOError, OSError) as exc:
            if exc.errno != errno.EEXIST:
                raise
        st = os.lstat(folder)
        bad = "is not a folder" if not stat.S_ISDIR(st.st_mode) else shared_folder(st, me, gid, True)
        if bad:
            return unsafe(path, folder, bad)
    return None

def shared_folder(st, me, gid, leaf):
    if st.st_uid != me and (leaf or st.st_uid != 0):
        return "belongs to %s" % who(st.st_uid)
    others = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != gid)
    if others and (leaf or not st.st_mode & stat.S_ISVTX):
        return "is writable by other users (mode %o)" % stat.S_IMODE(st.st_mode)
    return ""

def unsafe(path, folder, why):
    return ("the workdir %s is not safe for your jobs: %s %s, so someone else could change your "
            "job scripts or code there. Use a folder of yours that only you can write (chmod "
            "go-w; in a shared scratch: mkdir -m 755 %s before anyone else), or name another "
            "workdir in the DPU's YAML" % (path, folder, why, path))
'''
