//! Snapshot semantics: containerd's `snapshots.Snapshotter` contract, on top
//! of the metadata store, the on-disk layout, EROFS conversion and layer mounts.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use std::io::Read;
use std::sync::Arc;

use crate::block_layer;
use crate::config::Config;
use crate::differ::{self, Applied, ApplyOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::filters::Filter;
use crate::idmap::{IdMap, LABEL_GIDMAPPING, LABEL_UIDMAPPING};
use crate::info::{
    apply_label_update, validate_labels, BlobRecord, Info, InfoRef, InfoUpdate, Kind, Labels,
    Timestamp, Usage,
};
use crate::integrity;
use crate::layer_mounts::Layers;
use crate::layout::{
    lock_dir, parse_id, Layout, RootAttrs, BLOB_TMP_PREFIX, MARKER, STAGING_PREFIX,
};
use crate::logging::Logger;
use crate::lowers::Lowers;
use crate::metastore::{BlobCheck, MetaStore, SnapshotRow, Tx};
use crate::mkfs;
use crate::mkfs_options::Plan;
use crate::mounts::{escape_overlay_path, Mount, OVERLAY_MAX_LOWERS};

/// An EROFS snapshotter on one root. Safe to share between threads; several
/// processes may open the same root at once.
pub struct Snapshotter {
    config: Config,
    layout: Layout,
    store: MetaStore,
    layers: Layers,
    trash: crate::trash::Trash,
    log: Logger,
    /// `index=off` for overlays, as containerd adds it where the kernel knows it.
    overlay_index_off: bool,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("root", &self.layout.root)
            .finish_non_exhaustive()
    }
}

fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument(format!("{what} must not be empty")));
    }
    Ok(())
}

/// Reads /proc/filesystems once per open: erofs and overlay must be there.
fn check_kernel() -> Result<()> {
    let fs = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| Error::unavailable(format!("read /proc/filesystems: {e}")))?;
    let has = |name: &str| {
        fs.lines()
            .any(|l| l.split_whitespace().last() == Some(name))
    };
    for (name, module) in [("erofs", "erofs"), ("overlay", "overlay")] {
        if !has(name) {
            return Err(Error::unavailable(format!(
                "the kernel does not support the {name} filesystem (not in /proc/filesystems); \
                 load it with `modprobe {module}` or use a kernel built with it"
            )));
        }
    }
    Ok(())
}

/// Writes `blob`'s dm-verity sidecar, or removes a stale one.
fn put_sidecar(blob: &Path, verity: Option<&crate::dmverity::Metadata>) -> Result<()> {
    let sidecar = crate::dmverity::metadata_path(blob);
    match verity {
        Some(meta) => crate::dmverity::write_metadata(blob, meta),
        None => match std::fs::remove_file(&sidecar) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove stale dm-verity metadata", &sidecar, e))
            }
            _ => Ok(()),
        },
    }
}

/// This boot of the machine (`/proc/sys/kernel/random/boot_id`, hashed):
/// what a crash always changes. None when the kernel does not say.
fn boot_id() -> Option<i64> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(crate::metastore::key_hash(id.trim()) as i64)
}

impl Snapshotter {
    /// Opens (creating if needed) the snapshotter described by `config`.
    pub fn open(config: Config) -> Result<Snapshotter> {
        Snapshotter::open_with_logger(config, Logger::default())
    }

    /// Like [`Snapshotter::open`], with warnings and operation records going to `log`.
    pub fn open_with_logger(mut config: Config, log: Logger) -> Result<Snapshotter> {
        config.validate()?;
        check_kernel()?;
        // mkfs.erofs is needed only for what the built-in writer does not do;
        // one named in the configuration is checked all the same, so that a
        // wrong path shows now and not at the first layer that needs it.
        let needed_by = match config.layer_plan() {
            Plan::Mkfs { because } => Some(format!("{because} needs mkfs.erofs")),
            Plan::Builtin(_) if !config.mkfs_path_is_default() => {
                Some("config field \"mkfs_path\"".to_string())
            }
            Plan::Builtin(_) => None,
        };
        if let Some(because) = needed_by {
            if let Some(p) = mkfs::resolve_program(&config.mkfs_path) {
                config.mkfs_path = p.to_string_lossy().into_owned();
            }
            let version = mkfs::check_mkfs(&config.mkfs_path).map_err(|e| e.context(&because))?;
            if mkfs::is_buggy(version) {
                log.warn(format_args!(
                    "{} is erofs-utils {version}, which has known tar/AUFS conversion bugs; use 1.8.6 or 1.8.9+",
                    config.mkfs_path
                ));
            }
        }
        Layout::new(&config.root).create()?;
        // Mount points in /proc/self/mountinfo are canonical paths.
        let root = std::fs::canonicalize(&config.root)
            .map_err(|e| Error::io("resolve root", &config.root, e))?;
        let layout = Layout::new(&root);
        if !crate::layout::supports_d_type(&root)? {
            return Err(Error::unavailable(format!(
                "the filesystem of root {} does not support d_type, which overlayfs needs; \
                 if it is xfs, reformat it with ftype=1",
                root.display()
            )));
        }
        if config.enable_fsverity {
            integrity::probe_verity(&root)?;
        }
        if config.enable_dmverity {
            crate::dmverity::probe("config field \"enable_dmverity\"", "turn it off")?;
        }
        if config.dmverity_mode == crate::config::DmverityMode::On {
            crate::dmverity::probe(
                "config field \"dmverity_mode\" = \"on\"",
                "set it to \"auto\" or \"off\"",
            )?;
        }
        if config.default_size > 0 {
            block_layer::check_mkfs()?;
            block_layer::check_size(&root, config.default_size, "config field \"default_size\"")?;
        }
        let store = MetaStore::open(&layout.metadata_db(), &layout.changes(), config.sync_commit)?;
        let layers = Layers::open(&layout, config.enable_fsverity, config.dmverity_mode)?;
        let trash = crate::trash::Trash::new(layout.trash.clone(), log.clone());
        // Finish deletions an earlier process did not complete.
        if std::fs::read_dir(&layout.trash).is_ok_and(|mut d| d.next().is_some()) {
            trash.kick();
        }
        let overlay_index_off = Path::new("/sys/module/overlay/parameters/index").exists()
            && !config
                .ovl_mount_options
                .iter()
                .any(|o| o.starts_with("index="));
        let snapshotter = Snapshotter {
            config,
            layout,
            store,
            layers,
            trash,
            log,
            overlay_index_off,
        };
        // A crash can take only the layers not yet known to be on disk, and
        // only with a reboot: those are checked at the first open after
        // each boot.
        let boot = boot_id();
        if boot.is_none() || snapshotter.store.read(|tx| tx.checked_boot())? != boot {
            snapshotter.check_blobs(false)?;
            if let Some(boot) = boot {
                snapshotter.store.write(|tx| tx.set_checked_boot(boot))?;
            }
        }
        Ok(snapshotter)
    }

    /// The configuration this snapshotter was opened with (`mkfs_path`
    /// resolved on PATH).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Creates an active snapshot of `parent` (a committed snapshot, or "" for
    /// none) and returns the mounts to write into it.
    pub fn prepare(&self, key: &str, parent: &str, labels: &Labels) -> Result<Vec<Mount>> {
        let op = self.log.op("prepare", key);
        op.finish(self.create(Kind::Active, key, parent, labels))
    }

    /// Creates a read-only view of `parent` and returns its mounts.
    pub fn view(&self, key: &str, parent: &str, labels: &Labels) -> Result<Vec<Mount>> {
        let op = self.log.op("view", key);
        op.finish(self.create(Kind::View, key, parent, labels))
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: &Labels) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        validate_labels(labels)?;
        // containerd's remap-ids: the container's root owns the upper dir,
        // and the layers are mounted through ID-mapped mounts.
        let idmap = IdMap::from_values(
            labels.get(LABEL_UIDMAPPING).map(String::as_str),
            labels.get(LABEL_GIDMAPPING).map(String::as_str),
        )?;
        let owner = idmap.as_ref().map(IdMap::root_pair).transpose()?;
        if idmap.is_some() && !parent.is_empty() {
            self.remap_ids_supported()?;
        }
        // An image layer's extraction, not a container's snapshot.
        let extraction = kind == Kind::Active && is_extraction(key, labels);
        // The parent's layers are mounted first: a new upper dir takes the
        // owner and mode of the parent's root, as containerd's snapshotters do.
        let mut attrs = owner
            .filter(|_| kind == Kind::Active)
            .map(|(uid, gid)| RootAttrs {
                mode: 0o755,
                uid,
                gid,
            });
        if !parent.is_empty() {
            // Usually a cached image layer: no database read on this path.
            let cached = self.store.cached_get(parent).map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    Error::not_found(format!("parent snapshot {parent:?} does not exist"))
                }
                _ => e,
            })?;
            let (p, generation) = (&cached.0.row, cached.1);
            if p.kind != Kind::Committed {
                return Err(Error::invalid_argument(format!(
                    "parent {parent:?} is not a committed snapshot"
                )));
            }
            // Said now, not by the kernel when the mounts are used.
            let layers = p.parent_ids.len() + 1;
            if layers > OVERLAY_MAX_LOWERS {
                return Err(Error::invalid_argument(format!(
                    "parent {parent:?} has {layers} layers; overlayfs stacks at most \
                     {OVERLAY_MAX_LOWERS} (OVL_MAX_STACK), so no snapshot of it could be mounted"
                )));
            }
            // Refuses a chain with a lost layer before anything is mounted.
            let pending = self.not_durable(p)?;
            self.ensure_layers(&p.chain(), generation)?;
            // An image layer's extraction (containerd's unpacker labels it
            // with the chain it makes) is not a use: if the power goes, its
            // layer goes with the ones below. A container's snapshot is.
            if !extraction {
                self.make_durable(&pending)?;
            }
            if kind == Kind::Active {
                let root = self.layout.fs_dir(p.id);
                let md = std::fs::metadata(&root).map_err(|e| Error::io("stat", &root, e))?;
                let (uid, gid) = owner.unwrap_or((md.uid(), md.gid()));
                attrs = Some(RootAttrs {
                    mode: md.mode() & 0o7777,
                    uid,
                    gid,
                });
            }
        }
        // An image layer's extraction whose layer a cache holds is served
        // by that file: nothing to apply, and its commit converts nothing.
        let cached = match kind {
            Kind::Active => {
                crate::layer_cache::lookup(&self.config.layer_content_caches, labels, &self.log)
            }
            _ => None,
        };
        // Block mode: a container's writable layer is an ext4 image (an
        // image layer's extraction, converted at its commit, needs none).
        let block_size = match kind {
            Kind::Active if self.config.default_size > 0 && !extraction => {
                let label = labels.get(block_layer::LABEL_MAX_SIZE).map(String::as_str);
                let size = block_layer::size_for(label, self.config.default_size, &self.log);
                if size != self.config.default_size {
                    let what = format!("label {:?}", block_layer::LABEL_MAX_SIZE);
                    block_layer::check_size(&self.layout.root, size, &what)?;
                }
                Some(size)
            }
            _ => None,
        };
        let staging = self.layout.stage(kind, attrs, &self.log)?;
        if let Some(size) = block_size {
            block_layer::make_image(&staging.path, size, attrs)?;
        }
        let mut installed = None;
        let result = self.store.write(|tx| {
            let p = if parent.is_empty() {
                None
            } else {
                let p = tx.get(parent)?.ok_or_else(|| {
                    Error::not_found(format!("parent snapshot {parent:?} does not exist"))
                })?;
                if p.kind != Kind::Committed {
                    return Err(Error::invalid_argument(format!(
                        "parent {parent:?} is not a committed snapshot"
                    )));
                }
                Some(p)
            };
            if tx.get(key)?.is_some() {
                return Err(Error::already_exists(format!(
                    "snapshot {key:?} already exists"
                )));
            }
            let id = tx.insert(kind, key, p.as_ref(), labels, Timestamp::now())?;
            if let Some(blob) = &cached {
                tx.record_cached(id, blob)?;
            }
            installed = Some(id);
            staging.install(&self.layout, id)?;
            // Only a cached layer is mounted for the new snapshot itself.
            let generation = match cached {
                Some(_) => tx.mount_generation()?,
                None => 0,
            };
            Ok((id, p.map(|p| p.chain()).unwrap_or_default(), generation))
        });
        let (id, parent_ids, generation) = match result {
            Ok(v) => v,
            Err(e) => {
                // The directory was renamed into place but the transaction did not commit.
                if let Some(id) = installed {
                    let dir = self.layout.snapshot_dir(id);
                    if let Err(re) = self.layout.retire(&dir, &format!("failed-{id}")) {
                        // An orphan now: cleanup retires it, a creation given
                        // the same id moves it aside.
                        let op = if kind == Kind::View {
                            "view"
                        } else {
                            "prepare"
                        };
                        self.log.warn(format_args!(
                            "{op} {key:?}: could not move {} aside after the transaction \
                             failed ({e}): {re}; cleanup will retry",
                            dir.display()
                        ));
                    }
                }
                return Err(e);
            }
        };
        let cache_file = cached.as_ref().and_then(|b| b.path.as_deref());
        let shape = Shape {
            labelled: labels.contains_key(LABEL_PARENT_CHAIN_ID),
            idmap,
            block: Some(block_size.is_some()),
        };
        self.mounts_of(kind, id, &parent_ids, cache_file, &shape, generation)
    }

    /// Whether this kernel can mount the layers through ID-mapped mounts
    /// (containerd's `remap-ids` capability), tried once per process: Err
    /// (unavailable) says why not.
    pub fn remap_ids_supported(&self) -> Result<()> {
        crate::layer_mounts::remap_ids_supported(&self.layout.root).map_err(|why| {
            Error::unavailable(format!(
                "labels {LABEL_UIDMAPPING:?} and {LABEL_GIDMAPPING:?} ask for ID-mapped layers, \
                 which this kernel cannot mount ({why})"
            ))
        })
    }

    /// The capabilities a containerd plugin of this snapshotter advertises:
    /// `rebase` (parallel unpack), `only-remap-ids` (no chown fallback, as
    /// containerd's EROFS snapshotter), and `remap-ids` where
    /// [`Snapshotter::remap_ids_supported`].
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut caps = vec!["rebase", "only-remap-ids"];
        if self.remap_ids_supported().is_ok() {
            caps.push("remap-ids");
        }
        caps
    }

    /// The mounts of active snapshot or view `id` over its mounted layers
    /// `parent_ids`: `cache_file` is the layer content cache's file serving
    /// it; `shape` what its labels and creation say.
    fn mounts_of(
        &self,
        kind: Kind,
        id: i64,
        parent_ids: &[i64],
        cache_file: Option<&Path>,
        shape: &Shape,
        generation: i64,
    ) -> Result<Vec<Mount>> {
        let top = match cache_file {
            Some(file) if kind == Kind::Active => Top::Cached(file),
            _ if awaits_rebase(kind, parent_ids, shape.labelled) => Top::RebaseLater,
            _ => Top::Upper,
        };
        if matches!(top, Top::Cached(_)) && !parent_ids.is_empty() {
            // Over parents, the cache's file is mounted on the snapshot's
            // `fs/` like a committed layer, the overlay's top lower dir.
            self.ensure_layers(&[id], generation)?;
        }
        // A block layer: its image mounted, upper and work dirs in it.
        let rw = match top {
            Top::Upper if kind == Kind::Active => {
                let dir = self.layout.snapshot_dir(id);
                match shape.block {
                    Some(true) => Some(block_layer::ensure_mounted_locked(&dir)?),
                    Some(false) => None,
                    None if block_layer::has_image(&dir) => {
                        Some(block_layer::ensure_mounted_locked(&dir)?)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        Ok(self.build_mounts(
            kind,
            id,
            parent_ids,
            top,
            shape.idmap.as_ref(),
            rw.as_deref(),
        ))
    }

    /// Mounts the layers of the committed snapshots `ids` (what their
    /// commits recorded read only for those not known to be mounted).
    fn ensure_layers(&self, ids: &[i64], generation: i64) -> Result<()> {
        self.layers.ensure(ids, generation, |missing| {
            self.store.read(|tx| tx.blobs(missing))
        })
    }

    /// Starts writing a new blob to the disk without making the caller
    /// wait: a thread of its own flushes it (`fdatasync`), so the data is
    /// on its way while other layers unpack, and by the blob's first use
    /// (see [`Snapshotter::make_durable`]) little or nothing is left. (The
    /// kernel's own write-back initiation, `sync_file_range`, blocks its
    /// caller once the device's queue is full: a 100 MB blob made apply
    /// wait.) A failure only means more to wait for at the first use.
    fn start_writeback(&self, blob: &Path) {
        let f = match crate::sys::fs::open_nofollow(blob) {
            Ok(f) => f,
            Err(e) => {
                self.log
                    .warn(format_args!("start write-back of {}: {e}", blob.display()));
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("erofs-writeback".into())
            .spawn(move || {
                let _ = f.sync_data();
            });
        if let Err(e) = spawned {
            self.log
                .warn(format_args!("start write-back of {}: {e}", blob.display()));
        }
    }

    /// The layers of committed snapshot `top`'s chain not yet known to be
    /// on disk, for [`Snapshotter::make_durable`] (each with whether the
    /// blob is this root's own); none, and no query, once `top` is durable.
    /// A chain that holds a lost layer (see [`Snapshotter::check`]) is
    /// refused here: a lost layer is never durable, nor is any above it.
    fn not_durable(&self, top: &SnapshotRow) -> Result<Vec<(i64, bool)>> {
        if top.durable {
            return Ok(Vec::new());
        }
        self.store.read(|tx| tx.not_durable(&top.chain()))
    }

    /// Makes a chain's layers `pending` ([`Snapshotter::not_durable`])
    /// durable before a snapshot using them is handed out
    /// (`durable_before_use`): their blobs are flushed (their write-back
    /// began when they were written: this waits for what is left), their
    /// directories too, then the records, in one transaction committed with
    /// `synchronous=FULL`, which takes every commit before it to the disk.
    fn make_durable(&self, pending: &[(i64, bool)]) -> Result<()> {
        if pending.is_empty() || !self.config.durable_before_use {
            return Ok(());
        }
        // All at once: the filesystem's journal commits concurrent flushes
        // together (ext4 makes one commit of several fsyncs waiting on it),
        // where one after the other each would wait for a commit of its own.
        let flush = |path: std::path::PathBuf, data_only: bool| {
            let f = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            let r = if data_only {
                f.sync_data()
            } else {
                f.sync_all()
            };
            r.map_err(|e| Error::io("flush", &path, e))
        };
        std::thread::scope(|scope| {
            let mut jobs = Vec::new();
            for &(id, own) in pending {
                // A cache's file was made durable by whoever put it there.
                if own {
                    jobs.push(scope.spawn(move || flush(self.layout.blob(id), true)));
                    jobs.push(scope.spawn(move || flush(self.layout.snapshot_dir(id), false)));
                }
            }
            jobs.push(scope.spawn(|| flush(self.layout.snapshots.clone(), false)));
            jobs.into_iter()
                .try_for_each(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })?;
        let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
        self.store.write_durable(|tx| tx.mark_durable(&ids))
    }

    /// Checks the blob of every committed layer against what its commit
    /// recorded (its length; its fs-verity digest where one was recorded
    /// and `enable_fsverity` is on) and returns the keys of every lost
    /// layer, in key order: those found now (each logged as a warning that
    /// names it) and those found before and not yet repaired. A lost layer
    /// is never mounted: a snapshot whose chain holds one is refused
    /// (failed-precondition) until [`Snapshotter::repair`] makes it again.
    /// The first `open` after each boot checks the layers not yet known to
    /// be on disk (the only ones a power cut can take, and only with a
    /// reboot), `cleanup` all of them.
    pub fn check(&self) -> Result<Vec<String>> {
        let op = self.log.op("check", "");
        op.finish((|| {
            self.check_blobs(true)?;
            self.store.read(|tx| tx.lost())
        })())
    }

    /// What [`Snapshotter::check`] finds wrong with the blob of committed
    /// snapshot `id`, if anything.
    /// A blob not yet durable is also checked for the blocks a crash takes
    /// while leaving the length (which the writer sets last) on disk: fewer
    /// blocks than at commit (holes: `used` is what they took then), or
    /// blocks allocated but never written. Either reads as zeros.
    fn blob_problem(&self, blob: &BlobCheck) -> Result<Option<String>> {
        let (record, used) = (&blob.record, blob.used);
        let path = record
            .path
            .clone()
            .unwrap_or_else(|| self.layout.blob(blob.id));
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(format!("{} is missing", path.display())))
            }
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        let len = md.len();
        if len != record.size {
            return Ok(Some(format!(
                "{} is {len} bytes, {} were committed",
                path.display(),
                record.size
            )));
        }
        if !blob.durable && record.path.is_none() {
            let on_disk = (md.blocks() * 512) as i64;
            if on_disk < used {
                return Ok(Some(format!(
                    "{} has {on_disk} bytes of blocks, {used} at commit: the rest never \
                     reached the disk",
                    path.display()
                )));
            }
            let unwritten = integrity::has_unwritten_blocks(&path, len)
                .map_err(|e| Error::io("read the extent map of", &path, e))?;
            if unwritten {
                return Ok(Some(format!(
                    "{} has blocks that never reached the disk (allocated, never written)",
                    path.display()
                )));
            }
        }
        if let (true, Some(want)) = (self.config.enable_fsverity, &record.verity_digest) {
            match integrity::measure_verity(&path) {
                Ok(got) if &got == want => {}
                Ok(_) => {
                    return Ok(Some(format!(
                        "{} has another fs-verity digest than its commit recorded",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Ok(Some(format!(
                        "{}: no fs-verity digest ({e})",
                        path.display()
                    )))
                }
            }
        }
        Ok(None)
    }

    /// Marks lost every committed layer (all, or those not yet durable)
    /// whose blob is not what its commit recorded; returns how many.
    fn check_blobs(&self, all: bool) -> Result<usize> {
        let rows = self.store.read(|tx| tx.blobs_to_check(all))?;
        let mut found = 0;
        for blob in rows {
            if self.blob_problem(&blob)?.is_none() {
                continue;
            }
            // Again in the write transaction: a remove may have taken the
            // snapshot (and its blob) meanwhile.
            let problem = self.store.write(|tx| {
                let problem = match tx.blob_to_check(blob.id)? {
                    Some(now) => self.blob_problem(&now)?,
                    None => None,
                };
                if problem.is_some() {
                    tx.mark_lost(blob.id)?;
                }
                Ok(problem)
            })?;
            if let Some(problem) = problem {
                found += 1;
                self.log.warn(format_args!(
                    "layer {:?} lost: {problem}; every snapshot on it is refused until \
                     it is repaired",
                    blob.key
                ));
            }
        }
        Ok(found)
    }

    /// Makes lost layer `key` (see [`Snapshotter::check`]) again from its
    /// OCI layer, read from `input` as [`Snapshotter::apply`] reads one: the
    /// blob is converted on the layer's parent, checked against the diffID
    /// its commit recorded (label `containerd.io/snapshot/diff-id`, which
    /// containerd's unpacker sets) when there is one, sealed as a commit
    /// seals one (fs-verity, dm-verity, `IMMUTABLE_FL` as configured),
    /// flushed, and put in place of the lost one; the layer is then found
    /// again, with its key, labels and children as they were. Anything but
    /// a lost committed layer is failed-precondition; on failure it stays
    /// lost.
    pub fn repair(
        &self,
        key: &str,
        input: &mut (dyn Read + Send),
        opts: &ApplyOptions,
    ) -> Result<Applied> {
        let op = self.log.op("repair", key);
        op.finish((|| {
            check_key("key", key)?;
            let (row, generation) = self.store.read_one(|tx| tx.get_with_generation(key))?;
            if row.kind != Kind::Committed {
                return Err(Error::failed_precondition(format!(
                    "snapshot {key:?} is {}; only a committed layer can be repaired",
                    row.kind.as_str()
                )));
            }
            let lost = |tx: &Tx<'_>| Ok(tx.lost()?.iter().any(|k| k == key));
            if !self.store.read(lost)? {
                return Err(Error::failed_precondition(format!(
                    "layer {key:?} is not lost (check finds lost layers); there is nothing to repair"
                )));
            }
            let dir = self.layout.snapshot_dir(row.id);
            let _lock =
                lock_dir(&dir, true).map_err(|e| Error::io("lock snapshot directory", &dir, e))?;
            self.ensure_layers(&row.parent_ids, generation)?;
            let dirs: Vec<std::path::PathBuf> =
                row.parent_ids.iter().map(|id| self.layout.fs_dir(*id)).collect();
            let lowers = Lowers::open(&dirs)?;
            let context = || format!("repair {key:?}");
            let mut tmp = mkfs::TempBlob::new(&dir, &self.log);
            let applied = differ::convert(&self.config, &tmp, input, opts, &lowers)
                .map_err(|e| e.context(context()))?;
            if let Some(want) = row.labels.get(crate::layer_cache::LABEL_DIFF_ID) {
                if applied.digest != want {
                    return Err(Error::invalid_argument(format!(
                        "repair {key:?}: the layer given is {}, but the snapshot was committed \
                         from {want} (label {})",
                        applied.digest,
                        crate::layer_cache::LABEL_DIFF_ID
                    )));
                }
            }
            let verity = self
                .dmverity_tree(&tmp.path, &applied)
                .map_err(|e| e.context(context()))?;
            let size = tmp.finish(true)?;
            let verity_digest = if self.config.enable_fsverity {
                let digest = integrity::enable_verity(&tmp.path)
                    .and_then(|()| integrity::measure_verity(&tmp.path))
                    .map_err(|e| Error::io("enable fs-verity on", &tmp.path, e))?;
                Some(digest)
            } else {
                None
            };
            let md = std::fs::metadata(&tmp.path).map_err(|e| Error::io("stat", &tmp.path, e))?;
            let usage = Usage {
                size: (md.blocks() * 512) as i64,
                inodes: 1,
            };
            let blob = self.layout.blob(row.id);
            // What is left of the lost blob may carry the flag.
            let _ = integrity::set_immutable(&blob, false);
            let record = BlobRecord {
                size,
                verity_digest,
                path: None,
            };
            let recorded = self.store.write_durable(|tx| {
                if !lost(tx)? {
                    return Err(Error::failed_precondition(format!(
                        "layer {key:?} was repaired or removed meanwhile"
                    )));
                }
                tx.record_repaired(row.id, &record, usage)?;
                tmp.swap_into(&blob)?;
                put_sidecar(&blob, verity.as_ref())
            });
            if let Err(e) = recorded {
                if let Err(undo) = tmp.swap_back(&blob) {
                    self.log.warn(format_args!(
                        "repair {key:?}: could not put the lost blob back: {undo}"
                    ));
                }
                return Err(e);
            }
            if self.config.set_immutable {
                if let Err(e) = integrity::set_immutable(&blob, true) {
                    self.log.warn(format_args!(
                        "failed to set IMMUTABLE_FL on {}: {e}",
                        blob.display()
                    ));
                }
            }
            mkfs::sync_dir(&dir)?;
            self.log
                .log(crate::logging::Level::Info, format_args!("layer {key:?} repaired"));
            Ok(applied)
        })())
    }

    /// The mounts of an active snapshot or a view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let op = self.log.op("mounts", key);
        op.finish(self.mounts_inner(key))
    }

    fn mounts_inner(&self, key: &str) -> Result<Vec<Mount>> {
        check_key("key", key)?;
        let cached = self.store.cached_get(key)?;
        let (row, generation) = (&cached.0.row, cached.1);
        if row.kind == Kind::Committed {
            return Err(Error::failed_precondition(format!(
                "snapshot {key:?} is committed; only active snapshots and views have mounts"
            )));
        }
        self.ensure_layers(&row.parent_ids, generation)?;
        let shape = Shape {
            labelled: row.labels.contains_key(LABEL_PARENT_CHAIN_ID),
            idmap: IdMap::from_values(
                row.labels.get(LABEL_UIDMAPPING),
                row.labels.get(LABEL_GIDMAPPING),
            )?,
            block: None,
        };
        self.mounts_of(
            row.kind,
            row.id,
            &row.parent_ids,
            row.blob_ref.as_deref(),
            &shape,
            generation,
        )
    }

    /// Mounts for snapshot `id` whose layers `parent_ids` (nearest first)
    /// are mounted, with `top` on them (see [`Top`]).
    fn build_mounts(
        &self,
        kind: Kind,
        id: i64,
        parent_ids: &[i64],
        top: Top,
        idmap: Option<&IdMap>,
        rw: Option<&Path>,
    ) -> Vec<Mount> {
        let upper = || rw.map_or_else(|| self.layout.fs_dir(id), block_layer::upper);
        let work = || rw.map_or_else(|| self.layout.work_dir(id), block_layer::work);
        // containerd's uidmap=/gidmap= on what mounts layers; an upper dir
        // alone (no parent) is owned by the mapped root and needs none.
        let mapped = idmap.map(IdMap::mount_options).unwrap_or_default();
        let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        if let Top::Cached(blob) = top {
            if parent_ids.is_empty() {
                // Read only, which tells containerd's unpacker the layer is
                // staged: it neither fetches nor applies it, only commits.
                return vec![self.erofs_mount(blob)];
            }
        }
        if parent_ids.is_empty() && matches!(top, Top::Upper) {
            let mode = if kind == Kind::Active { "rw" } else { "ro" };
            return vec![Mount {
                kind: "bind".into(),
                source: path(upper()),
                target: None,
                options: vec![mode.into(), "rbind".into()],
            }];
        }
        if kind == Kind::View && parent_ids.len() == 1 {
            let mut m = match self.layers.local_blob(parent_ids[0]) {
                Some(true) => self.erofs_mount(&self.layout.blob(parent_ids[0])),
                // A cache's file (or not known): the layer mounted on fs/.
                _ => Mount {
                    kind: "bind".into(),
                    source: path(self.layout.fs_dir(parent_ids[0])),
                    target: None,
                    options: vec!["ro".into(), "rbind".into()],
                },
            };
            m.options.extend(mapped);
            return vec![m];
        }
        let mut options = Vec::with_capacity(4 + self.config.ovl_mount_options.len());
        if self.overlay_index_off {
            options.push("index=off".to_string());
        }
        if kind == Kind::Active && !matches!(top, Top::Cached(_)) {
            options.push(format!("workdir={}", path(work())));
            options.push(format!("upperdir={}", path(upper())));
        } else {
            // Without an upper dir the overlay is read-only anyway; saying so
            // lets callers (a differ) see it without parsing the options.
            options.push("ro".to_string());
        }
        options.extend(mapped);
        let mut lower = String::from("lowerdir=");
        if let Top::Cached(_) = top {
            lower.push_str(&escape_overlay_path(&path(self.layout.fs_dir(id))));
            lower.push(':');
        }
        for (i, pid) in parent_ids.iter().enumerate() {
            if i > 0 {
                lower.push(':');
            }
            lower.push_str(&escape_overlay_path(&path(self.layout.fs_dir(*pid))));
        }
        if parent_ids.is_empty() {
            lower.push_str(&escape_overlay_path(&path(self.layout.empty.clone())));
        }
        options.push(lower);
        options.extend(self.config.ovl_mount_options.iter().cloned());
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options,
        }]
    }

    /// A read-only mount of the EROFS image `blob`.
    fn erofs_mount(&self, blob: &Path) -> Mount {
        let mut options = vec!["ro".to_string()];
        if self.layers.needs_loop() {
            options.push("loop".into());
        }
        Mount {
            kind: "erofs".into(),
            source: blob.to_string_lossy().into_owned(),
            target: None,
            options,
        }
    }

    /// Commits active snapshot `key` as `name`: converts its upper dir into
    /// `layer.erofs` (outside the write transaction), then records it.
    pub fn commit(&self, name: &str, key: &str, labels: &Labels) -> Result<()> {
        self.commit_with_parent(name, key, "", labels)
    }

    /// [`Snapshotter::commit`] with containerd's `snapshots.WithParent`: a
    /// snapshot prepared without a parent is committed on top of `parent`
    /// (a rebase, what containerd's parallel unpack does), and from then on
    /// its chain is `parent`'s. The same parent it was prepared on, or "",
    /// changes nothing; another one is invalid-argument. `parent` must exist
    /// (not-found) and be committed (failed-precondition).
    pub fn commit_with_parent(
        &self,
        name: &str,
        key: &str,
        parent: &str,
        labels: &Labels,
    ) -> Result<()> {
        let op = self.log.op("commit", key);
        op.finish(self.commit_inner(name, key, parent, labels))
    }

    fn commit_inner(&self, name: &str, key: &str, parent: &str, labels: &Labels) -> Result<()> {
        check_key("name", name)?;
        check_key("key", key)?;
        validate_labels(labels)?;
        let row = self.store.read(|tx| {
            if tx.get(name)?.is_some() {
                return Err(Error::already_exists(format!(
                    "snapshot {name:?} already exists"
                )));
            }
            let row = active_row(tx.get(key)?, key)?;
            rebase_onto(tx, &row, parent)?;
            Ok(row)
        })?;
        let dir = self.layout.snapshot_dir(row.id);
        // Serializes commits of one snapshot (across processes) and keeps
        // layer mounts off the directory until its upper dir is retired.
        let _lock =
            lock_dir(&dir, true).map_err(|e| Error::io("lock snapshot directory", &dir, e))?;
        // A concurrent commit of the same key may have won while we waited.
        self.store.read(|tx| {
            let current = tx.get_by_id(row.id)?;
            active_row(current.filter(|r| &*r.key == key), key).map(drop)
        })?;
        if row.blob_ref.is_some() {
            return self.commit_cached(name, key, parent, labels, &row);
        }
        let blob_path = self.layout.blob(row.id);
        let existing = match std::fs::symlink_metadata(&blob_path) {
            Ok(md) if md.file_type().is_file() => Some(md.len()),
            Ok(_) => {
                return Err(Error::failed_precondition(format!(
                    "{} is not a regular file",
                    blob_path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("stat", &blob_path, e)),
        };
        // A blob written by a differ is used as is (ours: checked against what
        // apply recorded); one this commit writes is its to delete on failure.
        let (size, ours) = match (row.blob_size, existing) {
            (Some(want), Some(len)) if want == len => (len, false),
            (Some(want), got) => {
                return Err(Error::failed_precondition(format!(
                    "the layer applied to {key:?} was {want} bytes but {} is {}; apply it again",
                    blob_path.display(),
                    got.map_or("missing".to_string(), |l| format!("{l} bytes"))
                )))
            }
            (None, Some(len)) => (len, false),
            (None, None) => {
                let upper = if block_layer::has_image(&dir) {
                    block_layer::upper(&block_layer::ensure_mounted(&dir)?)
                } else {
                    self.layout.fs_dir(row.id)
                };
                let built = match self.config.layer_plan() {
                    Plan::Builtin(b) => {
                        // Deterministic: the same name and tree, the same bytes.
                        let uuid = uuid::Uuid::new_v5(
                            &uuid::Uuid::NAMESPACE_URL,
                            format!("erofs:snapshots/{name}").as_bytes(),
                        );
                        crate::upper_dir::build_blob(
                            &self.config,
                            &b,
                            &dir,
                            &upper,
                            *uuid.as_bytes(),
                            &self.log,
                        )
                    }
                    Plan::Mkfs { .. } => mkfs::build_blob(&self.config, &dir, &upper, &self.log),
                };
                (
                    built.map_err(|e| e.context(format!("commit {key:?}")))?,
                    true,
                )
            }
        };
        let undo = |e: Error| {
            if ours {
                let _ = integrity::set_immutable(&blob_path, false);
                let _ = std::fs::remove_file(&blob_path);
            }
            e
        };
        let verity_digest = if self.config.enable_fsverity {
            let digest = integrity::enable_verity(&blob_path)
                .and_then(|()| integrity::measure_verity(&blob_path))
                .map_err(|e| Error::io("enable fs-verity on", &blob_path, e))
                .map_err(undo)?;
            Some(digest)
        } else {
            None
        };
        // (A blob written here is flushed by the thread `write_commit`
        // starts, before the record.)
        if self.config.set_immutable {
            if let Err(e) = integrity::set_immutable(&blob_path, true) {
                self.log.warn(format_args!(
                    "failed to set IMMUTABLE_FL on {}: {e}",
                    blob_path.display()
                ));
            }
        }
        let md = std::fs::metadata(&blob_path)
            .map_err(|e| Error::io("stat", &blob_path, e))
            .map_err(undo)?;
        let usage = Usage {
            size: (md.blocks() * 512) as i64,
            inodes: 1,
        };
        let blob = BlobRecord {
            size,
            verity_digest,
            path: None,
        };
        self.write_commit(&blob_path, |tx| {
            let synced = self.config.sync_commit;
            record_commit(tx, row.id, name, key, parent, labels, usage, &blob, synced)
        })
        .map_err(undo)?;

        // A block layer's image goes with its upper dir.
        if let Err(e) = self.retire_block(&dir, row.id) {
            self.log
                .warn(format_args!("commit {name:?}: {e}; cleanup will retry"));
        }
        // The upper dir's contents are deleted off the critical path.
        if let Err(e) = self.layout.retire_upper(row.id) {
            self.log
                .warn(format_args!("commit {name:?}: {e}; cleanup will retry"));
        }
        self.trash.kick();
        Ok(())
    }

    /// Unmounts snapshot `id`'s block layer (in `dir`), if it has one, and
    /// moves its image and mount point to the trash.
    fn retire_block(&self, dir: &Path, id: i64) -> Result<()> {
        if !block_layer::has_image(dir) {
            return Ok(());
        }
        block_layer::unmount(dir)?;
        self.layout
            .retire(&dir.join(block_layer::IMAGE), &format!("rwlayer-{id}"))?;
        self.layout
            .retire(&dir.join(block_layer::MOUNT_DIR), &format!("rw-{id}"))?;
        Ok(())
    }

    /// Records a commit. With `durable_before_use` the record is on disk
    /// soon after this returns, not at first use: a thread flushes the
    /// metadata database's write-ahead log once the blob's own write-back
    /// is done (a flush of the log before that would wait for the blob's
    /// data: ext4 commits a file's blocks with their data), off the launch
    /// path. containerd's own record of the commit is on disk at once (bolt
    /// syncs every transaction), and while it has one containerd never
    /// unpacks the layer again: the sooner ours is there too, the smaller
    /// the window in which a crash leaves containerd naming a layer this
    /// root forgot (README, "Lost layers"). A layer this root knows is at
    /// worst lost, and then repaired (see [`Snapshotter::check`]).
    fn write_commit(&self, blob: &Path, record: impl FnOnce(&Tx<'_>) -> Result<()>) -> Result<()> {
        self.store.write(record)?;
        if self.config.durable_before_use && !self.config.sync_commit {
            let (blob, wal) = (blob.to_path_buf(), self.layout.metadata_wal());
            let spawned = std::thread::Builder::new()
                .name("erofs-record-sync".into())
                .spawn(move || {
                    if let Ok(f) = crate::sys::fs::open_nofollow(&blob) {
                        let _ = f.sync_data();
                    }
                    // Gone when a checkpoint emptied it into the database,
                    // which SQLite flushed then.
                    if let Ok(f) = crate::sys::fs::open_nofollow(&wal) {
                        let _ = f.sync_data();
                    }
                });
            if let Err(e) = spawned {
                self.log
                    .warn(format_args!("start the flush of a commit's record: {e}"));
            }
        }
        Ok(())
    }

    /// The commit of a snapshot served by a layer content cache's file: the
    /// file, checked again against what `prepare` recorded, is the layer;
    /// nothing is converted or written, and the file's attributes are left
    /// alone (it is shared). Called with the snapshot directory locked.
    fn commit_cached(
        &self,
        name: &str,
        key: &str,
        parent: &str,
        labels: &Labels,
        row: &SnapshotRow,
    ) -> Result<()> {
        let blob = self
            .store
            .read(|tx| tx.blobs(&[row.id]))?
            .pop()
            .flatten()
            .ok_or_else(|| Error::internal(format!("snapshot {key:?}: no cached blob recorded")))?;
        let path = blob.path.clone().unwrap_or_default();
        self.layers
            .verify_blob(&path, &blob)
            .map_err(|e| e.context(format!("commit {key:?} from the layer content cache")))?;
        let md = std::fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        // Counted whole, as containerd counts a cached layer.
        let usage = Usage {
            size: (md.blocks() * 512) as i64,
            inodes: 1,
        };
        // A cache's file was made durable by whoever put it there.
        self.write_commit(&path, |tx| {
            record_commit(tx, row.id, name, key, parent, labels, usage, &blob, true)
        })?;
        // The upper dir, never written, stays as the layer's mount point
        // (the layer may be mounted on it already); the work dir goes.
        if let Err(e) = self
            .layout
            .retire(&self.layout.work_dir(row.id), &format!("work-{}", row.id))
        {
            self.log
                .warn(format_args!("commit {name:?}: {e}; cleanup will retry"));
        }
        self.trash.kick();
        Ok(())
    }

    /// Applies an OCI layer read from `input` to active snapshot `key`: the
    /// layer is converted straight into its `layer.erofs` (by the built-in
    /// writer; by mkfs.erofs --tar for the `mkfs_options` only it
    /// implements), which the following commit uses. `input` is read on a
    /// thread of its own. On failure the snapshot is as it was.
    pub fn apply(
        &self,
        key: &str,
        input: &mut (dyn Read + Send),
        opts: &ApplyOptions,
    ) -> Result<Applied> {
        let op = self.log.op("apply", key);
        op.finish((|| {
            check_key("key", key)?;
            let (row, generation) = self.store.read_one(|tx| tx.get_with_generation(key))?;
            self.apply_to(row, generation, input, opts)
        })())
    }

    /// Like [`Snapshotter::apply`], to the active snapshot whose mounts (as
    /// `prepare` returned them) are given. Mounts that are not an active
    /// snapshot of this snapshotter are `not implemented`, so that a caller
    /// such as containerd moves on to its next differ.
    pub fn apply_mounts(
        &self,
        mounts: &[Mount],
        input: &mut (dyn Read + Send),
        opts: &ApplyOptions,
    ) -> Result<Applied> {
        let op = self.log.op("apply", "(mounts)");
        op.finish((|| {
            if mounts
                .last()
                .is_some_and(|m| m.options.iter().any(|o| o == "ro"))
            {
                return Err(Error::failed_precondition(
                    "cannot apply a layer to read-only mounts",
                ));
            }
            let not_ours = || {
                Error::not_implemented(
                    "the mounts are not an active snapshot of this EROFS snapshotter",
                )
            };
            let dir = differ::mounts_dir(mounts).ok_or_else(not_ours)?;
            let dir = std::fs::canonicalize(&dir).map_err(|_| not_ours())?;
            if dir.parent() != Some(self.layout.snapshots.as_path()) || !dir.join(MARKER).exists() {
                return Err(not_ours());
            }
            let id = dir.file_name().and_then(parse_id).ok_or_else(not_ours)?;
            let (row, generation) = self.store.read(|tx| {
                let row = tx.get_by_id(id)?.ok_or_else(|| {
                    Error::not_found(format!("no snapshot owns {}", dir.display()))
                })?;
                Ok((row, tx.mount_generation()?))
            })?;
            self.apply_to(row, generation, input, opts)
        })())
    }

    fn apply_to(
        &self,
        row: SnapshotRow,
        generation: i64,
        input: &mut (dyn Read + Send),
        opts: &ApplyOptions,
    ) -> Result<Applied> {
        let key = row.key.clone();
        if row.kind != Kind::Active {
            return Err(Error::failed_precondition(format!(
                "snapshot {key:?} is {}; a layer can only be applied to an active snapshot",
                row.kind.as_str()
            )));
        }
        if let Some(path) = &row.blob_ref {
            return Err(Error::failed_precondition(format!(
                "snapshot {key:?} is served by {} from a layer content cache; \
                 there is nothing to apply, commit it as it is",
                path.display()
            )));
        }
        let dir = self.layout.snapshot_dir(row.id);
        let _lock =
            lock_dir(&dir, true).map_err(|e| Error::io("lock snapshot directory", &dir, e))?;
        self.ensure_layers(&row.parent_ids, generation)?;
        let dirs: Vec<std::path::PathBuf> = row
            .parent_ids
            .iter()
            .map(|id| self.layout.fs_dir(*id))
            .collect();
        let lowers = Lowers::open(&dirs)?;
        let mut tmp = mkfs::TempBlob::new(&dir, &self.log);
        let behind = (!self.config.sync_commit && self.config.durable_before_use)
            .then(|| mkfs::WriteBehind::start(&tmp.path));
        let applied = differ::convert(&self.config, &tmp, input, opts, &lowers)
            .map_err(|e| e.context(format!("apply to {key:?}")))?;
        drop(behind);
        let verity = self
            .dmverity_tree(&tmp.path, &applied)
            .map_err(|e| e.context(format!("apply to {key:?}")))?;
        let len = tmp.finish(self.config.sync_commit)?;
        if !self.config.sync_commit && self.config.durable_before_use {
            self.start_writeback(&tmp.path);
        }
        // The blob goes into place inside the transaction that records it,
        // swapped with the one an earlier apply wrote: if recording fails,
        // both the blob and its record are as they were.
        let blob = self.layout.blob(row.id);
        let recorded = self.store.write(|tx| {
            active_row(tx.get_by_id(row.id)?.filter(|r| r.key == key), &key)?;
            tx.record_applied(row.id, len)?;
            tmp.swap_into(&blob)?;
            // The sidecar of the blob now in place, before the record is
            // committed (a failure here puts the earlier blob back).
            put_sidecar(&blob, verity.as_ref())
        });
        if let Err(e) = recorded {
            if let Err(undo) = tmp.swap_back(&blob) {
                self.log.warn(format_args!(
                    "apply to {key:?}: could not restore the earlier layer: {undo}"
                ));
            }
            return Err(e);
        }
        if self.config.sync_commit {
            mkfs::sync_dir(&dir)?;
        }
        // Dropping `tmp` deletes the blob it replaced, if any.
        Ok(applied)
    }

    /// containerd's differ with enable_dmverity: the hash tree appended to
    /// a new blob, which the recorded length then covers. The superblock's
    /// UUID comes from the diffID: the same layer, the same bytes.
    fn dmverity_tree(
        &self,
        blob: &Path,
        applied: &Applied,
    ) -> Result<Option<crate::dmverity::Metadata>> {
        if !self.config.enable_dmverity {
            return Ok(None);
        }
        let uuid = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("dm-verity:{}", applied.digest).as_bytes(),
        );
        crate::dmverity::append_tree(blob, *uuid.as_bytes()).map(Some)
    }

    /// Removes a snapshot. Fails with failed-precondition while it has children.
    pub fn remove(&self, key: &str) -> Result<()> {
        let op = self.log.op("remove", key);
        op.finish(self.remove_inner(key))
    }

    fn remove_inner(&self, key: &str) -> Result<()> {
        check_key("key", key)?;
        let row = self.store.write(|tx| {
            let row = tx.must_get(key)?;
            if tx.has_children(row.id)? {
                return Err(Error::failed_precondition(format!(
                    "cannot remove snapshot {key:?}: it has children"
                )));
            }
            if row.kind == Kind::Committed {
                // IMMUTABLE_FL would stop the deletion; a missing blob is already gone.
                let blob = self.layout.blob(row.id);
                if std::fs::symlink_metadata(&blob).is_ok_and(|m| m.file_type().is_file()) {
                    match integrity::set_immutable(&blob, false) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        // Filesystems without inode flags cannot have it set either.
                        Err(e)
                            if matches!(
                                crate::sys::errno(&e),
                                Some(crate::sys::Errno::NOTTY) | Some(crate::sys::Errno::OPNOTSUPP)
                            ) => {}
                        Err(e) => return Err(Error::io("clear IMMUTABLE_FL on", &blob, e)),
                    }
                }
                tx.bump_mount_generation()?;
            }
            tx.delete(row.id)?;
            Ok(row)
        })?;
        // The snapshot is gone from the metadata: what follows only reclaims
        // space, and what fails here is left to cleanup.
        if row.kind == Kind::Committed || row.blob_ref.is_some() {
            if let Err(e) = self.layers.unmount(row.id) {
                self.log.warn(format_args!("remove {key:?}: {e}"));
            }
        }
        let dir = self.layout.snapshot_dir(row.id);
        // A block layer (an active snapshot's, or a commit's that stopped
        // before it was retired) is unmounted and the directory retired
        // under its lock: no mounts() can mount it again in between.
        let mut _lock = None;
        if block_layer::has_image(&dir) {
            _lock = lock_dir(&dir, true).ok();
            if let Err(e) = block_layer::unmount(&dir) {
                self.log.warn(format_args!("remove {key:?}: {e}"));
            }
        }
        if let Err(e) = self.layout.retire(&dir, &format!("snapshot-{}", row.id)) {
            self.log
                .warn(format_args!("remove {key:?}: {e}; cleanup will retry"));
        }
        self.trash.kick();
        Ok(())
    }

    /// Information about a snapshot.
    pub fn stat(&self, key: &str) -> Result<Info> {
        let op = self.log.op("stat", key);
        op.finish(self.store.cached_get(key).map(|(c, _)| c.row.info()))
    }

    /// [`Snapshotter::stat`] without a copy: the same `Arc` comes back while
    /// the snapshot is served from this handle's cache (no process wrote
    /// since it was read), a new one once it may have changed. A caller may
    /// keep what it derives from an info keyed on the `Arc`'s identity.
    pub fn stat_shared(&self, key: &str) -> Result<Arc<Info>> {
        let op = self.log.op("stat", key);
        op.finish(self.store.cached_get(key).map(|(c, _)| c.info()))
    }

    /// The kept row of `key` (for the C ABI, which writes its JSON from it
    /// and keeps that with the row).
    pub(crate) fn stat_entry(&self, key: &str) -> Result<Arc<crate::metastore::Cached>> {
        let op = self.log.op("stat", key);
        op.finish(self.store.cached_get(key).map(|(c, _)| c))
    }

    /// Updates labels (the only mutable field) following containerd's field
    /// paths: none or `labels` replaces all labels, `labels.<key>` one label.
    pub fn update(&self, info: &InfoUpdate, fieldpaths: &[String]) -> Result<Info> {
        let op = self.log.op("update", &info.name);
        op.finish(self.store.write(|tx| {
            let row = tx.must_get(&info.name)?;
            let labels =
                apply_label_update(&info.name, &row.labels.to_map(), &info.labels, fieldpaths)?;
            validate_labels(&labels)?;
            let now = Timestamp::now();
            tx.update_labels(row.id, &labels, now)?;
            let mut out = row.info();
            out.labels = labels;
            out.updated = now;
            Ok(out)
        }))
    }

    /// Disk usage: of the upper dir for an active snapshot, as recorded at
    /// commit for a committed one.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let op = self.log.op("usage", key);
        op.finish((|| {
            let row = self.store.read(|tx| tx.must_get(key))?;
            match row.kind {
                // Served by a cache's file, which may be mounted on fs/.
                Kind::Active if row.blob_ref.is_some() => Ok(Usage::default()),
                Kind::Active => {
                    // A block layer: what is used in its image.
                    let dir = self.layout.snapshot_dir(row.id);
                    let upper = if block_layer::has_image(&dir) {
                        block_layer::upper(&block_layer::ensure_mounted_locked(&dir)?)
                    } else {
                        self.layout.fs_dir(row.id)
                    };
                    crate::layout::disk_usage(&upper)
                }
                _ => Ok(row.usage),
            }
        })())
    }

    /// Every snapshot matching any of `filters` (containerd filter syntax), by key.
    pub fn walk(&self, filters: &[String]) -> Result<Vec<Info>> {
        self.walk_shared(filters)
            .map(|w| w.iter().map(|i| i.to_info()).collect())
    }

    /// [`Snapshotter::walk`] without a copy, as [`Snapshotter::stat_shared`]:
    /// the snapshots as this handle keeps them, the same selection for the
    /// same filters while nothing may have changed. Filters are evaluated
    /// on the kept rows: a walk reads no row from the database once this
    /// handle has them, and a filtered walk makes nothing for the rows it
    /// does not return.
    pub fn walk_shared(&self, filters: &[String]) -> Result<Walked> {
        let op = self.log.op("walk", "");
        op.finish((|| {
            let filter = parse_filters(filters)?;
            let all = filters.is_empty();
            self.store
                .cached_walk(filters, |rows| {
                    Ok(rows
                        .filter(|c| all || filter.matches(&|path: &[String]| field(&c.row, path)))
                        .cloned()
                        .collect())
                })
                .map(Walked)
        })())
    }

    /// Puts the layer of committed snapshot `key` into layer content cache
    /// `dir` (see `layer_content_caches`), under the diffID its
    /// `containerd.io/snapshot/diff-id` label gives (containerd's unpacker
    /// sets it), so that other roots using the cache convert it no more.
    /// The file is written whole and then renamed into place; one already
    /// there that passes the checks is kept. Returns its path.
    pub fn export_layer(&self, key: &str, dir: &Path) -> Result<std::path::PathBuf> {
        let op = self.log.op("export", key);
        op.finish((|| {
            check_key("key", key)?;
            if !dir.is_absolute() {
                return Err(Error::invalid_argument(format!(
                    "layer content cache {dir:?} must be an absolute path"
                )));
            }
            let (row, record) = self.store.read(|tx| {
                let row = tx.must_get(key)?;
                let record = tx.blobs(&[row.id])?.pop().flatten();
                Ok((row, record))
            })?;
            if row.kind != Kind::Committed {
                return Err(Error::failed_precondition(format!(
                    "snapshot {key:?} is {}; only a committed layer can be exported",
                    row.kind.as_str()
                )));
            }
            let diff_id = row
                .labels
                .get(crate::layer_cache::LABEL_DIFF_ID)
                .ok_or_else(|| {
                    Error::failed_precondition(format!(
                        "snapshot {key:?} has no {} label: its layer's diffID is not known",
                        crate::layer_cache::LABEL_DIFF_ID
                    ))
                })?;
            let blob = row
                .blob_ref
                .clone()
                .unwrap_or_else(|| self.layout.blob(row.id));
            // Never spread a blob that is not what its commit recorded.
            let record = record.ok_or_else(|| {
                Error::internal(format!("snapshot {key:?}: no blob recorded at commit"))
            })?;
            self.layers.verify_blob(&blob, &record)?;
            crate::layer_cache::export(&blob, dir, diff_id)
        })())
    }

    /// Removes what no snapshot owns: orphaned and abandoned directories,
    /// unfinished blobs, and the trash. Never touches a staging directory
    /// whose creator is still running. Then checks every committed layer
    /// as [`Snapshotter::check`] does.
    pub fn cleanup(&self) -> Result<()> {
        let op = self.log.op("cleanup", "");
        // Layers lost since open (a blob cut short by hand, a disk
        // error) are found here too.
        op.finish(
            self.cleanup_inner()
                .and_then(|()| self.check_blobs(true).map(drop)),
        )
    }

    fn cleanup_inner(&self) -> Result<()> {
        // Orphans are listed and moved into the trash inside a write
        // transaction: a creation renames its staging directory to
        // `snapshots/<id>` inside its own write transaction, and the id of a
        // creation that rolled back is handed out again. Outside a
        // transaction, a `snapshots/<id>` without a row may be a creation
        // between its rename and its commit, and retiring it would delete a
        // new snapshot. Nothing slow happens in here, since writers in every
        // process wait for this transaction: an orphan's layer still mounted
        // on its `fs/` goes to the trash with it (renaming a directory that
        // contains a mount point is allowed) and is detached after the
        // transaction, by `empty_trash`.
        let (kinds, orphans) = self.store.write(|tx| {
            let kinds = tx.kinds()?;
            let mut orphans = Vec::new();
            for name in self.layout.snapshot_entries()? {
                let path = self.layout.snapshots.join(&name);
                if name.starts_with(STAGING_PREFIX) {
                    // Its creator holds the lock until the directory is installed.
                    if let Ok(_lock) = lock_dir(&path, false) {
                        self.layout.retire(&path, "staging")?;
                    }
                    continue;
                }
                let Some(id) = parse_id(std::ffi::OsStr::new(&name)) else {
                    continue;
                };
                if !kinds.contains_key(&id) {
                    self.layout.retire(&path, &format!("orphan-{id}"))?;
                    orphans.push(id);
                }
            }
            Ok((kinds, orphans))
        })?;
        for id in orphans {
            self.layers.forget(id);
        }
        for (id, kind) in kinds {
            // What interrupted commits left, when no commit is running: a
            // temporary blob, an upper dir not yet retired.
            let dir = self.layout.snapshot_dir(id);
            let Ok(_lock) = lock_dir(&dir, false) else {
                continue;
            };
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for ent in rd.flatten() {
                    if ent
                        .file_name()
                        .to_string_lossy()
                        .starts_with(BLOB_TMP_PREFIX)
                    {
                        let _ = std::fs::remove_file(ent.path());
                    }
                }
            }
            // `work/` outlives a commit only when the commit stopped before
            // retiring the upper dir (never touch a mounted layer's fs/).
            let fs_dir = self.layout.fs_dir(id);
            // A commit that stopped before its block layer was retired.
            if kind == Kind::Committed {
                self.retire_block(&dir, id)?;
            }
            if kind == Kind::Committed
                && self.layout.work_dir(id).exists()
                && !crate::layer_mounts::is_layer_mounted(&fs_dir)
            {
                self.layout.retire_upper(id)?;
            }
        }
        let failures = self.empty_trash();
        if !failures.is_empty() {
            self.log.warn(format_args!(
                "cleanup could not delete {} entries: {}",
                failures.len(),
                failures.join("; ")
            ));
        }
        Ok(())
    }

    /// Empties the trash, first detaching any mount that ended up inside it
    /// (an orphan's layer cleanup moved there, a layer mounted while its
    /// snapshot was being removed).
    fn empty_trash(&self) -> Vec<String> {
        match crate::mounts::mount_points_under(&self.layout.trash) {
            Ok(mut points) => {
                // Mounts stacked on one point are listed once each; the
                // first unmount_all of the point detaches them all.
                points.dedup();
                for p in points.iter().rev() {
                    if let Err(e) = crate::mounts::unmount_all(p, true) {
                        self.log.warn(format_args!("cleanup: {e}"));
                    }
                }
            }
            Err(e) => self.log.warn(format_args!(
                "cleanup: read mount table for {}: {e}",
                self.layout.trash.display()
            )),
        }
        self.trash.empty_now()
    }

    /// Closes the snapshotter: waits for background deletion and, if this is
    /// the last handle on the root in any process, detaches the layer mounts.
    pub fn close(self) {}
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.trash.shutdown();
        let store = &self.store;
        self.layers.release(&self.log, || {
            store.write(|tx| tx.bump_mount_generation()).map(drop)
        });
    }
}

/// What a snapshot's labels, and at its creation its block layer, say about
/// its mounts (see [`Snapshotter::mounts_of`]).
struct Shape {
    /// It has [`LABEL_PARENT_CHAIN_ID`] (see [`Top`]).
    labelled: bool,
    /// containerd's ID mappings.
    idmap: Option<IdMap>,
    /// It has a block layer; None: not known, looked for (`rwlayer.img`).
    block: Option<bool>,
}

/// An image layer's extraction, as containerd makes one: its unpacker
/// labels it with the chain it makes (`containerd.io/snapshot.ref`), and
/// every unpack (the transfer service's, a client's `ctr run`) keys it
/// `extract-<unique> <chainID>` (`snapshots.UnpackKeyFormat`), which a
/// backend sees after containerd's `<namespace>/<id>/`.
fn is_extraction(key: &str, labels: &Labels) -> bool {
    if labels.contains_key(crate::layer_cache::LABEL_REF) {
        return true;
    }
    let own = match key.splitn(3, '/').collect::<Vec<_>>()[..] {
        [_, id, rest] if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => key,
    };
    own.starts_with("extract-") && own.contains(' ')
}

fn parse_filters(filters: &[String]) -> Result<Filter> {
    Filter::parse_all(filters).map_err(|e| Error::invalid_argument(e.to_string()))
}

fn active_row(row: Option<SnapshotRow>, key: &str) -> Result<SnapshotRow> {
    let row = row.ok_or_else(|| Error::not_found(format!("snapshot {key:?} does not exist")))?;
    if row.kind != Kind::Active {
        return Err(Error::failed_precondition(format!(
            "snapshot {key:?} is not active ({}); only active snapshots can be committed",
            row.kind.as_str()
        )));
    }
    Ok(row)
}

/// What a walk selected ([`Snapshotter::walk_shared`]), in name order. The
/// same selection comes back while no process may have changed the
/// snapshots.
#[derive(Clone)]
pub struct Walked(pub(crate) Arc<[Arc<crate::metastore::Cached>]>);

impl Walked {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The snapshots, without copies.
    pub fn iter(&self) -> impl Iterator<Item = InfoRef<'_>> {
        self.0.iter().map(|c| c.row.info_ref())
    }
}

impl std::fmt::Debug for Walked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What is on top of the lower layers of an active snapshot or view.
enum Top<'a> {
    /// Its upper dir (none for a view).
    Upper,
    /// The upper dir of a layer's extraction that containerd's parallel
    /// unpack will commit onto its parent (`awaits_rebase`). With no parent
    /// it is an overlay of the upper dir on an empty lower dir, not a bind
    /// mount: an applier given an overlay writes whiteouts and opaque
    /// directories as overlayfs keeps them (containerd's walking differ
    /// writes into `upperdir` directly), where into a plain directory it
    /// would only delete what is not there, and the layer would lose them
    /// once rebased (containerd issue #13030).
    RebaseLater,
    /// A layer content cache's file, read only (`layer_cache`).
    Cached(&'a Path),
}

/// The label containerd's unpacker puts on the snapshot of every layer but
/// the first: the chain ID of the layer below.
const LABEL_PARENT_CHAIN_ID: &str = "containerd.io/snapshot/parent-chain-id";

/// Whether a snapshot is a layer's extraction that containerd's parallel
/// unpack prepared without its parent and will commit onto it.
/// `labelled`: it has [`LABEL_PARENT_CHAIN_ID`].
fn awaits_rebase(kind: Kind, parent_ids: &[i64], labelled: bool) -> bool {
    kind == Kind::Active && parent_ids.is_empty() && labelled
}

/// The write transaction of a commit: `name` must still be free and `key`
/// the active snapshot `id` it was (a concurrent commit or remove may have
/// won), and the parent given must still be one it may take.
#[allow(clippy::too_many_arguments)]
fn record_commit(
    tx: &crate::metastore::Tx<'_>,
    id: i64,
    name: &str,
    key: &str,
    parent: &str,
    labels: &Labels,
    usage: Usage,
    blob: &BlobRecord,
    synced: bool,
) -> Result<()> {
    if tx.get(name)?.is_some() {
        return Err(Error::already_exists(format!(
            "snapshot {name:?} already exists"
        )));
    }
    let current = active_row(tx.get_by_id(id)?.filter(|r| &*r.key == key), key)?;
    let onto = rebase_onto(tx, &current, parent)?;
    // Durable means this layer and every one below: a flushed layer on a
    // parent not yet flushed is not.
    // (The parent is read only when this layer was flushed.)
    let durable = synced
        && match (&onto, current.parent_ids.first()) {
            (Some(p), _) => p.durable,
            (None, Some(pid)) => tx.get_by_id(*pid)?.is_none_or(|p| p.durable),
            (None, None) => true,
        };
    tx.commit(
        id,
        name,
        onto.as_ref(),
        labels,
        Timestamp::now(),
        usage,
        blob,
        durable,
    )
}

/// The parent `row` is committed onto, when that is a change (containerd's
/// `CommitActive` with `WithParent`): None for "" or the parent it has.
fn rebase_onto(
    tx: &crate::metastore::Tx<'_>,
    row: &SnapshotRow,
    parent: &str,
) -> Result<Option<SnapshotRow>> {
    if parent.is_empty() || parent == row.parent {
        return Ok(None);
    }
    if !row.parent.is_empty() {
        return Err(Error::invalid_argument(format!(
            "cannot change the parent of active snapshot {:?} from {:?} to {parent:?} on commit; \
             only a snapshot prepared without a parent can be given one",
            row.key, row.parent
        )));
    }
    let p = tx.get(parent)?.ok_or_else(|| {
        Error::not_found(format!(
            "parent {parent:?} given to the commit of {:?} does not exist",
            row.key
        ))
    })?;
    if p.kind != Kind::Committed {
        return Err(Error::failed_precondition(format!(
            "parent {parent:?} given to the commit of {:?} is not committed ({})",
            row.key,
            p.kind.as_str()
        )));
    }
    Ok(Some(p))
}

/// containerd's snapshot filter adaptor: `kind`, `name`, `parent`, `labels.<key>`.
fn field<'a>(row: &'a SnapshotRow, path: &[String]) -> Option<&'a str> {
    match path.first().map(String::as_str) {
        Some("kind") => Some(row.kind.as_str()),
        Some("name") => Some(&row.key),
        Some("parent") => Some(&row.parent),
        Some("labels") => match &path[1..] {
            _ if row.labels.is_empty() => None,
            [key] => row.labels.get(key),
            keys => row.labels.get(&keys.join(".")),
        },
        _ => None,
    }
}
