"""The program the SSH transport runs on the DPU for batched work (one round trip each).

It is sent as the argument of ``python3 -c`` and reads one JSON request on stdin; standard
library only, Python 3.6+. Kept in its own file so it can be read and tested as Python.
"""

SOURCE = r'''
import base64, hashlib, json, os, shutil, subprocess, sys, tarfile, time, uuid

def b64(data):
    return None if data is None else base64.b64encode(data).decode("ascii")

def read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (IOError, OSError):
        return None

def write(path, data):
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        os.makedirs(folder)
    tmp = "%s/.%s.%d.tmp" % (folder, os.path.basename(path), os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.rename(tmp, path)

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

def remove_bundles(root, keep, older_than):
    removed = []
    if not os.path.isdir(root):
        return removed
    now = time.time()
    for name in os.listdir(root):
        path = os.path.join(root, name)
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
    if req.get("write"):
        for path, data in sorted(req["write"].items()):
            write(path, base64.b64decode(data))
    if req.get("run"):
        try:
            proc = subprocess.Popen(req["run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            o, e = proc.communicate()
            out["run"] = [proc.returncode, o.decode("utf-8", "replace"), e.decode("utf-8", "replace")]
        except OSError as exc:
            out["run"] = [127, "", "%s: %s" % (req["run"][0], exc.strerror)]
    if "files" in req:
        out["files"] = dict((p, b64(read(p))) for p in req["files"])
    if "records" in req:
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
