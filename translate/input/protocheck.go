package input

import (
	"fmt"
	"github.com/nodemesh/nodemesh/internal/suggest"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// fieldProblem is a schema violation at a path inside a document.
type fieldProblem struct {
	path ir.Path
	node *yaml.Node
	code ir.Code
	msg  string
}

// checkProto walks a YAML node against a protobuf message schema the way the
// Kubernetes API server checks a CRD with a structural schema and istiod's
// decoder reads it: field names are the proto JSON names (camelCase), scalars
// must have the right type, enums must name a value, durations use protobuf's
// "1.5s" form, and at most one member of a oneof may be set. Every problem is
// reported, not just the first.
func checkProto(md protoreflect.MessageDescriptor, n *yaml.Node, path ir.Path) []fieldProblem {
	c := &protoChecker{}
	c.message(md, n, path, 0)
	return c.problems
}

type protoChecker struct {
	problems []fieldProblem
}

func (c *protoChecker) add(path ir.Path, n *yaml.Node, code ir.Code, format string, args ...any) {
	c.problems = append(c.problems, fieldProblem{path: path, node: n, code: code, msg: fmt.Sprintf(format, args...)})
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!null":
			return "null"
		default:
			return n.Value
		}
	}
	return "something else"
}

func (c *protoChecker) message(md protoreflect.MessageDescriptor, n *yaml.Node, path ir.Path, depth int) {
	n = deref(n)
	if n == nil || isNull(n) {
		return
	}
	if depth > maxDepth {
		c.add(path, n, ir.CodeDecode, "nests too deeply")
		return
	}
	if wkt := md.FullName(); strings.HasPrefix(string(wkt), "google.protobuf.") {
		c.wellKnown(md, n, path)
		return
	}
	if n.Kind != yaml.MappingNode {
		c.add(path, n, ir.CodeInvalidValue, "expected an object, got %s", kindName(n))
		return
	}
	pairs, err := mappingPairs(n, depth)
	if err != nil {
		return // toJSON reports structural problems
	}
	fields := md.Fields()
	oneofSet := map[protoreflect.FullName]string{}
	for _, p := range pairs {
		fd := fields.ByJSONName(p.key)
		fpath := path.Field(p.key)
		if fd == nil {
			c.add(fpath, p.keyNode, ir.CodeUnknownField, "unknown field %q%s", p.key, didYouMean(md, p.key))
			continue
		}
		v := deref(p.value)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && !isNull(v) {
			if prev, ok := oneofSet[od.FullName()]; ok {
				c.add(fpath, p.keyNode, ir.CodeInvalidValue, "only one of %s and %s may be set", prev, p.key)
			} else {
				oneofSet[od.FullName()] = p.key
			}
		}
		c.field(fd, v, fpath, depth+1)
	}
}

func (c *protoChecker) field(fd protoreflect.FieldDescriptor, n *yaml.Node, path ir.Path, depth int) {
	if isNull(n) {
		return
	}
	switch {
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			c.add(path, n, ir.CodeInvalidValue, "expected a map, got %s", kindName(n))
			return
		}
		pairs, err := mappingPairs(n, depth)
		if err != nil {
			return
		}
		for _, p := range pairs {
			c.single(fd.MapValue(), deref(p.value), path.Field(p.key), depth+1)
		}
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			c.add(path, n, ir.CodeInvalidValue, "expected a list, got %s", kindName(n))
			return
		}
		for i, e := range n.Content {
			e = deref(e)
			if isNull(e) {
				c.add(path.Index(i), e, ir.CodeInvalidValue, "list entries must not be null")
				continue
			}
			c.single(fd, e, path.Index(i), depth+1)
		}
	default:
		c.single(fd, n, path, depth)
	}
}

func (c *protoChecker) single(fd protoreflect.FieldDescriptor, n *yaml.Node, path ir.Path, depth int) {
	if n == nil || isNull(n) {
		return
	}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		c.message(fd.Message(), n, path, depth)
	case protoreflect.EnumKind:
		c.enum(fd.Enum(), n, path)
	default:
		c.scalar(fd.Kind(), n, path)
	}
}

func (c *protoChecker) enum(ed protoreflect.EnumDescriptor, n *yaml.Node, path ir.Path) {
	if n.Kind != yaml.ScalarNode {
		c.add(path, n, ir.CodeInvalidValue, "expected one of %s, got %s", enumNames(ed), kindName(n))
		return
	}
	if n.ShortTag() == "!!int" {
		i, err := strconv.ParseInt(n.Value, 10, 32)
		if err != nil || ed.Values().ByNumber(protoreflect.EnumNumber(i)) == nil {
			c.add(path, n, ir.CodeInvalidValue, "unknown value %s, expected one of %s", n.Value, enumNames(ed))
		}
		return
	}
	if ed.Values().ByName(protoreflect.Name(n.Value)) == nil {
		c.add(path, n, ir.CodeInvalidValue, "unknown value %q, expected one of %s", n.Value, enumNames(ed))
	}
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	names := make([]string, 0, vals.Len())
	for i := 0; i < vals.Len(); i++ {
		names = append(names, string(vals.Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func (c *protoChecker) scalar(k protoreflect.Kind, n *yaml.Node, path ir.Path) {
	if n.Kind != yaml.ScalarNode {
		c.add(path, n, ir.CodeInvalidValue, "expected %s, got %s", scalarName(k), kindName(n))
		return
	}
	tag := n.ShortTag()
	switch k {
	case protoreflect.StringKind:
		if tag != "!!str" {
			c.add(path, n, ir.CodeInvalidValue, "expected a string, got %s (quote it)", kindName(n))
		}
	case protoreflect.BytesKind:
		if tag != "!!str" && tag != "!!binary" {
			c.add(path, n, ir.CodeInvalidValue, "expected base64 bytes, got %s", kindName(n))
		}
	case protoreflect.BoolKind:
		if tag != "!!bool" {
			c.add(path, n, ir.CodeInvalidValue, "expected true or false, got %s", kindName(n))
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		c.integer(n, path, math.MinInt32, math.MaxInt32, false)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		c.integer(n, path, 0, math.MaxUint32, false)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		c.integer(n, path, math.MinInt64, math.MaxInt64, true)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		c.unsigned64(n, path)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if tag == "!!int" || tag == "!!float" {
			return
		}
		if tag == "!!str" && (n.Value == "NaN" || n.Value == "Infinity" || n.Value == "-Infinity") {
			return
		}
		c.add(path, n, ir.CodeInvalidValue, "expected a number, got %s", kindName(n))
	}
}

func scalarName(k protoreflect.Kind) string {
	switch k {
	case protoreflect.StringKind:
		return "a string"
	case protoreflect.BoolKind:
		return "true or false"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "a number"
	case protoreflect.BytesKind:
		return "base64 bytes"
	default:
		return "an integer"
	}
}

// integer checks a signed integer in [lo, hi]. 64-bit values may be quoted,
// as protobuf's JSON mapping allows.
func (c *protoChecker) integer(n *yaml.Node, path ir.Path, lo, hi int64, quotedOK bool) {
	tag := n.ShortTag()
	if tag != "!!int" && !(quotedOK && tag == "!!str") {
		c.add(path, n, ir.CodeInvalidValue, "expected an integer, got %s", kindName(n))
		return
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil || v < lo || v > hi {
		c.add(path, n, ir.CodeInvalidValue, "integer %s out of range [%d, %d]", n.Value, lo, hi)
	}
}

func (c *protoChecker) unsigned64(n *yaml.Node, path ir.Path) {
	tag := n.ShortTag()
	if tag != "!!int" && tag != "!!str" {
		c.add(path, n, ir.CodeInvalidValue, "expected an integer, got %s", kindName(n))
		return
	}
	if _, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64); err != nil {
		c.add(path, n, ir.CodeInvalidValue, "expected a non-negative integer, got %s", kindName(n))
	}
}

func (c *protoChecker) wellKnown(md protoreflect.MessageDescriptor, n *yaml.Node, path ir.Path) {
	switch md.FullName() {
	case "google.protobuf.Duration":
		// Istio decodes durations with Go's syntax (golang/protobuf jsonpb),
		// so "1m30s" and "250ms" are as valid as protobuf's "90s".
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			c.add(path, n, ir.CodeInvalidValue, "expected a duration such as 1.5s, 250ms or 2m, got %s", kindName(n))
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			c.add(path, n, ir.CodeInvalidValue, "invalid duration %q: use a number with a unit (ms, s, m, h), e.g. 1.5s, 250ms or 2m", n.Value)
		}
	case "google.protobuf.Timestamp", "google.protobuf.FieldMask":
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			c.add(path, n, ir.CodeInvalidValue, "expected a string, got %s", kindName(n))
		}
	case "google.protobuf.BoolValue":
		c.scalar(protoreflect.BoolKind, n, path)
	case "google.protobuf.StringValue":
		c.scalar(protoreflect.StringKind, n, path)
	case "google.protobuf.BytesValue":
		c.scalar(protoreflect.BytesKind, n, path)
	case "google.protobuf.Int32Value":
		c.scalar(protoreflect.Int32Kind, n, path)
	case "google.protobuf.UInt32Value":
		c.scalar(protoreflect.Uint32Kind, n, path)
	case "google.protobuf.Int64Value":
		c.scalar(protoreflect.Int64Kind, n, path)
	case "google.protobuf.UInt64Value":
		c.scalar(protoreflect.Uint64Kind, n, path)
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
		c.scalar(protoreflect.DoubleKind, n, path)
	case "google.protobuf.Empty":
		if n.Kind != yaml.MappingNode || len(n.Content) != 0 {
			c.add(path, n, ir.CodeInvalidValue, "expected {}, got %s", kindName(n))
		}
	default:
		// Struct, Value, ListValue and Any accept any JSON.
	}
}

// suggest proposes the field the user probably meant.
func didYouMean(md protoreflect.MessageDescriptor, key string) string {
	fields := md.Fields()
	if fd := fields.ByName(protoreflect.Name(key)); fd != nil {
		return fmt.Sprintf(" (did you mean %q?)", fd.JSONName())
	}
	names := make([]string, 0, fields.Len())
	for i := 0; i < fields.Len(); i++ {
		names = append(names, fields.Get(i).JSONName())
	}
	sort.Strings(names)
	if best := suggest.Closest(key, names); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}
