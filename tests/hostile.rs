//! Hostile layers and hostile paths: every attack an image can make on the
//! layer path, each asserting its exact outcome — the tree that must come
//! out (checked against Python's `tarfile`, an independent reader, where it
//! applies), or an invalid-argument error naming the entry and the cause,
//! with no blob left, nothing outside the root touched, and the snapshot
//! still usable. Every image written is checked by `fsck.erofs`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::rawtar::{numeric, octal, Hdr, Tar};
use common::*;
use erofs_snapshotter::{Applied, ApplyOptions, Config, Error, ErrorKind, Snapshotter};

const CTL: &str = env!("CARGO_BIN_EXE_erofs-snapshotter-ctl");

// ---- harness -------------------------------------------------------------

struct H {
    env: Env,
    s: Snapshotter,
    n: AtomicUsize,
}

fn plain() -> ApplyOptions {
    ApplyOptions::default()
}

/// `fsck.erofs`, an independent judge of every image written.
fn fsck(blob: &Path) {
    let out = Command::new("fsck.erofs").arg(blob).output().unwrap();
    assert!(
        out.status.success(),
        "fsck.erofs {}: {}{}",
        blob.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl H {
    fn new() -> H {
        H::with(|_| {})
    }

    fn with(f: impl FnOnce(&mut Config)) -> H {
        let env = Env::new();
        let s = env.open_with(f);
        H {
            env,
            s,
            n: AtomicUsize::new(0),
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{what}-{}", self.n.fetch_add(1, Ordering::Relaxed))
    }

    /// Prepares a snapshot over `parent` and applies `tar` to it.
    fn try_apply(
        &self,
        parent: &str,
        tar: &[u8],
        opts: &ApplyOptions,
    ) -> (String, Result<Applied, Error>) {
        let key = self.key("active");
        self.s.prepare(&key, parent, &no_labels()).unwrap();
        let r = self.s.apply(&key, &mut Cursor::new(tar), opts);
        (key, r)
    }

    /// Applies `tar` over `parent` and commits it; returns the layer's name.
    fn layer(&self, parent: &str, tar: &[u8]) -> String {
        self.layer_with(parent, tar, &plain())
    }

    fn layer_with(&self, parent: &str, tar: &[u8], opts: &ApplyOptions) -> String {
        let (key, r) = self.try_apply(parent, tar, opts);
        if let Err(e) = r {
            panic!("apply over {parent:?}: {e}");
        }
        let dir = snapshot_dir(&self.s.mounts(&key).unwrap());
        fsck(&dir.join("layer.erofs"));
        let name = self.key("layer");
        self.s.commit(&name, &key, &no_labels()).unwrap();
        name
    }

    /// Mounts a view of `name` and runs `f` on it.
    fn view<T>(&self, name: &str, f: impl FnOnce(&Path) -> T) -> T {
        let key = self.key("view");
        let m = self.s.view(&key, name, &no_labels()).unwrap();
        let out = with_mounted(&self.env, &key, &m, f);
        self.s.remove(&key).unwrap();
        out
    }

    /// Applies `tar` over `parent` and expects it refused as invalid, the
    /// message containing every needle; then checks that no blob is left
    /// and the same snapshot still takes a good layer.
    fn refused(&self, parent: &str, tar: &[u8], needles: &[&str]) -> Error {
        self.refused_with(parent, tar, &plain(), ErrorKind::InvalidArgument, needles)
    }

    fn refused_with(
        &self,
        parent: &str,
        tar: &[u8],
        opts: &ApplyOptions,
        kind: ErrorKind,
        needles: &[&str],
    ) -> Error {
        let (key, r) = self.try_apply(parent, tar, opts);
        let e = match r {
            Ok(a) => panic!("applied, want an error containing {needles:?}: {a:?}"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), kind, "{e}");
        for n in needles {
            assert!(e.message().contains(n), "want {n:?} in: {e}");
        }
        let dir = snapshot_dir(&self.s.mounts(&key).unwrap());
        assert_eq!(blobs_in(&dir), Vec::<String>::new(), "after {e}");
        // Still usable: a good layer applies to the same snapshot.
        let good = Tar::new().file("good", b"fine").end();
        self.s
            .apply(&key, &mut Cursor::new(&good), &plain())
            .unwrap();
        fsck(&dir.join("layer.erofs"));
        let name = self.key("after-refusal");
        self.s.commit(&name, &key, &no_labels()).unwrap();
        self.view(&name, |p| assert_eq!(read(p, "good"), "fine"));
        e
    }
}

/// The xattrs of `p` (not following it), without overlayfs's own.
fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap_or(0);
    names.truncate(n);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap();
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(p, name, &mut v[..]).unwrap();
        v.truncate(len);
        out.insert(name.to_string(), v);
    }
    out
}

/// Attributes of a directory, as a comparable tuple.
fn attrs(p: &Path) -> (u32, u32, u32, i64, BTreeMap<String, Vec<u8>>) {
    let md = fs::symlink_metadata(p).unwrap();
    (
        md.mode() & 0o7777,
        md.uid(),
        md.gid(),
        md.mtime(),
        xattrs(p),
    )
}

/// A deterministic pseudo-random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What Python's `tarfile` (an independent, careful reader that honours PAX
/// records) finds in an archive: regular files by name with their content
/// hash, directories, symlinks. Names normalized as a layer's paths are.
fn python_view(tar: &[u8]) -> BTreeMap<String, String> {
    let script = r#"
import hashlib, json, sys, tarfile, io
out = {}
with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode="r:") as t:
    for m in t:
        name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
        if m.isreg():
            out[name] = "file:" + hashlib.sha256(t.extractfile(m).read()).hexdigest()
        elif m.isdir():
            out[name] = "dir"
        elif m.issym():
            out[name] = "symlink:" + m.linkname
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The same view of a mounted tree.
fn mounted_view(root: &Path) -> BTreeMap<String, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let v = if md.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("symlink:{}", fs::read_link(&p).unwrap().display())
            } else {
                let h = Sha256::digest(fs::read(&p).unwrap());
                format!(
                    "file:{}",
                    h.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            };
            out.insert(rel, v);
        }
    }
    out
}

/// `view` plus the implicit parent directories a layer gets.
fn with_parents(mut v: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let names: Vec<String> = v.keys().cloned().collect();
    for n in names {
        let mut p = Path::new(&n).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            v.entry(d.to_string_lossy().into_owned())
                .or_insert_with(|| "dir".into());
            p = d.parent();
        }
    }
    v
}

// ---- 1, 2: the tar reader ------------------------------------------------

/// PAX `size` overrides the header: data that looks like a header is data.
fn hidden_entry_tar() -> (Vec<u8>, Vec<u8>) {
    let mut hidden = Hdr::file("etc/passwd", 1024).block().to_vec();
    hidden.extend_from_slice(&[b'r'; 1024]);
    let tar = Tar::new()
        .pax(&[("size", b"1536")])
        .entry(&Hdr::file("big", 0), &hidden)
        .end();
    (tar, hidden)
}

#[test]
fn a_hidden_entry_stays_data() {
    let h = H::new();
    let (tar, hidden) = hidden_entry_tar();
    let name = h.layer("", &tar);
    let python = python_view(&tar);
    h.view(&name, |p| {
        assert_eq!(fs::read(p.join("big")).unwrap(), hidden);
        assert!(!p.join("etc").exists(), "etc/passwd must not exist");
        assert_eq!(mounted_view(p), with_parents(python));
    });
}

#[test]
fn a_pax_size_override_is_a_valid_archive() {
    // Go's and Python's writers put sizes of 8 GiB and more only in PAX; the
    // header's field then holds anything (here: 0 and a wrong 4).
    let h = H::new();
    let tar = Tar::new()
        .pax(&[("size", b"5")])
        .entry(&Hdr::file("a", 0), b"hello")
        .pax(&[("size", b"7")])
        .entry(&Hdr::file("b", 4), b"goodbye")
        .end();
    let name = h.layer("", &tar);
    h.view(&name, |p| {
        assert_eq!(read(p, "a"), "hello");
        assert_eq!(read(p, "b"), "goodbye");
        assert_eq!(mounted_view(p), with_parents(python_view(&tar)));
    });
}

#[test]
fn zero_blocks_inside_an_entry_do_not_end_the_archive() {
    // Read as an end of archive, this left mkfs.erofs waiting for data for
    // ever (and outliving the caller).
    let h = H::new();
    let tar = Tar::new()
        .pax(&[("size", b"4096")])
        .entry(&Hdr::file("z", 0), &[0u8; 4096])
        .file("after", b"x")
        .end();
    let t = Instant::now();
    let name = std::thread::scope(|sc| {
        let job = sc.spawn(|| h.layer("", &tar));
        while !job.is_finished() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "apply did not return"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        job.join().unwrap()
    });
    h.view(&name, |p| {
        assert_eq!(fs::read(p.join("z")).unwrap(), vec![0u8; 4096]);
        assert_eq!(read(p, "after"), "x");
    });
}

/// Archives whose sizes are in PAX records only, with data full of fake
/// headers: what is mounted is what Python's tarfile reads, entry for entry.
#[test]
fn generated_pax_sizes_read_as_python_reads_them() {
    let h = H::new();
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut t = Tar::new();
        let count = 1 + rng.below(6);
        for i in 0..count {
            let name = format!("f{seed}-{i}{}", "x".repeat(rng.below(150) as usize));
            let len = rng.below(3000) as usize;
            let mut data = rng.bytes(len);
            if rng.below(2) == 0 {
                // A valid header hidden inside the data.
                let fake = Hdr::file(&format!("hidden-{seed}-{i}"), 0).block();
                let at = (rng.below(4) as usize * 512).min(data.len());
                data.splice(at..at, fake);
            }
            let size = data.len().to_string();
            let mut records: Vec<(&str, &[u8])> = vec![("size", size.as_bytes())];
            if name.len() > 100 {
                records.push(("path", name.as_bytes()));
            }
            t = t.pax(&records);
            let mut hdr = Hdr::file(&name, [0, 4, data.len() as u64 / 2][rng.below(3) as usize]);
            hdr.size = octal(12, [0, 4, data.len() as u64 / 2][rng.below(3) as usize]);
            t = t.entry(&hdr, &data);
        }
        let tar = t.end();
        let python = python_view(&tar);
        let name = h.layer("", &tar);
        h.view(&name, |p| {
            assert_eq!(mounted_view(p), with_parents(python), "seed {seed}")
        });
    }
}

#[test]
fn what_tar_readers_disagree_on_is_refused() {
    let h = H::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "two PAX headers",
            Tar::new()
                .pax(&[("path", b"a")])
                .pax(&[("path", b"b")])
                .file("c", b"")
                .end(),
            "two PAX extended headers",
        ),
        (
            "lone zero block",
            Tar::new()
                .file("a", b"x")
                .raw(&[0u8; 512])
                .file("b", b"y")
                .end(),
            "single zero block",
        ),
        (
            "directory with data",
            Tar::new()
                .entry(&Hdr::new("d", b'5', 512), &[b'd'; 512])
                .end(),
            "directory with 512 bytes",
        ),
        (
            "hard link with data",
            Tar::new()
                .file("a", b"x")
                .entry(
                    &{
                        let mut l = Hdr::link("b", b'1', "a");
                        l.size = octal(12, 512);
                        l
                    },
                    &[b'l'; 512],
                )
                .end(),
            "hard link with 512 bytes",
        ),
        (
            "global header changing entries",
            Tar::new()
                .pax_typed(b'g', &[("path", b"evil")])
                .file("a", b"x")
                .end(),
            "global PAX header sets \"path\"",
        ),
        (
            "regular file named like a directory",
            Tar::new().entry(&Hdr::file("f/", 0), b"").end(),
            "ends with '/'",
        ),
        (
            "unknown type",
            Tar::new().entry(&Hdr::new("v", b'V', 0), b"").end(),
            "unsupported entry type 'V'",
        ),
        (
            "PAX path and GNU long name",
            Tar::new()
                .pax(&[("path", b"one")])
                .gnu_long(b'L', b"two")
                .file("x", b"")
                .end(),
            "both a PAX path",
        ),
        (
            "extended header without entry",
            Tar::new().pax(&[("path", b"x")]).end(),
            "without its entry",
        ),
        (
            "unknown sparse version",
            Tar::new()
                .pax(&[("GNU.sparse.major", b"2"), ("GNU.sparse.minor", b"0")])
                .file("s", b"")
                .end(),
            "unknown GNU sparse format version 2.0",
        ),
        (
            "size field with a space inside",
            Tar::new()
                .entry(
                    &{
                        let mut f = Hdr::file("a", 0);
                        f.size = b"0000 000004\0".to_vec();
                        f
                    },
                    b"abcd",
                )
                .end(),
            "bad size field",
        ),
        (
            "star prefix running into its times",
            Tar::new()
                .entry(
                    &{
                        let mut f = Hdr::file("a", 0);
                        f.prefix = vec![b'p'; 155];
                        f.tail = b"\0\0\0\0\0\0\0\0tar\0".to_vec();
                        f
                    },
                    b"",
                )
                .end(),
            "star header",
        ),
    ];
    for (what, tar, needle) in cases {
        let e = h.refused("", &tar, &[needle]);
        eprintln!("{what}: {e}");
    }
}

// ---- 5: memory, disk -----------------------------------------------------

/// An old GNU sparse entry: `real` bytes long, all hole but `data` at 0.
fn sparse_tar(name: &str, real: u64, data: &[u8]) -> Vec<u8> {
    let mut h = Hdr::new(name, b'S', data.len() as u64);
    h.magic = b"ustar  \0".to_vec();
    let mut blk = h.block();
    // One fragment (offset 0, length of data), the real size.
    blk[386..398].copy_from_slice(&octal(12, 0));
    blk[398..410].copy_from_slice(&octal(12, data.len() as u64));
    blk[483..495].copy_from_slice(&numeric(12, real));
    blk[148..156].fill(b' ');
    let sum: u32 = blk.iter().map(|b| u32::from(*b)).sum();
    blk[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Tar::new()
        .raw(&blk)
        .raw(data)
        .raw(&vec![0u8; (512 - data.len() % 512) % 512])
        .end()
}

#[test]
fn small_layers_cannot_fill_the_disk() {
    let h = H::new();
    // 3.5 KB of sparse tar declaring 3 GiB (a 3 GiB blob before).
    let tar = sparse_tar("holes", 3 << 30, b"start");
    assert!(tar.len() < 4096);
    let t = Instant::now();
    h.refused("", &tar, &["\"holes\"", "max_expansion_ratio (100)"]);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    // 1 TiB: refused before anything is written.
    h.refused(
        "",
        &sparse_tar("tera", 1 << 40, b"x"),
        &["\"tera\"", "max_file_size"],
    );
    // A gzip bomb: 1 GiB of zeros in about 1 MB (10 GiB from 46 MB before),
    // as 1,026 gzip members (one layer stream to any gzip reader).
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let zeros = gz(&vec![0u8; 1 << 20]);
    let mut bomb = gz(&Hdr::file("bomb", 1 << 30).block());
    for _ in 0..1024 {
        bomb.extend_from_slice(&zeros);
    }
    bomb.extend_from_slice(&gz(&[0u8; 1024]));
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    let opts = ApplyOptions {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: None,
    };
    h.refused_with(
        "",
        &bomb,
        &opts,
        ErrorKind::InvalidArgument,
        &[
            "\"bomb\"",
            "max_expansion_ratio (100)",
            "bytes of layer data",
        ],
    );
}

#[test]
fn limits_are_the_users_to_set() {
    let h = H::with(|c| {
        c.max_file_size = 1 << 20;
        c.max_layer_size = 3 << 20;
        c.max_expansion_ratio = 0;
    });
    let mb = vec![7u8; 1 << 20];
    h.refused(
        "",
        &Tar::new()
            .file("two", &[mb.clone(), mb.clone()].concat())
            .end(),
        &["\"two\"", "2097152 bytes", "max_file_size (1048576 bytes)"],
    );
    h.refused(
        "",
        &Tar::new()
            .file("a", &mb)
            .file("b", &mb)
            .file("c", &mb)
            .file("d", b"x")
            .end(),
        &["\"d\"", "max_layer_size (3145728 bytes)"],
    );
    // Without a ratio, a small sparse tar may expand (here to 1 MiB).
    let name = h.layer("", &sparse_tar("s", 1 << 20, b"data"));
    h.view(&name, |p| {
        let content = fs::read(p.join("s")).unwrap();
        assert_eq!(content.len(), 1 << 20);
        assert_eq!(&content[..4], b"data");
        assert!(content[4..].iter().all(|b| *b == 0));
    });
}

// ---- 8: numbers and xattrs -----------------------------------------------

#[test]
fn nothing_is_truncated() {
    let h = H::new();
    for key in ["uid", "gid"] {
        h.refused(
            "",
            &Tar::new()
                .pax(&[(key, b"1099511627781")])
                .file("owned", b"x")
                .end(),
            &["\"owned\"", &format!("{key} 1099511627781")],
        );
    }
    let long = format!("user.{}", "n".repeat(300));
    h.refused(
        "",
        &Tar::new()
            .pax(&[(&format!("SCHILY.xattr.{long}"), b"v")])
            .file("x", b"")
            .end(),
        &["\"x\"", "305 bytes; Linux allows at most 255"],
    );
    h.refused(
        "",
        &Tar::new()
            .pax(&[("SCHILY.xattr.user.big", &vec![b'v'; 65536])])
            .file("x", b"")
            .end(),
        &["\"x\"", "user.big", "65536 bytes"],
    );
    // mkfs.erofs fails past 32 KiB of metadata for one file.
    h.refused(
        "",
        &Tar::new()
            .pax(&[
                ("SCHILY.xattr.user.a", &vec![b'a'; 16000]),
                ("SCHILY.xattr.user.b", &vec![b'b'; 16000]),
            ])
            .file("x", b"")
            .end(),
        &["\"x\"", "xattrs take 32036 bytes; at most 24576"],
    );
    h.refused(
        "",
        &Tar::new()
            .pax(&[("SCHILY.xattr.bogus.name", b"v")])
            .file("x", b"")
            .end(),
        &["\"x\"", "bogus.name", "namespace"],
    );
    // The largest id and value that fit are kept exactly.
    let tar = Tar::new()
        .pax(&[
            ("uid", b"4294967294"),
            ("gid", b"70000"),
            ("SCHILY.xattr.user.max", &vec![b'm'; 24000]),
        ])
        .file("max", b"x")
        .end();
    let name = h.layer("", &tar);
    h.view(&name, |p| {
        let md = fs::symlink_metadata(p.join("max")).unwrap();
        assert_eq!((md.uid(), md.gid()), (4294967294, 70000));
        assert_eq!(xattrs(&p.join("max"))["user.max"], vec![b'm'; 24000]);
    });
}

#[test]
fn libarchive_xattrs_are_decoded() {
    // bsdtar writes LIBARCHIVE.xattr.<url-encoded name>=<base64 value>; mkfs.erofs
    // 1.8.6 decodes the base64 wrongly ("la-value" came out as bytes 9b 41 ...).
    let h = H::new();
    let tar = Tar::new()
        .pax(&[
            ("LIBARCHIVE.xattr.user.la", b"bGEtdmFsdWU="),
            ("LIBARCHIVE.xattr.user.sp%20ace", b"AAEC/w=="),
        ])
        .file("f", b"x")
        .end();
    let name = h.layer("", &tar);
    h.view(&name, |p| {
        let x = xattrs(&p.join("f"));
        assert_eq!(x["user.la"], b"la-value");
        assert_eq!(x["user.sp ace"], [0u8, 1, 2, 0xff]);
    });
    // Both forms for one name must agree.
    h.refused(
        "",
        &Tar::new()
            .pax(&[
                ("LIBARCHIVE.xattr.user.k", b"YQ=="),
                ("SCHILY.xattr.user.k", b"b"),
            ])
            .file("f", b"")
            .end(),
        &["\"f\"", "differ"],
    );
}

// ---- 3: host metadata through lower-layer symlinks -------------------------

/// A host directory with distinctive attributes, and a lower layer whose
/// `d` is a symlink to it.
fn host_dir(h: &H) -> PathBuf {
    let host = h.env.dir.path().join("host");
    let sub = host.join("sub");
    fs::create_dir_all(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o1777)).unwrap();
    rustix::fs::chown(
        &sub,
        Some(rustix::fs::Uid::from_raw(4321)),
        Some(rustix::fs::Gid::from_raw(4321)),
    )
    .unwrap();
    rustix::fs::lsetxattr(&sub, "user.leak", b"host", rustix::fs::XattrFlags::empty()).unwrap();
    host
}

#[test]
fn lower_symlinks_never_lead_to_the_host() {
    let h = H::new();
    let host = host_dir(&h);
    let before = attrs(&host.join("sub"));
    let target = host.to_string_lossy().into_owned();
    let lower = h.layer(
        "",
        &Tar::new()
            .entry(&Hdr::link("d", b'2', &target), b"")
            .entry(&Hdr::link("root", b'2', "/"), b"")
            .entry(&Hdr::link("rel", b'2', "../../../../../../../../.."), b"")
            .end(),
    );
    let upper = h.layer(
        &lower,
        &Tar::new()
            .file("d/sub/file", b"a")
            .file("root/tmp/file", b"b")
            .file(&format!("rel{target}/sub/file"), b"c")
            .end(),
    );
    let defaults = |p: &Path| {
        let (mode, uid, gid, _, x) = attrs(p);
        assert_eq!((mode, uid, gid), (0o755, 0, 0), "{}", p.display());
        assert!(x.is_empty(), "{}: {x:?}", p.display());
    };
    h.view(&upper, |p| {
        defaults(&p.join("d/sub"));
        defaults(&p.join("root/tmp"));
        defaults(&p.join(format!("rel{target}/sub")));
        assert_eq!(read(p, "d/sub/file"), "a");
    });
    // The host was read nowhere and written nowhere.
    assert_eq!(attrs(&host.join("sub")), before);
    assert_eq!(fs::read_dir(host.join("sub")).unwrap().count(), 0);
}

#[test]
fn lower_directories_still_lend_their_attributes() {
    let h = H::new();
    let etc = Hdr::dir("etc").mode(0o750);
    let mut etc = etc;
    etc.uid = octal(8, 5);
    etc.gid = octal(8, 6);
    let lower = h.layer(
        "",
        &Tar::new()
            .pax(&[("SCHILY.xattr.user.x", b"lower")])
            .entry(&etc, b"")
            .dir("o")
            .dir("o/sub")
            .end(),
    );
    // A layer that makes o/ opaque: o/sub below it no longer exists.
    let mid = h.layer(
        &lower,
        &Tar::new().dir("o").file("o/.wh..wh..opq", b"").end(),
    );
    let top = h.layer(
        &mid,
        &Tar::new().file("etc/f", b"x").file("o/sub/f", b"y").end(),
    );
    h.view(&top, |p| {
        let (mode, uid, gid, _, x) = attrs(&p.join("etc"));
        assert_eq!((mode, uid, gid), (0o750, 5, 6));
        assert_eq!(x.get("user.x").map(Vec::as_slice), Some(&b"lower"[..]));
        assert_eq!(attrs(&p.join("o/sub")).0, 0o755);
        assert_eq!(fs::read_dir(p.join("o/sub")).unwrap().count(), 1);
    });
}

// ---- 6, 7: names, whiteouts, links ---------------------------------------

#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    // mkfs.erofs 1.8.6 crashed (SIGSEGV) on these.
    let h = H::new();
    for name in [".wh..", ".wh...", "d/.wh...", ".wh.", "d/.wh..wh.x"] {
        h.refused(
            "",
            &Tar::new().file(name, b"").end(),
            &[&format!("{name:?}"), "whiteout of"],
        );
    }
}

#[test]
fn names_and_paths_linux_cannot_hold_are_refused() {
    let h = H::new();
    let parent = h.layer("", &Tar::new().file("base", b"b").end());
    let deep = "a/".repeat(3000) + "f";
    let e = h.refused(
        &parent,
        &Tar::new()
            .pax(&[("path", deep.as_bytes())])
            .file("x", b"")
            .end(),
        &["6002 bytes", "4095"],
    );
    assert!(!e.message().contains("mkfs"), "{e}");
    let long = "n".repeat(256);
    h.refused(
        "",
        &Tar::new()
            .pax(&[("path", long.as_bytes())])
            .file("x", b"")
            .end(),
        &["256 bytes", "255"],
    );
    h.refused(
        "",
        &Tar::new().entry(&Hdr::link("s", b'2', ""), b"").end(),
        &["\"s\"", "empty target"],
    );
    h.refused(
        "",
        &Tar::new()
            .pax(&[("linkpath", "t".repeat(4096).as_bytes())])
            .entry(&Hdr::link("s", b'2', "x"), b"")
            .end(),
        &["\"s\"", "4096 bytes"],
    );
    h.refused(
        "",
        &Tar::new().file("..", b"").end(),
        &["leaves the layer root"],
    );
    h.refused(
        "",
        &Tar::new().file("a/../../x", b"").end(),
        &["leaves the layer root"],
    );
    h.refused(
        "",
        &Tar::new().file("f", b"").file("f/g", b"").end(),
        &["\"f/g\"", "lies under \"f\""],
    );
    h.refused(
        "",
        &Tar::new().file(".", b"").end(),
        &["root cannot be a regular file"],
    );
    // Found by the fuzzer: a PAX record may carry NUL bytes into a name.
    h.refused(
        "",
        &Tar::new()
            .pax(&[
                ("GNU.sparse.major", b"0"),
                ("GNU.sparse.minor", b"1"),
                ("GNU.sparse.name", b"s/\0hidden"),
                ("GNU.sparse.size", b"4"),
                ("GNU.sparse.numblocks", b"1"),
                ("GNU.sparse.map", b"0,4"),
            ])
            .file("x", b"data")
            .end(),
        &["NUL byte in the path"],
    );
    let mut dev = Hdr::new("dev", b'3', 0);
    dev.devmajor = octal(8, 5000);
    h.refused(
        "",
        &Tar::new().entry(&dev, b"").end(),
        &["\"dev\"", "5000:0"],
    );
}

#[test]
fn bad_hard_links_are_refused_naming_the_entry() {
    let h = H::new();
    let lower = h.layer("", &Tar::new().dir("dir").file("gone", b"g").end());
    let link = |target: &str| {
        Tar::new()
            .file("dir/f", b"x")
            .entry(&Hdr::link("l", b'1', target), b"")
            .end()
    };
    for (target, needle) in [
        ("missing", "neither an earlier entry"),
        ("/dir/f", "absolute path"),
        ("../dir/f", "leaves the layer root"),
        ("l", "to itself"),
        ("dir", "the directory \"dir\""),
        ("", "the layer root"),
    ] {
        h.refused(&lower, &link(target), &["\"l\"", needle]);
    }
    // A link to what this layer whited out.
    h.refused(
        &lower,
        &Tar::new()
            .file(".wh.gone", b"")
            .entry(&Hdr::link("l", b'1', "gone"), b"")
            .end(),
        &["\"l\"", "neither an earlier entry"],
    );
}

#[test]
fn valid_oci_content_containerd_applies() {
    let h = H::new();
    let lower = h.layer(
        "",
        &Tar::new()
            .dir("keep")
            .file("keep/old", b"old")
            .file("top", b"t")
            .file("bin/tool", b"lower tool")
            .end(),
    );
    // A hard link to a file of a lower layer: copied up, then linked.
    let linked = h.layer(
        &lower,
        &Tar::new()
            .entry(&Hdr::link("tool2", b'1', "bin/tool"), b"")
            .end(),
    );
    h.view(&linked, |p| {
        assert_eq!(read(p, "tool2"), "lower tool");
        assert_eq!(read(p, "bin/tool"), "lower tool");
        let (a, b) = (
            fs::metadata(p.join("tool2")).unwrap(),
            fs::metadata(p.join("bin/tool")).unwrap(),
        );
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    });
    // An opaque marker at the root: everything below is hidden.
    let opaque = h.layer(
        &lower,
        &Tar::new()
            .dir("keep")
            .file("keep/new", b"n")
            .file(".wh..wh..opq", b"")
            .file("fresh", b"f")
            .end(),
    );
    h.view(&opaque, |p| {
        let mut names: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["fresh", "keep"]);
        assert_eq!(fs::read_dir(p.join("keep")).unwrap().count(), 1);
        assert_eq!(read(p, "keep/new"), "n");
    });
}

// ---- 7: errors that blame the right thing ----------------------------------

#[test]
fn a_full_disk_is_unavailable() {
    let h = H::new();
    let disk = h.env.small_disk("small", "24m");
    let env_root = disk.path.join("root");
    let s = Snapshotter::open(Config::new(&env_root)).unwrap();
    s.prepare("a", "", &no_labels()).unwrap();
    let data: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let tar = Tar::new().file("big", &data).end();
    let e = s.apply("a", &mut Cursor::new(&tar), &plain()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let dir = snapshot_dir(&s.mounts("a").unwrap());
    assert_eq!(blobs_in(&dir), Vec::<String>::new());
    // Still usable once there is room.
    s.apply(
        "a",
        &mut Cursor::new(Tar::new().file("f", b"x").end()),
        &plain(),
    )
    .unwrap();
    s.commit("c", "a", &no_labels()).unwrap();
    drop(s);
}

// ---- 2: no unbounded or orphaned subprocess --------------------------------

/// A fake mkfs.erofs: answers --version, records its pid, then reads its
/// input and hangs (as mkfs.erofs 1.8.6 did on a stream it misread).
fn hanging_mkfs(dir: &Path) -> PathBuf {
    let p = dir.join("hanging-mkfs.erofs");
    fs::write(
        &p,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'mkfs.erofs (erofs-utils) 1.8.6'; exit 0; }}\n\
             echo $$ > {}/mkfs.pid\ncat >/dev/null\nexec sleep 1000\n",
            dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn alive(pid: i32) -> bool {
    // A zombie is as good as gone.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(" ").nth(2).is_none_or(|st| st != "Z"))
        .unwrap_or(false)
}

fn wait_for_pid(dir: &Path) -> i32 {
    let t = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(dir.join("mkfs.pid")) {
            if let Ok(pid) = s.trim().parse() {
                return pid;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "mkfs never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_hanging_mkfs_is_killed_at_the_deadline() {
    let env = Env::new();
    let mkfs = hanging_mkfs(env.dir.path());
    let s = env.open_with(|c| {
        c.mkfs_path = mkfs.to_string_lossy().into_owned();
        // An option only mkfs.erofs implements sends layers through it.
        c.mkfs_options = vec!["-x2".into()];
        c.convert_timeout_seconds = 2;
    });
    s.prepare("a", "", &no_labels()).unwrap();
    let t = Instant::now();
    let tar = Tar::new().file("f", b"x").end();
    let e = std::thread::scope(|sc| {
        let job = sc.spawn(|| s.apply("a", &mut Cursor::new(&tar), &plain()));
        while !job.is_finished() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "apply did not return"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        job.join().unwrap().unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("convert_timeout_seconds"), "{e}");
    assert!(!alive(wait_for_pid(env.dir.path())));
    // The same bound holds for commit's conversion of an upper dir.
    fs::remove_file(env.dir.path().join("mkfs.pid")).unwrap();
    s.prepare("b", "", &no_labels()).unwrap();
    let e = s.commit("c", "b", &no_labels()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(!alive(wait_for_pid(env.dir.path())));
}

#[test]
fn mkfs_dies_with_its_caller() {
    let env = Env::new();
    let mkfs = hanging_mkfs(env.dir.path());
    let config = serde_json::json!({
        "root": env.root,
        "mkfs_path": mkfs,
        "mkfs_options": ["-x2"],
    })
    .to_string();
    let ok = Command::new(CTL)
        .args(["--config", &config, "prepare", "a"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let mut child = Command::new(CTL)
        .args(["--config", &config, "apply", "a", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&Tar::new().file("f", b"x").end())
        .unwrap();
    let pid = wait_for_pid(env.dir.path());
    assert!(alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "mkfs.erofs outlived its caller"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A layer source that delivers a little, then stalls.
struct Stalling {
    data: Vec<u8>,
    pos: usize,
}

impl std::io::Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= 1024 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let n = buf.len().min(512).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn the_built_in_writer_has_a_deadline_too() {
    let env = Env::new();
    let s = env.open_with(|c| c.convert_timeout_seconds = 1);
    s.prepare("a", "", &no_labels()).unwrap();
    let tar = Tar::new().file("f", &vec![b'x'; 64 * 1024]).end();
    let t = Instant::now();
    let e = s
        .apply("a", &mut Stalling { data: tar, pos: 0 }, &plain())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("convert_timeout_seconds"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let dir = snapshot_dir(&s.mounts("a").unwrap());
    assert_eq!(blobs_in(&dir), Vec::<String>::new());
}

// ---- 9: a failed re-apply leaves the earlier layer -------------------------

#[test]
fn a_failed_reapply_keeps_the_earlier_layer() {
    let h = H::new();
    let (key, r) = h.try_apply("", &Tar::new().file("f", b"first").end(), &plain());
    r.unwrap();
    let dir = snapshot_dir(&h.s.mounts(&key).unwrap());
    let first = fs::read(dir.join("layer.erofs")).unwrap();
    // Bad data: refused before anything is installed.
    let e =
        h.s.apply(
            &key,
            &mut Cursor::new(b"not a tar at all".repeat(64)),
            &plain(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(fs::read(dir.join("layer.erofs")).unwrap(), first);
    // Recording the new layer fails (injected with a real SQLite trigger):
    // the blob and its record stay those of the first apply.
    let db = rusqlite::Connection::open(h.env.root.join("metadata.db")).unwrap();
    db.execute_batch(&format!(
        "CREATE TRIGGER fail_apply BEFORE UPDATE OF blob_size ON snapshots \
         WHEN NEW.blob_size != {} BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        first.len()
    ))
    .unwrap();
    let big = Tar::new().file("f", &vec![b's'; 100_000]).end();
    let e =
        h.s.apply(&key, &mut Cursor::new(&big), &plain())
            .unwrap_err();
    assert!(e.message().contains("injected failure"), "{e}");
    assert_eq!(fs::read(dir.join("layer.erofs")).unwrap(), first);
    assert_eq!(blobs_in(&dir), ["layer.erofs"]);
    db.execute_batch("DROP TRIGGER fail_apply").unwrap();
    h.s.commit("c", &key, &no_labels()).unwrap();
    h.view("c", |p| assert_eq!(read(p, "f"), "first"));
}

#[test]
fn rdev_and_modes_survive() {
    // Devices within range keep their numbers (a regression guard for the
    // device checks).
    let h = H::new();
    let mut dev = Hdr::new("dev", b'3', 0);
    dev.devmajor = octal(8, 4095);
    dev.devminor = octal(8, 1048575);
    let name = h.layer("", &Tar::new().entry(&dev, b"").end());
    h.view(&name, |p| {
        let md = fs::symlink_metadata(p.join("dev")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(
            (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev())),
            (4095, 1048575)
        );
    });
}
