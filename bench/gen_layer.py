#!/usr/bin/env python3
"""Deterministic layer tars for bench/writer.sh (the same arguments give the
same bytes: a seeded PRNG, fixed mtimes and owners, GNU format).

    gen_layer.py synthetic OUT.tar   about 1 GiB in about 200,000 entries
    gen_layer.py small OUT.tar       10,000 small files in 100 directories

synthetic: 2,020 directories (20 top ones, 100 below each), 195,472 regular
files of mostly small sizes (45% under 1 KiB, 40% 1 to 4 KiB, 12% 4 to
16 KiB, 3% 16 to 64 KiB; 1 in 100 with a name past 100 bytes), 2,000
symlinks, 500 hard links and 8 files of 24 MiB: 200,000 entries. File data
are slices of a 16 MiB pool, half random bytes and half words, so the gzip
of the tar compresses about as much as a typical layer does.
"""

import io
import random
import sys
import tarfile

MTIME = 1700000000
POOL_SIZE = 16 << 20


def make_pool(rng):
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(4096)
    ]
    text = bytearray()
    while len(text) < POOL_SIZE // 2:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        text += line.encode() + b"\n"
    pool = rng.randbytes(POOL_SIZE // 2) + bytes(text[: POOL_SIZE // 2])
    return pool + pool[: 64 << 10]  # a slice may run past the end by up to 64 KiB


class PoolReader:
    """`size` bytes from the pool, starting at `offset`, wrapping around."""

    def __init__(self, pool, offset, size):
        self.pool, self.pos, self.left = pool, offset % POOL_SIZE, size

    def read(self, n=-1):
        if n < 0 or n > self.left:
            n = self.left
        out = bytearray()
        while len(out) < n:
            k = min(n - len(out), POOL_SIZE - self.pos)
            out += self.pool[self.pos : self.pos + k]
            self.pos = (self.pos + k) % POOL_SIZE
        self.left -= n
        return bytes(out)


def info(name, kind=tarfile.REGTYPE, mode=0o644, size=0, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, linkname
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = MTIME, 0, 0, "", ""
    return ti


def small_size(rng):
    r = rng.random()
    if r < 0.45:
        return rng.randint(0, 1023)
    if r < 0.85:
        return rng.randint(1024, 4095)
    if r < 0.97:
        return rng.randint(4096, 16383)
    return rng.randint(16384, 65535)


def synthetic(out):
    rng = random.Random(20261127)
    pool = make_pool(rng)
    top, sub = 20, 100
    n_large, n_links, n_hard = 8, 2000, 500
    n_dirs = top + top * sub
    n_files = 200_000 - n_dirs - n_links - n_hard - n_large
    leaves = [f"d{t:02d}/s{s:03d}" for t in range(top) for s in range(sub)]
    per_leaf = [n_files // len(leaves) + (1 if i < n_files % len(leaves) else 0) for i in range(len(leaves))]
    files = []  # regular files written so far (hard link targets)
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for t in range(top):
            tar.addfile(info(f"d{t:02d}/", tarfile.DIRTYPE, 0o755))
            for s in range(sub):
                leaf = f"d{t:02d}/s{s:03d}"
                i = t * sub + s
                tar.addfile(info(leaf + "/", tarfile.DIRTYPE, 0o755))
                for f in range(per_leaf[i]):
                    name = f"{leaf}/f{f:04d}"
                    if rng.random() < 0.01:
                        name += "-" + "long-name-" * 10
                    size = small_size(rng)
                    mode = 0o755 if rng.random() < 0.1 else 0o644
                    o = rng.randrange(POOL_SIZE)
                    tar.addfile(info(name, size=size, mode=mode), io.BytesIO(pool[o : o + size]))
                    files.append(name)
                # A share of the symlinks, hard links and large files in each leaf.
                for k in range(n_links * (i + 1) // len(leaves) - n_links * i // len(leaves)):
                    target = "../../" + rng.choice(leaves) + f"/f{rng.randrange(per_leaf[0]):04d}"
                    tar.addfile(info(f"{leaf}/l{k:04d}", tarfile.SYMTYPE, 0o777, linkname=target))
                for k in range(n_hard * (i + 1) // len(leaves) - n_hard * i // len(leaves)):
                    tar.addfile(info(f"{leaf}/h{k:04d}", tarfile.LNKTYPE, linkname=rng.choice(files)))
                for k in range(n_large * (i + 1) // len(leaves) - n_large * i // len(leaves)):
                    size = 24 << 20
                    tar.addfile(info(f"{leaf}/large{k}", size=size), PoolReader(pool, rng.randrange(POOL_SIZE), size))


def small(out):
    rng = random.Random(10000)
    pool = make_pool(rng)
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in range(100):
            tar.addfile(info(f"dir{d:03d}/", tarfile.DIRTYPE, 0o755))
            for f in range(100):
                size = rng.randint(1, 4096)
                o = rng.randrange(POOL_SIZE)
                tar.addfile(info(f"dir{d:03d}/file{f:03d}", size=size), io.BytesIO(pool[o : o + size]))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("synthetic", "small"):
        sys.exit(__doc__)
    {"synthetic": synthetic, "small": small}[sys.argv[1]](sys.argv[2])
