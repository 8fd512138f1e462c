//! The one JSON configuration document and its validation.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Configuration of a snapshotter, as the JSON document given to `open`:
///
/// ```json
/// {"root": "/var/lib/erofs-snapshotter", "set_immutable": false, "enable_fsverity": false,
///  "sync_commit": false, "mkfs_options": [], "ovl_mount_options": [], "mkfs_path": "mkfs.erofs"}
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding `metadata.db` and `snapshots/`. Required, absolute.
    /// `root_path` (containerd's key) is accepted as another spelling.
    #[serde(alias = "root_path")]
    pub root: PathBuf,
    /// Set FS_IMMUTABLE_FL on each committed `layer.erofs`.
    #[serde(default)]
    pub set_immutable: bool,
    /// Enable fs-verity on each committed `layer.erofs` and check it before mounting.
    #[serde(default)]
    pub enable_fsverity: bool,
    /// fsync each blob and its directory before its commit is recorded.
    #[serde(default)]
    pub sync_commit: bool,
    /// Make every layer of a chain durable (its blob flushed, its record
    /// committed to disk) before the first `prepare` or `view` that uses it
    /// returns: write-back starts when a blob is written, so little is left
    /// to wait for then. Off: nothing is flushed (what `sync_commit` does
    /// not cover may be lost to a power cut even after a container started).
    #[serde(default = "default_true")]
    pub durable_before_use: bool,
    /// Extra `mkfs.erofs` arguments, one argv element each.
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    /// Extra overlayfs mount options, one option each.
    #[serde(default)]
    pub ovl_mount_options: Vec<String>,
    /// The differ writes tar-index images (`mkfs.erofs --tar=i`, the original
    /// tar appended), as containerd's `enable_tar_index`.
    #[serde(default)]
    pub enable_tar_index: bool,
    /// The `mkfs.erofs` program: a name looked up on PATH, or a path.
    #[serde(default = "default_mkfs_path")]
    pub mkfs_path: String,
    /// Apply refuses a layer whose files add up to more bytes (sparse files
    /// counted whole); 0: no limit.
    #[serde(default = "default_max_layer_size")]
    pub max_layer_size: u64,
    /// Apply refuses a layer with a larger file; 0: no limit.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: u64,
    /// Apply refuses a layer whose files add up to more than this many times
    /// the layer's size as given (compressed), once past 64 MiB; 0: no limit.
    #[serde(default = "default_max_expansion_ratio")]
    pub max_expansion_ratio: u64,
    /// A conversion (one `mkfs.erofs` run, for apply or commit) taking longer
    /// is killed and fails as unavailable.
    #[serde(default = "default_convert_timeout_seconds")]
    pub convert_timeout_seconds: u64,
    /// Read-only directories of pre-converted EROFS layers, as containerd's
    /// `layer_content_caches`: `<dir>/<algorithm>/<first two hex digits>/<hex>.erofs`
    /// by the layer's diffID. An unpack whose layer is there uses that file
    /// and converts nothing. Absolute paths; searched in order.
    #[serde(default)]
    pub layer_content_caches: Vec<PathBuf>,
    /// The differ appends a dm-verity hash tree to each layer it applies
    /// and writes `<blob>.dmverity`, as containerd's `enable_dmverity`.
    #[serde(default)]
    pub enable_dmverity: bool,
    /// When layers are mounted through dm-verity, as containerd's
    /// `dmverity_mode`: `auto` (those with `<blob>.dmverity`), `on` (every
    /// layer must have one), `off` (never).
    #[serde(default)]
    pub dmverity_mode: DmverityMode,
    /// containerd's `default_size` (block mode): above 0, each container's
    /// active snapshot writes into an ext4 image of this many bytes (its own
    /// filesystem, so a container cannot fill the host's disk); label
    /// `containerd.io/snapshot/max-size` sets one snapshot's. Bytes, as a
    /// number or as containerd writes it ("64Mi", "1g", "512MB": binary
    /// units, go-units' `RAMInBytes`). 0 (the default): upper directories.
    #[serde(default, deserialize_with = "size_field")]
    pub default_size: u64,
}

/// A size in bytes as a number, or as go-units' `RAMInBytes` reads a string.
fn size_field<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "expected a size in bytes (a number, or a string such as \"64Mi\")",
        )
    })? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

/// go-units' `RAMInBytes` (what containerd parses `default_size` with):
/// a decimal number, optionally with a fraction, then an optional space and
/// one of k, m, g, t, p (any case, powers of 1024), optionally followed by
/// "i" and "b" ("16", "16k", "1.5Gi", "64MB", "2 gib"). An empty string is 0.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size: a number of bytes, optionally with k, m, g, t or p \
             (powers of 1024), e.g. \"64Mi\" or \"1g\""
        )
    };
    if text.is_empty() {
        return Ok(0);
    }
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, rest) = text.split_at(digits);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.contains("..") {
        return Err(bad());
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest).to_ascii_lowercase();
    let (shift, tail) = match rest.chars().next() {
        Some('k') => (10, &rest[1..]),
        Some('m') => (20, &rest[1..]),
        Some('g') => (30, &rest[1..]),
        Some('t') => (40, &rest[1..]),
        Some('p') => (50, &rest[1..]),
        _ => (0, rest.as_str()),
    };
    if !["", "i", "b", "ib"].contains(&tail) {
        return Err(bad());
    }
    // go-units multiplies a float; whole numbers stay exact here.
    let bytes = match num.split_once('.') {
        None => num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift)),
        Some(_) => {
            let v: f64 = num.parse().map_err(|_| bad())?;
            let b = v * (1u64 << shift) as f64;
            (b < i64::MAX as f64).then_some(b as u64)
        }
    };
    match bytes {
        Some(b) if b <= i64::MAX as u64 => Ok(b),
        _ => Err(format!(
            "{text:?} is larger than containerd's largest size (2^63 - 1 bytes)"
        )),
    }
}

/// containerd's `dmverity_mode` (read from a string, so that any other
/// JSON value is reported as the wrong type, not as bad JSON).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum DmverityMode {
    /// A layer with `<blob>.dmverity` is mounted through dm-verity.
    #[default]
    Auto,
    /// Every layer must have `<blob>.dmverity`.
    On,
    /// Never: layers are mounted from their files.
    Off,
}

impl TryFrom<String> for DmverityMode {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<DmverityMode, String> {
        match s.as_str() {
            "auto" => Ok(DmverityMode::Auto),
            "on" => Ok(DmverityMode::On),
            "off" => Ok(DmverityMode::Off),
            _ => Err(format!(
                "{s:?} is not one of \"auto\", \"on\", \"off\" (containerd's values)"
            )),
        }
    }
}

/// Default of `max_layer_size`: 128 GiB.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 128 << 30;
/// Default of `max_file_size`: 64 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;
/// Default of `max_expansion_ratio`.
pub const DEFAULT_MAX_EXPANSION_RATIO: u64 = 100;
/// Default of `convert_timeout_seconds`: one hour.
pub const DEFAULT_CONVERT_TIMEOUT_SECONDS: u64 = 3600;

fn default_max_layer_size() -> u64 {
    DEFAULT_MAX_LAYER_SIZE
}
fn default_max_file_size() -> u64 {
    DEFAULT_MAX_FILE_SIZE
}
fn default_max_expansion_ratio() -> u64 {
    DEFAULT_MAX_EXPANSION_RATIO
}
fn default_convert_timeout_seconds() -> u64 {
    DEFAULT_CONVERT_TIMEOUT_SECONDS
}

fn default_true() -> bool {
    true
}

fn default_mkfs_path() -> String {
    "mkfs.erofs".to_string()
}

/// The bounds an apply enforces (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Sum of the sizes of the layer's files (sparse files counted whole).
    pub max_layer_size: u64,
    /// Size of any one file.
    pub max_file_size: u64,
    /// Files written per byte of layer data read (as given: compressed).
    pub max_expansion_ratio: u64,
}

/// Longest `convert_timeout_seconds` accepted.
const MAX_TIMEOUT_SECONDS: u64 = 365 * 24 * 3600;

/// Overlay options the snapshotter sets itself; a user value would corrupt the mount.
const RESERVED_OVERLAY_OPTIONS: &[&str] =
    &["lowerdir", "upperdir", "workdir", "lowerdir+", "datadir+"];

impl Config {
    /// A configuration with every option at its default.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            set_immutable: false,
            enable_fsverity: false,
            sync_commit: false,
            durable_before_use: true,
            enable_tar_index: false,
            mkfs_options: Vec::new(),
            ovl_mount_options: Vec::new(),
            mkfs_path: default_mkfs_path(),
            max_layer_size: DEFAULT_MAX_LAYER_SIZE,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_expansion_ratio: DEFAULT_MAX_EXPANSION_RATIO,
            convert_timeout_seconds: DEFAULT_CONVERT_TIMEOUT_SECONDS,
            layer_content_caches: Vec::new(),
            enable_dmverity: false,
            dmverity_mode: DmverityMode::Auto,
            default_size: 0,
        }
    }

    /// Parses and validates the JSON document. Errors name the field.
    pub fn from_json(json: &str) -> Result<Config> {
        let config: Config = crate::json::decode(json)
            .map_err(|e| Error::invalid_argument(e.message("config", None)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; the error names the field and the cause.
    pub fn validate(&self) -> Result<()> {
        if self.root.as_os_str().is_empty() {
            return Err(Error::invalid_argument(
                "config field \"root\": must not be empty",
            ));
        }
        if !self.root.is_absolute() {
            return Err(Error::invalid_argument(format!(
                "config field \"root\": must be an absolute path, got {:?}",
                self.root
            )));
        }
        if self.mkfs_path.is_empty() {
            return Err(Error::invalid_argument(
                "config field \"mkfs_path\": must not be empty",
            ));
        }
        for (i, opt) in self.mkfs_options.iter().enumerate() {
            if opt.is_empty() {
                return Err(Error::invalid_argument(format!(
                    "config field \"mkfs_options\"[{i}]: empty option"
                )));
            }
            if opt.chars().any(char::is_whitespace) {
                return Err(Error::invalid_argument(format!(
                    "config field \"mkfs_options\"[{i}]: {opt:?} contains whitespace; \
                     give each option as its own element, e.g. [\"-T0\", \"--mkfs-time\"]"
                )));
            }
            if opt.contains('\0') {
                return Err(Error::invalid_argument(format!(
                    "config field \"mkfs_options\"[{i}]: contains a NUL byte"
                )));
            }
        }
        for (i, opt) in self.ovl_mount_options.iter().enumerate() {
            if opt.is_empty() || opt.contains(',') || opt.contains('\0') {
                return Err(Error::invalid_argument(format!(
                    "config field \"ovl_mount_options\"[{i}]: {opt:?} must be one non-empty option \
                     without commas; give each option as its own element"
                )));
            }
            let name = opt.split('=').next().unwrap_or(opt);
            if RESERVED_OVERLAY_OPTIONS.contains(&name) {
                return Err(Error::invalid_argument(format!(
                    "config field \"ovl_mount_options\"[{i}]: {name:?} is set by the snapshotter itself"
                )));
            }
        }
        for (i, dir) in self.layer_content_caches.iter().enumerate() {
            // Recorded in snapshots and mounted later, by any process.
            if !dir.is_absolute() {
                return Err(Error::invalid_argument(format!(
                    "config field \"layer_content_caches\"[{i}]: {dir:?} must be an absolute path"
                )));
            }
        }
        if !self.layer_content_caches.is_empty() {
            // A cached layer is shared with every root using the cache: as
            // containerd, nothing may change its attributes.
            for (on, field) in [
                (self.enable_fsverity, "enable_fsverity"),
                (self.set_immutable, "set_immutable"),
            ] {
                if on {
                    return Err(Error::invalid_argument(format!(
                        "config field \"{field}\" cannot be used with \"layer_content_caches\": \
                         it would change the attributes of layers other roots share \
                         (a cache's own fs-verity digests are checked at every mount)"
                    )));
                }
            }
        }
        if self.enable_dmverity && self.enable_tar_index {
            return Err(Error::invalid_argument(
                "config field \"enable_dmverity\" cannot be used with \"enable_tar_index\" here: \
                 tar-index images have 512-byte blocks, which need a 512-byte dm-verity tree \
                 (containerd's); this library writes 4 KiB trees only",
            ));
        }
        if self.convert_timeout_seconds == 0 {
            return Err(Error::invalid_argument(
                "config field \"convert_timeout_seconds\": must be at least 1 (a conversion \
                 is never left to run without a bound)",
            ));
        }
        if self.convert_timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(Error::invalid_argument(format!(
                "config field \"convert_timeout_seconds\": {} is more than {MAX_TIMEOUT_SECONDS} \
                 (a year)",
                self.convert_timeout_seconds
            )));
        }
        Ok(())
    }

    /// The limits an apply enforces.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_layer_size: self.max_layer_size,
            max_file_size: self.max_file_size,
            max_expansion_ratio: self.max_expansion_ratio,
        }
    }

    /// How layers are written: by the built-in writer unless an option asks
    /// for mkfs.erofs (tar-index images are mkfs.erofs's).
    pub(crate) fn layer_plan(&self) -> crate::mkfs_options::Plan {
        if self.enable_tar_index {
            return crate::mkfs_options::Plan::Mkfs {
                because: "config field \"enable_tar_index\"".into(),
            };
        }
        crate::mkfs_options::plan(&self.mkfs_options)
    }

    /// How long one conversion may run.
    pub(crate) fn convert_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.convert_timeout_seconds)
    }

    /// True when `mkfs_path` is the default (`mkfs.erofs`, looked up in `PATH`).
    pub(crate) fn mkfs_path_is_default(&self) -> bool {
        self.mkfs_path == default_mkfs_path()
    }

    /// True when `mkfs_options` chooses a block size, so the default `-b4096` is left out.
    pub(crate) fn sets_block_size(&self) -> bool {
        self.mkfs_options
            .iter()
            .any(|o| o.starts_with("-b") || o.starts_with("--blocksize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn sizes_parse_as_go_units_ram_in_bytes() {
        for (text, want) in [
            ("", 0),
            ("0", 0),
            ("16", 16),
            ("16b", 16),
            ("16k", 16 << 10),
            ("16KB", 16 << 10),
            ("64Mi", 64 << 20),
            ("64mib", 64 << 20),
            ("1g", 1 << 30),
            ("2 GiB", 2 << 30),
            ("1.5g", 3 << 29),
            ("1t", 1 << 40),
            ("1p", 1 << 50),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
        assert_eq!(parse_size("1 "), Ok(1));
        assert_eq!(parse_size("1ib"), Ok(1));
        for bad in [
            "-1", "1x", "k", ".5g", "1.g", "1..5g", "1.5.5", "1  k", "1kx", "1e3", "1gbb", "1bi",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("8192p").unwrap_err().contains("larger"));
    }

    fn err(json: &str) -> String {
        let e = Config::from_json(json).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        e.message().to_string()
    }

    #[test]
    fn defaults() {
        let c = Config::from_json(r#"{"root": "/r"}"#).unwrap();
        assert_eq!(c, Config::new("/r"));
        let c = Config::from_json(r#"{"root_path": "/r"}"#).unwrap();
        assert_eq!(c.root, PathBuf::from("/r"));
    }

    #[test]
    fn full_document() {
        let c = Config::from_json(
            r#"{"root": "/r", "set_immutable": true, "enable_fsverity": true, "sync_commit": true,
                "mkfs_options": ["-zlz4", "-T0"], "ovl_mount_options": ["redirect_dir=on"],
                "mkfs_path": "/usr/local/bin/mkfs.erofs"}"#,
        )
        .unwrap();
        assert!(c.set_immutable && c.enable_fsverity && c.sync_commit);
        assert_eq!(c.mkfs_options, ["-zlz4", "-T0"]);
        assert_eq!(c.ovl_mount_options, ["redirect_dir=on"]);
        assert_eq!(c.mkfs_path, "/usr/local/bin/mkfs.erofs");
    }

    #[test]
    fn layer_content_caches_are_checked() {
        let c =
            Config::from_json(r#"{"root": "/r", "layer_content_caches": ["/a", "/b"]}"#).unwrap();
        assert_eq!(
            c.layer_content_caches,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        let m = err(r#"{"root": "/r", "layer_content_caches": ["/a", "b"]}"#);
        assert!(
            m.contains("layer_content_caches\"[1]") && m.contains("absolute"),
            "{m}"
        );
        for key in ["set_immutable", "enable_fsverity"] {
            let m = err(&format!(
                r#"{{"root": "/r", "layer_content_caches": ["/a"], "{key}": true}}"#
            ));
            assert!(m.contains(key) && m.contains("layer_content_caches"), "{m}");
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let m = err(r#"{"root": "/r", "set_immutible": true}"#);
        assert!(m.contains("set_immutible"), "{m}");
    }

    #[test]
    fn root_is_required_and_absolute() {
        assert!(err(r#"{}"#).contains("root"));
        assert!(err(r#"{"root": ""}"#).contains("root"));
        assert!(err(r#"{"root": "rel/dir"}"#).contains("absolute"));
    }

    #[test]
    fn mkfs_option_with_whitespace_is_rejected() {
        let m = err(r#"{"root": "/r", "mkfs_options": ["-T0 --mkfs-time"]}"#);
        assert!(
            m.contains("mkfs_options") && m.contains("own element"),
            "{m}"
        );
    }

    #[test]
    fn overlay_options_are_checked() {
        assert!(
            err(r#"{"root": "/r", "ovl_mount_options": ["a,b"]}"#).contains("ovl_mount_options")
        );
        assert!(
            err(r#"{"root": "/r", "ovl_mount_options": ["upperdir=/x"]}"#).contains("upperdir")
        );
    }

    #[test]
    fn wrong_types_and_bad_json() {
        assert!(err(r#"{"root": "/r", "set_immutable": "yes"}"#).contains("config"));
        assert!(err("not json").contains("config"));
    }

    /// A field of the wrong type: the message names the field and the cause,
    /// on one line, without serde's position.
    #[test]
    fn wrong_types_name_the_field() {
        for (json, want) in [
            (
                r#"{"root": 5}"#,
                r#"config field "root": expected a string, got the number 5"#,
            ),
            (
                r#"{"root_path": true}"#,
                r#"config field "root_path": expected a string, got true"#,
            ),
            (
                r#"{"root":"/r","set_immutable":"yes"}"#,
                r#"config field "set_immutable": expected a boolean, got the string "yes""#,
            ),
            (
                r#"{"root": "/r", "enable_fsverity": 1}"#,
                r#"config field "enable_fsverity": expected a boolean, got the number 1"#,
            ),
            (
                r#"{"root": "/r", "sync_commit": null}"#,
                r#"config field "sync_commit": expected a boolean, got null"#,
            ),
            (
                r#"{"root": "/r", "mkfs_options": "-T0 --mkfs-time"}"#,
                r#"config field "mkfs_options": expected an array, got the string "-T0 --mkfs-time""#,
            ),
            (
                r#"{"root": "/r", "mkfs_options": ["-T0", 0]}"#,
                r#"config field "mkfs_options"[1]: expected a string, got the number 0"#,
            ),
            (
                r#"{"root": "/r", "ovl_mount_options": {"index": "off"}}"#,
                r#"config field "ovl_mount_options": expected an array, got an object"#,
            ),
            (
                r#"{"root": "/r", "ovl_mount_options": ["index=off", null]}"#,
                r#"config field "ovl_mount_options"[1]: expected a string, got null"#,
            ),
            (
                r#"{"root": "/r", "enable_tar_index": "true"}"#,
                r#"config field "enable_tar_index": expected a boolean, got the string "true""#,
            ),
            (
                r#"{"root": "/r", "mkfs_path": ["mkfs.erofs"]}"#,
                r#"config field "mkfs_path": expected a string, got an array"#,
            ),
            (r#"[]"#, r#"config: expected an object, got an array"#),
            (
                r#""/r""#,
                r#"config: expected an object, got the string "/r""#,
            ),
        ] {
            assert_eq!(err(json), want, "{json}");
        }
    }

    /// Every field serde knows (so also fields added later), given values of
    /// each JSON type: whatever is refused names the field, on one line.
    #[test]
    fn every_field_of_a_wrong_type_is_named() {
        let m = err(r#"{"root": "/r", "no_such_field": 1}"#);
        let fields: Vec<&str> = m
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|f| *f != "no_such_field")
            .collect();
        assert!(
            fields.contains(&"set_immutable") && fields.contains(&"mkfs_path"),
            "{m}"
        );
        for field in fields {
            let mut refused = 0;
            for value in [r#""x""#, "5", "true", "null", "[1]", r#"{"a": 1}"#] {
                let json = match field {
                    "root" | "root_path" => format!(r#"{{"{field}": {value}}}"#),
                    _ => format!(r#"{{"root": "/r", "{field}": {value}}}"#),
                };
                let Err(e) = Config::from_json(&json) else {
                    continue;
                };
                refused += 1;
                let m = e.message();
                assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{json}: {m}");
                // validate() names `root_path` by its main spelling.
                assert!(
                    m.starts_with(&format!("config field \"{field}\""))
                        || (field == "root_path" && m.starts_with("config field \"root\"")),
                    "{json}: {m}"
                );
                assert!(!m.contains("line 1") && !m.contains('\n'), "{json}: {m}");
            }
            assert!(refused > 0, "{field} accepts any JSON value?");
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let m = err(r#"{"root": "/r", "set_immutible": true}"#);
        assert!(
            m.starts_with("config field \"set_immutible\": unknown field")
                && m.contains("`set_immutable`"),
            "{m}"
        );
        assert_eq!(err("{}"), "config field \"root\": required but missing");
        assert!(err("not json").starts_with("config: invalid JSON: "));
    }

    #[test]
    fn block_size_detection() {
        let mut c = Config::new("/r");
        assert!(!c.sets_block_size());
        c.mkfs_options = vec!["-b8192".into()];
        assert!(c.sets_block_size());
    }
}
