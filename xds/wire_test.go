package xds

import (
	"bytes"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// A wire value encodes as its resource, through every path go-control-plane
// and gRPC use, and reads like its resource otherwise.
func TestWire(t *testing.T) {
	c := &clusterv3.Cluster{Name: "outbound|9080||reviews.bookinfo.svc.cluster.local", ConnectTimeout: durationpb.New(10e9),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	e := newHasher().encode(c)
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]func() ([]byte, error){
		"MarshalResource": func() ([]byte, error) { return cachev3.MarshalResource(e.wire) },
		"proto.Marshal":   func() ([]byte, error) { return proto.Marshal(e.wire) },
		"anypb.New": func() ([]byte, error) {
			a, err := anypb.New(e.wire)
			return a.GetValue(), err
		},
	} {
		b, err := got()
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s: %x, %v; want %x", name, b, err, want)
		}
	}
	if proto.Size(e.wire) != len(want) {
		t.Errorf("size %d, want %d", proto.Size(e.wire), len(want))
	}
	if e.version != cachev3.HashResource(want) {
		t.Errorf("version %s is not go-control-plane's digest", e.version)
	}
	if resourceName(e.wire) != c.GetName() || !proto.Equal(unwrap(e.wire), c) {
		t.Error("the wire value does not read as its resource")
	}
	js, err := protojson.Marshal(e.wire)
	if err != nil || !bytes.Contains(js, []byte("reviews.bookinfo")) {
		t.Errorf("protojson: %s, %v", js, err)
	}
}
