package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nodemesh/nodemesh/internal/suggest"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
)

// ValueOptions are the user's values as Helm's flags give them: -f files
// (merged left to right), then --set, --set-string, --set-file, --set-json,
// --set-literal.
type ValueOptions = values.Options

// ErrInvalidValues is wrapped by every values error found by the schema.
var ErrInvalidValues = errors.New("invalid values")

// ValuesError lists every schema violation, one per key.
type ValuesError struct {
	// Problems are "key.path: message" lines, sorted.
	Problems []string
}

func (e *ValuesError) Error() string {
	return "invalid values (see values.yaml of the chart, or 'nodemesh install --dry-run -o yaml'):\n  " + strings.Join(e.Problems, "\n  ")
}

func (e *ValuesError) Unwrap() error { return ErrInvalidValues }

// UserValues reads the values the user gave (files and flags).
func UserValues(o ValueOptions) (map[string]any, error) {
	v, err := o.MergeValues(getter.All(cli.New()))
	if err != nil {
		return nil, fmt.Errorf("read values: %w", err)
	}
	return v, nil
}

// Validate checks user values, over the chart's defaults, against the
// chart's values.schema.json, as Helm does before rendering — but before
// anything is sent to the cluster (Helm installs the CRDs of crds/ before
// it validates values, which would leave them behind).
func Validate(c *chart.Chart, user map[string]any) error {
	if c.Schema == nil {
		return nil
	}
	merged, err := chartutil.CoalesceValues(c, user)
	if err != nil {
		return fmt.Errorf("merge values: %w", err)
	}
	schema, err := jsonschema.UnmarshalJSON(bytes.NewReader(c.Schema))
	if err != nil {
		return fmt.Errorf("chart schema: %w", err)
	}
	comp := jsonschema.NewCompiler()
	if err := comp.AddResource("file:///values.schema.json", schema); err != nil {
		return fmt.Errorf("chart schema: %w", err)
	}
	sch, err := comp.Compile("file:///values.schema.json")
	if err != nil {
		return fmt.Errorf("chart schema: %w", err)
	}
	// Round-trip through JSON so that numbers and maps have the types the
	// validator expects (YAML gives int64 and float64 mixed).
	raw, err := json.Marshal(merged.AsMap())
	if err != nil {
		return fmt.Errorf("encode values: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("encode values: %w", err)
	}
	verr := sch.Validate(inst)
	if verr == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(verr, &ve) {
		return verr
	}
	var rawSchema any
	if err := json.Unmarshal(c.Schema, &rawSchema); err != nil {
		return fmt.Errorf("chart schema: %w", err)
	}
	r := &reporter{defaults: c.Values, schema: rawSchema, values: merged.AsMap(), p: message.NewPrinter(language.English), out: map[string]bool{}}
	r.collect(ve)
	problems := r.out
	out := &ValuesError{}
	for pr := range problems {
		out.Problems = append(out.Problems, pr)
	}
	sort.Strings(out.Problems)
	return out
}

// reporter turns the validator's error tree into one line per key.
type reporter struct {
	defaults map[string]any // the chart's values.yaml, for suggestions
	schema   any            // the schema as JSON, for descriptions
	values   map[string]any // what was validated, to quote the bad value
	p        *message.Printer
	out      map[string]bool
}

func (r *reporter) collect(e *jsonschema.ValidationError) {
	key := strings.Join(e.InstanceLocation, ".")
	switch k := e.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		for _, prop := range k.Properties {
			full := joinKey(key, prop)
			msg := full + ": unknown key"
			if s := suggest.Closest(prop, knownKeys(r.defaults, e.InstanceLocation)); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", joinKey(key, s))
			}
			r.out[msg] = true
		}
		return
	case *kind.AnyOf, *kind.Not:
		// A composite rule: its schema's description says what is wanted
		// better than the parts' messages.
		if d := r.description(e.SchemaURL); d != "" {
			r.out[fmt.Sprintf("%s: got %s, want %s", orRoot(key), r.quote(e.InstanceLocation), d)] = true
			return
		}
		var wants []string
		for _, c := range e.Causes {
			for _, leaf := range leaves(c) {
				wants = append(wants, leaf.ErrorKind.LocalizedString(r.p))
			}
		}
		if len(wants) == 0 {
			wants = []string{e.ErrorKind.LocalizedString(r.p)}
		}
		r.out[fmt.Sprintf("%s: %s", orRoot(key), strings.Join(dedupe(wants), ", or "))] = true
		return
	}
	if len(e.Causes) == 0 {
		r.out[fmt.Sprintf("%s: %s", orRoot(key), e.ErrorKind.LocalizedString(r.p))] = true
		return
	}
	for _, c := range e.Causes {
		r.collect(c)
	}
}

// description is the "description" of the schema at url
// (…#/definitions/quantity).
func (r *reporter) description(url string) string {
	_, ptr, ok := strings.Cut(url, "#")
	if !ok {
		return ""
	}
	cur := r.schema
	for _, p := range strings.Split(strings.Trim(ptr, "/"), "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[p]
	}
	if m, ok := cur.(map[string]any); ok {
		d, _ := m["description"].(string)
		return d
	}
	return ""
}

// quote renders the value at a location for a message.
func (r *reporter) quote(loc []string) string {
	var cur any = r.values
	for _, k := range loc {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[k]
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i < 0 || i >= len(c) {
				return "?"
			}
			cur = c[i]
		default:
			return "?"
		}
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return fmt.Sprint(cur)
	}
	return string(b)
}

func leaves(e *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(e.Causes) == 0 {
		return []*jsonschema.ValidationError{e}
	}
	var out []*jsonschema.ValidationError
	for _, c := range e.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func orRoot(k string) string {
	if k == "" {
		return "(top level)"
	}
	return k
}

// knownKeys are the keys the chart's defaults have at a location.
func knownKeys(defaults map[string]any, loc []string) []string {
	cur := defaults
	for _, k := range loc {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil
		}
		cur = next
	}
	var keys []string
	for k := range cur {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
