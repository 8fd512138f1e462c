package main

// A Prometheus endpoint (text exposition format 0.0.4), off unless
// --metrics-address (metrics_address) is set: request counts by operation
// and gRPC code, their latencies, errors by kind, layers applied and their
// bytes, and the trash backlog. Written out here rather than with a client
// library: a handful of counters needs no dependency.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	erofs "github.com/erofs-snapshotter/erofs-snapshotter/bindings/go"
)

// latencyBuckets are the histogram's upper bounds, in seconds.
var latencyBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120}

type opKey struct {
	op   string
	code codes.Code
}

type histogram struct {
	buckets []uint64 // cumulative at render time; per bucket here
	count   uint64
	sum     float64
}

type metrics struct {
	mu           sync.Mutex
	requests     map[opKey]uint64
	latency      map[string]*histogram
	layers       uint64
	layerBytes   uint64
	applySeconds float64
	root         string // the library's root, for the trash backlog
	started      time.Time
}

func newMetrics(root string) *metrics {
	return &metrics{requests: map[opKey]uint64{}, latency: map[string]*histogram{}, root: root, started: time.Now()}
}

// operation is a gRPC method's last element ("/containerd.services.snapshots.v1.Snapshots/Prepare": "Prepare").
func operation(fullMethod string) string {
	if i := strings.LastIndexByte(fullMethod, '/'); i >= 0 {
		return fullMethod[i+1:]
	}
	return fullMethod
}

// request records one request (nil receiver: metrics are off).
func (m *metrics) request(fullMethod string, d time.Duration, code codes.Code) {
	if m == nil {
		return
	}
	op := operation(fullMethod)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[opKey{op, code}]++
	h := m.latency[op]
	if h == nil {
		h = &histogram{buckets: make([]uint64, len(latencyBuckets))}
		m.latency[op] = h
	}
	s := d.Seconds()
	for i, b := range latencyBuckets {
		if s <= b {
			h.buckets[i]++
			break
		}
	}
	h.count++
	h.sum += s
}

// applied records a layer the differ applied: its size as given.
func (m *metrics) applied(size int64, d time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.layers++
	if size > 0 {
		m.layerBytes += uint64(size)
	}
	m.applySeconds += d.Seconds()
}

// errorKind is containerd's errdefs name of a gRPC code.
func errorKind(c codes.Code) string {
	switch c {
	case codes.InvalidArgument:
		return "invalid_argument"
	case codes.NotFound:
		return "not_found"
	case codes.AlreadyExists:
		return "already_exists"
	case codes.FailedPrecondition:
		return "failed_precondition"
	case codes.Unavailable:
		return "unavailable"
	case codes.Unimplemented:
		return "not_implemented"
	case codes.Canceled:
		return "canceled"
	case codes.DeadlineExceeded:
		return "deadline_exceeded"
	default:
		return "internal"
	}
}

// write renders the metrics into w: under the lock into a buffer, so a
// slow scraper never holds up the requests that count themselves.
func (m *metrics) write(w io.Writer) {
	var buf bytes.Buffer
	m.render(&buf)
	if entries, err := os.ReadDir(filepath.Join(m.root, "trash")); err == nil {
		buf.WriteString("# HELP erofs_snapshotter_trash_entries Directories and files waiting for background deletion.\n")
		buf.WriteString("# TYPE erofs_snapshotter_trash_entries gauge\n")
		fmt.Fprintf(&buf, "erofs_snapshotter_trash_entries %d\n", len(entries))
	}
	_, _ = w.Write(buf.Bytes())
}

func (m *metrics) render(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# HELP erofs_snapshotter_build_info The daemon's and the library's versions.\n")
	p("# TYPE erofs_snapshotter_build_info gauge\n")
	p("erofs_snapshotter_build_info{version=%q,library=%q} 1\n", version, erofs.Version())
	p("# HELP erofs_snapshotter_uptime_seconds Seconds since the daemon started.\n")
	p("# TYPE erofs_snapshotter_uptime_seconds gauge\n")
	p("erofs_snapshotter_uptime_seconds %g\n", time.Since(m.started).Seconds())

	keys := make([]opKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].op != keys[j].op {
			return keys[i].op < keys[j].op
		}
		return keys[i].code < keys[j].code
	})
	p("# HELP erofs_snapshotter_requests_total Requests served, by operation and gRPC code.\n")
	p("# TYPE erofs_snapshotter_requests_total counter\n")
	for _, k := range keys {
		p("erofs_snapshotter_requests_total{operation=%q,code=%q} %d\n", k.op, k.code.String(), m.requests[k])
	}
	errs := map[[2]string]uint64{}
	for _, k := range keys {
		if k.code != codes.OK {
			errs[[2]string{k.op, errorKind(k.code)}] += m.requests[k]
		}
	}
	ekeys := make([][2]string, 0, len(errs))
	for k := range errs {
		ekeys = append(ekeys, k)
	}
	sort.Slice(ekeys, func(i, j int) bool { return ekeys[i][0]+ekeys[i][1] < ekeys[j][0]+ekeys[j][1] })
	p("# HELP erofs_snapshotter_errors_total Failed requests, by operation and errdefs kind.\n")
	p("# TYPE erofs_snapshotter_errors_total counter\n")
	for _, k := range ekeys {
		p("erofs_snapshotter_errors_total{operation=%q,kind=%q} %d\n", k[0], k[1], errs[k])
	}

	ops := make([]string, 0, len(m.latency))
	for op := range m.latency {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	p("# HELP erofs_snapshotter_request_duration_seconds Time to serve a request, by operation.\n")
	p("# TYPE erofs_snapshotter_request_duration_seconds histogram\n")
	for _, op := range ops {
		h := m.latency[op]
		var cum uint64
		for i, b := range latencyBuckets {
			cum += h.buckets[i]
			p("erofs_snapshotter_request_duration_seconds_bucket{operation=%q,le=\"%g\"} %d\n", op, b, cum)
		}
		p("erofs_snapshotter_request_duration_seconds_bucket{operation=%q,le=\"+Inf\"} %d\n", op, h.count)
		p("erofs_snapshotter_request_duration_seconds_sum{operation=%q} %g\n", op, h.sum)
		p("erofs_snapshotter_request_duration_seconds_count{operation=%q} %d\n", op, h.count)
	}

	p("# HELP erofs_snapshotter_layers_applied_total Layers the differ applied (converted to EROFS).\n")
	p("# TYPE erofs_snapshotter_layers_applied_total counter\n")
	p("erofs_snapshotter_layers_applied_total %d\n", m.layers)
	p("# HELP erofs_snapshotter_applied_bytes_total Bytes of the layers applied, as given (compressed).\n")
	p("# TYPE erofs_snapshotter_applied_bytes_total counter\n")
	p("erofs_snapshotter_applied_bytes_total %d\n", m.layerBytes)
	p("# HELP erofs_snapshotter_apply_seconds_total Seconds spent applying layers.\n")
	p("# TYPE erofs_snapshotter_apply_seconds_total counter\n")
	p("erofs_snapshotter_apply_seconds_total %g\n", m.applySeconds)
}

// serveMetrics listens on addr (host:port) and serves /metrics until the
// listener is closed; it returns the listener.
func serveMetrics(addr string, m *metrics) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.write(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && err != http.ErrServerClosed && !strings.Contains(err.Error(), "use of closed") {
			log.L.WithError(err).Warn("metrics endpoint stopped")
		}
	}()
	return l, nil
}

// unary and stream count requests (interceptors; a nil receiver counts nothing).
func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.request(info.FullMethod, time.Since(start), status.Code(err))
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	m.request(info.FullMethod, time.Since(start), status.Code(err))
	return err
}
