//! The configuration's `mkfs_options` keep containerd's meaning: options the
//! built-in EROFS writer implements are honoured in process; any other
//! option sends the layer through `mkfs.erofs`, as before. Nothing is
//! silently ignored.

use crate::tar::Entry;

/// Settings of the built-in writer that the configuration's `mkfs_options`
/// may change .
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Overrides {
    /// Every file's uid and gid (`--force-uid`, `--force-gid`, `--all-root`).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Added to every uid and gid (`--uid-offset`, `--gid-offset`).
    pub uid_offset: u32,
    pub gid_offset: u32,
    /// Every file's mtime (`-T` with `--all-time`, `--ignore-mtime`).
    pub mtime: Option<(i64, u32)>,
}

impl Overrides {
    pub fn meta(&self, e: &Entry) -> erofs_writer::Meta {
        let (mtime, mtime_nsec) = self.mtime.unwrap_or((e.mtime.secs, e.mtime.nanos));
        erofs_writer::Meta {
            mode: e.mode & 0o7777,
            uid: self.uid.unwrap_or(e.uid).wrapping_add(self.uid_offset),
            gid: self.gid.unwrap_or(e.gid).wrapping_add(self.gid_offset),
            mtime,
            mtime_nsec,
            xattrs: e.xattrs.clone(),
        }
    }
}

/// How the snapshotter writes layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The built-in writer, with these settings.
    Builtin(Builtin),
    /// `mkfs.erofs`, because of this option.
    Mkfs { because: String },
}

/// Settings of the built-in writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Builtin {
    pub block_size_bits: u8,
    /// `-U`: the image UUID (an apply's own, from the layer digest, wins,
    /// as containerd's `-U` comes after the user's options).
    pub uuid: Option<[u8; 16]>,
    /// `-T`: the build time.
    pub build_time: Option<(u64, u32)>,
    pub overrides: Overrides,
}

impl Builtin {
    pub fn writer_options(&self, uuid: Option<[u8; 16]>) -> erofs_writer::Options {
        erofs_writer::Options {
            block_size_bits: self.block_size_bits,
            uuid: uuid.or(self.uuid).unwrap_or([0; 16]),
            build_time: self.build_time,
        }
    }
}

/// Parses an RFC 4122 UUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
pub(crate) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// What `mkfs_options` ask for.
pub(crate) fn plan(options: &[String]) -> Plan {
    let mut b = Builtin {
        block_size_bits: 12,
        uuid: None,
        build_time: None,
        overrides: Overrides::default(),
    };
    let mut all_time = true;
    let mut ignore_mtime = false;
    let mkfs = |opt: &str| Plan::Mkfs {
        because: format!("mkfs_options element {opt:?}"),
    };
    let mut i = 0;
    while i < options.len() {
        let opt = options[i].as_str();
        // `-bN` or `-b N` (getopt's two spellings of a short option).
        let short = |flag: &str, i: &mut usize| -> Option<String> {
            let rest = opt.strip_prefix(flag)?;
            if !rest.is_empty() {
                return Some(rest.to_string());
            }
            *i += 1;
            options.get(*i).cloned()
        };
        let long = |name: &str| opt.strip_prefix(name).and_then(|r| r.strip_prefix('='));
        if matches!(
            opt,
            "--quiet" | "--preserve-mtime" | "--sort=none" | "--sort=path" | "--all-time"
        ) {
            if opt == "--all-time" {
                all_time = true;
            }
        } else if opt == "--mkfs-time" {
            all_time = false;
        } else if opt == "--ignore-mtime" {
            ignore_mtime = true;
        } else if opt == "--all-root" {
            b.overrides.uid = Some(0);
            b.overrides.gid = Some(0);
        } else if opt.starts_with("-d") {
            // Verbosity of mkfs.erofs's output.
            let Some(v) = short("-d", &mut i) else {
                return mkfs(opt);
            };
            if v.parse::<u8>().is_err() {
                return mkfs(opt);
            }
        } else if opt.starts_with("-b") {
            let bits = short("-b", &mut i)
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| v.is_power_of_two() && (512..=65536).contains(v))
                .map(|v| v.trailing_zeros() as u8);
            match bits {
                Some(bits) => b.block_size_bits = bits,
                // mkfs.erofs says what is wrong with it.
                None => return mkfs(opt),
            }
        } else if opt.starts_with("-T") {
            match short("-T", &mut i).and_then(|v| v.parse::<u64>().ok()) {
                Some(t) => b.build_time = Some((t, 0)),
                None => return mkfs(opt),
            }
        } else if opt.starts_with("-U") {
            match short("-U", &mut i).as_deref() {
                Some("clear") => b.uuid = Some([0; 16]),
                Some(u) => match parse_uuid(u) {
                    Some(u) => b.uuid = Some(u),
                    None => return mkfs(opt),
                },
                None => return mkfs(opt),
            }
        } else if opt.starts_with("-E") {
            let Some(list) = short("-E", &mut i) else {
                return mkfs(opt);
            };
            // File data is never inlined by the built-in writer.
            if list.split(',').any(|x| x != "noinline_data") {
                return mkfs(opt);
            }
        } else if let Some(v) = long("--force-uid") {
            match v.parse() {
                Ok(v) => b.overrides.uid = Some(v),
                Err(_) => return mkfs(opt),
            }
        } else if let Some(v) = long("--force-gid") {
            match v.parse() {
                Ok(v) => b.overrides.gid = Some(v),
                Err(_) => return mkfs(opt),
            }
        } else if let Some(v) = long("--uid-offset") {
            match v.parse() {
                Ok(v) => b.overrides.uid_offset = v,
                Err(_) => return mkfs(opt),
            }
        } else if let Some(v) = long("--gid-offset") {
            match v.parse() {
                Ok(v) => b.overrides.gid_offset = v,
                Err(_) => return mkfs(opt),
            }
        } else {
            return mkfs(opt);
        }
        i += 1;
    }
    // mkfs.erofs: `-T` applies to every file unless `--mkfs-time`; with
    // `--ignore-mtime` every file takes the build time.
    match b.build_time {
        Some((t, _)) if all_time || ignore_mtime => b.overrides.mtime = Some((t as i64, 0)),
        None if ignore_mtime => {
            // The build time is "now" for mkfs.erofs; fixed here for
            // reproducible output: the epoch.
            b.build_time = Some((0, 0));
            b.overrides.mtime = Some((0, 0));
        }
        _ => {}
    }
    Plan::Builtin(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_defaults_are_built_in() {
        let Plan::Builtin(b) = plan(&[]) else {
            panic!()
        };
        assert_eq!(b.block_size_bits, 12);
        assert_eq!(b.overrides, Overrides::default());
        let Plan::Builtin(_) = plan(&opts(&["--quiet", "-Enoinline_data", "-b4096"])) else {
            panic!()
        };
    }

    #[test]
    fn options_the_writer_implements() {
        let Plan::Builtin(b) = plan(&opts(&[
            "-b",
            "8192",
            "-T0",
            "-U6ba7b811-9dad-11d1-80b4-00c04fd430c8",
            "--force-uid=5",
            "--gid-offset=100",
        ])) else {
            panic!()
        };
        assert_eq!(b.block_size_bits, 13);
        assert_eq!(b.build_time, Some((0, 0)));
        assert_eq!(b.overrides.mtime, Some((0, 0)));
        assert_eq!(b.overrides.uid, Some(5));
        assert_eq!(b.overrides.gid_offset, 100);
        assert_eq!(b.uuid.unwrap()[0], 0x6b);
        let Plan::Builtin(b) = plan(&opts(&["-T5", "--mkfs-time", "--all-root"])) else {
            panic!()
        };
        assert_eq!(b.overrides.mtime, None);
        assert_eq!((b.overrides.uid, b.overrides.gid), (Some(0), Some(0)));
    }

    #[test]
    fn anything_else_goes_to_mkfs() {
        for o in [
            &["-zlz4"][..],
            &["-Einline_data"],
            &["-Enoinline_data,fragments"],
            &["--chunksize=4096"],
            &["-b3000"],
            &["-Ubogus"],
            &["--no-such-option"],
            &["-b"],
        ] {
            match plan(&opts(o)) {
                Plan::Mkfs { because } => assert!(because.contains(o[0]), "{because}"),
                p => panic!("{o:?}: {p:?}"),
            }
        }
    }
}
