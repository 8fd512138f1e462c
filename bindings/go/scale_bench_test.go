package erofs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// The scale benchmark (BenchmarkScale, `make bench-scale`): this snapshotter
// against containerd's EROFS snapshotter holding 1,000, 10,000 and 100,000
// snapshots (BENCH_SCALE_SIZES=1000,10000 picks others). Each implementation
// runs in a child process of its own (this test binary re-executed with
// EROFS_BENCH_SCALE_CHILD set, driven over two pipes), so that one's memory
// does not show in the other's RSS; both children live side by side, on roots
// under the same temporary directory, and the parent asks them for samples in
// rotating order, one of each, then the next, as measure does. Operations are
// timed in the child; the parent prints one table of medians per size.
//
// The population, the same for both: snapshot i (0 <= i < n) is an active
// snapshot without parent, "snap-%07d", but every tenth (i%10 == 9), which is
// committed, "layer-%07d", on the previous tenth (chains of ten layers). Each
// has three labels like those containerd passes to a snapshotter (a GC root,
// a chain ID, a layer digest: 64 hex digits each) and 1% (i%100 == 0) also
// bench.sel=yes, the selection of the filtered walk. Keys for Stat and Update
// are drawn from a PRNG with the same seed in both children, so both see the
// same keys in the same order.

const (
	scaleChildEnv = "EROFS_BENCH_SCALE_CHILD" // the implementation a child runs
	scaleRootEnv  = "EROFS_BENCH_SCALE_ROOT"  // its root
	scaleSelLabel = "bench.sel"
	scaleFilter   = `labels."bench.sel"==yes`
)

var scaleImpls = []string{implOurs, implErofs}

// The rows, in the table's order: an id (what results are keyed by) and a label.
const (
	rowScalePopulate     = "populate"
	rowScaleWalk         = "walk"
	rowScaleWalkUpdate   = "walk-after-update"
	rowScaleWalkChurn    = "walk-after-churn"
	rowScaleWalkFilter   = "walk-filter"
	rowScaleStat         = "stat"
	rowScaleStatUpdate   = "stat-after-update"
	rowScaleOpen         = "open"
	rowScaleStatFresh    = "stat-fresh"
	rowScaleWalkFresh    = "walk-fresh"
	rowScalePrepare      = "prepare"
	rowScaleRemove       = "remove"
	rowScaleUpdate       = "update"
	rowScaleRSS          = "rss"
	rowScaleRSSGo        = "rss-go"
	rowScaleRSSAnon      = "rss-anon"
	rowScaleRSSFile      = "rss-file"
	rowScalePeak         = "rss-walk-peak"
	rowScaleFreshRSS     = "fresh-rss"
	rowScaleFreshRSSGo   = "fresh-rss-go"
	rowScaleFreshRSSAnon = "fresh-rss-anon"
	rowScaleFreshRSSFile = "fresh-rss-file"
)

var scaleRows = []struct {
	id, label string
	bytes     bool // a size per snapshot, not a duration
}{
	{rowScalePopulate, "Populate, per snapshot (mean; Prepare, 10% also Commit)", false},
	{rowScaleWalk, "Walk, all (warm)", false},
	{rowScaleWalkUpdate, "Walk, all, right after one Update of a label", false},
	{rowScaleWalkChurn, "Walk, all, right after one Prepare + Remove", false},
	{rowScaleWalkFilter, "Walk, filter " + scaleFilter + " (1%)", false},
	{rowScaleStat, "Stat (warm, random key)", false},
	{rowScaleStatUpdate, "Stat, right after an Update of another snapshot", false},
	{rowScaleOpen, "Open on the existing root (after Close, same process)", false},
	{rowScaleStatFresh, "Stat, first on a freshly opened handle", false},
	{rowScaleWalkFresh, "Walk, all, first on a freshly opened handle", false},
	{rowScalePrepare, "Prepare, no parent", false},
	{rowScaleRemove, "Remove (active, no parent)", false},
	{rowScaleUpdate, "Update, one label", false},
	{rowScaleRSS, "RSS growth after populating + one full walk, per snapshot", true},
	{rowScaleRSSGo, "- of which Go runtime (heap, stacks)", true},
	{rowScaleRSSAnon, "- of which anonymous, not Go's (ours: the library's C/Rust heap)", true},
	{rowScaleRSSFile, "- of which file-backed (mmapped files, shmem)", true},
	{rowScalePeak, "Walk's transient RSS peak (over the RSS before it), per snapshot", true},
	{rowScaleFreshRSS, "RSS growth of a new process, open + one full walk, per snapshot", true},
	{rowScaleFreshRSSGo, "- of which Go runtime (heap, stacks)", true},
	{rowScaleFreshRSSAnon, "- of which anonymous, not Go's (ours: the library's C/Rust heap)", true},
	{rowScaleFreshRSSFile, "- of which file-backed (mmapped files, shmem)", true},
}

// The samples: for each row, how to ask a child for one and which of the
// reply's timings go to which row. scaled rows take base*sqrt(1000/n)
// samples (200 at 1,000 snapshots, 63 at 10,000, 20 at 100,000), the others
// base at every size; both times -erofs.samples.
var scaleSamples = []struct {
	kind   string
	base   int
	scaled bool
	rows   map[string]string // reply field -> row
}{
	{"walk", 200, true, map[string]string{"walk": rowScaleWalk}},
	{"update-walk", 100, true, map[string]string{"walk": rowScaleWalkUpdate}},
	{"churn-walk", 100, true, map[string]string{"walk": rowScaleWalkChurn}},
	{"walk-filter", 200, true, map[string]string{"walk": rowScaleWalkFilter}},
	{"stat", 20, false, map[string]string{"stat": rowScaleStat}}, // 100 Stats per sample
	{"update-stat", 300, false, map[string]string{"stat": rowScaleStatUpdate, "update": rowScaleUpdate}},
	{"reopen-stat", 40, true, map[string]string{"open": rowScaleOpen, "stat": rowScaleStatFresh}},
	{"reopen-walk", 40, true, map[string]string{"walk": rowScaleWalkFresh}},
	// containerd's Remove lists every snapshot directory (0.4 s at 100,000).
	{"churn", 200, true, map[string]string{"prepare": rowScalePrepare, "remove": rowScaleRemove}},
}

// ---- the population -----------------------------------------------------------

func scaleCommitted(i int) bool { return i%10 == 9 }

func scaleKey(i int) string {
	if scaleCommitted(i) {
		return fmt.Sprintf("layer-%07d", i)
	}
	return fmt.Sprintf("snap-%07d", i)
}

// scaleParent is the parent of committed snapshot i: chains of ten layers.
func scaleParent(i int) string {
	if (i/10)%10 == 0 {
		return ""
	}
	return scaleKey(i - 10)
}

func scaleLabels(i int) map[string]string {
	ref := sha256.Sum256([]byte(strconv.Itoa(i)))
	layer := sha256.Sum256(ref[:])
	labels := map[string]string{
		"containerd.io/gc.root":                   "2026-01-01T00:00:00Z",
		"containerd.io/snapshot.ref":              "sha256:" + hex.EncodeToString(ref[:]),
		"containerd.io/snapshot/cri.layer-digest": "sha256:" + hex.EncodeToString(layer[:]),
	}
	if i%100 == 0 {
		labels[scaleSelLabel] = "yes"
	}
	return labels
}

// scaleSelected is how many of n snapshots carry the selection label.
func scaleSelected(n int) int { return (n + 99) / 100 }

// ---- the child ------------------------------------------------------------------

func init() {
	if impl := os.Getenv(scaleChildEnv); impl != "" {
		os.Exit(scaleChild(impl, os.Getenv(scaleRootEnv)))
	}
}

// scaleChild serves the parent's commands, one a line on fd 3, replying one
// line each on fd 4: "ok field=value[,value...] ..." or "err message". It
// ends at "quit" or at the end of its input (the parent is gone).
func scaleChild(impl, root string) int {
	in, out := os.NewFile(3, "commands"), os.NewFile(4, "replies")
	// containerd's EROFS snapshotter logs every mkfs.erofs run at info.
	if err := log.SetLevel("warn"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w := &scaleWorker{impl: impl, root: root, ctx: context.Background(), rng: rand.New(rand.NewPCG(1, 2))}
	defer w.close()
	sc := bufio.NewScanner(in)
	bw := bufio.NewWriter(out)
	for sc.Scan() {
		args := strings.Fields(sc.Text())
		if len(args) == 0 {
			continue
		}
		if args[0] == "quit" {
			return 0
		}
		reply, err := w.do(args)
		if err != nil {
			fmt.Fprintf(bw, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintf(bw, "ok%s\n", reply)
		}
		if err := bw.Flush(); err != nil {
			return 1
		}
	}
	return 0
}

type scaleWorker struct {
	impl, root string
	ctx        context.Context
	sn         snapshots.Snapshotter
	n          int // the population
	rng        *rand.Rand
	seq        int
}

// scaleReply accumulates "field=v1,v2" pairs.
type scaleReply struct{ strings.Builder }

func (r *scaleReply) add(field string, vs ...int64) {
	r.WriteString(" " + field + "=")
	for i, v := range vs {
		if i > 0 {
			r.WriteByte(',')
		}
		r.WriteString(strconv.FormatInt(v, 10))
	}
}

func (r *scaleReply) addMem(prefix string, m scaleMem) {
	r.add(prefix+"rss", m.rss)
	r.add(prefix+"anon", m.anon)
	r.add(prefix+"file", m.file)
	r.add(prefix+"gores", m.goRes)
}

func (w *scaleWorker) open() (time.Duration, error) {
	for _, bi := range benchImpls {
		if bi.name == w.impl {
			start := time.Now()
			sn, err := bi.open(w.ctx, w.root)
			d := time.Since(start)
			if err != nil {
				return 0, err
			}
			w.sn = sn
			return d, nil
		}
	}
	return 0, fmt.Errorf("unknown implementation %q", w.impl)
}

func (w *scaleWorker) close() {
	if w.sn != nil {
		w.sn.Close()
		w.sn = nil
	}
}

func (w *scaleWorker) populate(from, to int) error {
	for i := from; i < to; i++ {
		key, labels := scaleKey(i), snapshots.WithLabels(scaleLabels(i))
		if !scaleCommitted(i) {
			if _, err := w.sn.Prepare(w.ctx, key, "", labels); err != nil {
				return err
			}
			continue
		}
		if _, err := w.sn.Prepare(w.ctx, key+"-active", scaleParent(i), labels); err != nil {
			return err
		}
		if err := w.sn.Commit(w.ctx, key, key+"-active", labels); err != nil {
			return err
		}
	}
	w.n = max(w.n, to)
	return nil
}

func (w *scaleWorker) walk(want int, filters ...string) (time.Duration, error) {
	n := 0
	start := time.Now()
	err := w.sn.Walk(w.ctx, func(context.Context, snapshots.Info) error { n++; return nil }, filters...)
	d := time.Since(start)
	if want == 0 && errdefs.IsNotFound(err) {
		err = nil // containerd's store has no bucket before the first snapshot
	}
	if err == nil && n != want {
		err = fmt.Errorf("walk %q: %d snapshots, want %d", filters, n, want)
	}
	return d, err
}

func (w *scaleWorker) stat(i int) (time.Duration, error) {
	key := scaleKey(i)
	start := time.Now()
	info, err := w.sn.Stat(w.ctx, key)
	d := time.Since(start)
	if err == nil && info.Name != key {
		err = fmt.Errorf("stat %s: got %q", key, info.Name)
	}
	return d, err
}

// update sets label bench.touched of snapshot i to a new value.
func (w *scaleWorker) update(i int) (time.Duration, error) {
	w.seq++
	info := snapshots.Info{Name: scaleKey(i), Labels: map[string]string{"bench.touched": strconv.Itoa(w.seq)}}
	start := time.Now()
	_, err := w.sn.Update(w.ctx, info, "labels.bench.touched")
	return time.Since(start), err
}

// churn prepares a snapshot without parent (labels as the population's, but
// not the selection label) and removes it.
func (w *scaleWorker) churn() (prepare, remove time.Duration, err error) {
	w.seq++
	key := fmt.Sprintf("churn-%07d", w.seq)
	start := time.Now()
	if _, err := w.sn.Prepare(w.ctx, key, "", snapshots.WithLabels(scaleLabels(1))); err != nil {
		return 0, 0, err
	}
	prepare = time.Since(start)
	start = time.Now()
	err = w.sn.Remove(w.ctx, key)
	return prepare, time.Since(start), err
}

func (w *scaleWorker) randomKey() int { return w.rng.IntN(w.n) }

func (w *scaleWorker) otherKey(i int) int {
	for {
		if j := w.randomKey(); j != i || w.n == 1 {
			return j
		}
	}
}

func (w *scaleWorker) do(args []string) (string, error) {
	var r scaleReply
	ints := make([]int, len(args)-1)
	for i, a := range args[1:] {
		n, err := strconv.Atoi(a)
		if err != nil && args[0] != "sample" {
			return "", fmt.Errorf("%s: bad argument %q", args[0], a)
		}
		ints[i] = n
	}
	d := func(ds ...time.Duration) []int64 {
		ns := make([]int64, len(ds))
		for i, d := range ds {
			ns[i] = d.Nanoseconds()
		}
		return ns
	}
	switch {
	case args[0] == "open" && len(args) == 1:
		t, err := w.open()
		if err != nil {
			return "", err
		}
		r.add("open", d(t)...)
	case args[0] == "walk" && len(args) == 1:
		t, err := w.walk(w.n)
		if err != nil {
			return "", err
		}
		r.add("walk", d(t)...)
	case args[0] == "mem" && len(args) == 1:
		m, err := readScaleMem(true)
		if err != nil {
			return "", err
		}
		r.addMem("", m)
	case args[0] == "populate" && len(args) == 3:
		start := time.Now()
		if err := w.populate(ints[0], ints[1]); err != nil {
			return "", err
		}
		r.add("populate", d(time.Since(start))...)
	case args[0] == "memwalk" && len(args) == 2:
		// RSS before the walk (after a collection), the walk's peak, and
		// what stays resident after it (after a collection).
		pre, err := readScaleMem(true)
		if err != nil {
			return "", err
		}
		// Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS.
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			return "", err
		}
		t, err := w.walk(ints[0])
		if err != nil {
			return "", err
		}
		peak, err := readScaleMem(false)
		if err != nil {
			return "", err
		}
		after, err := readScaleMem(true)
		if err != nil {
			return "", err
		}
		r.add("walk", d(t)...)
		r.addMem("pre_", pre)
		r.add("peak", peak.hwm)
		r.addMem("", after)
	case args[0] == "sample" && len(args) == 2:
		if w.n == 0 {
			return "", fmt.Errorf("sample %s: no population", args[1])
		}
		return w.sample(args[1])
	default:
		return "", fmt.Errorf("unknown command %q", args)
	}
	return r.String(), nil
}

func (w *scaleWorker) sample(kind string) (string, error) {
	var r scaleReply
	ns := func(field string, ds ...time.Duration) {
		vs := make([]int64, len(ds))
		for i, d := range ds {
			vs[i] = d.Nanoseconds()
		}
		r.add(field, vs...)
	}
	switch kind {
	case "walk":
		t, err := w.walk(w.n)
		if err != nil {
			return "", err
		}
		ns("walk", t)
	case "walk-filter":
		t, err := w.walk(scaleSelected(w.n), scaleFilter)
		if err != nil {
			return "", err
		}
		ns("walk", t)
	case "update-walk":
		u, err := w.update(w.randomKey())
		if err != nil {
			return "", err
		}
		t, err := w.walk(w.n)
		if err != nil {
			return "", err
		}
		ns("update", u)
		ns("walk", t)
	case "churn", "churn-walk":
		p, rm, err := w.churn()
		if err != nil {
			return "", err
		}
		ns("prepare", p)
		ns("remove", rm)
		if kind == "churn-walk" {
			t, err := w.walk(w.n)
			if err != nil {
				return "", err
			}
			ns("walk", t)
		}
	case "stat":
		ts := make([]time.Duration, 100)
		for k := range ts {
			t, err := w.stat(w.randomKey())
			if err != nil {
				return "", err
			}
			ts[k] = t
		}
		ns("stat", ts...)
	case "update-stat":
		i := w.randomKey()
		u, err := w.update(i)
		if err != nil {
			return "", err
		}
		t, err := w.stat(w.otherKey(i))
		if err != nil {
			return "", err
		}
		ns("update", u)
		ns("stat", t)
	case "reopen-stat", "reopen-walk":
		w.close()
		o, err := w.open()
		if err != nil {
			return "", err
		}
		ns("open", o)
		var t time.Duration
		if kind == "reopen-stat" {
			t, err = w.stat(w.randomKey())
		} else {
			t, err = w.walk(w.n)
		}
		if err != nil {
			return "", err
		}
		ns(strings.TrimPrefix(kind, "reopen-"), t)
	default:
		return "", fmt.Errorf("unknown sample kind %q", kind)
	}
	return r.String(), nil
}

// scaleMem is the process's resident memory (bytes, from /proc/self/status)
// and what of it the Go runtime holds: Sys - HeapReleased, which after
// debug.FreeOSMemory is the heap in use, stacks and the runtime's own
// structures.
type scaleMem struct {
	rss, anon, file, hwm, goRes int64
}

func readScaleMem(collect bool) (scaleMem, error) {
	if collect {
		debug.FreeOSMemory() // a collection, then the free pages back to the OS
	}
	var m scaleMem
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m, err
	}
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "VmHWM:": &m.hwm}
	var fileKB, shmemKB int64
	fields["RssFile:"], fields["RssShmem:"] = &fileKB, &shmemKB
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			if p := fields[f[0]]; p != nil {
				if *p, err = strconv.ParseInt(f[1], 10, 64); err != nil {
					return m, err
				}
			}
		}
	}
	m.rss, m.anon, m.hwm = m.rss<<10, m.anon<<10, m.hwm<<10
	m.file = (fileKB + shmemKB) << 10
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.goRes = int64(ms.Sys - ms.HeapReleased)
	return m, nil
}

// ---- the parent -----------------------------------------------------------------

// scaleProc is a child process and its two pipes.
type scaleProc struct {
	impl string
	cmd  *exec.Cmd
	w    io.WriteCloser
	r    *bufio.Scanner
	done bool
}

func startScaleProc(b *testing.B, impl, root string) *scaleProc {
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), scaleChildEnv+"="+impl, scaleRootEnv+"="+root)
	cmd.ExtraFiles = []*os.File{cmdR, repW} // fds 3 and 4
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	cmdR.Close()
	repW.Close()
	p := &scaleProc{impl: impl, cmd: cmd, w: cmdW, r: bufio.NewScanner(repR)}
	p.r.Buffer(nil, 1<<20)
	b.Cleanup(func() { p.quit(b) })
	return p
}

// do sends one command and returns the reply's fields.
func (p *scaleProc) do(b *testing.B, args ...any) map[string][]int64 {
	b.Helper()
	line := strings.TrimSpace(fmt.Sprintln(args...))
	if _, err := io.WriteString(p.w, line+"\n"); err != nil {
		b.Fatalf("%s: %s: %v", p.impl, line, err)
	}
	if !p.r.Scan() {
		b.Fatalf("%s: %s: the child ended (%v)", p.impl, line, p.r.Err())
	}
	reply := p.r.Text()
	if msg, ok := strings.CutPrefix(reply, "err "); ok {
		b.Fatalf("%s: %s: %s", p.impl, line, msg)
	}
	rest, ok := strings.CutPrefix(reply, "ok")
	if !ok {
		b.Fatalf("%s: %s: bad reply %q", p.impl, line, reply)
	}
	fields := map[string][]int64{}
	for _, f := range strings.Fields(rest) {
		k, vs, _ := strings.Cut(f, "=")
		for _, v := range strings.Split(vs, ",") {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatalf("%s: %s: bad reply %q", p.impl, line, reply)
			}
			fields[k] = append(fields[k], n)
		}
	}
	return fields
}

// quit ends the child (which closes its snapshotter) and waits for it.
func (p *scaleProc) quit(b *testing.B) {
	if p.done {
		return
	}
	p.done = true
	io.WriteString(p.w, "quit\n")
	p.w.Close()
	if err := p.cmd.Wait(); err != nil {
		b.Errorf("%s: child: %v", p.impl, err)
	}
}

// The results: samples per (row, size, implementation).
type scaleKeyT struct {
	row  string
	n    int
	impl string
}

var scaleResults = struct {
	sync.Mutex
	sizes   []int
	samples map[scaleKeyT][]float64
}{samples: map[scaleKeyT][]float64{}}

func scaleRecord(row string, n int, impl string, vs ...float64) {
	scaleResults.Lock()
	defer scaleResults.Unlock()
	k := scaleKeyT{row, n, impl}
	scaleResults.samples[k] = append(scaleResults.samples[k], vs...)
}

func scaleMedian(row string, n int, impl string) (float64, int) {
	scaleResults.Lock()
	defer scaleResults.Unlock()
	s := scaleResults.samples[scaleKeyT{row, n, impl}]
	if len(s) == 0 {
		return 0, 0
	}
	ds := make([]time.Duration, len(s))
	for i, v := range s {
		ds[i] = time.Duration(v)
	}
	if len(s) == 1 {
		return s[0], 1
	}
	return float64(median(ds)), len(s)
}

func scaleSizes(b *testing.B) []int {
	spec := os.Getenv("BENCH_SCALE_SIZES")
	if spec == "" {
		return []int{1000, 10000, 100000}
	}
	var sizes []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(f), "_", ""))
		if err != nil || n < 100 {
			b.Fatalf("BENCH_SCALE_SIZES=%q: %q is not a number of snapshots (100 or more)", spec, f)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

func BenchmarkScale(b *testing.B) {
	requireRoot(b)
	for _, n := range scaleSizes(b) {
		b.Run(fmt.Sprintf("snapshots=%d", n), func(b *testing.B) {
			if b.N == 1 {
				runScale(b, n)
			}
			walk, _ := scaleMedian(rowScaleWalk, n, implOurs)
			ctrd, _ := scaleMedian(rowScaleWalk, n, implErofs)
			b.ReportMetric(walk, "walk-ns/op")
			b.ReportMetric(ctrd, "containerd-erofs-walk-ns/op")
			if ctrd > 0 {
				b.ReportMetric(walk/ctrd, "walk-ours/containerd-erofs")
			}
		})
	}
	printScaleTable()
}

func runScale(b *testing.B, n int) {
	scaleResults.Lock()
	scaleResults.sizes = append(scaleResults.sizes, n)
	scaleResults.Unlock()
	dir := b.TempDir()
	// Flush what earlier sizes and benchmarks left dirty.
	syscall.Sync()

	// The long-lived children: open on an empty root, one empty walk, the
	// baseline memory.
	procs := make([]*scaleProc, len(scaleImpls))
	base := make([]map[string][]int64, len(scaleImpls))
	for i, impl := range scaleImpls {
		procs[i] = startScaleProc(b, impl, filepath.Join(dir, impl, "root"))
		procs[i].do(b, "open")
		procs[i].do(b, "walk")
		base[i] = procs[i].do(b, "mem")
	}

	// The population, 1,000 snapshots at a time, in rotating order.
	const chunk = 1000
	spent := make([]int64, len(procs))
	for k, from := 0, 0; from < n; k, from = k+1, from+chunk {
		for j := range procs {
			i := (k + j) % len(procs)
			spent[i] += procs[i].do(b, "populate", from, min(n, from+chunk))["populate"][0]
		}
	}
	for i, p := range procs {
		scaleRecord(rowScalePopulate, n, p.impl, float64(spent[i])/float64(n))
	}

	// Memory after one full walk, against the baseline.
	for i, p := range procs {
		m := p.do(b, "memwalk", n)
		per := func(field string) float64 { return float64(m[field][0]-base[i][field][0]) / float64(n) }
		scaleRecord(rowScaleRSS, n, p.impl, per("rss"))
		scaleRecord(rowScaleRSSGo, n, p.impl, per("gores"))
		scaleRecord(rowScaleRSSAnon, n, p.impl, per("anon")-per("gores"))
		scaleRecord(rowScaleRSSFile, n, p.impl, per("file"))
		scaleRecord(rowScalePeak, n, p.impl, float64(m["peak"][0]-m["pre_rss"][0])/float64(n))
	}

	// The timed rows, samples interleaved.
	for _, s := range scaleSamples {
		count := float64(s.base)
		if s.scaled {
			count *= math.Sqrt(1000 / float64(n))
		}
		count = max(1, math.Round(count*(*sampleScale)))
		for k := 0; k < int(count); k++ {
			for j := range procs {
				p := procs[(k+j)%len(procs)]
				reply := p.do(b, "sample", s.kind)
				for field, row := range s.rows {
					for _, v := range reply[field] {
						scaleRecord(row, n, p.impl, float64(v))
					}
				}
			}
		}
	}
	for _, p := range procs {
		p.quit(b)
	}

	// A new process on the populated root: memory after open and one full
	// walk, less the same on an empty root (open's fixed cost).
	for _, impl := range scaleImpls {
		empty := scaleFreshMem(b, impl, filepath.Join(dir, impl+"-empty", "root"), 0)
		full := scaleFreshMem(b, impl, filepath.Join(dir, impl, "root"), n)
		per := func(field string) float64 { return float64(full[field]-empty[field]) / float64(n) }
		scaleRecord(rowScaleFreshRSS, n, impl, per("rss"))
		scaleRecord(rowScaleFreshRSSGo, n, impl, per("gores"))
		scaleRecord(rowScaleFreshRSSAnon, n, impl, per("anon")-per("gores"))
		scaleRecord(rowScaleFreshRSSFile, n, impl, per("file"))
	}
}

// scaleFreshMem runs a new child that opens root, walks its n snapshots
// once, and returns its memory growth since before the open.
func scaleFreshMem(b *testing.B, impl, root string, n int) map[string]int64 {
	p := startScaleProc(b, impl, root)
	before := p.do(b, "mem")
	p.do(b, "open")
	after := p.do(b, "memwalk", n)
	p.quit(b)
	growth := map[string]int64{}
	for _, f := range []string{"rss", "anon", "file", "gores"} {
		growth[f] = after[f][0] - before[f][0]
	}
	return growth
}

func fmtBytes(v float64) string {
	switch a := math.Abs(v); {
	case a < 10*1024:
		return fmt.Sprintf("%.0f B", v)
	case a < 10*1024*1024:
		return fmt.Sprintf("%.1f KiB", v/1024)
	default:
		return fmt.Sprintf("%.1f MiB", v/(1024*1024))
	}
}

func printScaleTable() {
	scaleResults.Lock()
	sizes := scaleResults.sizes
	scaleResults.Unlock()
	if len(sizes) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nScale: medians, in parentheses the samples (ours/containerd-erofs); memory in bytes per snapshot\n")
	fmt.Fprintf(&b, "(new process: less the same on an empty root):\n\n")
	fmt.Fprintf(&b, "| operation | snapshots | ours | containerd erofs | ours / containerd erofs |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|\n")
	for _, row := range scaleRows {
		for _, n := range sizes {
			ours, n1 := scaleMedian(row.id, n, implOurs)
			ctrd, n2 := scaleMedian(row.id, n, implErofs)
			if n1 == 0 && n2 == 0 {
				continue
			}
			format, label := fmtBytes, row.label
			if !row.bytes {
				format = func(v float64) string { return fmtDur(time.Duration(v)) }
				if n1 > 1 || n2 > 1 {
					label = fmt.Sprintf("%s (%d/%d)", row.label, n1, n2)
				}
			}
			ratio := "-"
			if ours > 0 && ctrd > 0 {
				ratio = fmt.Sprintf("%.2f", ours/ctrd)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", label, fmtCount(n), format(ours), format(ctrd), ratio)
		}
	}
	fmt.Print(b.String())
}

// fmtCount writes n with thousands separators (100,000).
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
