//! The dm-verity hash trees this library appends to layer blobs, held
//! against cryptsetup's `veritysetup` (an independent writer and reader,
//! userspace only: no device-mapper needed): byte for byte the hash area
//! `veritysetup format` writes with containerd's parameters, and accepted by
//! `veritysetup verify`, which also refuses a blob with a byte changed.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use erofs_snapshotter::dmverity::{self, BLOCK};

fn veritysetup(args: &[&str]) -> std::process::Output {
    let out = Command::new("veritysetup")
        .args(args)
        .output()
        .expect("run veritysetup (cryptsetup-bin; scripts/deps.sh installs it)");
    out
}

const UUID: [u8; 16] = *b"\x12\x34\x56\x78\x9a\xbc\x4d\xef\x80\x11\x22\x33\x44\x55\x66\x77";
const UUID_TEXT: &str = "12345678-9abc-4def-8011-223344556677";

fn check(dir: &Path, len: usize) {
    let blob = dir.join(format!("layer-{len}.erofs"));
    let content = common::noise(len, len as u64);
    fs::write(&blob, &content).unwrap();
    let meta = dmverity::format_layer(&blob, UUID).unwrap();
    let hash_offset = (len as u64).div_ceil(BLOCK) * BLOCK;
    assert_eq!(meta.hash_offset, hash_offset, "{len}");
    let formatted = fs::read(&blob).unwrap();
    assert_eq!(
        &formatted[..len],
        &content[..],
        "{len}: the data is left as it was"
    );
    assert!(formatted[len..hash_offset as usize].iter().all(|b| *b == 0));
    // The sidecar, as containerd reads it.
    let sidecar = dmverity::read_metadata(&blob).unwrap().unwrap();
    assert_eq!(sidecar, meta);

    // veritysetup's own hash area for the same data and parameters.
    let padded = dir.join(format!("data-{len}"));
    fs::write(&padded, &formatted[..hash_offset as usize]).unwrap();
    let hash = dir.join(format!("hash-{len}"));
    let out = veritysetup(&[
        "format",
        padded.to_str().unwrap(),
        hash.to_str().unwrap(),
        "--hash=sha256",
        "--data-block-size=4096",
        "--hash-block-size=4096",
        &format!("--salt={}", "0".repeat(64)),
        &format!("--uuid={UUID_TEXT}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap()
        .trim();
    assert_eq!(meta.root_hash, root, "{len}: root hash");
    let theirs = fs::read(&hash).unwrap();
    assert_eq!(
        formatted[hash_offset as usize..].len(),
        theirs.len(),
        "{len}: hash area length"
    );
    assert!(
        formatted[hash_offset as usize..] == theirs[..],
        "{len}: the hash area differs from veritysetup's"
    );

    // veritysetup reads ours: data and tree in the one file, the
    // superblock at hashoffset.
    let blob_s = blob.to_str().unwrap();
    let offset = format!("--hash-offset={hash_offset}");
    let out = veritysetup(&["verify", blob_s, blob_s, &meta.root_hash, &offset]);
    assert!(
        out.status.success(),
        "{len}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And refuses it with one byte of the data changed.
    let mut bad = formatted.clone();
    bad[len / 2] ^= 1;
    let bad_path = dir.join(format!("bad-{len}"));
    fs::write(&bad_path, &bad).unwrap();
    let bad_s = bad_path.to_str().unwrap();
    let out = veritysetup(&["verify", bad_s, bad_s, &meta.root_hash, &offset]);
    assert!(!out.status.success(), "{len}: a changed byte verified");
}

#[test]
fn hash_trees_are_veritysetups() {
    let dir = tempfile::tempdir().unwrap();
    // One block (no tree: the root is its digest), a partial block, one
    // level, two levels, three.
    for len in [
        4096,
        100,
        5000,
        128 * 4096,
        129 * 4096 + 17,
        128 * 128 * 4096 + 1,
    ] {
        check(dir.path(), len);
    }
}

#[test]
fn metadata_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("layer.erofs");
    assert_eq!(dmverity::read_metadata(&blob).unwrap(), None);
    let side = dmverity::metadata_path(&blob);
    for (text, want) in [
        ("{", "dm-verity metadata"),
        (r#"{"roothash": "xyz", "hashoffset": 4096}"#, "roothash"),
        (
            &format!(r#"{{"roothash": "{}", "hashoffset": 100}}"#, "a".repeat(64)),
            "hashoffset 100",
        ),
    ] {
        fs::write(&side, text).unwrap();
        let e = dmverity::read_metadata(&blob).unwrap_err();
        assert!(
            e.message().contains(want) && e.message().contains(side.to_str().unwrap()),
            "{text}: {e}"
        );
    }
}

#[test]
fn the_settings_are_checked_at_open() {
    use erofs_snapshotter::{Config, ErrorKind, Snapshotter};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let json = |extra: &str| format!(r#"{{"root": "{}", {extra}}}"#, root.display());
    // Spelled as containerd spells them; anything else names the field.
    for (extra, want) in [
        (r#""dmverity_mode": "sometimes""#, "dmverity_mode"),
        (r#""dmverity_mode": true"#, "dmverity_mode"),
        (
            r#""enable_dmverity": true, "enable_tar_index": true"#,
            "enable_tar_index",
        ),
    ] {
        let e = Config::from_json(&json(extra)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{extra}: {e}");
        assert!(e.message().contains(want), "{extra}: {e}");
    }
    for mode in ["auto", "on", "off"] {
        Config::from_json(&json(&format!(r#""dmverity_mode": "{mode}""#))).unwrap();
    }
    // Where the kernel has no dm-verity (this machine), asking for it
    // fails at open and says what to load; "auto" opens.
    let has =
        Path::new("/sys/module/dm_verity").exists() && Path::new("/dev/mapper/control").exists();
    for extra in [r#""enable_dmverity": true"#, r#""dmverity_mode": "on""#] {
        let got = Snapshotter::open(Config::from_json(&json(extra)).unwrap());
        match (has, got) {
            (true, r) => assert!(r.is_ok(), "{extra}"),
            (false, Ok(_)) => panic!("{extra}: opened without dm-verity in the kernel"),
            (false, Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{extra}: {e}");
                assert!(e.message().contains("dm_verity"), "{extra}: {e}");
            }
        }
    }
    Snapshotter::open(Config::from_json(&json(r#""dmverity_mode": "auto""#)).unwrap()).unwrap();
}
