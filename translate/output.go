package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// xdsDocument is the JSON form of Result.XDS: one document whose entries are
// the protojson encoding of the Envoy v3 resources, plus the diagnostics.
func xdsDocument(r *Result) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	sections := []struct {
		key  string
		msgs []proto.Message
	}{
		{"listeners", messages(r.XDS.Listeners)},
		{"routes", messages(r.XDS.Routes)},
		{"clusters", messages(r.XDS.Clusters)},
		{"endpoints", messages(r.XDS.Endpoints)},
	}
	for i, s := range sections {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:[", s.key)
		for j, m := range s.msgs {
			if j > 0 {
				b.WriteByte(',')
			}
			js, err := protojson.Marshal(m)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
			}
			b.Write(js)
		}
		b.WriteByte(']')
	}
	diags, err := json.Marshal(nonNil(r.Diagnostics))
	if err != nil {
		return nil, err
	}
	b.WriteString(`,"diagnostics":`)
	b.Write(diags)
	b.WriteByte('}')
	return b.Bytes(), nil
}

func nonNil(d ir.Diagnostics) ir.Diagnostics {
	if d == nil {
		return ir.Diagnostics{}
	}
	return d
}

func messages[T proto.Message](s []T) []proto.Message {
	out := make([]proto.Message, len(s))
	for i, m := range s {
		out[i] = m
	}
	return out
}

// irDocument is the JSON form of the IR and the diagnostics.
func irDocument(r *Result) ([]byte, error) {
	type doc struct {
		*ir.Model
		Diagnostics ir.Diagnostics `json:"diagnostics"`
	}
	return json.Marshal(doc{r.IR, nonNil(r.Diagnostics)})
}

// WriteJSON prints the xDS document (or the IR) as indented JSON. protojson
// deliberately varies its whitespace; re-indenting makes the bytes stable.
func WriteJSON(w io.Writer, r *Result, irOnly bool) error {
	raw, err := document(r, irOnly)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err = w.Write(b.Bytes())
	return err
}

// WriteYAML prints the same document as YAML, keeping the field order.
func WriteYAML(w io.Writer, r *Result, irOnly bool) error {
	raw, err := document(r, irOnly)
	if err != nil {
		return err
	}
	return JSONToYAML(w, raw)
}

func document(r *Result, irOnly bool) ([]byte, error) {
	if irOnly {
		return irDocument(r)
	}
	return xdsDocument(r)
}

// JSONToYAML re-encodes JSON as YAML without reordering keys (strings YAML
// 1.1 would read as something else are quoted).
func JSONToYAML(w io.Writer, raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	n, err := jsonNode(dec)
	if err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return err
	}
	return enc.Close()
}

func jsonNode(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := jsonNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kt.(string)}, v)
			}
			_, err := dec.Token() // '}'
			return n, err
		case '[':
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			if len(n.Content) == 0 {
				n.Style = yaml.FlowStyle
			}
			_, err := dec.Token() // ']'
			return n, err
		}
	case string:
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t}
		if yaml11Special(t) {
			// Quote what YAML 1.1 readers (kubectl, PyYAML) would take for a
			// boolean or a sexagesimal number.
			n.Style = yaml.DoubleQuotedStyle
		}
		return n, nil
	case json.Number:
		tag := "!!int"
		if bytes.ContainsAny([]byte(t), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: t.String()}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

func yaml11Special(s string) bool {
	switch strings.ToLower(s) {
	case "y", "yes", "n", "no", "on", "off":
		return true
	}
	return sexagesimal.MatchString(s)
}

var sexagesimal = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$`)
