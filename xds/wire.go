package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/runtime/protoiface"
)

// wire is a resource with its wire encoding computed once. go-control-plane
// marshals every resource again for every response — for every node — so a
// configuration shared by a hundred nodes would be encoded a hundred times
// on each push. Snapshots hold wire values instead: marshaling one returns
// the bytes it was created with (they are also what its version is a digest
// of), and everything else about it is the resource's own reflection.
type wire struct {
	msg   types.Resource
	bytes []byte
}

// unwrap returns the resource itself for a wire value.
func unwrap(r types.Resource) types.Resource {
	if w, ok := r.(*wire); ok {
		return w.msg
	}
	return r
}

func (w *wire) ProtoReflect() protoreflect.Message {
	return &wireMessage{Message: w.msg.ProtoReflect(), w: w}
}

// wireMessage is the resource's reflection with the encoding methods
// replaced.
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
