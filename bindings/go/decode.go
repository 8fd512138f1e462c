package erofs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// A small decoder for the library's three JSON shapes (info, infos, mounts):
// Stat, Walk and Mounts are on hot paths, where encoding/json's reflection
// cost more than the library call. A Stat's or Mounts' input (borrowed
// from C memory) is copied into one Go string once, and decoded strings
// without escapes are substrings of it. A Walk's is read in place and each
// info gets copies of its own strings (label keys copied once per Walk):
// at 100,000 snapshots the one copy of the 50 MB document cost more than
// the decode, and every info kept by the caller pinned all of it. Unknown
// fields are skipped; times come from the integer created_ns and
// updated_ns, so no date is parsed.
//
// It earns its place (BenchmarkDecode in decode_test.go, the library's
// documents decoded both ways; Go 1.26 on the 2-CPU test machine): a Stat
// decodes in 0.44 µs with 1 allocation against 2.0 µs and 9 with
// encoding/json (4.6 times), a Walk of 1,000 snapshots in 0.61 ms and 4,004
// allocations against 2.5 ms and 8,019 (4.1 times). Even
// GOEXPERIMENT=jsonv2 takes 2.8 and 2.3 times as long.

type decoder struct {
	b   string
	i   int
	err error
	// borrowed: b is the caller's memory, valid only during the decode;
	// every string an info keeps is copied out of it (see own).
	borrowed bool
	// keys: label keys copied so far, which repeat from one info to the
	// next (a walk copies each once, not once per info).
	keys map[string]string
}

// maxInternedKeys bounds keys: a walk whose label keys are all different
// copies each, and holds no more.
const maxInternedKeys = 256

// own is s, safe to keep after the decode.
func (d *decoder) own(s string) string {
	if !d.borrowed || s == "" {
		return s
	}
	return strings.Clone(s)
}

// key is label key s, safe to keep: copied once per decode.
func (d *decoder) key(s string) string {
	if !d.borrowed {
		return s
	}
	if k, ok := d.keys[s]; ok {
		return k
	}
	k := strings.Clone(s)
	if d.keys == nil {
		d.keys = make(map[string]string)
	}
	if len(d.keys) < maxInternedKeys {
		d.keys[k] = k
	}
	return k
}

func decodeInfo(b []byte, info *snapshots.Info) error {
	d := decoder{b: string(b)}
	d.info(info)
	return d.finish("info")
}

// minInfoJSON is the length of the shortest info the library writes (a
// one-character name, no parent or labels, times of 30 characters and 0).
const minInfoJSON = 166

func decodeInfos(b []byte, infos *[]snapshots.Info) error {
	// At most this many: one allocation instead of a growing slice.
	out := make([]snapshots.Info, 0, len(b)/minInfoJSON+1)
	err := decodeEachInfo(b, func(info snapshots.Info) error {
		out = append(out, info)
		return nil
	})
	*infos = out
	return err
}

// decodeEachInfo calls fn with each info of the array b in turn, keeping
// none: a Walk of many snapshots holds one info at a time, not all of them.
// It stops at fn's first error, which it returns. b is read in place (a
// Walk of 100,000 snapshots is 50 MB, whose copy cost more than the
// decode), so the infos hold copies of only their own strings, and none
// pins b; b must not change during the call.
func decodeEachInfo(b []byte, fn func(snapshots.Info) error) error {
	if len(b) == 0 {
		b = []byte(" ")
	}
	d := decoder{b: unsafe.String(&b[0], len(b)), borrowed: true}
	var ferr error
	d.array(func() {
		var info snapshots.Info
		d.info(&info)
		if d.err == nil && ferr == nil {
			ferr = fn(info)
		}
		if ferr != nil && d.err == nil {
			d.err = errStop
		}
	})
	if ferr != nil {
		return ferr
	}
	return d.finish("infos")
}

// errStop ends decodeEachInfo's array when its function failed.
var errStop = fmt.Errorf("stopped")

func decodeMounts(b []byte, mounts *[]mount.Mount) error {
	d := decoder{b: string(b)}
	var out []mount.Mount
	d.array(func() {
		var m mount.Mount
		d.object(func(key string) {
			switch key {
			case "type":
				m.Type = d.str()
			case "source":
				m.Source = d.str()
			case "target":
				m.Target = d.str()
			case "options":
				m.Options = d.strings()
			default:
				d.skip()
			}
		})
		out = append(out, m)
	})
	*mounts = out
	return d.finish("mounts")
}

func (d *decoder) finish(what string) error {
	d.ws()
	if d.err == nil && d.i != len(d.b) {
		d.fail("trailing data")
	}
	if d.err != nil {
		return fmt.Errorf("decode %s from the library: %v: %w", what, d.err, errdefs.ErrInternal)
	}
	return nil
}

func (d *decoder) info(info *snapshots.Info) {
	d.object(func(key string) {
		switch key {
		case "kind":
			info.Kind = parseKind(d.str())
		case "name":
			info.Name = d.own(d.str())
		case "parent":
			info.Parent = d.own(d.str())
		case "labels":
			info.Labels = d.labels()
		case "created_ns":
			info.Created = d.unixNano()
		case "updated_ns":
			info.Updated = d.unixNano()
		default:
			d.skip()
		}
	})
}

func parseKind(s string) snapshots.Kind {
	switch s {
	case "active":
		return snapshots.KindActive
	case "committed":
		return snapshots.KindCommitted
	case "view":
		return snapshots.KindView
	}
	return snapshots.ParseKind(s)
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("offset %d: %s", d.i, fmt.Sprintf(format, args...))
	}
	d.i = len(d.b)
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte (0 at the end).
func (d *decoder) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *decoder) expect(c byte) {
	if d.peek() != c {
		d.fail("expected %q", c)
		return
	}
	d.i++
}

// null consumes a JSON null if one is next.
func (d *decoder) null() bool {
	if d.peek() == 'n' && len(d.b)-d.i >= 4 && d.b[d.i:d.i+4] == "null" {
		d.i += 4
		return true
	}
	return false
}

func (d *decoder) object(field func(key string)) {
	if d.null() {
		return
	}
	d.expect('{')
	if d.peek() == '}' {
		d.i++
		return
	}
	for d.err == nil {
		key := d.str()
		d.expect(':')
		field(key)
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.fail("expected ',' or '}'")
		}
	}
}

func (d *decoder) array(elem func()) {
	if d.null() {
		return
	}
	d.expect('[')
	if d.peek() == ']' {
		d.i++
		return
	}
	for d.err == nil {
		elem()
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return
		default:
			d.fail("expected ',' or ']'")
		}
	}
}

// str returns a substring of the input, or a new string if it has escapes.
func (d *decoder) str() string {
	if d.null() {
		return ""
	}
	d.expect('"')
	if d.err != nil {
		return ""
	}
	// The closing quote, found with the vectorized IndexByte; a backslash
	// or a control character before it takes the slow path.
	end := strings.IndexByte(d.b[d.i:], '"')
	if end < 0 {
		d.fail("unterminated string")
		return ""
	}
	s := d.b[d.i : d.i+end]
	for j := 0; j < len(s); j++ {
		if c := s[j]; c == '\\' || c < 0x20 {
			return d.slowStr(d.i)
		}
	}
	d.i += end + 1
	return s
}

// slowStr reads a string with escapes (or a control character, an error)
// from start, as the library writes only rarely.
func (d *decoder) slowStr(start int) string {
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			d.i++
			return d.b[start : d.i-1]
		case c == '\\':
			return string(d.unescape(start))
		case c < 0x20:
			d.fail("control character in string")
			return ""
		default:
			d.i++
		}
	}
	d.fail("unterminated string")
	return ""
}

func (d *decoder) unescape(start int) []byte {
	out := append([]byte(nil), d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return out
		case c < 0x20:
			d.fail("control character in string")
			return nil
		case c != '\\':
			out = append(out, c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.b) {
			break
		}
		e := d.b[d.i+1]
		d.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := d.hex4()
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
					d.i += 2
					r2 = d.hex4()
				}
				r = utf16.DecodeRune(r, r2)
			}
			out = utf8.AppendRune(out, r)
		default:
			d.fail("bad escape \\%c", e)
			return nil
		}
	}
	d.fail("unterminated string")
	return nil
}

func (d *decoder) hex4() rune {
	if d.i+4 > len(d.b) {
		d.fail("short \\u escape")
		return utf8.RuneError
	}
	v, err := strconv.ParseUint(d.b[d.i:d.i+4], 16, 32)
	if err != nil {
		d.fail("bad \\u escape")
		return utf8.RuneError
	}
	d.i += 4
	return rune(v)
}

func (d *decoder) strings() []string {
	if d.null() {
		return nil
	}
	out := []string{}
	d.array(func() { out = append(out, d.str()) })
	return out
}

// labels returns nil for no labels, as containerd's storage does.
func (d *decoder) labels() map[string]string {
	var m map[string]string
	d.object(func(key string) {
		if m == nil {
			m = make(map[string]string, 1)
		}
		m[d.key(key)] = d.own(d.str())
	})
	return m
}

// unixNano reads the library's integer nanoseconds since the Unix epoch
// (created_ns, updated_ns) as a UTC time; the RFC 3339 strings beside them
// are skipped.
func (d *decoder) unixNano() time.Time {
	d.ws()
	start := d.i
	neg := d.i < len(d.b) && d.b[d.i] == '-'
	if neg {
		d.i++
	}
	var u uint64
	digits := 0
	for ; d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9'; d.i++ {
		u = u*10 + uint64(d.b[d.i]-'0')
		digits++
	}
	// 19 digits never overflow a uint64; an int64 holds -(1<<63) to 1<<63 - 1.
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	if digits == 0 || digits > 19 || u > limit {
		d.fail("bad nanosecond time %q", d.b[start:d.i])
		return time.Time{}
	}
	n := int64(u) // 1<<63 becomes -1<<63, its own negation
	if neg {
		n = -n
	}
	return time.Unix(0, n).UTC()
}

// skip consumes one value of any type.
func (d *decoder) skip() {
	switch c := d.peek(); {
	case c == '{':
		d.object(func(string) { d.skip() })
	case c == '[':
		d.array(d.skip)
	case c == '"':
		d.str()
	default:
		start := d.i
		for d.i < len(d.b) {
			switch d.b[d.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if d.i == start {
					d.fail("expected a value")
				}
				return
			}
			d.i++
		}
		if d.i == start {
			d.fail("expected a value")
		}
	}
}
