package input

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// nodeError is a problem at a YAML node.
type nodeError struct {
	node *yaml.Node
	msg  string
}

func (e *nodeError) Error() string { return fmt.Sprintf("line %d: %s", e.node.Line, e.msg) }

// toJSON converts a YAML node tree to JSON text, resolving aliases. Mapping
// keys are always strings. Duplicate keys are an error, as in strict
// Kubernetes decoding. budget bounds the nodes and bytes written, so that an
// alias bomb (aliases of aliases expanding exponentially, or one large
// string aliased many times) fails fast.
func toJSON(n *yaml.Node, budget *budget) ([]byte, error) {
	var b bytes.Buffer
	w := &jsonWriter{b: &b, budget: budget}
	if err := w.write(n, 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

const maxDepth = 200

// What a document may expand to through aliases: nodes, and bytes of
// scalars and keys. The API server refuses objects over 1.5 MiB (etcd's
// request limit); 16 MiB leaves room for lists of many.
const (
	maxNodes = 1 << 20
	maxBytes = 16 << 20
)

// budget is what is left of a document's limits.
type budget struct{ nodes, bytes int }

func newBudget() *budget { return &budget{nodes: maxNodes, bytes: maxBytes} }

// take accounts for a node of n bytes.
func (bu *budget) take(node *yaml.Node, n int) error {
	bu.nodes--
	bu.bytes -= n
	switch {
	case bu.nodes < 0:
		return &nodeError{node, "document expands to too many nodes (excessive aliasing)"}
	case bu.bytes < 0:
		return &nodeError{node, fmt.Sprintf("document expands to more than %d MiB (excessive aliasing or an oversized object)", maxBytes>>20)}
	}
	return nil
}

type jsonWriter struct {
	b      *bytes.Buffer
	budget *budget
}

func (w *jsonWriter) write(n *yaml.Node, depth int) error {
	if err := w.budget.take(n, len(n.Value)); err != nil {
		return err
	}
	b := w.b
	if depth > maxDepth {
		return &nodeError{n, "document nests too deeply"}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			b.WriteString("null")
			return nil
		}
		return w.write(n.Content[0], depth+1)
	case yaml.AliasNode:
		if n.Alias == nil {
			return &nodeError{n, "unresolved alias"}
		}
		return w.write(n.Alias, depth+1)
	case yaml.MappingNode:
		pairs, err := mappingPairs(n, depth)
		if err != nil {
			return err
		}
		b.WriteByte('{')
		seen := make(map[string]bool, len(pairs))
		first := true
		for _, p := range pairs {
			if seen[p.key] {
				return &nodeError{p.keyNode, fmt.Sprintf("duplicate key %q", p.key)}
			}
			seen[p.key] = true
			if !first {
				b.WriteByte(',')
			}
			first = false
			if err := w.budget.take(p.keyNode, len(p.key)); err != nil {
				return err
			}
			writeString(b, p.key)
			b.WriteByte(':')
			if err := w.write(p.value, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := w.write(c, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case yaml.ScalarNode:
		return writeScalar(b, n)
	}
	return &nodeError{n, "unexpected YAML node"}
}

type pair struct {
	key     string
	keyNode *yaml.Node
	value   *yaml.Node
}

// mappingPairs lists a mapping's entries, expanding "<<" merge keys (explicit
// entries win over merged ones, as YAML specifies).
func mappingPairs(n *yaml.Node, depth int) ([]pair, error) {
	if depth > maxDepth {
		return nil, &nodeError{n, "document nests too deeply"}
	}
	var out, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return nil, &nodeError{k, "mapping keys must be scalars"}
		}
		if k.Tag == "!!merge" || (k.Value == "<<" && k.Style == 0) {
			src := v
			if src.Kind == yaml.AliasNode && src.Alias != nil {
				src = src.Alias
			}
			var sources []*yaml.Node
			switch src.Kind {
			case yaml.MappingNode:
				sources = []*yaml.Node{src}
			case yaml.SequenceNode:
				for _, s := range src.Content {
					if s.Kind == yaml.AliasNode && s.Alias != nil {
						s = s.Alias
					}
					sources = append(sources, s)
				}
			}
			for _, s := range sources {
				if s.Kind != yaml.MappingNode {
					return nil, &nodeError{v, "merge key needs a mapping"}
				}
				ps, err := mappingPairs(s, depth+1)
				if err != nil {
					return nil, err
				}
				merged = append(merged, ps...)
			}
			continue
		}
		out = append(out, pair{key: k.Value, keyNode: k, value: v})
	}
	if len(merged) > 0 {
		have := make(map[string]bool, len(out))
		for _, p := range out {
			have[p.key] = true
		}
		for _, p := range merged {
			if !have[p.key] {
				have[p.key] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func writeString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // never fails for a string
	b.Write(enc)
}

func writeScalar(b *bytes.Buffer, n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!null":
		b.WriteString("null")
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return &nodeError{n, fmt.Sprintf("invalid boolean %q", n.Value)}
		}
		b.WriteString(strconv.FormatBool(v))
	case "!!int":
		s := strings.ReplaceAll(n.Value, "_", "")
		if i, err := strconv.ParseInt(s, 0, 64); err == nil {
			b.WriteString(strconv.FormatInt(i, 10))
		} else if u, err := strconv.ParseUint(s, 0, 64); err == nil {
			b.WriteString(strconv.FormatUint(u, 10))
		} else {
			return &nodeError{n, fmt.Sprintf("integer %q out of range", n.Value)}
		}
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return &nodeError{n, fmt.Sprintf("invalid number %q", n.Value)}
		}
		switch {
		case math.IsNaN(f):
			b.WriteString(`"NaN"`)
		case math.IsInf(f, 1):
			b.WriteString(`"Infinity"`)
		case math.IsInf(f, -1):
			b.WriteString(`"-Infinity"`)
		default:
			enc, _ := json.Marshal(f)
			b.Write(enc)
		}
	default: // !!str, !!binary, !!timestamp and custom tags stay text
		writeString(b, n.Value)
	}
	return nil
}
