"""The program the SSH transport runs on the DPU for batched work (one round trip each).

It is sent as the argument of ``python3 -c`` and reads one JSON request on stdin; standard
library only, Python 3.6+. Kept in its own files so it can be read and tested as Python:
this one (file I/O, bundles, the request loop) and remote_owned.py (other users' files).
"""
from . import remote_owned

_BASE = r'''
import base64, binascii, errno, hashlib, json, os, pwd, re, shutil, stat, subprocess, sys, tarfile
import tempfile, time, uuid

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | CLOEXEC
SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH
RECORD_CAP = 64 << 10
FILE_CAP = 16 << 20
CARDS_PER_USER = 10000
LOOKUPS = 1000
REFUSALS = 100

def b64(data):
    return None if data is None else base64.b64encode(data).decode("ascii")

def read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (IOError, OSError):
        return None

def write(path, data, mode=0o644):
    # A fresh name (mkstemp: O_EXCL|O_NOFOLLOW) beside the target, then rename.
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
'''

_BUNDLES = r'''
def tree_hash(root):
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]  # jobs compile into the bundle
        for name in files:
            if name.endswith(".pyc"):
                continue
            names.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    outer = hashlib.sha256()
    for name in sorted(names):
        path = os.path.join(root, name)
        inner = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                inner.update(block)
        mode = "x" if os.access(path, os.X_OK) else "-"
        outer.update(("%s\0%s\0%s\n" % (name, mode, inner.hexdigest())).encode())
    return outer.hexdigest()

def check_bundle(final, digest):
    if not os.path.isdir(final):
        return "missing"
    if tree_hash(final) != digest:
        return "altered"
    os.utime(final, None)
    return "ok"

def install_bundle(tar, sha, final, digest):
    h = hashlib.sha256()
    with open(tar, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != sha:
        os.remove(tar)
        return "upload corrupted: sha256 %s, expected %s" % (h.hexdigest(), sha)
    tmp = "%s.%s.unpack" % (final, uuid.uuid4().hex[:8])
    tmp = os.path.join(os.path.dirname(final), "." + os.path.basename(tmp))
    with tarfile.open(tar, "r:gz") as archive:
        for member in archive.getmembers():
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts or not member.isfile():
                return "unsafe member %r in bundle" % member.name
        archive.extractall(tmp)
    os.remove(tar)
    if tree_hash(tmp) != digest:
        shutil.rmtree(tmp, True)
        return "bundle unpacked to a different tree hash"
    if os.path.isdir(final) and check_bundle(final, digest) != "ok":
        bad = os.path.join(os.path.dirname(final), ".%s.bad.%s" % (digest, uuid.uuid4().hex[:8]))
        os.rename(final, bad)
        shutil.rmtree(bad, True)
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, True)  # another submitter installed the same content first
    return "ok" if check_bundle(final, digest) == "ok" else "install failed"

# Left by a killed unpack, upload, install or replacement (transport/local.py: LEFTOVER).
LEFTOVER = re.compile(r"^\.[0-9a-f]{64}\.(?:[A-Za-z0-9_]+\.(?:tmp|part|unpack)|bad\.[0-9a-f]+)$")
LEFTOVER_AGE = 3600.0

def remove_leftover(path, older_than, now):
    try:
        st = os.lstat(path)
        if now - st.st_mtime < max(older_than, LEFTOVER_AGE):
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, True)
        else:
            os.unlink(path)
    except OSError:
        pass

def remove_bundles(root, keep, older_than):
    removed = []
    if not os.path.isdir(root):
        return removed
    now = time.time()
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if LEFTOVER.match(name):
            remove_leftover(path, older_than, now)
            continue
        if name.startswith(".") or name in keep or not os.path.isdir(path):
            continue
        if now - os.stat(path).st_mtime >= older_than:
            shutil.rmtree(path, True)
            removed.append(name)
    return sorted(removed)

def main():
    req = json.loads(sys.stdin.read())
    out = {}
    if req.get("home"):
        out["home"] = os.path.expanduser("~")
        uid = os.geteuid()
        try:
            out["account"] = [pwd.getpwuid(uid).pw_name, uid]
        except KeyError:
            out["account"] = [str(uid), uid]
    if req.get("write"):
        for path, data in sorted(req["write"].items()):
            write(path, base64.b64decode(data))
    if "write_own" in req:
        root, folder, name, data = req["write_own"]
        out["write_own"] = write_own(root, folder, name, base64.b64decode(data))
    if "own_workdir" in req:
        out["own_workdir"] = own_workdir(*req["own_workdir"])
    if "uids" in req:
        out["uids"] = user_ids(req["uids"])
    if "owned" in req:
        spec = req["owned"]
        out["owned"] = read_owned(spec["files"], spec["cap"], spec["tail"], spec["private"])
    if "scan_index" in req:
        out["index"] = scan_index(*req["scan_index"])
    if req.get("run"):
        try:
            proc = subprocess.Popen(req["run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            o, e = proc.communicate()
            out["run"] = [proc.returncode, o.decode("utf-8", "replace"), e.decode("utf-8", "replace")]
        except OSError as exc:
            out["run"] = [127, "", "%s: %s" % (req["run"][0], exc.strerror)]
    owners = req.get("owners")
    if "files" in req and owners is not None:
        files = {}
        caps = req.get("caps") or {}
        for p in req["files"]:
            item = owner_of(p, owners)
            cap = FILE_CAP if item is None else caps.get(item[0], FILE_CAP)
            files[p] = None if item is None else read_owned([item], cap)["data"][p]
        out["files"] = files
    elif "files" in req:
        out["files"] = dict((p, b64(read(p))) for p in req["files"])
    if "records" in req and owners is not None:
        found = {}
        for jobdir, ranges in req["records"].items():
            if jobdir not in owners:
                continue
            wanted = set()
            for lo, hi in ranges:
                wanted.update(range(lo, hi + 1))
            uid = owners[jobdir]
            for idx in started_owned(jobdir, uid, wanted):
                got = read_owned([[jobdir, "p/%d/%s" % (idx, req["record_name"]), uid]], RECORD_CAP)
                data = list(got["data"].values())[0]
                if data is not None:
                    found["%s|%s" % (jobdir, idx)] = data
        out["records"] = found
    elif "records" in req:
        found = {}
        for jobdir, ranges in req["records"].items():
            try:
                listing = os.listdir(os.path.join(jobdir, "p"))
            except OSError:
                continue
            wanted = set()
            for lo, hi in ranges:
                wanted.update(range(lo, hi + 1))
            for name in listing:
                if name.isdigit() and int(name) in wanted:
                    data = read(os.path.join(jobdir, "p", name, req["record_name"]))
                    if data is not None:
                        found["%s|%s" % (jobdir, name)] = b64(data)
        out["records"] = found
    if "check_bundle" in req:
        out["bundle"] = check_bundle(*req["check_bundle"])
    if "install_bundle" in req:
        out["bundle"] = install_bundle(*req["install_bundle"])
    if "remove_bundles" in req:
        root, keep, older = req["remove_bundles"]
        out["removed"] = remove_bundles(root, set(keep), older)
    sys.stdout.write(json.dumps(out))

main()
'''

# One program, one round trip: the owner-checked reads of other users' files are kept in
# remote_owned.py (the rules of owned.py, written for Python 3.6 without dpu_slurm).
SOURCE = _BASE + remote_owned.SOURCE + _BUNDLES
