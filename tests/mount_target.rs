//! A mount's `target` sub-path is resolved inside the mount point, symlinks
//! included, as containerd does: nothing a mount point contains can send a
//! mount outside it.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use erofs_snapshotter::{mount_all, unmount_all, ErrorKind, Mount};

fn mount(kind: &str, source: &Path, options: &[&str], target: &str) -> Mount {
    Mount {
        kind: kind.into(),
        source: source.to_string_lossy().into_owned(),
        target: (!target.is_empty()).then(|| target.to_string()),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

fn tmpfs(target: &str) -> Mount {
    mount("tmpfs", Path::new("tmpfs"), &["size=1m"], target)
}

/// The mount points under the test's directory, canonical and sorted.
fn mounted(env: &Env) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts_under(env.dir.path())
        .into_iter()
        .map(PathBuf::from)
        .collect();
    v.sort();
    v
}

fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap()
}

fn is_empty_dir(p: &Path) -> bool {
    fs::read_dir(p).unwrap().next().is_none()
}

/// `outside` seen from inside `mount_point` (its absolute path below it).
fn inside(mount_point: &Path, outside: &Path) -> PathBuf {
    mount_point.join(outside.strip_prefix("/").unwrap())
}

/// Mounting `m` must fail as not found, naming `target`, and mount nothing.
fn assert_not_found(env: &Env, m: &[Mount], mount_point: &Path, target: &str) {
    match mount_all(m, mount_point) {
        Ok(()) => panic!("mount_all succeeded; mount points now: {:?}", mounted(env)),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(e.message().contains(&format!("{target:?}")), "{e}");
            assert!(!e.message().contains('\n'), "{e}");
        }
    }
    assert_eq!(mounted(env), Vec::<PathBuf>::new(), "nothing stays mounted");
}

#[test]
fn absolute_symlink_target_resolves_inside_the_mount_point() {
    let env = Env::new();
    let outside = canonical(env.dir.path()).join("outside/dir");
    fs::create_dir_all(&outside).unwrap();
    let src = env.dir.path().join("src");
    write(&src, "marker", "from src");
    let mp = env.target("abs");
    symlink(&outside, mp.join("sub")).unwrap();
    let m = [mount("bind", &src, &["rbind", "rw"], "sub")];

    // <mp>/<outside> does not exist: not found, and the outside is untouched.
    assert_not_found(&env, &m, &mp, "sub");
    assert!(is_empty_dir(&outside));

    // It exists: the mount lands there, as if the mount point were `/`.
    let dest = inside(&mp, &outside);
    fs::create_dir_all(&dest).unwrap();
    mount_all(&m, &mp).unwrap();
    assert_eq!(mounted(&env), [canonical(&dest)]);
    assert_eq!(read(&dest, "marker"), "from src");
    assert!(is_empty_dir(&outside), "nothing visible outside");
    unmount_all(&dest, false).unwrap();
    assert_eq!(mounted(&env), Vec::<PathBuf>::new());
}

#[test]
fn relative_symlink_with_dotdot_stays_inside() {
    let env = Env::new();
    // <tmp>/mnt/rel/sub -> ../../outside would be <tmp>/outside.
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let mp = env.target("rel");
    symlink("../../outside", mp.join("sub")).unwrap();
    symlink(
        "../../../../../../../../../../../../outside",
        mp.join("deep"),
    )
    .unwrap();
    fs::create_dir(mp.join("d")).unwrap();
    symlink("../../outside", mp.join("d/sub")).unwrap();

    for target in ["sub", "deep", "d/sub"] {
        assert_not_found(&env, &[tmpfs(target)], &mp, target);
    }
    assert!(is_empty_dir(&outside));

    // `..` at the mount point's root stays at its root: <mp>/outside.
    fs::create_dir(mp.join("outside")).unwrap();
    for target in ["sub", "deep", "d/sub"] {
        mount_all(&[tmpfs(target)], &mp).unwrap();
        assert_eq!(mounted(&env), [canonical(&mp.join("outside"))], "{target}");
        write(&mp, "outside/f", target);
        assert!(is_empty_dir(&outside), "{target}");
        unmount_all(&mp.join("outside"), false).unwrap();
    }

    // `..` in the target itself is refused before anything is mounted.
    for target in ["../outside", "d/../../outside", "/.."] {
        let e = mount_all(&[tmpfs(target)], &mp).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains(&format!("{target:?}")), "{e}");
    }
    assert_eq!(mounted(&env), Vec::<PathBuf>::new());
    assert!(is_empty_dir(&outside));
}

#[test]
fn nested_targets_resolve_through_earlier_mounts_and_failures_undo_all() {
    let env = Env::new();
    let root = env.dir.path().join("rootfs");
    write(&root, "marker", "root");
    fs::create_dir_all(root.join("a/b")).unwrap();
    // An absolute symlink of the image (as /var/run -> /run) that only means
    // something inside it: the host has no such directory.
    let image_only = canonical(env.dir.path()).join("image-only");
    fs::create_dir_all(inside(&root, &image_only)).unwrap();
    symlink(&image_only, root.join("lnk")).unwrap();
    let ro = env.dir.path().join("ro");
    write(&ro, "f", "ro");
    let mp = env.target("nested");

    // The later targets exist only in the first mount.
    let m = [
        mount("bind", &root, &["rbind", "rw"], ""),
        tmpfs("a/b"),
        mount("bind", &ro, &["rbind", "ro"], "/a/b/"),
        tmpfs("lnk"),
    ];
    mount_all(&m, &mp).unwrap();
    let ab = canonical(&mp.join("a/b"));
    let lnk = inside(&canonical(&mp), &image_only);
    assert_eq!(
        mounted(&env),
        [canonical(&mp), ab.clone(), ab.clone(), lnk.clone()]
    );
    assert_eq!(read(&mp, "marker"), "root");
    assert_eq!(read(&ab, "f"), "ro");
    // `ro` applied to the new bind mount, not to the tmpfs under it.
    let e = fs::write(ab.join("g"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    write(&mp, "rw-file", "x");
    fs::remove_file(root.join("rw-file")).unwrap();
    assert_eq!(unmount_all(&ab, false).unwrap(), 2);
    unmount_all(&lnk, false).unwrap();
    unmount_all(&mp, false).unwrap();
    assert_eq!(mounted(&env), Vec::<PathBuf>::new());

    // A later mount fails: the ones before it, nested and stacked, are undone.
    let missing = env.dir.path().join("missing");
    for (last, named) in [
        (mount("bind", &missing, &["rbind"], "a"), "missing"),
        (tmpfs("a/nope"), "a/nope"),
        (mount("bind", &ro, &["rbind", "ro"], "marker/x"), "marker/x"),
    ] {
        let m = [
            mount("bind", &root, &["rbind", "rw"], ""),
            mount("bind", &root, &["rbind", "ro"], "."),
            tmpfs("a/b"),
            last,
        ];
        let e = mount_all(&m, &mp).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.message().contains(named), "{e}");
        assert_eq!(mounted(&env), Vec::<PathBuf>::new(), "{e}");
    }
}

#[test]
fn every_mount_path_resolves_the_target_inside() {
    let env = Env::new();
    let t = canonical(env.dir.path());
    let mp = env.target("kinds");

    // An overlay with more lower directories than fit in one mount(2) page
    // goes through the new mount API (move_mount).
    let mut lowers = Vec::new();
    for i in 0..40 {
        let d = t.join(format!("lowers/{i:02}-{}", "x".repeat(100)));
        write(&d, &format!("f{i}"), "lower");
        lowers.push(d.to_string_lossy().into_owned());
    }
    let lowerdir = format!("lowerdir={}", lowers.join(":"));
    assert!(lowerdir.len() > 4096);
    // An EROFS image, mounted file-backed and through a loop device.
    let tree = t.join("tree");
    write(&tree, "in-image", "erofs");
    let image = t.join("image.erofs");
    let ok = Command::new("mkfs.erofs")
        .args(["--quiet", "-b4096"])
        .arg(&image)
        .arg(&tree)
        .status()
        .unwrap()
        .success();
    assert!(ok);

    let cases = [
        (mount("erofs", &image, &["ro"], "file"), "in-image", "erofs"),
        (
            mount("erofs", &image, &["ro", "loop"], "loop"),
            "in-image",
            "erofs",
        ),
        (
            mount("overlay", Path::new("overlay"), &["ro", &lowerdir], "ovl"),
            "f7",
            "lower",
        ),
    ];
    for (m, file, content) in cases {
        let name = m.target.clone().unwrap();
        let outside = t.join("outside").join(&name);
        fs::create_dir_all(&outside).unwrap();
        symlink(&outside, mp.join(&name)).unwrap();
        assert_not_found(&env, std::slice::from_ref(&m), &mp, &name);
        let dest = inside(&mp, &outside);
        fs::create_dir_all(&dest).unwrap();
        mount_all(std::slice::from_ref(&m), &mp).unwrap();
        assert_eq!(mounted(&env), [canonical(&dest)], "{name}");
        assert_eq!(read(&dest, file), content, "{name}");
        assert!(is_empty_dir(&outside), "{name}");
        unmount_all(&dest, false).unwrap();
    }
    assert_eq!(mounted(&env), Vec::<PathBuf>::new());
}

#[test]
fn a_file_can_be_bind_mounted_on_a_file_target() {
    let env = Env::new();
    let src = env.dir.path().join("resolv.conf");
    fs::write(&src, "nameserver 10.0.0.1\n").unwrap();
    let mp = env.target("file");
    write(&mp, "etc/resolv.conf", "");
    symlink("etc/resolv.conf", mp.join("link")).unwrap();
    mount_all(&[mount("bind", &src, &["bind", "ro"], "link")], &mp).unwrap();
    let dest = canonical(&mp.join("etc/resolv.conf"));
    assert_eq!(mounted(&env), std::slice::from_ref(&dest));
    assert_eq!(fs::read_to_string(&dest).unwrap(), "nameserver 10.0.0.1\n");
    unmount_all(&dest, false).unwrap();
}
