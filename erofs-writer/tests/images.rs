//! Images written by the builder, checked by `fsck.erofs` (erofs-utils, an
//! independent reader) and mounted with the kernel's EROFS driver (as root).

use std::fs::{self, File};
use std::io::Cursor;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use erofs_writer::{Builder, Meta, Options, Special};

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        mtime_nsec: 0,
        xattrs: Vec::new(),
    }
}

fn fsck(image: &Path) {
    let out = Command::new("fsck.erofs").arg(image).output().unwrap();
    assert!(
        out.status.success(),
        "fsck.erofs {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts `image` read-only on a new directory; unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(image: &Path, at: &Path) -> Mounted {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "erofs", "-o", "ro"])
            .arg(image)
            .arg(at)
            .status()
            .unwrap()
            .success();
        if !ok {
            // Filesystems without file-backed mounts: a loop device.
            let ok = Command::new("mount")
                .args(["-t", "erofs", "-o", "ro,loop"])
                .arg(image)
                .arg(at)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount {}", image.display());
        }
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut v = vec![0u8; 65536];
    match rustix::fs::lgetxattr(p, name, &mut v[..]) {
        Ok(n) => {
            v.truncate(n);
            Some(v)
        }
        Err(_) => None,
    }
}

#[test]
fn every_kind_of_entry_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img.erofs");
    let opts = Options {
        uuid: *b"0123456789abcdef",
        ..Options::default()
    };
    let mut b = Builder::new(File::create(&image).unwrap(), opts, meta(0o755)).unwrap();
    b.add_dir(b"etc", meta(0o750)).unwrap();
    b.add_file(b"etc/hello", meta(0o644), 5, &mut Cursor::new(b"hello"))
        .unwrap();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.add_file(
        b"etc/big",
        meta(0o600),
        big.len() as u64,
        &mut Cursor::new(&big),
    )
    .unwrap();
    b.add_file(b"empty", meta(0o644), 0, &mut Cursor::new(b""))
        .unwrap();
    b.add_symlink(b"link", meta(0o777), b"etc/hello").unwrap();
    b.add_hard_link(b"hard", b"etc/hello").unwrap();
    b.add_special(b"null", meta(0o666), Special::Char { major: 1, minor: 3 })
        .unwrap();
    b.add_special(
        b"blk",
        meta(0o660),
        Special::Block {
            major: 259,
            minor: 70000,
        },
    )
    .unwrap();
    b.add_special(b"fifo", meta(0o600), Special::Fifo).unwrap();
    b.add_special(b"sock", meta(0o600), Special::Socket)
        .unwrap();
    let mut owned = meta(0o4755);
    owned.uid = 100_000;
    owned.gid = 70_000;
    owned.mtime = 1_700_000_000;
    owned.mtime_nsec = 123_456_789;
    owned.xattrs = vec![
        (b"user.k".to_vec(), b"v".to_vec()),
        (
            b"security.capability".to_vec(),
            vec![
                1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        (b"trusted.t".to_vec(), b"".to_vec()),
    ];
    b.add_file(b"owned", owned, 3, &mut Cursor::new(b"abc"))
        .unwrap();
    // The same xattr on two inodes: shared.
    let mut shared = meta(0o644);
    shared.xattrs = vec![(b"user.shared".to_vec(), b"same".to_vec())];
    b.add_file(b"s1", shared.clone(), 1, &mut Cursor::new(b"1"))
        .unwrap();
    b.add_file(b"s2", shared, 1, &mut Cursor::new(b"2"))
        .unwrap();
    // A large directory (several blocks of entries).
    b.add_dir(b"many", meta(0o755)).unwrap();
    for i in 0..3000 {
        let name = format!("many/entry-{i:05}-{}", "x".repeat(i % 200));
        b.add_file(name.as_bytes(), meta(0o644), 0, &mut Cursor::new(b""))
            .unwrap();
    }
    // A sparse file: 64 MiB with data at 0 and at 40 MiB.
    let frags = [(0u64, 4u64), (40 << 20, 6)];
    b.add_sparse_file(
        b"sparse",
        meta(0o644),
        64 << 20,
        &frags,
        &mut Cursor::new(b"headmiddle"),
    )
    .unwrap();
    b.add_whiteout(b"etc/gone", Meta::default()).unwrap();
    let len = b.finish().unwrap();
    assert_eq!(fs::metadata(&image).unwrap().len(), len);
    fsck(&image);

    let m = Mounted::new(&image, &dir.path().join("mnt"));
    let p = &m.0;
    assert_eq!(fs::read(p.join("etc/hello")).unwrap(), b"hello");
    assert_eq!(fs::read(p.join("etc/big")).unwrap(), big);
    assert_eq!(fs::read(p.join("empty")).unwrap(), b"");
    assert_eq!(
        fs::read_link(p.join("link")).unwrap(),
        Path::new("etc/hello")
    );
    let (a, h) = (
        fs::metadata(p.join("etc/hello")).unwrap(),
        fs::metadata(p.join("hard")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (h.ino(), 2));
    let null = fs::symlink_metadata(p.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let blk = fs::symlink_metadata(p.join("blk")).unwrap();
    assert!(blk.file_type().is_block_device());
    assert_eq!(blk.rdev(), rustix::fs::makedev(259, 70000));
    assert!(fs::symlink_metadata(p.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(fs::symlink_metadata(p.join("sock"))
        .unwrap()
        .file_type()
        .is_socket());
    let o = fs::symlink_metadata(p.join("owned")).unwrap();
    assert_eq!(
        (o.mode() & 0o7777, o.uid(), o.gid()),
        (0o4755, 100_000, 70_000)
    );
    assert_eq!((o.mtime(), o.mtime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!(xattr(&p.join("owned"), "user.k").unwrap(), b"v");
    assert_eq!(xattr(&p.join("owned"), "trusted.t").unwrap(), b"");
    assert_eq!(
        xattr(&p.join("owned"), "security.capability")
            .unwrap()
            .len(),
        20
    );
    assert_eq!(xattr(&p.join("s1"), "user.shared").unwrap(), b"same");
    assert_eq!(xattr(&p.join("s2"), "user.shared").unwrap(), b"same");
    assert_eq!(fs::metadata(p.join("etc")).unwrap().mode() & 0o7777, 0o750);
    let mut names: Vec<String> = fs::read_dir(p.join("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3000);
    assert!(p
        .join("many/entry-02999-".to_string() + &"x".repeat(2999 % 200))
        .exists());
    let sparse = fs::read(p.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 64 << 20);
    assert_eq!(&sparse[..4], b"head");
    assert_eq!(&sparse[40 << 20..(40 << 20) + 6], b"middle");
    assert!(sparse[4..40 << 20].iter().all(|b| *b == 0));
    // Holes took no blocks: the image is far smaller than the file.
    assert!(len < 16 << 20, "{len}");
    let gone = fs::symlink_metadata(p.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    assert_eq!(
        xattr(&p.join("etc"), "trusted.overlay.origin").unwrap(),
        b""
    );
}

#[test]
fn the_same_entries_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let build = |name: &str| {
        let image = dir.path().join(name);
        let mut b = Builder::new(
            File::create(&image).unwrap(),
            Options::default(),
            meta(0o755),
        )
        .unwrap();
        b.add_dir(b"d", meta(0o755)).unwrap();
        b.add_file(b"d/f", meta(0o644), 3, &mut Cursor::new(b"abc"))
            .unwrap();
        b.add_symlink(b"l", meta(0o777), b"d/f").unwrap();
        b.finish().unwrap();
        fs::read(image).unwrap()
    };
    assert_eq!(build("a"), build("b"));
}
