package erofs

import (
	"encoding/json"
	"reflect"
	"testing"

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

	for _, bad := range []string{``, `{`, `{"kind":"active"`, `{"name":1}`, `{"name":"a\q"}`, `{"created_ns":"yesterday"}`, `{"updated_ns":1.5}`, `{"created_ns":}`, `{"created_ns":99999999999999999999}`, `{} x`, `{"name":"a` + "\x01" + `"}`} {
		var info snapshots.Info
		if err := decodeInfo([]byte(bad), &info); !errdefs.IsInternal(err) {
			t.Errorf("%q: got %v", bad, err)
		}
	}
}
