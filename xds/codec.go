package xds

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// plainCodec is gRPC's proto codec without its buffer pool for what the
// server sends. gRPC encodes every message into a pooled buffer; the
// controller's messages are few and large (a node's whole cluster list), and
// the pool kept a buffer of that size per stream alive between pushes —
// more than half the controller's heap with 100 nodes of a 1,000-Service
// mesh. Plain slices go back to the garbage collector once written.
type plainCodec struct{}

var _ encoding.CodecV2 = plainCodec{}

func (plainCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("xds codec: %T is not a protobuf message", v)
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(data)}, nil
}

func (plainCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("xds codec: %T is not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Name is the content subtype it serves: the standard one.
func (plainCodec) Name() string { return "proto" }
