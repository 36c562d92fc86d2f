package xds

import (
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/runtime/protoiface"
)

// wire is a resource kept only as its wire encoding, computed once.
//
// go-control-plane marshals every resource again for every response — for
// every node — so a configuration shared by a hundred nodes would be
// encoded a hundred times on each push; and the messages themselves are
// several times larger in memory than their encoding (a 10,000-Service
// generation: about 180 MB of messages for 45 MB of encodings). Snapshots
// hold wire values instead of messages: marshaling one returns the bytes it
// was created with (they are also what its version is a digest of), its
// name answers go-control-plane's GetResourceName, and its reflection is an
// empty message of its type (enough for the type's descriptor, which is all
// the marshaling path reads). Whoever needs the message — the debug
// endpoint, NACK tracing, the gRPC view — decodes it.
type wire struct {
	name  string
	typ   protoreflect.MessageType
	bytes []byte
}

// GetName makes a wire value a types.ResourceWithName: go-control-plane's
// GetResourceName reads it.
func (w *wire) GetName() string { return w.name }

func (w *wire) ProtoReflect() protoreflect.Message {
	return &wireMessage{Message: w.typ.Zero(), w: w}
}

// decode returns the message a resource held by a snapshot stands for.
func decode(r types.Resource) (types.Resource, error) {
	w, ok := r.(*wire)
	if !ok {
		return r, nil
	}
	m := w.typ.New().Interface()
	if err := proto.Unmarshal(w.bytes, m); err != nil {
		return nil, fmt.Errorf("decoding %s %s: %w", w.typ.Descriptor().FullName(), w.name, err)
	}
	return m, nil
}

// decodeItems decodes a snapshot's resources of one type, sorted by name.
func decodeItems(items map[string]types.ResourceWithTTL) ([]types.Resource, error) {
	names := make([]string, 0, len(items))
	for n := range items {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]types.Resource, 0, len(names))
	for _, n := range names {
		m, err := decode(items[n].Resource)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// wireMessage is an empty message of the resource's type with the encoding
// methods replaced.
type wireMessage struct {
	protoreflect.Message
	w *wire
}

func (m *wireMessage) Interface() protoreflect.ProtoMessage { return m.w }

func (m *wireMessage) ProtoMethods() *protoiface.Methods { return &wireMethods }

var wireMethods = protoiface.Methods{
	Flags: protoiface.SupportMarshalDeterministic,
	Size: func(in protoiface.SizeInput) protoiface.SizeOutput {
		return protoiface.SizeOutput{Size: len(in.Message.(*wireMessage).w.bytes)}
	},
	Marshal: func(in protoiface.MarshalInput) (protoiface.MarshalOutput, error) {
		return protoiface.MarshalOutput{Buf: append(in.Buf, in.Message.(*wireMessage).w.bytes...)}, nil
	},
	CheckInitialized: func(protoiface.CheckInitializedInput) (protoiface.CheckInitializedOutput, error) {
		// Validated before it was encoded.
		return protoiface.CheckInitializedOutput{}, nil
	},
}
