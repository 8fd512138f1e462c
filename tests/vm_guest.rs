//! Integrity on a kernel that has it: fs-verity on the root's filesystem,
//! checked against independent tools. This machine's kernel has no
//! fs-verity, so these tests run inside a VM booted by `tests/vm/run.sh`
//! (`make test-vm`, part of `make test`), which passes `--ignored` and the
//! environment below; run here, they say why they do not.
//!
//! The guest gives (see `tests/vm/guest-init.sh`):
//! - `TMPDIR`: a directory on ext4 made with `-O verity`, where every
//!   test's root lives;
//! - `EROFS_VM_DISK` and `EROFS_VM_DISK_MNT`: that ext4's block device and
//!   mount point, for the test that flips a byte on the raw disk;
//! - `EROFS_VM_PLAIN`: a directory on an ext4 made without `-O verity`.

mod common;

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::rawtar::Tar;
use common::*;
use erofs_snapshotter::config::DmverityMode;
use erofs_snapshotter::{dmverity, integrity, ApplyOptions, Config, ErrorKind, Snapshotter};

const IN_VM: &str = "needs a kernel and filesystem with fs-verity: run in a VM by tests/vm/run.sh";

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set: {IN_VM}")))
}

/// 1 MiB that no two files share, so a flipped byte lands in one file's data.
fn payload(seed: u8) -> Vec<u8> {
    noise(1 << 20, u64::from(seed))
}

fn layer_tar(seed: u8) -> Vec<u8> {
    Tar::new()
        .dir("data")
        .file("data/big", &payload(seed))
        .file("data/small", format!("small {seed}\n").as_bytes())
        .end()
}

/// What `fsverity measure` (fsverity-utils, an independent reader) says of
/// `path`: `sha256:<hex>`.
fn fsverity_tool_digest(path: &Path) -> String {
    let out = Command::new("fsverity")
        .arg("measure")
        .arg(path)
        .output()
        .expect("run fsverity");
    assert!(
        out.status.success(),
        "fsverity measure {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The library's measurement of `path` in the tool's notation.
fn our_digest(path: &Path) -> String {
    let d = integrity::measure_verity(path).expect("fs-verity enabled");
    assert_eq!(&d[..2], &1u16.to_le_bytes(), "algorithm 1 (SHA-256)");
    format!("sha256:{}", integrity::hex(&d[2..]))
}

fn verity(env: &Env, immutable: bool) -> Snapshotter {
    env.open_with(|c| {
        c.enable_fsverity = true;
        c.set_immutable = immutable;
    })
}

/// Applies the layer of `seed` to a new snapshot and commits it as `name`.
fn applied_layer(s: &Snapshotter, name: &str, seed: u8) {
    let key = format!("{name}-extract");
    s.prepare(&key, "", &no_labels()).unwrap();
    s.apply(
        &key,
        &mut Cursor::new(layer_tar(seed)),
        &ApplyOptions::default(),
    )
    .unwrap();
    s.commit(name, &key, &no_labels()).unwrap();
}

/// The `layer.erofs` of committed snapshot `name`: what a view of it
/// mounts, or the directory of its top layer.
fn blob_of(s: &Snapshotter, name: &str) -> PathBuf {
    let probe = format!("{name}-probe");
    let mounts = s.view(&probe, name, &no_labels()).unwrap();
    s.remove(&probe).unwrap();
    let m = mounts.last().unwrap();
    let top = match m.kind.as_str() {
        // A view of one layer mounts its blob itself.
        "erofs" => return PathBuf::from(&m.source),
        "bind" => m.source.clone(),
        _ => m
            .options
            .iter()
            .find_map(|o| o.strip_prefix("lowerdir="))
            .and_then(|l| l.split(':').next())
            .unwrap()
            .to_string(),
    };
    Path::new(&top).parent().unwrap().join("layer.erofs")
}

/// Reads `rel` of a view of `name`, as a container would.
fn read_in_view(env: &Env, s: &Snapshotter, name: &str, rel: &str) -> std::io::Result<Vec<u8>> {
    let key = format!("{name}-reader-{}", rel.replace('/', "-"));
    let mounts = s.view(&key, name, &no_labels()).unwrap();
    let got = with_mounted(env, &key, &mounts, |t| fs::read(t.join(rel)));
    s.remove(&key).unwrap();
    got
}

#[test]
#[ignore = "needs a kernel and filesystem with fs-verity: run in a VM by tests/vm/run.sh"]
fn fsverity_is_enabled_at_commit_recorded_and_agrees_with_fsverity_utils() {
    let env = Env::new();
    let s = verity(&env, false);
    // Both ways a layer is made: applied from a tar, and written in an
    // upper dir and converted at commit.
    applied_layer(&s, "applied", 1);
    layer(&env, &s, "written", "applied", |t| {
        write(t, "w/file", "written\n");
    });
    for name in ["applied", "written"] {
        let blob = blob_of(&s, name);
        assert_eq!(our_digest(&blob), fsverity_tool_digest(&blob), "{name}");
        // fs-verity makes the file read-only for good.
        let err = fs::OpenOptions::new().append(true).open(&blob).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{name}: {err}");
    }
    assert_eq!(
        read_in_view(&env, &s, "applied", "data/big").unwrap(),
        payload(1)
    );
    assert_eq!(
        read_in_view(&env, &s, "written", "w/file").unwrap(),
        b"written\n"
    );
    // A new handle (the layers were detached by the last close) checks
    // again before mounting.
    drop(s);
    let s = verity(&env, false);
    assert_eq!(
        read_in_view(&env, &s, "written", "data/small").unwrap(),
        b"small 1\n"
    );
}

#[test]
#[ignore = "needs a kernel and filesystem with fs-verity: run in a VM by tests/vm/run.sh"]
fn fsverity_with_set_immutable_commits_mounts_and_removes() {
    // containerd #12451: the two together failed with EPERM there (the
    // flag set before fs-verity was enabled).
    let env = Env::new();
    let s = verity(&env, true);
    applied_layer(&s, "base", 2);
    let blob = blob_of(&s, "base");
    assert!(integrity::is_immutable(&blob).unwrap());
    assert_eq!(our_digest(&blob), fsverity_tool_digest(&blob));
    assert_eq!(
        read_in_view(&env, &s, "base", "data/big").unwrap(),
        payload(2)
    );
    s.remove("base").unwrap();
    s.cleanup().unwrap();
    assert!(!blob.exists(), "{} left behind", blob.display());
}

/// Replaces `blob` by a copy with one byte changed, through a rename (what
/// an attacker with write access to the directory can do to a file that
/// fs-verity keeps from being written); `verity` enables fs-verity on the
/// copy too.
fn replace_with_tampered_copy(blob: &Path, verity: bool) {
    let _ = integrity::set_immutable(blob, false);
    let mut data = fs::read(blob).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x55;
    let tmp = blob.with_extension("tampered");
    fs::write(&tmp, &data).unwrap();
    if verity {
        integrity::enable_verity(&tmp).unwrap();
    }
    fs::rename(&tmp, blob).unwrap();
}

#[test]
#[ignore = "needs a kernel and filesystem with fs-verity: run in a VM by tests/vm/run.sh"]
fn fsverity_refuses_a_blob_replaced_through_a_copy() {
    for (case, verity_on_copy) in [
        ("no fs-verity on the copy", false),
        ("another digest", true),
    ] {
        let env = Env::new();
        let s = verity(&env, false);
        applied_layer(&s, "base", 3);
        let blob = blob_of(&s, "base");
        let recorded = our_digest(&blob);
        drop(s); // the last handle detaches the layer
        replace_with_tampered_copy(&blob, verity_on_copy);
        let s = verity(&env, false);
        let err = s.view("v", "base", &no_labels()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{case}: {err}");
        let msg = err.message();
        assert!(
            msg.contains(&blob.display().to_string()) && msg.contains("fs-verity"),
            "{case}: the error names the blob and fs-verity: {msg}"
        );
        if verity_on_copy {
            assert!(
                msg.contains(recorded.trim_start_matches("sha256:")),
                "{case}: the recorded digest is in the message: {msg}"
            );
        }
        // Nothing was left mounted or half made.
        assert!(s.stat("v").is_err());
        assert!(
            mounts_under(&env.root).is_empty(),
            "{:?}",
            mounts_under(&env.root)
        );
        // The copy is not valid EROFS either way; keep Env's fsck quiet.
        s.remove("base").unwrap();
        s.cleanup().unwrap();
    }
}

/// The physical byte offset on the disk of byte `offset` of `file`
/// (FIEMAP, one extent).
fn physical_offset(file: &Path, offset: u64) -> u64 {
    #[repr(C)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; 1],
    }
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    let f = fs::File::open(file).unwrap();
    // SAFETY: a zeroed fiemap request is valid; the kernel fills one extent.
    let mut m: Fiemap = unsafe { std::mem::zeroed() };
    m.start = offset;
    m.length = 1;
    m.flags = FIEMAP_FLAG_SYNC;
    m.extent_count = 1;
    // SAFETY: `m` is a fiemap with room for `extent_count` extents.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            FS_IOC_FIEMAP,
            &mut m as *mut Fiemap,
        )
    };
    assert_eq!(
        rc,
        0,
        "FIEMAP {}: {}",
        file.display(),
        std::io::Error::last_os_error()
    );
    assert_eq!(
        m.mapped_extents,
        1,
        "{} has no extent at {offset}",
        file.display()
    );
    let e = &m.extents[0];
    assert!(e.logical <= offset && offset < e.logical + e.length);
    e.physical + (offset - e.logical)
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}: {st}");
}

#[test]
#[ignore = "needs a kernel and filesystem with fs-verity: run in a VM by tests/vm/run.sh"]
fn fsverity_a_byte_flipped_on_the_raw_disk_reads_as_an_error_never_wrong_bytes() {
    let disk = env_path("EROFS_VM_DISK");
    let mnt = env_path("EROFS_VM_DISK_MNT");
    let env = Env::new();
    let s = verity(&env, false);
    applied_layer(&s, "base", 4);
    let blob = blob_of(&s, "base");
    // A byte of the 1 MiB file's data: the middle of the image.
    let len = fs::metadata(&blob).unwrap().len();
    let at = physical_offset(&blob, len / 2);
    drop(s);
    // The filesystem is unmounted around the write, so no page cache holds
    // the block: the next read comes from the disk.
    run("umount", &[mnt.to_str().unwrap()]);
    {
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .unwrap();
        let mut b = [0u8; 1];
        dev.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0xff;
        dev.write_all_at(&b, at).unwrap();
        dev.sync_all().unwrap();
    }
    run(
        "mount",
        &["-t", "ext4", disk.to_str().unwrap(), mnt.to_str().unwrap()],
    );
    let s = verity(&env, false);
    // The digest of the Merkle tree is unchanged (the tree was not
    // touched): the layer mounts, and the kernel refuses the bad block.
    let got = read_in_view(&env, &s, "base", "data/big");
    match got {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        Ok(data) => panic!(
            "read {} bytes from a layer with a corrupted block (equal to what was written: {})",
            data.len(),
            data == payload(4)
        ),
    }
    // The other file, in blocks the flip did not touch, still reads.
    assert_eq!(
        read_in_view(&env, &s, "base", "data/small").unwrap(),
        b"small 4\n"
    );
    s.remove("base").unwrap();
    s.cleanup().unwrap();
}

#[test]
#[ignore = "needs a kernel and filesystem with fs-verity: run in a VM by tests/vm/run.sh"]
fn fsverity_on_a_filesystem_without_it_fails_at_open() {
    let plain = env_path("EROFS_VM_PLAIN");
    let root = plain.join(format!("root-{}", std::process::id()));
    let mut c = Config::new(&root);
    c.enable_fsverity = true;
    let Err(err) = Snapshotter::open(c) else {
        panic!("open with enable_fsverity on an ext4 without the verity feature succeeded");
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains("fs-verity") && err.message().contains("-O verity"),
        "{err}"
    );
    // Without the option the same root opens.
    Snapshotter::open(Config::new(&root)).unwrap();
    let _ = fs::remove_dir_all(&root);
}

// ---- Power loss ---------------------------------------------------------------
//
// `tests/vm/run.sh` boots the VM once with `powercut_write`, which commits
// layers one after the other and prints a line as each commit returns,
// and cuts the power (kills qemu, no shutdown, no sync) at a random
// moment; then boots it again on the same disk with `powercut_check`.
// `EROFS_VM_CONFIG` names the settings: `default` (durable before first
// use), `no_flush` (durable_before_use off), `sync_commit` or
// `set_immutable`. Every third layer is used as a container's would be (a
// snapshot prepared on it) once committed: from then on it, and every
// layer below it, must survive.

/// The root of the power-loss tests, on the VM's disk (kept across boots).
fn powercut_config() -> Config {
    let mut c = Config::new(env_path("EROFS_VM_DISK_MNT").join("powercut"));
    match std::env::var("EROFS_VM_CONFIG").as_deref() {
        Ok("default") => {}
        Ok("no_flush") => c.durable_before_use = false,
        Ok("sync_commit") => c.sync_commit = true,
        Ok("set_immutable") => c.set_immutable = true,
        other => panic!("EROFS_VM_CONFIG: {other:?}"),
    }
    c
}

/// Layer `i` of the chain: adds `data/<i>` (256 KiB of its own) and
/// replaces `data/last`.
fn powercut_layer(i: u32) -> Vec<u8> {
    let big: Vec<u8> = payload(i as u8).into_iter().take(256 << 10).collect();
    Tar::new()
        .dir("data")
        .file(&format!("data/{i}"), &big)
        .file("data/last", format!("{i}\n").as_bytes())
        .end()
}

const POWERCUT_LAYERS: u32 = 400;

/// Layers committed, then synced, before the ones the power cut may catch:
/// these must come back intact whatever the settings.
const POWERCUT_SYNCED: u32 = 3;

#[test]
#[ignore = "cuts the power of a VM: run by tests/vm/run.sh"]
fn powercut_write() {
    println!(); // after libtest's "test powercut_write ... ": lines of our own
    let s = Snapshotter::open(powercut_config()).unwrap();
    let mut parent = String::new();
    for i in 0..POWERCUT_LAYERS {
        let (key, name) = (format!("extract-{i}"), format!("layer-{i}"));
        // As containerd's unpacker prepares an extraction (not a use).
        let unpack = labels(&[("containerd.io/snapshot.ref", &name)]);
        s.prepare(&key, &parent, &unpack).unwrap();
        let t = std::time::Instant::now();
        s.apply(
            &key,
            &mut Cursor::new(powercut_layer(i)),
            &ApplyOptions::default(),
        )
        .unwrap();
        let applied = t.elapsed();
        s.commit(&name, &key, &no_labels()).unwrap();
        let committed = t.elapsed() - applied;
        println!(
            "VMTEST committed {name} apply_us={} commit_us={}",
            applied.as_micros(),
            committed.as_micros()
        );
        if i >= POWERCUT_SYNCED && i % 3 == 0 {
            s.prepare(&format!("container-{i}"), &name, &no_labels())
                .unwrap();
            println!("VMTEST used layer-{i}");
        }
        parent = name;
        if i + 1 == POWERCUT_SYNCED {
            // A host that has been up a while: what came before is on disk.
            // SAFETY: sync(2) has no preconditions.
            unsafe { libc::sync() };
            println!("VMTEST synced through layer-{i}");
        }
    }
}

#[test]
#[ignore = "checks a VM's disk after a power cut: run by tests/vm/run.sh"]
fn powercut_check() {
    println!(); // after libtest's "test powercut_check ... "
    let env = Env::new(); // mount targets only
                          // What open finds lost, in the log.
    let log = erofs_snapshotter::Logger::new(
        std::sync::Arc::new(|_, m: &str| println!("VMTEST log: {m}")),
        erofs_snapshotter::Level::Warn,
    );
    let s = Snapshotter::open_with_logger(powercut_config(), log).expect("open after a power cut");
    let mut layers: Vec<u32> = s
        .walk(&[])
        .unwrap()
        .iter()
        .filter(|i| i.kind == erofs_snapshotter::Kind::Committed)
        .filter_map(|i| i.name.strip_prefix("layer-")?.parse().ok())
        .collect();
    layers.sort_unstable();
    // A layer mounts with exactly what was written, or is refused by name
    // (Err(Ok)): its blob, or a layer found lost at open.
    let check = |i: u32| -> Result<(), Result<String, String>> {
        let (name, key) = (format!("layer-{i}"), format!("check-{i}"));
        let mounts = s.view(&key, &name, &no_labels()).map_err(|e| {
            if e.message().contains("layer.erofs") || e.message().contains("was lost") {
                Ok(e.message().to_string())
            } else {
                Err(format!("{name}: refused without naming the blob: {e}"))
            }
        })?;
        let seen = with_mounted(&env, &key, &mounts, |t| -> Result<(), String> {
            for j in 0..=i {
                let want: Vec<u8> = payload(j as u8).into_iter().take(256 << 10).collect();
                let got =
                    fs::read(t.join(format!("data/{j}"))).map_err(|e| format!("data/{j}: {e}"))?;
                if got != want {
                    return Err(format!(
                        "data/{j}: {} bytes, not what was written",
                        got.len()
                    ));
                }
            }
            let last =
                fs::read_to_string(t.join("data/last")).map_err(|e| format!("data/last: {e}"))?;
            if last != format!("{i}\n") {
                return Err(format!("data/last is {last:?}"));
            }
            Ok(())
        });
        s.remove(&key).unwrap();
        seen.map_err(|e| Err(format!("{name} mounted with wrong content: {e}")))
    };
    let (mut intact, mut refused, mut wrong) = (0, 0, Vec::new());
    for &i in &layers {
        match check(i) {
            Ok(()) => {
                intact += 1;
                println!("VMTEST layer-{i}: intact");
            }
            Err(Ok(why)) => {
                refused += 1;
                println!("VMTEST layer-{i}: refused: {why}");
            }
            Err(Err(e)) => wrong.push(e),
        }
    }
    // Healing: every layer found lost is made again from its tar (as the
    // proxy daemon does from containerd's content store), lowest first;
    // then every layer must mount with exactly what was written.
    let mut lost: Vec<u32> = s
        .check()
        .unwrap()
        .iter()
        .filter_map(|k| k.strip_prefix("layer-")?.parse().ok())
        .collect();
    lost.sort_unstable();
    for &j in &lost {
        match s.repair(
            &format!("layer-{j}"),
            &mut Cursor::new(powercut_layer(j)),
            &ApplyOptions::default(),
        ) {
            Ok(_) => println!("VMTEST healed layer-{j}"),
            Err(e) => wrong.push(format!("layer-{j}: repair failed: {e}")),
        }
    }
    for &i in &layers {
        match check(i) {
            Ok(()) => {}
            Err(Ok(why)) => wrong.push(format!("layer-{i}: still refused after healing: {why}")),
            Err(Err(e)) => wrong.push(format!("after healing: {e}")),
        }
    }
    println!(
        "VMTEST powercut: committed={} intact={intact} refused={refused} healed={} wrong={} highest={}",
        layers.len(),
        lost.len(),
        wrong.len(),
        layers.last().map_or(-1, |l| *l as i64)
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---- dm-verity ------------------------------------------------------------------

/// The source of the mount on `target`, from /proc/self/mountinfo.
fn mount_source(target: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.to_str().unwrap();
    info.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (left.split(' ').nth(4)? == target).then(|| right.split(' ').nth(1).unwrap().to_string())
    })
}

/// Names of the device-mapper devices this library made that still exist.
fn our_dm_devices() -> Vec<String> {
    fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(|e| fs::read_to_string(e.unwrap().path().join("dm/name")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("erofs-snapshotter-"))
        .collect()
}

fn dmverity(env: &Env, mode: DmverityMode) -> Snapshotter {
    env.open_with(|c| {
        c.enable_dmverity = true;
        c.dmverity_mode = mode;
    })
}

#[test]
#[ignore = "needs a kernel with dm-verity: run in a VM by tests/vm/run.sh"]
fn dmverity_applied_layers_mount_through_a_verity_device() {
    let env = Env::new();
    let s = dmverity(&env, DmverityMode::Auto);
    applied_layer(&s, "base", 5);
    layer(&env, &s, "written", "base", |t| {
        write(t, "w/file", "written\n")
    });
    let blob = blob_of(&s, "base");
    // containerd's sidecar, and a tree veritysetup (cryptsetup) accepts.
    let meta = dmverity::read_metadata(&blob)
        .unwrap()
        .expect("base.dmverity");
    let b = blob.to_str().unwrap();
    run(
        "veritysetup",
        &[
            "verify",
            b,
            b,
            &meta.root_hash,
            &format!("--hash-offset={}", meta.hash_offset),
        ],
    );
    // The layer is mounted from a dm-verity device, and a view of it alone
    // does not mount the file around it.
    let mounts = s.view("peek", "base", &no_labels()).unwrap();
    assert_eq!(mounts[0].kind, "bind", "{mounts:?}");
    s.remove("peek").unwrap();
    let fs_dir = blob.parent().unwrap().join("fs");
    let source = mount_source(&fs_dir).expect("the layer is mounted");
    assert!(
        source.starts_with("/dev/dm-"),
        "{} is mounted from {source}",
        fs_dir.display()
    );
    assert_eq!(our_dm_devices().len(), 1, "{:?}", our_dm_devices());
    assert_eq!(
        read_in_view(&env, &s, "base", "data/big").unwrap(),
        payload(5)
    );
    assert_eq!(
        read_in_view(&env, &s, "written", "data/small").unwrap(),
        b"small 5\n"
    );
    assert_eq!(
        read_in_view(&env, &s, "written", "w/file").unwrap(),
        b"written\n"
    );
    // The last close detaches the layers; each device goes with its mount.
    drop(s);
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        our_dm_devices().is_empty()
    });
    assert!(
        gone,
        "devices left after the last close: {:?}",
        our_dm_devices()
    );
}

#[test]
#[ignore = "needs a kernel with dm-verity: run in a VM by tests/vm/run.sh"]
fn dmverity_a_changed_data_block_reads_as_eio_never_wrong_bytes() {
    let env = Env::new();
    let s = dmverity(&env, DmverityMode::Auto);
    applied_layer(&s, "base", 6);
    let blob = blob_of(&s, "base");
    let meta = dmverity::read_metadata(&blob).unwrap().unwrap();
    drop(s); // the layer is detached
             // One byte of the data area (the 1 MiB file fills most of it) changed
             // in place: the length, which is all that is checked without
             // fs-verity, stays.
    {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&blob)
            .unwrap();
        let at = meta.hash_offset / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0xff;
        f.write_all_at(&b, at).unwrap();
    }
    let s = dmverity(&env, DmverityMode::Auto);
    match read_in_view(&env, &s, "base", "data/big") {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        Ok(data) => panic!(
            "read {} bytes through dm-verity from a changed block (what was written: {})",
            data.len(),
            data == payload(6)
        ),
    }
    s.remove("base").unwrap();
    s.cleanup().unwrap();
}

#[test]
#[ignore = "needs a kernel with dm-verity: run in a VM by tests/vm/run.sh"]
fn dmverity_mode_on_refuses_a_layer_without_metadata_and_off_mounts_the_file() {
    let env = Env::new();
    let s = env.open();
    applied_layer(&s, "plain", 7);
    drop(s);
    let s = dmverity(&env, DmverityMode::On);
    let err = s.view("v", "plain", &no_labels()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("layer.erofs.dmverity") && err.message().contains("dmverity_mode"),
        "{err}"
    );
    drop(s);
    // off: a layer with a tree is mounted from its file, no device made.
    let s = dmverity(&env, DmverityMode::Off);
    applied_layer(&s, "treed", 8);
    let blob = blob_of(&s, "treed");
    assert!(dmverity::metadata_path(&blob).exists());
    assert_eq!(
        read_in_view(&env, &s, "treed", "data/big").unwrap(),
        payload(8)
    );
    assert!(our_dm_devices().is_empty(), "{:?}", our_dm_devices());
}

/// Layer `seed` applied and committed as "base" with the labels of
/// containerd's unpacker, then exported to layer content cache `cache`:
/// the labels (for another root's unpack) and the cache's file.
fn exported_layer(s: &Snapshotter, seed: u8, cache: &Path) -> (erofs_snapshotter::Labels, PathBuf) {
    s.prepare("ex", "", &no_labels()).unwrap();
    let diff_id = s
        .apply(
            "ex",
            &mut Cursor::new(layer_tar(seed)),
            &ApplyOptions::default(),
        )
        .unwrap()
        .digest;
    let labels = labels(&[
        ("containerd.io/snapshot.ref", "base"),
        ("containerd.io/snapshot/diff-id", &diff_id),
    ]);
    s.commit("base", "ex", &labels).unwrap();
    let file = s.export_layer("base", cache).unwrap();
    (labels, file)
}

#[test]
#[ignore = "needs a kernel with dm-verity: run in a VM by tests/vm/run.sh"]
fn dmverity_a_layer_formatted_by_containerd_mounts_here() {
    // A layer content cache filled from one root, its file then given a
    // tree and sidecar by containerd's own code (containerd 2.4's
    // FormatLayer over go-dmverity: tests/vm/run.sh puts that in the VM as
    // `dmverityformat`), as a fleet's shared cache would hold it.
    let env = Env::new();
    let cache = env.dir.path().join("cache");
    let s = env.open();
    let (labels, file) = exported_layer(&s, 9, &cache);
    drop(s);
    let plain = env.dir.path().join("plain-copy");
    fs::copy(&file, &plain).unwrap();
    run("dmverityformat", &[file.to_str().unwrap()]);
    let theirs = dmverity::read_metadata(&file)
        .unwrap()
        .expect("containerd's sidecar");
    // Our tree over the same blob has the same root (the superblock's
    // random UUID is not hashed).
    let ours = dmverity::append_tree(&plain, [7; 16]).unwrap();
    assert_eq!(ours, theirs);

    // Another root unpacks the layer from the cache: nothing converted,
    // the layer mounted through dm-verity with containerd's metadata.
    let env2 = Env::new();
    let s = env2.open_with(|c| c.layer_content_caches = vec![cache.clone()]);
    let mounts = s.prepare("ex", "", &labels).unwrap();
    assert!(
        mounts[0].options.iter().any(|o| o == "ro"),
        "staged: {mounts:?}"
    );
    s.commit("base", "ex", &labels).unwrap();
    assert_eq!(
        read_in_view(&env2, &s, "base", "data/big").unwrap(),
        payload(9)
    );
    let m = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        m.contains("/dev/dm-"),
        "no layer mounted from a dm-verity device:\n{m}"
    );
    assert_eq!(our_dm_devices().len(), 1, "{:?}", our_dm_devices());
}

#[test]
#[ignore = "needs a kernel with dm-verity: run in a VM by tests/vm/run.sh"]
fn dmverity_an_exported_layer_takes_its_tree_to_the_cache() {
    let env = Env::new();
    let cache = env.dir.path().join("cache");
    let s = dmverity(&env, DmverityMode::Auto);
    let (labels, file) = exported_layer(&s, 10, &cache);
    let meta = dmverity::read_metadata(&file)
        .unwrap()
        .expect("the sidecar exported");
    let f = file.to_str().unwrap();
    run(
        "veritysetup",
        &[
            "verify",
            f,
            f,
            &meta.root_hash,
            &format!("--hash-offset={}", meta.hash_offset),
        ],
    );
    drop(s);
    // A root that requires dm-verity takes the layer from the cache.
    let env2 = Env::new();
    let s = env2.open_with(|c| {
        c.layer_content_caches = vec![cache.clone()];
        c.dmverity_mode = DmverityMode::On;
    });
    s.prepare("ex", "", &labels).unwrap();
    s.commit("base", "ex", &labels).unwrap();
    assert_eq!(
        read_in_view(&env2, &s, "base", "data/big").unwrap(),
        payload(10)
    );
    assert_eq!(our_dm_devices().len(), 1, "{:?}", our_dm_devices());
}

// ---- Benchmark --------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn drop_caches() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

#[test]
#[ignore = "a benchmark in a VM: run by tests/vm/run.sh --bench"]
fn bench_integrity() {
    const MIB: usize = 1 << 20;
    let size = 32 * MIB;
    let reps = 3;
    println!();
    println!("VMBENCH | integrity | apply (ms) | commit (ms) | apply+commit vs none | cold read (MiB/s) | read vs none |");
    println!("VMBENCH |---|---:|---:|---:|---:|---:|");
    let mut base: Option<(f64, f64)> = None;
    for (name, verity, dm) in [
        ("none", false, false),
        ("fs-verity", true, false),
        ("dm-verity", false, true),
    ] {
        let env = Env::new();
        let s = env.open_with(|c| {
            c.enable_fsverity = verity;
            c.enable_dmverity = dm;
        });
        let (mut applies, mut commits, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..reps {
            let data = noise(size, 0x5eed + i as u64);
            let tar = Tar::new().file("big", &data).end();
            let key = format!("ex-{i}");
            s.prepare(&key, "", &no_labels()).unwrap();
            let t = std::time::Instant::now();
            s.apply(&key, &mut Cursor::new(tar), &ApplyOptions::default())
                .unwrap();
            applies.push(t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            s.commit(&format!("l-{i}"), &key, &no_labels()).unwrap();
            commits.push(t.elapsed().as_secs_f64() * 1e3);
            let vkey = format!("v-{i}");
            let mounts = s.view(&vkey, &format!("l-{i}"), &no_labels()).unwrap();
            drop_caches();
            let t = std::time::Instant::now();
            let got = with_mounted(&env, &vkey, &mounts, |m| fs::read(m.join("big")).unwrap());
            reads.push(size as f64 / MIB as f64 / t.elapsed().as_secs_f64());
            assert!(got == data);
            s.remove(&vkey).unwrap();
        }
        let (a, c, r) = (median(applies), median(commits), median(reads));
        let (b_total, b_read) = *base.get_or_insert((a + c, r));
        println!(
            "VMBENCH | {name} | {a:.0} | {c:.0} | {:.2}x | {r:.0} | {:.2}x |",
            (a + c) / b_total,
            r / b_read
        );
    }
}

#[test]
#[ignore = "needs a kernel with dm-verity: run in a VM by tests/vm/run.sh"]
fn dmverity_a_layer_mounts_again_while_a_container_holds_its_old_device() {
    // A container (here: a view kept mounted) keeps the layer's device
    // after the last handle closed and detached the layer; a new handle
    // (a restarted daemon) mounts the layer again for a new container.
    let env = Env::new();
    let s = dmverity(&env, DmverityMode::Auto);
    applied_layer(&s, "base", 11);
    let mounts = s.view("running", "base", &no_labels()).unwrap();
    let target = env.target("running");
    erofs_snapshotter::mount_all(&mounts, &target).unwrap();
    drop(s);
    let s = dmverity(&env, DmverityMode::Auto);
    assert_eq!(
        read_in_view(&env, &s, "base", "data/big").unwrap(),
        payload(11)
    );
    // The running one still reads its files.
    assert_eq!(fs::read(target.join("data/big")).unwrap(), payload(11));
    erofs_snapshotter::unmount_all(&target, false).unwrap();
}
