package erofs

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	ctrderofs "github.com/containerd/containerd/v2/plugins/snapshots/erofs"
	"github.com/containerd/containerd/v2/plugins/snapshots/overlay"
	"github.com/containerd/log"
)

// Side-by-side benchmarks: every row runs against this snapshotter,
// containerd's EROFS snapshotter and containerd's overlayfs snapshotter, each
// on a fresh root under the same temporary directory (same filesystem).
// Samples are interleaved (one of each implementation, in rotating order, then
// the next) so that all see the same machine state: on this ext4 every
// deletion slows down inode allocation for a minute, and a row that ran right
// after another's cleanup would pay for it. Every operation is timed on its
// own; TestMain prints the medians as a table.

type benchImpl struct {
	name string
	open func(ctx context.Context, root string) (snapshots.Snapshotter, error)
}

const (
	implOurs    = "ours"
	implErofs   = "containerd-erofs"
	implOverlay = "containerd-overlayfs"
	implMkfs    = "mkfs.erofs alone"
)

var benchImpls = []benchImpl{
	{implOurs, func(ctx context.Context, root string) (snapshots.Snapshotter, error) {
		return New(ctx, Config{RootPath: root})
	}},
	{implErofs, func(_ context.Context, root string) (snapshots.Snapshotter, error) {
		return ctrderofs.NewSnapshotter(root)
	}},
	{implOverlay, func(_ context.Context, root string) (snapshots.Snapshotter, error) {
		return overlay.NewSnapshotter(root)
	}},
}

// ---- sample collection and the table ---------------------------------------

type sampleKey struct{ row, impl string }

var table = struct {
	sync.Mutex
	rows    []string
	samples map[sampleKey][]time.Duration
}{samples: map[sampleKey][]time.Duration{}}

func record(row, impl string, d time.Duration) {
	table.Lock()
	defer table.Unlock()
	if !slices.Contains(table.rows, row) {
		table.rows = append(table.rows, row)
	}
	k := sampleKey{row, impl}
	table.samples[k] = append(table.samples[k], d)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Microsecond:
		return fmt.Sprintf("%.2f µs", float64(d)/1e3)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f s", float64(d)/1e9)
	}
}

// printTable writes the medians as a Markdown table (nothing without samples).
func printTable() {
	table.Lock()
	defer table.Unlock()
	if len(table.rows) == 0 {
		return
	}
	get := func(row, impl string) (time.Duration, int) {
		s := table.samples[sampleKey{row, impl}]
		if len(s) == 0 {
			return 0, 0
		}
		return median(s), len(s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nMedians per operation (samples: ours/containerd-erofs):\n\n")
	fmt.Fprintf(&b, "| operation | ours | containerd erofs | containerd overlayfs | %s | ours / containerd erofs |\n", implMkfs)
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|\n")
	for _, row := range table.rows {
		ours, n1 := get(row, implOurs)
		ctrd, n2 := get(row, implErofs)
		ovl, _ := get(row, implOverlay)
		mkfs, _ := get(row, implMkfs)
		ratio := "-"
		if ours > 0 && ctrd > 0 {
			ratio = fmt.Sprintf("%.2f", float64(ours)/float64(ctrd))
		}
		fmt.Fprintf(&b, "| %s (%d/%d) | %s | %s | %s | %s | %s |\n", row, n1, n2,
			fmtDur(ours), fmtDur(ctrd), fmtDur(ovl), fmtDur(mkfs), ratio)
	}
	fmt.Print(b.String())
}

func TestMain(m *testing.M) {
	code := m.Run()
	printTable()
	os.Exit(code)
}

// ---- fixtures ---------------------------------------------------------------

type fixture struct {
	ctx  context.Context
	impl string
	root string
	sn   snapshots.Snapshotter // nil for mkfs.erofs alone
	seq  int
}

func newFixture(b *testing.B, impl string) *fixture {
	b.Helper()
	ctx := context.Background()
	f := &fixture{ctx: ctx, impl: impl, root: filepath.Join(b.TempDir(), "root")}
	for _, bi := range benchImpls {
		if bi.name != impl {
			continue
		}
		sn, err := bi.open(ctx, f.root)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sn.Close() })
		f.sn = sn
	}
	return f
}

func (f *fixture) key(prefix string) string {
	f.seq++
	return fmt.Sprintf("%s-%d", prefix, f.seq)
}

// chain commits n empty layers on top of each other; returns the top one.
func (f *fixture) chain(b *testing.B, n int) string {
	parent := ""
	for i := 0; i < n; i++ {
		name := f.key("layer")
		if _, err := f.sn.Prepare(f.ctx, name+"-active", parent); err != nil {
			b.Fatal(err)
		}
		if err := f.sn.Commit(f.ctx, name, name+"-active"); err != nil {
			b.Fatal(err)
		}
		parent = name
	}
	return parent
}

// prepareUpper prepares an active snapshot without parent; returns its key
// and upper directory (every implementation gives a bind mount there).
func (f *fixture) prepareUpper(b *testing.B) (string, string) {
	key := f.key("active")
	mounts, err := f.sn.Prepare(f.ctx, key, "")
	if err != nil {
		b.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		b.Fatalf("%s: expected one bind mount, got %+v", f.impl, mounts)
	}
	return key, mounts[0].Source
}

// settle waits, untimed, for our background deletion so that it does not
// overlap the next measurement; its duration is recorded on its own row.
func (f *fixture) settle(b *testing.B, row string) {
	if f.impl != implOurs {
		return
	}
	start := time.Now()
	trash := filepath.Join(f.root, "trash")
	for deadline := start.Add(time.Minute); ; time.Sleep(2 * time.Millisecond) {
		entries, err := os.ReadDir(trash)
		if err != nil || len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("trash not emptied after a minute: %d entries", len(entries))
		}
	}
	record(row+", then background deletion (ours, untimed above)", implOurs, time.Since(start))
}

// writeTree writes n small files (1 KiB each, 100 per directory) into dir.
func writeTree(b *testing.B, dir string, n int) {
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.Mkdir(sub, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		data[0] = byte(i)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

var bigChunk = func() []byte {
	c := make([]byte, 1<<20)
	x := uint32(2463534242)
	for i := range c {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		c[i] = byte(x)
	}
	return c
}()

// writeBig writes one file of mib MiB of incompressible data.
func writeBig(b *testing.B, dir string, mib int) {
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < mib; i++ {
		bigChunk[0] = byte(i)
		if _, err := f.Write(bigChunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// ---- measuring --------------------------------------------------------------

var sampleScale = flag.Float64("erofs.samples", 1, "scale the number of samples each benchmark row takes (e.g. 0.05 for a smoke run)")

// A sampler does one iteration's untimed setup and returns the operation to
// time and what to do (untimed) after it.
type sampler func() (op func() error, after func())

// measure takes n samples (scaled by -erofs.samples) of row on every
// implementation in impls, interleaved in rotating order, during the
// benchmark's first invocation (b.N == 1). A fixed count keeps rows with
// costly setup bounded; run with -benchtime 1x so that the framework does not
// ramp up with further invocations, which only report. Samples are timed
// here, not with b.StopTimer/StartTimer, whose stop-the-world memory
// statistics would disturb microsecond operations.
func measure(b *testing.B, row string, n int, impls []string, mk func(b *testing.B, f *fixture) sampler) {
	requireRoot(b)
	if b.N == 1 {
		// containerd's EROFS snapshotter logs every mkfs.erofs run at info.
		if err := log.SetLevel("warn"); err != nil {
			b.Fatal(err)
		}
		// Flush what earlier rows left dirty, deleted trees above all.
		syscall.Sync()
		samplers := make([]sampler, len(impls))
		for i, impl := range impls {
			samplers[i] = mk(b, newFixture(b, impl))
		}
		n = max(1, int(float64(n)*(*sampleScale)))
		for i := 0; i < n; i++ {
			for j := range impls {
				k := (i + j) % len(impls)
				op, after := samplers[k]()
				start := time.Now()
				err := op()
				d := time.Since(start)
				if err != nil {
					b.Fatalf("%s: %v", impls[k], err)
				}
				record(row, impls[k], d)
				if after != nil {
					after()
				}
			}
		}
	}
	table.Lock()
	defer table.Unlock()
	med := func(impl string) float64 {
		if s := table.samples[sampleKey{row, impl}]; len(s) > 0 {
			return float64(median(s).Nanoseconds())
		}
		return 0
	}
	b.ReportMetric(med(implOurs), "ns/op")
	for _, impl := range impls[1:] {
		b.ReportMetric(med(impl), strings.ReplaceAll(impl, " ", "-")+"-ns/op")
	}
	if ctrd := med(implErofs); ctrd > 0 {
		b.ReportMetric(med(implOurs)/ctrd, "ours/containerd-erofs")
	}
}

var snapshotters = []string{implOurs, implErofs, implOverlay}

// ---- the rows ---------------------------------------------------------------

func BenchmarkPrepare(b *testing.B) {
	for _, parents := range []int{0, 1, 10, 50} {
		row := "Prepare, no parent"
		switch {
		case parents == 1:
			row = "Prepare, 1 committed parent"
		case parents > 1:
			row = fmt.Sprintf("Prepare, chain of %d committed parents", parents)
		}
		b.Run(fmt.Sprintf("parents=%d", parents), func(b *testing.B) {
			measure(b, row, 300, snapshotters, func(b *testing.B, f *fixture) sampler {
				top := f.chain(b, parents)
				return func() (func() error, func()) {
					return func() error {
						_, err := f.sn.Prepare(f.ctx, f.key("prepare"), top)
						return err
					}, nil
				}
			})
		})
	}
}

func BenchmarkMounts(b *testing.B) {
	for _, parents := range []int{0, 10, 50} {
		row := "Mounts, no parent"
		if parents > 0 {
			row = fmt.Sprintf("Mounts, %d parents", parents)
		}
		b.Run(fmt.Sprintf("parents=%d", parents), func(b *testing.B) {
			measure(b, row, 5000, snapshotters, func(b *testing.B, f *fixture) sampler {
				top := f.chain(b, parents)
				key := f.key("active")
				if _, err := f.sn.Prepare(f.ctx, key, top); err != nil {
					b.Fatal(err)
				}
				return func() (func() error, func()) {
					return func() error {
						_, err := f.sn.Mounts(f.ctx, key)
						return err
					}, nil
				}
			})
		})
	}
}

func BenchmarkStat(b *testing.B) {
	measure(b, "Stat", 20000, snapshotters, func(b *testing.B, f *fixture) sampler {
		top := f.chain(b, 1)
		return func() (func() error, func()) {
			return func() error {
				_, err := f.sn.Stat(f.ctx, top)
				return err
			}, nil
		}
	})
}

func BenchmarkWalk(b *testing.B) {
	measure(b, "Walk, 1,000 snapshots", 200, snapshotters, func(b *testing.B, f *fixture) sampler {
		labels := snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "2025-01-01T00:00:00Z"})
		for i := 0; i < 1000; i++ {
			if _, err := f.sn.Prepare(f.ctx, f.key("walk"), "", labels); err != nil {
				b.Fatal(err)
			}
		}
		return func() (func() error, func()) {
			return func() error {
				n := 0
				err := f.sn.Walk(f.ctx, func(context.Context, snapshots.Info) error { n++; return nil })
				if err == nil && n != 1000 {
					err = fmt.Errorf("walked %d snapshots", n)
				}
				return err
			}, nil
		}
	})
}

func BenchmarkRemove(b *testing.B) {
	measure(b, "Remove", 300, snapshotters, func(b *testing.B, f *fixture) sampler {
		return func() (func() error, func()) {
			key := f.key("remove")
			if _, err := f.sn.Prepare(f.ctx, key, ""); err != nil {
				b.Fatal(err)
			}
			return func() error { return f.sn.Remove(f.ctx, key) }, nil
		}
	})
}

func BenchmarkCommit(b *testing.B) {
	cases := []struct {
		name, row string
		samples   int
		fill      func(b *testing.B, dir string)
	}{
		{"empty", "Commit, empty upper dir", 200, func(*testing.B, string) {}},
		{"files=1000", "Commit, 1,000 small files", 15, func(b *testing.B, dir string) { writeTree(b, dir, 1000) }},
		{"files=10000", "Commit, 10,000 small files", 5, func(b *testing.B, dir string) { writeTree(b, dir, 10000) }},
		{"256MiB", "Commit, one 256 MiB file", 5, func(b *testing.B, dir string) { writeBig(b, dir, 256) }},
	}
	for _, c := range cases {
		heavy := c.name != "empty"
		impls := snapshotters
		if heavy {
			impls = append(slices.Clone(snapshotters), implMkfs)
		}
		b.Run(c.name, func(b *testing.B) {
			measure(b, c.row, c.samples, impls, func(b *testing.B, f *fixture) sampler {
				if f.impl == implMkfs {
					return mkfsSampler(b, f, c.fill)
				}
				return func() (func() error, func()) {
					key, upper := f.prepareUpper(b)
					c.fill(b, upper)
					if heavy {
						// No writeback of earlier iterations competes with this one.
						syscall.Sync()
					}
					return func() error {
							return f.sn.Commit(f.ctx, f.key("committed"), key)
						}, func() {
							if heavy {
								f.settle(b, c.row)
							}
						}
				}
			})
		})
	}
}

// mkfsSampler runs mkfs.erofs, with the options the library passes, on one
// tree written like the snapshotters' upper dirs.
func mkfsSampler(b *testing.B, f *fixture, fill func(*testing.B, string)) sampler {
	src := filepath.Join(filepath.Dir(f.root), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	fill(b, src)
	out := filepath.Join(filepath.Dir(f.root), "layer.erofs")
	return func() (func() error, func()) {
		os.Remove(out)
		syscall.Sync()
		return func() error {
			cmd := exec.Command("mkfs.erofs", "--quiet", "-Enoinline_data", "-b4096", out, src)
			if msg, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %s", err, msg)
			}
			return nil
		}, nil
	}
}
