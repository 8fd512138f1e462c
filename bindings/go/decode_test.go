package erofs

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
)

// The hand-written decoder agrees with encoding/json; its times come from the
// integer nanoseconds (created_ns, updated_ns), the RFC 3339 strings' instants.
func TestDecodeMatchesEncodingJSON(t *testing.T) {
	infos := []string{
		`{"kind":"active","name":"k","parent":"","labels":{},"created":"2025-03-04T05:06:07.123456789Z","updated":"2025-03-04T05:06:07.123456789Z","created_ns":1741064767123456789,"updated_ns":1741064767123456789}`,
		`{"kind":"committed","name":"a\"b\\c\n\u0001\u00e9\ud83d\ude00/é","parent":"p","labels":{"x":"y","containerd.io/gc.root":"2020-01-01T00:00:00Z","":"\t"},"created":"1970-01-01T00:00:00.000000000Z","updated":"2262-04-11T23:47:16.854775807Z","created_ns":0,"updated_ns":9223372036854775807}`,
		` { "kind" : "view" , "name" : "v" , "labels" : null , "future" : {"a":[1,2.5e3,true,null,"s"]}, "created" : "1969-12-31T23:59:59.999999999Z" , "updated":"2025-03-04T03:06:07.500000000Z", "created_ns" : -1 , "updated_ns":1741057567500000000 } `,
	}
	for _, doc := range infos {
		var want, got snapshots.Info
		if err := json.Unmarshal([]byte(doc), &want); err != nil {
			t.Fatal(err)
		}
		if len(want.Labels) == 0 {
			want.Labels = nil
		}
		if err := decodeInfo([]byte(doc), &got); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if !reflect.DeepEqual(got, want) || !got.Created.Equal(want.Created) || !got.Updated.Equal(want.Updated) {
			t.Errorf("%s\n got %#v\nwant %#v", doc, got, want)
		}
	}

	list := "[" + infos[0] + "," + infos[1] + "]"
	var gotInfos []snapshots.Info
	if err := decodeInfos([]byte(list), &gotInfos); err != nil || len(gotInfos) != 2 || gotInfos[1].Parent != "p" {
		t.Fatalf("infos: %v %+v", err, gotInfos)
	}
	// A Walk function's error stops the decoding there, and is returned.
	calls, stop := 0, errors.New("enough")
	if err := decodeEachInfo([]byte(list), func(snapshots.Info) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("decodeEachInfo stopped by its function: %v after %d calls", err, calls)
	}
	// The infos of a walk are read from the library's memory in place,
	// which is freed after the call: they keep copies of their strings.
	buf := []byte(list)
	if err := decodeInfos(buf, &gotInfos); err != nil {
		t.Fatal(err)
	}
	kept := append([]snapshots.Info(nil), gotInfos...)
	for i := range kept {
		kept[i].Labels = maps.Clone(kept[i].Labels)
	}
	for i := range buf {
		buf[i] = 'X'
	}
	if !reflect.DeepEqual(gotInfos, kept) || gotInfos[1].Parent != "p" {
		t.Errorf("infos changed with the memory they were decoded from: %+v", gotInfos)
	}
	if err := decodeInfos([]byte("[]"), &gotInfos); err != nil || len(gotInfos) != 0 {
		t.Fatalf("empty infos: %v %+v", err, gotInfos)
	}

	mounts := `[{"type":"overlay","source":"overlay","options":["index=off","workdir=/a/w","upperdir=/a/u","lowerdir=/b\\:c:/d"]},{"type":"bind","source":"/x","target":"sub","options":[]}]`
	var want, got []mount.Mount
	if err := json.Unmarshal([]byte(mounts), &want); err != nil {
		t.Fatal(err)
	}
	if err := decodeMounts([]byte(mounts), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mounts\n got %#v\nwant %#v", got, want)
	}

	for _, bad := range []string{``, `{`, `{"kind":"active"`, `{"name":1}`, `{"name":"a\q"}`, `{"created_ns":"yesterday"}`, `{"updated_ns":1.5}`, `{"created_ns":}`, `{"created_ns":99999999999999999999}`, `{"created_ns":9223372036854775808}`, `{"created_ns":-}`, `{"name":"a\"}`, `{"name":"a`, `{} x`, `{"name":"a` + "\x01" + `"}`} {
		var info snapshots.Info
		if err := decodeInfo([]byte(bad), &info); !errdefs.IsInternal(err) {
			t.Errorf("%q: got %v", bad, err)
		}
	}
	var edge snapshots.Info
	if err := decodeInfo([]byte(`{"created_ns":-9223372036854775808,"updated_ns":9223372036854775807}`), &edge); err != nil ||
		!edge.Created.Equal(time.Unix(0, math.MinInt64)) || !edge.Updated.Equal(time.Unix(0, math.MaxInt64)) {
		t.Errorf("extreme times: %v %v %v", err, edge.Created, edge.Updated)
	}
}

// ---- the hand-written decoder against encoding/json --------------------------

// The documents the library writes (src/ffi/wire.rs, same fields in the same
// order): the Stat of one committed layer, and the Walk of BenchmarkWalk
// (1,000 active snapshots, each with a gc.root label).
type libInfo struct {
	Kind      string            `json:"kind"`
	Name      string            `json:"name"`
	Parent    string            `json:"parent"`
	Labels    map[string]string `json:"labels"`
	Created   string            `json:"created"`
	Updated   string            `json:"updated"`
	CreatedNS int64             `json:"created_ns"`
	UpdatedNS int64             `json:"updated_ns"`
}

func newLibInfo(kind, name string, labels map[string]string, ns int64) libInfo {
	ts := time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.000000000Z")
	if labels == nil {
		labels = map[string]string{}
	}
	return libInfo{kind, name, "", labels, ts, ts, ns, ns}
}

func benchDocs(tb testing.TB) (stat, walk []byte) {
	ns := time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC).UnixNano()
	stat, err := json.Marshal(newLibInfo("committed", "layer-2", nil, ns))
	if err != nil {
		tb.Fatal(err)
	}
	infos := make([]libInfo, 1000)
	for i := range infos {
		infos[i] = newLibInfo("active", fmt.Sprintf("walk-%d", i+2),
			map[string]string{"containerd.io/gc.root": "2025-01-01T00:00:00Z"}, ns+int64(i)*1000)
	}
	walk, err = json.Marshal(infos)
	if err != nil {
		tb.Fatal(err)
	}
	return stat, walk
}

// The shape encoding/json would decode the library's infos into.
type stdInfo struct {
	Kind      string            `json:"kind"`
	Name      string            `json:"name"`
	Parent    string            `json:"parent"`
	Labels    map[string]string `json:"labels"`
	CreatedNS int64             `json:"created_ns"`
	UpdatedNS int64             `json:"updated_ns"`
}

func (d *stdInfo) info() snapshots.Info {
	info := snapshots.Info{Kind: parseKind(d.Kind), Name: d.Name, Parent: d.Parent, Labels: d.Labels,
		Created: time.Unix(0, d.CreatedNS).UTC(), Updated: time.Unix(0, d.UpdatedNS).UTC()}
	if len(info.Labels) == 0 {
		info.Labels = nil
	}
	return info
}

func stdDecodeInfo(b []byte, info *snapshots.Info) error {
	var d stdInfo
	if err := json.Unmarshal(b, &d); err != nil {
		return err
	}
	*info = d.info()
	return nil
}

func stdDecodeInfos(b []byte, infos *[]snapshots.Info) error {
	var ds []stdInfo
	if err := json.Unmarshal(b, &ds); err != nil {
		return err
	}
	out := make([]snapshots.Info, len(ds))
	for i := range ds {
		out[i] = ds[i].info()
	}
	*infos = out
	return nil
}

// The encoding/json decoder of the benchmark decodes as the hand-written one.
func TestStdDecodeAgrees(t *testing.T) {
	stat, walk := benchDocs(t)
	var a, c snapshots.Info
	if err := decodeInfo(stat, &a); err != nil {
		t.Fatal(err)
	}
	if err := stdDecodeInfo(stat, &c); err != nil || !reflect.DeepEqual(a, c) {
		t.Fatalf("%v\n%#v\n%#v", err, a, c)
	}
	var as, cs []snapshots.Info
	if err := decodeInfos(walk, &as); err != nil {
		t.Fatal(err)
	}
	if err := stdDecodeInfos(walk, &cs); err != nil || len(as) != 1000 || !reflect.DeepEqual(as, cs) {
		t.Fatalf("%v %d %d", err, len(as), len(cs))
	}
}

// go test -run '^$' -bench Decode -benchmem -count 5 .
func BenchmarkDecode(b *testing.B) {
	stat, walk := benchDocs(b)
	b.Run("stat/hand-written", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var info snapshots.Info
			if err := decodeInfo(stat, &info); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stat/encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var info snapshots.Info
			if err := stdDecodeInfo(stat, &info); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("walk1000/hand-written", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var infos []snapshots.Info
			if err := decodeInfos(walk, &infos); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("walk1000/encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var infos []snapshots.Info
			if err := stdDecodeInfos(walk, &infos); err != nil {
				b.Fatal(err)
			}
		}
	})
}
