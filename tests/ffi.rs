//! The C ABI called as C would call it: status codes, out-parameters written
//! only on success, NULL handling, and the panic boundary of a real export.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::sync::Arc;

use ::erofs_snapshotter::ffi::*;
use ::erofs_snapshotter::{Level, Logger, Snapshotter};
use common::*;

/// The tests of this file run one at a time: one of them counts the strings
/// the library has handed out in this process, which the others would move.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn take(p: *mut c_char) -> String {
    assert!(!p.is_null());
    let s = unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
    erofs_snapshotter_string_free(p);
    s
}

/// `prepare` of `key` with no parent, no labels and no out-parameters.
fn prepare_bare(h: *mut erofs_snapshotter, key: &CStr) -> i32 {
    erofs_snapshotter_prepare(
        h,
        key.as_ptr(),
        ptr::null(),
        ptr::null(),
        ptr::null_mut(),
        ptr::null_mut(),
    )
}

/// A handle on `env`'s root through the C ABI.
fn open(env: &Env) -> *mut erofs_snapshotter {
    let cfg = config(env);
    let mut h = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_open(cfg.as_ptr(), &mut h, ptr::null_mut()),
        EROFS_OK
    );
    h
}

fn config(env: &Env) -> CString {
    CString::new(format!("{{\"root\": {:?}}}", env.root.to_string_lossy())).unwrap()
}

#[test]
fn a_panic_in_a_real_export_becomes_a_status() {
    let _serial = serial();
    let env = Env::new();
    // A host log sink that panics: the library's stat runs into it.
    let logger = Logger::new(
        Arc::new(|_, msg: &str| panic!("sink exploded on {msg:?}")),
        Level::Debug,
    );
    let s = Snapshotter::open_with_logger(env.config(), logger).unwrap();
    let h = ::erofs_snapshotter::ffi::erofs_snapshotter::into_raw(s);
    let sentinel = 0x5a5a as *mut c_char;
    let mut info = sentinel;
    let mut err = ptr::null_mut();
    let code = erofs_snapshotter_stat(h, c"k".as_ptr(), &mut info, &mut err);
    assert_eq!(code, EROFS_ERR_PANIC);
    assert_eq!(info, sentinel, "out-parameter untouched on failure");
    let msg = take(err);
    assert!(msg.starts_with("panic: sink exploded"), "{msg}");
    erofs_snapshotter_close(h);
}

/// A label that is not a string names the label; a wrong-typed info field
/// names the field. One line each, without serde's position.
#[test]
fn json_arguments_of_the_wrong_type_name_the_field() {
    let _serial = serial();
    let env = Env::new();
    let h = open(&env);
    let failure = |code: i32, err: *mut c_char| {
        assert_eq!(code, EROFS_ERR_INVALID_ARGUMENT);
        let m = take(err);
        match m.strip_prefix("invalid argument: ") {
            Some(m) => m.to_string(),
            None => panic!("{m}"),
        }
    };
    let prepare = |labels: &CStr| {
        let mut err = ptr::null_mut();
        let code = erofs_snapshotter_prepare(
            h,
            c"k".as_ptr(),
            ptr::null(),
            labels.as_ptr(),
            ptr::null_mut(),
            &mut err,
        );
        failure(code, err)
    };
    assert_eq!(
        prepare(c"{\"ok\": \"1\", \"a\": 1}"),
        "labels_json: label \"a\": expected a string, got the number 1"
    );
    assert_eq!(
        prepare(c"{\"a\": {\"b\": \"c\"}}"),
        "labels_json: label \"a\": expected a string, got an object"
    );
    assert_eq!(
        prepare(c"[\"a=b\"]"),
        "labels_json: expected an object, got an array"
    );
    assert_eq!(prepare_bare(h, c"a"), EROFS_OK);
    let commit = |labels: &CStr| {
        let mut err = ptr::null_mut();
        let code =
            erofs_snapshotter_commit(h, c"c".as_ptr(), c"a".as_ptr(), labels.as_ptr(), &mut err);
        failure(code, err)
    };
    assert_eq!(
        commit(c"{\"x\": false}"),
        "labels_json: label \"x\": expected a string, got false"
    );
    let update = |info: &CStr| {
        let mut err = ptr::null_mut();
        let code =
            erofs_snapshotter_update(h, info.as_ptr(), ptr::null(), ptr::null_mut(), &mut err);
        failure(code, err)
    };
    for (info, want) in [
        (
            c"{\"name\": 5}",
            "info_json field \"name\": expected a string, got the number 5",
        ),
        (
            c"{\"name\": \"a\", \"labels\": \"k=v\"}",
            "info_json field \"labels\": expected an object, got the string \"k=v\"",
        ),
        (
            c"{\"name\": \"a\", \"labels\": {\"k\": 1.5}}",
            "info_json: label \"k\": expected a string, got the number 1.5",
        ),
        (
            c"{\"labels\": {}}",
            "info_json field \"name\": required but missing",
        ),
        (c"[]", "info_json: expected an object, got an array"),
    ] {
        assert_eq!(update(info), want, "{info:?}");
    }
    let mut err = ptr::null_mut();
    let code = erofs_snapshotter_update(
        h,
        c"{\"name\": \"a\"}".as_ptr(),
        c"[\"labels.k\", 7]".as_ptr(),
        ptr::null_mut(),
        &mut err,
    );
    assert_eq!(
        failure(code, err),
        "fieldpaths_json[1]: expected a string, got the number 7"
    );
    erofs_snapshotter_close(h);
}

#[test]
fn status_codes_and_out_parameters() {
    let _serial = serial();
    let env = Env::new();
    let cfg = config(&env);
    let mut h = ptr::null_mut();
    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_open(cfg.as_ptr(), &mut h, &mut err),
        EROFS_OK
    );
    assert!(err.is_null());
    let before = erofs_snapshotter_strings_outstanding();

    let mut mounts = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_prepare(
            h,
            c"a".as_ptr(),
            ptr::null(),
            c"{\"x\":\"y\"}".as_ptr(),
            &mut mounts,
            &mut err
        ),
        EROFS_OK
    );
    let m: serde_json::Value = serde_json::from_str(&take(mounts)).unwrap();
    assert_eq!(m[0]["type"], "bind");

    // JSON null means "none", as a NULL pointer does (Go marshals nil maps so).
    assert_eq!(
        erofs_snapshotter_prepare(
            h,
            c"n".as_ptr(),
            ptr::null(),
            c"null".as_ptr(),
            ptr::null_mut(),
            ptr::null_mut()
        ),
        EROFS_OK
    );
    let mut walked = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_walk(h, c"null".as_ptr(), &mut walked, ptr::null_mut()),
        EROFS_OK
    );
    assert!(take(walked).contains("\"n\""));
    assert_eq!(
        erofs_snapshotter_remove(h, c"n".as_ptr(), ptr::null_mut()),
        EROFS_OK
    );

    // Out-parameters may be NULL.
    assert_eq!(
        erofs_snapshotter_prepare(
            h,
            c"b".as_ptr(),
            c"".as_ptr(),
            ptr::null(),
            ptr::null_mut(),
            ptr::null_mut()
        ),
        EROFS_OK
    );

    let mut out = 0x1 as *mut c_char;
    assert_eq!(
        erofs_snapshotter_prepare(
            h,
            c"a".as_ptr(),
            ptr::null(),
            ptr::null(),
            &mut out,
            &mut err
        ),
        EROFS_ERR_ALREADY_EXISTS
    );
    assert_eq!(out, 0x1 as *mut c_char);
    assert!(take(err).contains("\"a\""));

    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_prepare(
            h,
            ptr::null(),
            ptr::null(),
            ptr::null(),
            ptr::null_mut(),
            &mut err
        ),
        EROFS_ERR_INVALID_ARGUMENT
    );
    assert!(take(err).contains("key is NULL"));
    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_prepare(
            h,
            c"c".as_ptr(),
            ptr::null(),
            c"[1]".as_ptr(),
            ptr::null_mut(),
            &mut err
        ),
        EROFS_ERR_INVALID_ARGUMENT
    );
    assert!(take(err).contains("labels_json"));
    let bad_utf8 = [0xffu8, 0xfe, 0];
    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_stat(h, bad_utf8.as_ptr().cast(), ptr::null_mut(), &mut err),
        EROFS_ERR_INVALID_ARGUMENT
    );
    assert!(take(err).contains("UTF-8"));
    assert_eq!(
        erofs_snapshotter_stat(h, c"nope".as_ptr(), ptr::null_mut(), ptr::null_mut()),
        EROFS_ERR_NOT_FOUND
    );

    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_commit(h, c"c".as_ptr(), c"a".as_ptr(), ptr::null(), &mut err),
        EROFS_OK
    );
    let (mut size, mut inodes) = (-1i64, -1i64);
    assert_eq!(
        erofs_snapshotter_usage(h, c"c".as_ptr(), &mut size, &mut inodes, ptr::null_mut()),
        EROFS_OK
    );
    assert!(size > 0 && inodes == 1);
    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_remove(h, c"c".as_ptr(), &mut err),
        EROFS_OK
    );

    let mut info = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_update(
            h,
            c"{\"name\":\"b\",\"labels\":{\"k\":\"v\"},\"kind\":\"ignored\"}".as_ptr(),
            c"[\"labels.k\"]".as_ptr(),
            &mut info,
            ptr::null_mut()
        ),
        EROFS_OK
    );
    let info: serde_json::Value = serde_json::from_str(&take(info)).unwrap();
    assert_eq!(info["labels"]["k"], "v");
    assert_eq!(info["kind"], "active");
    let created = info["created"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == "2026-01-01T00:00:00.000000000Z".len(),
        "{created}"
    );

    let mut infos = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_walk(
            h,
            c"[\"labels.k==v\"]".as_ptr(),
            &mut infos,
            ptr::null_mut()
        ),
        EROFS_OK
    );
    let infos: serde_json::Value = serde_json::from_str(&take(infos)).unwrap();
    assert_eq!(infos.as_array().unwrap().len(), 1);
    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_walk(h, c"[\"kind==\"]".as_ptr(), ptr::null_mut(), &mut err),
        EROFS_ERR_INVALID_ARGUMENT
    );
    take(err);
    assert_eq!(erofs_snapshotter_cleanup(h, ptr::null_mut()), EROFS_OK);

    assert_eq!(
        erofs_snapshotter_strings_outstanding(),
        before,
        "every returned string was freed"
    );
    erofs_snapshotter_close(h);
    erofs_snapshotter_close(ptr::null_mut());
    erofs_snapshotter_string_free(ptr::null_mut());
}

#[test]
fn open_errors_and_logger() {
    let _serial = serial();
    let mut err = ptr::null_mut();
    let mut h = 0x7 as *mut erofs_snapshotter;
    assert_eq!(
        erofs_snapshotter_open(
            c"{\"root\":\"/tmp/x\",\"bogus\":1}".as_ptr(),
            &mut h,
            &mut err
        ),
        EROFS_ERR_INVALID_ARGUMENT
    );
    assert_eq!(h, 0x7 as *mut erofs_snapshotter);
    assert!(take(err).contains("bogus"));

    unsafe extern "C" fn sink(user: *mut std::ffi::c_void, level: i32, msg: *const c_char) {
        let seen = unsafe { &*(user as *const std::sync::Mutex<Vec<(i32, String)>>) };
        let msg = unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned();
        seen.lock().unwrap().push((level, msg));
    }
    let env = Env::new();
    let seen = std::sync::Mutex::new(Vec::<(i32, String)>::new());
    let cfg = config(&env);
    let mut err = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_open_with_logger(
            cfg.as_ptr(),
            Some(sink),
            (&seen as *const _) as *mut _,
            99,
            &mut h,
            &mut err
        ),
        EROFS_ERR_INVALID_ARGUMENT
    );
    assert!(take(err).contains("max_level"));
    let mut h = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_open_with_logger(
            cfg.as_ptr(),
            Some(sink),
            (&seen as *const _) as *mut _,
            EROFS_LOG_DEBUG,
            &mut h,
            ptr::null_mut()
        ),
        EROFS_OK
    );
    assert_eq!(
        erofs_snapshotter_stat(h, c"missing".as_ptr(), ptr::null_mut(), ptr::null_mut()),
        EROFS_ERR_NOT_FOUND
    );
    erofs_snapshotter_close(h);
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|(l, m)| *l == EROFS_LOG_DEBUG && m.starts_with("stat \"missing\": not found")),
        "{seen:?}"
    );
}

/// The JSON of stat and walk is served from the handle's memory, and follows
/// every change, made through this handle or another one (another process).
#[test]
fn stat_and_walk_json_follow_changes() {
    let _serial = serial();
    let env = Env::new();
    let h = open(&env);
    let other = env.open();
    let stat = || {
        let mut out = ptr::null_mut();
        assert_eq!(
            erofs_snapshotter_stat(h, c"a".as_ptr(), &mut out, ptr::null_mut()),
            EROFS_OK
        );
        serde_json::from_str::<serde_json::Value>(&take(out)).unwrap()
    };
    let walk = |filters: &CStr| {
        let mut out = ptr::null_mut();
        assert_eq!(
            erofs_snapshotter_walk(h, filters.as_ptr(), &mut out, ptr::null_mut()),
            EROFS_OK
        );
        serde_json::from_str::<serde_json::Value>(&take(out)).unwrap()
    };
    let all = c"null";
    let labelled = c"[\"labels.k==v\"]";
    other.prepare("a", "", &Default::default()).unwrap();
    assert_eq!(stat()["labels"], serde_json::json!({}));
    assert_eq!(stat(), stat());
    assert_eq!(walk(all).as_array().unwrap().len(), 1);
    assert_eq!(walk(labelled).as_array().unwrap().len(), 0);

    // Another handle writes.
    let labels = [("k".to_string(), "v".to_string())].into();
    other
        .update(
            &::erofs_snapshotter::InfoUpdate {
                name: "a".into(),
                labels,
            },
            &[],
        )
        .unwrap();
    assert_eq!(stat()["labels"], serde_json::json!({"k": "v"}));
    assert_eq!(walk(labelled)[0]["name"], "a");
    other.prepare("b", "", &Default::default()).unwrap();
    assert_eq!(walk(all).as_array().unwrap().len(), 2);

    // This handle writes.
    let mut info = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_update(
            h,
            c"{\"name\": \"a\"}".as_ptr(),
            ptr::null(),
            &mut info,
            ptr::null_mut()
        ),
        EROFS_OK
    );
    let updated: serde_json::Value = serde_json::from_str(&take(info)).unwrap();
    assert_eq!(stat(), updated);
    assert_eq!(walk(labelled).as_array().unwrap().len(), 0);
    assert_eq!(
        erofs_snapshotter_remove(h, c"b".as_ptr(), ptr::null_mut()),
        EROFS_OK
    );
    assert_eq!(walk(all).as_array().unwrap().len(), 1);
    assert_eq!(
        erofs_snapshotter_remove(h, c"a".as_ptr(), ptr::null_mut()),
        EROFS_OK
    );
    assert_eq!(
        erofs_snapshotter_stat(h, c"a".as_ptr(), ptr::null_mut(), ptr::null_mut()),
        EROFS_ERR_NOT_FOUND
    );
    drop(other);
    erofs_snapshotter_close(h);
}

/// Nanoseconds since the epoch of the library's `2006-01-02T15:04:05.999999999Z`.
fn rfc3339_ns(s: &str) -> i64 {
    let b = s.as_bytes();
    assert!(
        b.len() == 30 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[29] == b'Z',
        "{s}"
    );
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant), independent of the library's code.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    secs * 1_000_000_000 + n(20..29)
}

#[test]
fn rfc3339_helper_is_right() {
    let _serial = serial();
    assert_eq!(rfc3339_ns("1970-01-01T00:00:00.000000000Z"), 0);
    assert_eq!(
        rfc3339_ns("2023-11-14T22:13:20.123456789Z"),
        1_700_000_000_123_456_789
    );
    assert_eq!(rfc3339_ns("1969-12-31T23:59:59.999999999Z"), -1);
    assert_eq!(
        rfc3339_ns("2000-02-29T00:00:00.000000001Z"),
        951_782_400_000_000_001
    );
}

/// Every info the C ABI returns carries its times twice: RFC 3339 strings
/// and integer nanoseconds (`created_ns`, `updated_ns`), the same instants.
#[test]
fn info_times_as_integers_are_the_rfc3339_instants() {
    let _serial = serial();
    let env = Env::new();
    let h = open(&env);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    };
    let check = |info: &serde_json::Value| -> (i64, i64) {
        let created = info["created_ns"]
            .as_i64()
            .unwrap_or_else(|| panic!("{info}"));
        let updated = info["updated_ns"]
            .as_i64()
            .unwrap_or_else(|| panic!("{info}"));
        assert_eq!(
            created,
            rfc3339_ns(info["created"].as_str().unwrap()),
            "{info}"
        );
        assert_eq!(
            updated,
            rfc3339_ns(info["updated"].as_str().unwrap()),
            "{info}"
        );
        (created, updated)
    };
    let stat = |key: &CStr| {
        let mut out = ptr::null_mut();
        assert_eq!(
            erofs_snapshotter_stat(h, key.as_ptr(), &mut out, ptr::null_mut()),
            EROFS_OK
        );
        serde_json::from_str::<serde_json::Value>(&take(out)).unwrap()
    };
    let before = now();
    assert_eq!(prepare_bare(h, c"a"), EROFS_OK);
    let (created, updated) = check(&stat(c"a"));
    assert_eq!(created, updated);
    assert!(before <= created && created <= now(), "{before} {created}");
    assert_eq!(
        erofs_snapshotter_commit(
            h,
            c"c".as_ptr(),
            c"a".as_ptr(),
            ptr::null(),
            ptr::null_mut()
        ),
        EROFS_OK
    );
    let (committed, _) = check(&stat(c"c"));
    assert!(committed >= created);

    let mut out = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_update(
            h,
            c"{\"name\": \"c\", \"labels\": {\"k\": \"v\"}}".as_ptr(),
            ptr::null(),
            &mut out,
            ptr::null_mut()
        ),
        EROFS_OK
    );
    let updated: serde_json::Value = serde_json::from_str(&take(out)).unwrap();
    let (c2, u2) = check(&updated);
    assert_eq!(c2, committed);
    assert!(u2 > c2, "{updated}");
    assert_eq!(stat(c"c"), updated);

    assert_eq!(
        erofs_snapshotter_view(
            h,
            c"v".as_ptr(),
            c"c".as_ptr(),
            ptr::null(),
            ptr::null_mut(),
            ptr::null_mut()
        ),
        EROFS_OK
    );
    let mut out = ptr::null_mut();
    assert_eq!(
        erofs_snapshotter_walk(h, ptr::null(), &mut out, ptr::null_mut()),
        EROFS_OK
    );
    let infos: serde_json::Value = serde_json::from_str(&take(out)).unwrap();
    assert_eq!(infos.as_array().unwrap().len(), 2);
    for info in infos.as_array().unwrap() {
        check(info);
    }
    erofs_snapshotter_close(h);
}

/// The media types the differ applies, as the bindings ask for them.
#[test]
fn media_types_are_the_ones_apply_reads() {
    let _serial = serial();
    let mut out = ptr::null_mut();
    let mut err = ptr::null_mut();
    assert_eq!(erofs_snapshotter_media_types(&mut out, &mut err), EROFS_OK);
    assert!(err.is_null());
    let listed: Vec<String> = serde_json::from_str(&take(out)).unwrap();
    let documented = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.erofs.layer.v1",
        "application/vnd.erofs.layer.v1+zstd",
    ];
    assert_eq!(listed, documented);
    // The out-parameter may be NULL, as every one may.
    assert_eq!(
        erofs_snapshotter_media_types(ptr::null_mut(), ptr::null_mut()),
        EROFS_OK
    );

    // apply reads a listed type, and refuses one that is not listed.
    let env = Env::new();
    let h = open(&env);
    assert_eq!(prepare_bare(h, c"a"), EROFS_OK);
    let empty_tar = env.dir.path().join("empty.tar");
    std::fs::write(&empty_tar, [0u8; 1024]).unwrap();
    let path = CString::new(empty_tar.to_str().unwrap()).unwrap();
    let apply = |media_type: &str| {
        let opts =
            CString::new(serde_json::json!({ "media_type": media_type }).to_string()).unwrap();
        let mut err = ptr::null_mut();
        let code = erofs_snapshotter_apply(
            h,
            c"a".as_ptr(),
            -1,
            path.as_ptr(),
            opts.as_ptr(),
            ptr::null_mut(),
            &mut err,
        );
        let msg = if err.is_null() {
            String::new()
        } else {
            take(err)
        };
        (code, msg)
    };
    for t in listed.iter().filter(|t| t.ends_with(".tar")) {
        assert_eq!(apply(t), (EROFS_OK, String::new()), "{t}");
    }
    let (code, msg) = apply("application/vnd.oci.image.layer.v1.tar+encrypted");
    assert_eq!(code, EROFS_ERR_INVALID_ARGUMENT, "{msg}");
    assert!(
        msg.contains("not a layer type this differ applies"),
        "{msg}"
    );
    erofs_snapshotter_close(h);
}
