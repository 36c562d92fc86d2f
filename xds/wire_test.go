package xds

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// A wire value encodes as its resource, through every path go-control-plane
// and gRPC use, and decodes back to it.
func TestWire(t *testing.T) {
	c := &clusterv3.Cluster{Name: "outbound|9080||reviews.bookinfo.svc.cluster.local", ConnectTimeout: durationpb.New(10e9),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	item, version := encode(c)
	w := item.Resource
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]func() ([]byte, error){
		"MarshalResource": func() ([]byte, error) { return cachev3.MarshalResource(w) },
		"proto.Marshal":   func() ([]byte, error) { return proto.Marshal(w) },
		"anypb.New": func() ([]byte, error) {
			a, err := anypb.New(w)
			return a.GetValue(), err
		},
	} {
		b, err := got()
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s: %x, %v; want %x", name, b, err, want)
		}
	}
	if proto.Size(w) != len(want) {
		t.Errorf("size %d, want %d", proto.Size(w), len(want))
	}
	if sum := sha256.Sum256(want); version != hex.EncodeToString(sum[:8]) {
		t.Errorf("version %s is not the digest of the encoding", version)
	}
	changed := proto.Clone(c).(*clusterv3.Cluster)
	changed.Name += "-2"
	if _, v := encode(changed); v == version {
		t.Error("a different resource has the same version")
	}
	if m, err := decode(w); cachev3.GetResourceName(w) != c.GetName() || err != nil || !proto.Equal(m, c) {
		t.Error("the wire value does not read as its resource")
	}
	if _, ok := w.(*wire); !ok {
		t.Fatalf("encode gave a %T, not a wire value", w)
	}
	// The message is not kept: the wire value reflects as an empty one of
	// its type.
	if js, err := protojson.Marshal(w); err != nil || string(js) != "{}" {
		t.Errorf("protojson of the wire value: %s, %v", js, err)
	}
}
