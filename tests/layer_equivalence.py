#!/usr/bin/env python3
"""The built-in EROFS writer against mkfs.erofs and a reference extraction.

    layer_equivalence.py CTL IMAGE.tar WORKDIR

IMAGE.tar is an OCI image-layout archive (what `ctr images import` takes).
Its layers, bottom first, are applied with `CTL` (erofs-snapshotter-ctl) on
two fresh roots: one with the default configuration (the built-in writer),
one with `"mkfs_options": ["-x2"]` (an option only mkfs.erofs implements, so
every layer goes through `mkfs.erofs --tar=f`). The top layer of each is
viewed and mounted (overlayfs over the EROFS layers), and the two trees must
be equal in everything stat and the xattr calls show: names, types, modes,
owners, mtimes with nanoseconds, xattrs, contents, link targets, hard-link
groups, device numbers. Both must also equal the tree a reference
extraction gives: the layers read with Python's tarfile, whiteouts and
opaque markers applied as the OCI image spec says.

Prints one line per layer and a summary; exits 1 on the first difference
(up to 20 listed), 2 on a usage or setup error. Needs root (mounts).
"""

import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile

WH = ".wh."
OPAQUE = ".wh..wh..opq"


def die(msg, code=2):
    print(f"layer_equivalence: {msg}", file=sys.stderr)
    sys.exit(code)


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        die(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def layers_of(image, into):
    """The layers of an OCI archive, bottom first: (blob path, media type)."""
    with tarfile.open(image) as t:
        def member(name):
            f = t.extractfile(name)
            if f is None:
                die(f"{image}: no {name}")
            return f

        def blob(digest):
            return "blobs/" + digest.replace(":", "/", 1)

        index = json.load(member("index.json"))
        manifest = json.load(member(blob(index["manifests"][0]["digest"])))
        out = []
        for i, layer in enumerate(manifest["layers"]):
            path = os.path.join(into, f"layer-{i}")
            with open(path, "wb") as f:
                src = member(blob(layer["digest"]))
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            out.append((path, layer["mediaType"]))
        return out


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def dump(root):
    """Every entry under root (relative path -> attributes), and the hard-link
    groups (sets of paths with one inode)."""
    tree, inodes = {}, {}
    stack = [""]
    while stack:
        rel = stack.pop()
        p = os.path.join(root, rel) if rel else root
        st = os.lstat(p)
        kind = stat.S_IFMT(st.st_mode)
        a = {
            "type": kind,
            "mode": st.st_mode & 0o7777,
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
            "xattrs": {
                n: os.getxattr(p, n, follow_symlinks=False)
                for n in sorted(os.listxattr(p, follow_symlinks=False))
            },
        }
        if stat.S_ISREG(kind):
            a["size"] = st.st_size
            a["sha256"] = digest(p)
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        elif stat.S_ISLNK(kind):
            a["target"] = os.readlink(p)
        elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
            a["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        elif stat.S_ISDIR(kind):
            for name in os.listdir(p):
                stack.append(os.path.join(rel, name) if rel else name)
        tree[rel] = a
    groups = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return tree, groups


def norm(name):
    parts = [c for c in name.split("/") if c not in ("", ".")]
    if ".." in parts:
        die(f"entry {name!r} leaves the root (the corpus here has none)")
    return "/".join(parts)


def pax_mtime_ns(m):
    raw = m.pax_headers.get("mtime")
    if raw is None:
        return int(m.mtime) * 1_000_000_000
    secs, _, frac = raw.partition(".")
    return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9]) * (
        -1 if secs.startswith("-") else 1
    )


def reference(layers):
    """The tree the layers give when extracted in order with OCI's whiteout
    rules: path -> attributes (as dump() gives them, directories only
    implied by their entries marked "implied"), and the hard-link groups."""
    tree = {"": {"type": stat.S_IFDIR, "implied": True, "layer": -1}}
    link_of = {}  # path -> the path of the group's first name

    def remove(path, below_layer=None):
        gone = [p for p in tree if p == path or p.startswith(path + "/")]
        for p in gone:
            if p == path and below_layer is not None:
                continue
            if below_layer is None or tree[p]["layer"] < below_layer:
                del tree[p]
                link_of.pop(p, None)

    for li, (path, _) in enumerate(layers):
        with tarfile.open(path, "r:*") as t:
            for m in t:
                name = norm(m.name)
                parent, _, base = name.rpartition("/")
                if base == OPAQUE:
                    remove(parent, below_layer=li)
                    continue
                if base.startswith(WH):
                    remove(os.path.join(parent, base[len(WH):]) if parent else base[len(WH):])
                    continue
                # Parents the layer implies.
                parts = name.split("/")[:-1]
                for i in range(len(parts)):
                    d = "/".join(parts[: i + 1])
                    if d not in tree or tree[d]["type"] != stat.S_IFDIR:
                        remove(d)
                        tree[d] = {"type": stat.S_IFDIR, "implied": True, "layer": li}
                old = tree.get(name)
                if old is not None and not (m.isdir() and old["type"] == stat.S_IFDIR):
                    remove(name)
                a = {
                    "mode": m.mode & 0o7777,
                    "uid": m.uid,
                    "gid": m.gid,
                    "mtime_ns": pax_mtime_ns(m),
                    "xattrs": {
                        k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                        for k, v in sorted(m.pax_headers.items())
                        if k.startswith("SCHILY.xattr.")
                    },
                    "layer": li,
                }
                if m.islnk():
                    target = norm(m.linkname)
                    if target not in tree:
                        die(f"layer {li}: {name}: hard link to missing {target}")
                    tree[name] = dict(tree[target], layer=li)
                    link_of[name] = link_of.setdefault(target, target)
                    continue
                if m.isreg():
                    h = hashlib.sha256()
                    f = t.extractfile(m)
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                    a.update(type=stat.S_IFREG, size=m.size, sha256=h.hexdigest())
                elif m.isdir():
                    a["type"] = stat.S_IFDIR
                elif m.issym():
                    a.update(type=stat.S_IFLNK, target=m.linkname)
                elif m.ischr() or m.isblk():
                    a.update(
                        type=stat.S_IFCHR if m.ischr() else stat.S_IFBLK,
                        rdev=(m.devmajor, m.devminor),
                    )
                elif m.isfifo():
                    a["type"] = stat.S_IFIFO
                else:
                    die(f"layer {li}: {name}: entry type {m.type!r} not modelled")
                tree[name] = a
    groups = {}
    for p, first in link_of.items():
        if p in tree and first in tree:
            groups.setdefault(first, {first}).add(p)
    for a in tree.values():
        a.pop("layer", None)
    return tree, sorted(sorted(g) for g in groups.values() if len(g) > 1)


def differences(left, right, lname, rname, ignore_implied=False):
    out = []
    for p in sorted(set(left) | set(right)):
        a, b = left.get(p), right.get(p)
        if a is None or b is None:
            out.append(f"/{p}: only in {lname if b is None else rname}")
            continue
        if ignore_implied and b.get("implied"):
            if a["type"] != b["type"]:
                out.append(f"/{p}: type {a['type']:o} in {lname}, a directory in {rname}")
            continue
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(f"/{p}: {k}: {a.get(k)!r} in {lname}, {b.get(k)!r} in {rname}")
    return out


def build(ctl, root, config, layers):
    """Applies the layers on a fresh root and mounts a view of the top one;
    returns the mount point."""
    cfg = json.dumps(dict(config, root=root))
    parent = ""
    for i, (path, media) in enumerate(layers):
        run([ctl, "--config", cfg, "prepare", f"a{i}", parent])
        run([ctl, "--config", cfg, "apply", f"a{i}", path, media])
        run([ctl, "--config", cfg, "commit", f"l{i}", f"a{i}"])
        parent = f"l{i}"
    target = root + ".mnt"
    os.mkdir(target)
    run([ctl, "--config", cfg, "view", "v", parent])
    run([ctl, "--config", cfg, "mount", "v", target])
    return target


def main():
    if len(sys.argv) != 4:
        die(__doc__.strip().splitlines()[2].strip())
    ctl, image, work = sys.argv[1:]
    work = tempfile.mkdtemp(prefix="equivalence.", dir=work)
    layers = layers_of(image, work)
    trees, mounted = {}, []
    try:
        for name, config in (("built-in", {}), ("mkfs.erofs", {"mkfs_options": ["-x2"]})):
            target = build(ctl, os.path.join(work, name), config, layers)
            mounted.append(target)
            trees[name] = dump(target)
    finally:
        for target in mounted:
            subprocess.run([ctl, "unmount", target], capture_output=True)
    ref, ref_groups = reference(layers)
    (b, b_groups), (m, m_groups) = trees["built-in"], trees["mkfs.erofs"]
    diffs = differences(b, m, "built-in", "mkfs.erofs")
    if b_groups != m_groups:
        diffs.append(f"hard-link groups: {b_groups} in built-in, {m_groups} in mkfs.erofs")
    diffs += differences(b, ref, "built-in", "tarfile", ignore_implied=True)
    if b_groups != ref_groups:
        diffs.append(f"hard-link groups: {b_groups} in built-in, {ref_groups} in tarfile")
    if diffs:
        for d in diffs[:20]:
            print(d)
        die(f"{image}: {len(diffs)} differences (work dir {work} kept)", 1)
    files = sum(1 for a in b.values() if a["type"] == stat.S_IFREG)
    print(
        f"{os.path.basename(image)}: {len(layers)} layers, {len(b)} entries "
        f"({files} files, {len(b_groups)} hard-link groups): "
        "built-in = mkfs.erofs = tarfile extraction"
    )
    subprocess.run(["rm", "-rf", work], check=True)


if __name__ == "__main__":
    main()
