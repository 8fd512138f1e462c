// Command erofs-snapshotter-grpc serves the erofs-snapshotter library to
// containerd as proxy plugins: containerd's snapshots gRPC API and its diff
// gRPC API (the library's EROFS differ), both on one unix socket.
//
//	erofs-snapshotter-grpc [--config FILE] [--socket PATH] [--root DIR]
//	    [--containerd-address PATH] [--set-immutable] [--enable-fsverity]
//	    [--sync-commit] [--enable-tar-index] [--mkfs-path PATH]
//	    [--mkfs-option OPT]... [--ovl-mount-option OPT]... [--default-size SIZE]
//	    [--log-level LEVEL] [--log-format text|json] [--version] [--help]
//
// The configuration file is /etc/erofs-snapshotter/config.toml when it
// exists (--config names another). Under systemd (packaging/systemd) it
// takes the socket from socket activation and says READY=1 once serving.
//
// containerd's config.toml:
//
//	[proxy_plugins.erofs]
//	  type = "snapshot"
//	  address = "/run/erofs-snapshotter/erofs-snapshotter.sock"
//	  capabilities = ["rebase", "remap-ids", "only-remap-ids"]
//	[proxy_plugins.erofs-differ]
//	  type = "diff"
//	  address = "/run/erofs-snapshotter/erofs-snapshotter.sock"
//
// A diff request carries the layer's descriptor, not its content: the daemon
// reads the blob from containerd's content store over containerd's own gRPC
// socket (--containerd-address), in the namespace the request names.
//
// One daemon per socket: each holds an exclusive flock on the socket's path
// plus ".lock" while it runs, and one started for a socket whose lock is held
// exits with an error. Under the lock, a socket file left by a daemon that
// died is replaced. The socket is created 0600 (its directory, if the daemon
// creates it, 0700): only its owner, root, connects.
//
// SIGTERM or SIGINT: stop serving (requests in flight finish, for at most
// --shutdown-timeout), remove the socket, close the library handle, exit 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/diffservice"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/content"
	contentproxy "github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	erofs "github.com/erofs-snapshotter/erofs-snapshotter/bindings/go"
)

// version is the daemon's; release builds set it with
// -ldflags "-X main.version=...".
var version = "0.1.0"

const (
	defaultSocket     = "/run/erofs-snapshotter/erofs-snapshotter.sock"
	defaultRoot       = "/var/lib/erofs-snapshotter"
	defaultContainerd = "/run/containerd/containerd.sock"
	// defaultConfig is read when it exists and --config is not given.
	defaultConfig = "/etc/erofs-snapshotter/config.toml"
)

// Config is the daemon's TOML file: its own keys and the library's
// (erofs.Config: root, set_immutable, enable_fsverity, sync_commit,
// mkfs_options, ovl_mount_options, mkfs_path, enable_tar_index,
// max_layer_size, max_file_size, max_expansion_ratio,
// convert_timeout_seconds, layer_content_caches, enable_dmverity,
// dmverity_mode, durable_before_use, default_size).
type Config struct {
	Address           string `toml:"address"`
	ContainerdAddress string `toml:"containerd_address"`
	LogLevel          string `toml:"log_level"`
	LogFormat         string `toml:"log_format"`
	ShutdownTimeout   string `toml:"shutdown_timeout"`
	// MetricsAddress (host:port) serves Prometheus metrics on /metrics; empty: off.
	MetricsAddress string `toml:"metrics_address"`
	erofs.Config
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// decodeConfig reads the TOML file f (named name) into cfg: an unknown key
// is an error that names it.
func decodeConfig(f *os.File, name string, cfg *Config) error {
	defer f.Close()
	if err := toml.NewDecoder(f).DisallowUnknownFields().Decode(cfg); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return fmt.Errorf("%s: %s", name, sm.String())
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// usage is --help: what the daemon is, the containerd stanza to paste, where
// its configuration comes from, then the flags.
func usage(fs *flag.FlagSet) {
	fmt.Fprintf(fs.Output(), `Usage: erofs-snapshotter-grpc [flags]

Serves the erofs-snapshotter library to containerd as proxy plugins: a
snapshotter (containerd's snapshots API) and a differ (its diff API, this
library's EROFS differ), both on one unix socket. Run it as root, in
containerd's mount namespace, then add to containerd's config.toml:

  [proxy_plugins.erofs]
    type = "snapshot"
    address = %q
    # rebase: parallel unpack; remap-ids, only-remap-ids: ID-mapped layers
    # for user namespaces (the daemon logs at start what this kernel has)
    capabilities = ["rebase", "remap-ids", "only-remap-ids"]
  [proxy_plugins.erofs-differ]
    type = "diff"
    address = %q

and use it: ctr images pull --snapshotter erofs ...; ctr run --snapshotter erofs ...
(for the transfer service's unpack, an unpack_config entry with
snapshotter = "erofs" and differ = "erofs-differ"; see the README).

Configuration: %s if it exists (or --config FILE), TOML:
the daemon's keys (address, containerd_address, log_level, log_format,
shutdown_timeout, metrics_address) and the library's, as containerd's EROFS snapshotter
names them (root, set_immutable, enable_fsverity, default_size,
dmverity_mode, layer_content_caches = [...], mkfs_options = [...], ...);
flags override it. An unknown key is an error.

Flags:
`, defaultSocket, defaultSocket, defaultConfig)
	fs.PrintDefaults()
}

// parse reads the TOML file (if any), then the flags given on the command
// line, which win over the file.
func parse(args []string, stderr io.Writer) (Config, bool, error) {
	fs := flag.NewFlagSet("erofs-snapshotter-grpc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs) }
	var (
		configFile  = fs.String("config", defaultConfig, "TOML configuration file (read when it exists if not given; flags override it)")
		socket      = fs.String("socket", defaultSocket, "unix socket serving the snapshots and diff APIs")
		ctrd        = fs.String("containerd-address", defaultContainerd, "containerd's gRPC socket, for the content of layers to apply")
		root        = fs.String("root", defaultRoot, "snapshotter root directory (metadata.db, snapshots/)")
		immutable   = fs.Bool("set-immutable", false, "set FS_IMMUTABLE_FL on committed layer blobs")
		fsverity    = fs.Bool("enable-fsverity", false, "enable fs-verity on layer blobs")
		syncCommit  = fs.Bool("sync-commit", false, "fsync each blob before its commit is recorded")
		durable     = fs.Bool("durable-before-use", true, "flush a chain of layers before the first container snapshot on it (false: flush nothing)")
		tarIndex    = fs.Bool("enable-tar-index", false, "differ writes tar-index images (mkfs.erofs --tar=i)")
		dmverity    = fs.Bool("enable-dmverity", false, "differ appends a dm-verity hash tree to each layer (<blob>.dmverity)")
		dmMode      = fs.String("dmverity-mode", "auto", "mount layers through dm-verity: auto (those with <blob>.dmverity), on (all), off")
		defaultSize = fs.String("default-size", "", "block mode: each container's writable layer is an ext4 image of this size (\"64Mi\", \"1g\", bytes; empty or 0: upper directories)")
		mkfsPath    = fs.String("mkfs-path", "", "mkfs.erofs program (default: mkfs.erofs on PATH)")
		maxLayer    = fs.Uint64("max-layer-size", 0, "largest sum of file sizes one applied layer may write, in bytes (0: no limit; default 128 GiB)")
		maxFile     = fs.Uint64("max-file-size", 0, "largest file an applied layer may hold, in bytes (0: no limit; default 64 GiB)")
		maxRatio    = fs.Uint64("max-expansion-ratio", 0, "most bytes of files an applied layer may write per byte of layer data, past 64 MiB (0: no limit; default 100)")
		timeout     = fs.Uint64("convert-timeout-seconds", 0, "longest one layer conversion may run (default 3600)")
		logLevel    = fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
		logFormat   = fs.String("log-format", "text", "log format: text or json")
		shutdown    = fs.String("shutdown-timeout", "10s", "how long SIGTERM waits for requests in flight")
		showVersion = fs.Bool("version", false, "print the daemon's and the library's versions and exit")
		metricsAddr = fs.String("metrics-address", "", "serve Prometheus metrics on http://HOST:PORT/metrics (empty: off)")
		mkfsOpts    stringList
		ovlOpts     stringList
		caches      stringList
	)
	fs.Var(&caches, "layer-content-cache", "read-only directory of pre-converted EROFS layers by diffID, as containerd's layer_content_caches (repeatable, searched in order)")
	fs.Var(&mkfsOpts, "mkfs-option", "extra mkfs.erofs argument (repeatable)")
	fs.Var(&ovlOpts, "ovl-mount-option", "extra overlayfs mount option (repeatable)")
	fs.StringVar(socket, "address", defaultSocket, "same as --socket")
	if err := fs.Parse(args); err != nil {
		return Config{}, false, err
	}
	if fs.NArg() > 0 {
		return Config{}, false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *showVersion {
		return Config{}, true, nil
	}
	cfg := Config{Address: defaultSocket, ContainerdAddress: defaultContainerd, LogLevel: "info", LogFormat: "text", ShutdownTimeout: "10s"}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "config" })
	if *configFile != "" {
		f, err := os.Open(*configFile)
		if errors.Is(err, os.ErrNotExist) && !given {
			// The default file is optional.
			f, err = nil, nil
		}
		if err != nil {
			return Config{}, false, err
		}
		if f != nil {
			if err := decodeConfig(f, *configFile, &cfg); err != nil {
				return Config{}, false, err
			}
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "socket", "address":
			cfg.Address = *socket
		case "containerd-address":
			cfg.ContainerdAddress = *ctrd
		case "root":
			cfg.RootPath, cfg.Root = *root, ""
		case "set-immutable":
			cfg.SetImmutable = *immutable
		case "enable-fsverity":
			cfg.EnableFsverity = *fsverity
		case "sync-commit":
			cfg.SyncCommit = *syncCommit
		case "durable-before-use":
			cfg.DurableBeforeUse = durable
		case "enable-tar-index":
			cfg.EnableTarIndex = *tarIndex
		case "enable-dmverity":
			cfg.EnableDmverity = *dmverity
		case "dmverity-mode":
			cfg.DmverityMode = *dmMode
		case "default-size":
			cfg.DefaultSize = *defaultSize
		case "metrics-address":
			cfg.MetricsAddress = *metricsAddr
		case "mkfs-path":
			cfg.MkfsPath = *mkfsPath
		case "max-layer-size":
			cfg.MaxLayerSize = maxLayer
		case "max-file-size":
			cfg.MaxFileSize = maxFile
		case "max-expansion-ratio":
			cfg.MaxExpansionRatio = maxRatio
		case "convert-timeout-seconds":
			cfg.ConvertTimeoutSeconds = *timeout
		case "mkfs-option":
			cfg.MkfsOptions = mkfsOpts
		case "ovl-mount-option":
			cfg.OvlMountOptions = ovlOpts
		case "layer-content-cache":
			cfg.LayerContentCaches = caches
		case "log-level":
			cfg.LogLevel = *logLevel
		case "log-format":
			cfg.LogFormat = *logFormat
		case "shutdown-timeout":
			cfg.ShutdownTimeout = *shutdown
		}
	})
	if cfg.RootPath == "" && cfg.Root == "" {
		cfg.RootPath = defaultRoot
	}
	return cfg, false, nil
}

func versionText() string {
	goVersion, ctrd := "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, m := range bi.Deps {
			if m.Path == "github.com/containerd/containerd/v2" {
				ctrd = m.Version
			}
		}
	}
	return fmt.Sprintf("erofs-snapshotter-grpc %s (%s, containerd %s)\nliberofs_snapshotter %s\n",
		version, goVersion, ctrd, erofs.Version())
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, showVersion, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "erofs-snapshotter-grpc: %v\n", err)
		return 2
	}
	if showVersion {
		fmt.Fprint(stdout, versionText())
		return 0
	}
	log.L.Logger.SetOutput(stderr)
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		fmt.Fprintf(stderr, "erofs-snapshotter-grpc: log level %q: %v\n", cfg.LogLevel, err)
		return 2
	}
	if err := log.SetFormat(log.OutputFormat(cfg.LogFormat)); err != nil {
		fmt.Fprintf(stderr, "erofs-snapshotter-grpc: %v\n", err)
		return 2
	}
	grace, err := time.ParseDuration(cfg.ShutdownTimeout)
	if err != nil {
		fmt.Fprintf(stderr, "erofs-snapshotter-grpc: shutdown timeout: %v\n", err)
		return 2
	}
	if err := serve(cfg, grace); err != nil {
		log.L.WithError(err).Error("erofs-snapshotter-grpc failed")
		return 1
	}
	return 0
}

func serve(cfg Config, grace time.Duration) error {
	ctx := context.Background()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)

	// Before anything else: a second daemon for the address exits here,
	// without touching the root or the socket. Closed (unlocked) last.
	lock, err := lockSocket(cfg.Address)
	if err != nil {
		return err
	}
	defer lock.Close()

	sn, err := erofs.New(log.WithLogger(ctx, log.L), cfg.Config)
	if err != nil {
		return fmt.Errorf("open snapshotter: %w", err)
	}
	defer func() {
		if err := sn.Close(); err != nil {
			log.L.WithError(err).Error("close snapshotter")
		}
		log.L.Info("snapshotter closed")
	}()

	// Lazy: containerd usually starts after its proxy plugins.
	dial := func() (*grpc.ClientConn, error) {
		conn, err := grpc.NewClient("unix://"+mustAbs(cfg.ContainerdAddress),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaults.DefaultMaxRecvMsgSize)),
		)
		if err != nil {
			return nil, fmt.Errorf("containerd client for %s: %w", cfg.ContainerdAddress, err)
		}
		return conn, nil
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	// Healing has a connection of its own: its attempts while containerd
	// is not up yet must not put the differ's into a back-off.
	healConn, err := dial()
	if err != nil {
		return err
	}
	defer healConn.Close()
	var met *metrics
	if cfg.MetricsAddress != "" {
		met = newMetrics(sn.Root())
		ml, err := serveMetrics(cfg.MetricsAddress, met)
		if err != nil {
			return err
		}
		defer ml.Close()
		log.L.WithField("address", "http://"+ml.Addr().String()+"/metrics").Info("serving metrics")
	}
	provider := newProvider(conn)
	differ := loggingDiffer{erofs.NewDiffer(sn, provider), met}
	cleaner := loggingCleaner{sn, contentproxy.NewContentStore(healConn), healConn}

	// systemd's socket activation (erofs-snapshotter.socket) hands the
	// socket over; else the daemon makes it.
	l, err := activated()
	if err != nil {
		return err
	}
	ownSocket := l == nil
	if ownSocket {
		if l, err = listen(cfg.Address); err != nil {
			return err
		}
	}
	// WaitForHandlers: Stop returns only once every handler has, so the
	// handle and the connection to containerd are closed after the last use.
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(logUnary, met.unary), grpc.ChainStreamInterceptor(logStream, met.stream),
		grpc.WaitForHandlers(true))
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(cleaner))
	diffapi.RegisterDiffServer(srv, diffservice.FromApplierAndComparer(differ, differ))

	done := make(chan struct{})    // Serve returned
	stopped := make(chan struct{}) // no handler is running any more
	go func() {
		defer close(stopped)
		select {
		case s := <-sig:
			log.L.WithField("signal", s.String()).Info("stopping: no new requests, waiting for those in flight")
		case <-done:
			srv.Stop()
			return
		}
		graceful := make(chan struct{})
		go func() { srv.GracefulStop(); close(graceful) }()
		select {
		case <-graceful:
			return
		case <-time.After(grace):
			log.L.WithField("timeout", grace).Warn("requests still running after the shutdown timeout: canceling them")
		case s := <-sig:
			log.L.WithField("signal", s.String()).Warn("second signal: canceling the requests in flight")
		}
		// Cancels the requests' contexts: an apply stops reading its layer.
		srv.Stop()
		<-graceful
	}()
	// containerd takes a proxy plugin's capabilities from its own config,
	// not from the plugin: said here, to copy into proxy_plugins.
	caps, err := sn.Capabilities(context.Background())
	if err != nil {
		return err
	}
	log.L.WithFields(log.Fields{
		"socket":       cfg.Address,
		"root":         sn.Root(),
		"containerd":   cfg.ContainerdAddress,
		"version":      version,
		"library":      erofs.Version(),
		"capabilities": `["` + strings.Join(caps, `", "`) + `"]`,
	}).Info("serving snapshots and diff APIs")
	// Layers lost in a crash are made again from containerd's content
	// store, once containerd answers (it usually starts after its proxy
	// plugins); cleanup tries again for what is left.
	healCtx, stopHeal := context.WithCancel(ctx)
	defer stopHeal()
	go cleaner.healAtStart(healCtx)
	// Type=notify units start containerd after this.
	notify("READY=1\nSTATUS=serving snapshots and diff APIs on " + cfg.Address)
	err = srv.Serve(l)
	notify("STOPPING=1")
	close(done)
	<-stopped
	if ownSocket {
		// Serve closed the listener, which unlinks the socket; make sure.
		if rerr := os.Remove(cfg.Address); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			log.L.WithError(rerr).Warn("remove socket")
		}
		log.L.WithField("socket", cfg.Address).Info("stopped serving, socket removed")
	} else {
		log.L.WithField("socket", cfg.Address).Info("stopped serving (the socket is systemd's)")
	}
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

func mustAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// lockSocket makes this process the only daemon serving on path: it takes
// an exclusive flock on path.lock (created next to the socket, and its
// directory, 0700, if need be), held while the returned file is open, that
// is until the process exits. Another daemon holding it is an error. The
// lock file is never removed: removed while a daemon starting has it open,
// it would let that one and a third, locking a new file of the same name,
// both serve.
func lockSocket(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("socket lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: another daemon holds it (%s is locked)", path, name)
		}
		return nil, fmt.Errorf("socket lock %s: %w", name, err)
	}
	return f, nil
}

// activated is the listening socket systemd passed (socket activation:
// LISTEN_PID is this process, LISTEN_FDS 1, the socket fd 3), or nil.
func activated() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, nil
	}
	if n != 1 {
		return nil, fmt.Errorf("socket activation: %d sockets passed, want 1 (ListenStream= once)", n)
	}
	// Not for the children (mkfs.erofs).
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	syscall.CloseOnExec(3)
	f := os.NewFile(3, "systemd-socket")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("socket activation: fd 3: %w", err)
	}
	return l, nil
}

// notify tells systemd (a Type=notify unit: $NOTIFY_SOCKET) the daemon's
// state; without it, nothing.
func notify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err == nil {
		_, err = c.Write([]byte(state))
		c.Close()
	}
	if err != nil {
		log.L.WithError(err).WithField("socket", addr).Warn("sd_notify")
	}
}

// listen creates the socket, with the socket's lock held (lockSocket): a
// socket file already there is stale (its daemon died without removing it),
// unless a process that does not take the lock answers on it.
func listen(path string) (net.Listener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Born 0600 (bind creates it 0777 less the umask), not chmod'ed after:
	// no window where it has the umask's mode. The umask is the process's;
	// nothing else creates files now (nothing is served yet, and the
	// library's background thread only deletes).
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return l, nil
}

// namespacedProvider reads from containerd's content store in the namespace
// of the request being served: containerd's proxy differ sends it as gRPC
// metadata, which must be set again on the outgoing calls.
type namespacedProvider struct {
	store  content.Store
	client contentapi.ContentClient
}

func newProvider(conn *grpc.ClientConn) namespacedProvider {
	return namespacedProvider{store: contentproxy.NewContentStore(conn), client: contentapi.NewContentClient(conn)}
}

func (p namespacedProvider) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading layer %s from containerd: %w", desc.Digest, err)
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	ra, err := p.store.ReaderAt(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("reading layer %s from containerd's content store (namespace %s): %w", desc.Digest, ns, err)
	}
	return &remoteBlob{ReaderAt: ra, ctx: ctx, client: p.client, digest: desc.Digest}, nil
}

// remoteBlob serves sequential ReadAt calls from one streaming Read of the
// rest of the blob (containerd sends it in 1 MiB messages, ahead of the
// reader as gRPC flow control allows) instead of one Read call per ReadAt,
// as containerd's content proxy does: that round trip per MiB cost about 20%
// of an apply.
type remoteBlob struct {
	content.ReaderAt
	ctx    context.Context
	client contentapi.ContentClient
	digest digest.Digest

	mu     sync.Mutex
	stream contentapi.Content_ReadClient
	cancel context.CancelFunc
	pos    int64  // offset of the stream's next byte
	buf    []byte // received, not yet returned
}

func (b *remoteBlob) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.Size() {
		return 0, io.EOF
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream == nil || off != b.pos {
		b.closeStream()
		ctx, cancel := context.WithCancel(b.ctx)
		stream, err := b.client.Read(ctx, &contentapi.ReadContentRequest{Digest: b.digest.String(), Offset: off})
		if err != nil {
			cancel()
			return 0, errgrpc.ToNative(err)
		}
		b.stream, b.cancel, b.pos = stream, cancel, off
	}
	n := 0
	for n < len(p) {
		if len(b.buf) == 0 {
			resp, err := b.stream.Recv()
			if err != nil {
				b.closeStream()
				if err == io.EOF {
					return n, io.EOF
				}
				return n, errgrpc.ToNative(err)
			}
			b.buf = resp.Data
		}
		c := copy(p[n:], b.buf)
		b.buf = b.buf[c:]
		n += c
		b.pos += int64(c)
	}
	return n, nil
}

func (b *remoteBlob) closeStream() {
	if b.cancel != nil {
		b.cancel()
	}
	b.stream, b.cancel, b.buf = nil, nil, nil
}

func (b *remoteBlob) Close() error {
	b.mu.Lock()
	b.closeStream()
	b.mu.Unlock()
	return b.ReaderAt.Close()
}

// loggingCleaner logs each Cleanup (containerd's GC calls it after removing
// snapshots), at info level, and then repairs lost layers from containerd's
// content store.
type loggingCleaner struct {
	*erofs.Snapshotter
	layers     content.Store    // containerd's content store
	containerd *grpc.ClientConn // containerd's API
}

func (s loggingCleaner) Cleanup(ctx context.Context) error {
	start := time.Now()
	err := s.Snapshotter.Cleanup(ctx)
	if err == nil {
		log.G(ctx).WithField("d", time.Since(start)).Info("cleanup done")
		// Failures are logged, layer by layer; cleanup itself succeeded.
		_ = s.heal(ctx)
	}
	return err
}

// heal repairs what lost layers it can (RepairFrom logs each one).
func (s loggingCleaner) heal(ctx context.Context) error {
	repaired, err := s.RepairFrom(ctx, s.layers)
	if len(repaired) > 0 {
		log.G(ctx).WithField("layers", len(repaired)).Info("lost layers repaired")
	}
	return err
}

// healAtStart repairs lost layers, and makes containerd forget the layers
// this root lost with their records (forgetGone), once containerd answers:
// tried again every 2 s for a minute while containerd is unavailable (it
// usually starts after its proxy plugins); other failures are left to the
// next cleanup (lost layers) or start.
func (s loggingCleaner) healAtStart(ctx context.Context) {
	if lost, err := s.Check(ctx); err == nil && len(lost) > 0 {
		log.G(ctx).WithField("layers", strings.Join(lost, " ")).Warn("lost layers found at start: repairing them from containerd's content store")
	}
	for i := 0; i < 30; i++ {
		err := s.heal(ctx)
		if !errdefs.IsUnavailable(err) {
			var n int
			n, err = forgetGone(ctx, s.containerd, s.layers, s.ours)
			if n > 0 {
				log.G(ctx).WithField("layers", n).Info("containerd's records of layers lost with their records removed")
			}
		}
		if err == nil || !errdefs.IsUnavailable(err) {
			if err != nil {
				log.G(ctx).WithError(err).Warn("reconcile with containerd after a start")
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// ours says whether this root has a committed layer named chainID in the
// namespace of ctx: containerd names its snapshots here
// "<namespace>/<n>/<name>".
func (s loggingCleaner) ours(ctx context.Context, chainID string) bool {
	ns, _ := namespaces.Namespace(ctx)
	filter := fmt.Sprintf("kind==committed,name~=%q", "^"+regexp.QuoteMeta(ns)+"/[0-9]+/"+regexp.QuoteMeta(chainID)+"$")
	found := false
	err := s.Walk(ctx, func(context.Context, snapshots.Info) error {
		found = true
		return nil
	}, filter)
	// Unsure: say yes, so nothing of containerd's is removed.
	return found || err != nil
}

// loggingDiffer logs each layer it applies, at info level.
type loggingDiffer struct {
	*erofs.Differ
	met *metrics
}

func (d loggingDiffer) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	start := time.Now()
	applied, err := d.Differ.Apply(ctx, desc, mounts, opts...)
	if err == nil {
		took := time.Since(start)
		d.met.applied(desc.Size, took)
		log.G(ctx).WithFields(log.Fields{
			"digest": desc.Digest,
			"media":  desc.MediaType,
			"size":   desc.Size,
			"diffid": applied.Digest,
			"d":      took,
		}).Info("layer applied")
	}
	return applied, err
}

// Expected failures (a missing key is how containerd asks whether a
// snapshot exists) are logged at debug level, the others as errors.
func logResult(ctx context.Context, method string, start time.Time, err error) {
	entry := log.G(ctx).WithFields(log.Fields{"method": method, "d": time.Since(start)})
	if ns, ok := namespaces.Namespace(ctx); ok {
		entry = entry.WithField("namespace", ns)
	}
	switch {
	case err == nil:
		entry.Debug("request")
	case status.Code(err) == codes.Unknown || status.Code(err) == codes.Internal:
		entry.WithError(err).Error("request failed")
	default:
		entry.WithError(err).Debug("request failed")
	}
}

func logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	logResult(ctx, info.FullMethod, start, err)
	return resp, err
}

func logStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	logResult(ss.Context(), info.FullMethod, start, err)
	return err
}
