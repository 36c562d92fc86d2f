package migration

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Level is the verdict on one resource or field.
type Level string

const (
	// Supported: behaves on the node Envoy as on a sidecar.
	Supported Level = "supported"
	// Changed: works, but behaves differently; the message says how.
	Changed Level = "changed"
	// Unsupported: does not work (is ignored, or breaks traffic) after the move.
	Unsupported Level = "unsupported"
)

func (l Level) rank() int {
	switch l {
	case Unsupported:
		return 0
	case Changed:
		return 1
	default:
		return 2
	}
}

// Verdict is a namespace's readiness.
type Verdict string

const (
	Ready            Verdict = "ready"
	ReadyWithChanges Verdict = "ready-with-changes"
	Blocked          Verdict = "blocked"
)

// Resource names the object a finding is about. Unlike ir.ResourceRef, every
// field is always present in JSON (the contract of `migrate analyze -o json`).
type Resource struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func resourceOf(r ir.ResourceRef) Resource {
	return Resource{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
}

func (r Resource) String() string { return ir.ResourceRef(r).String() }

// Finding is one verdict. Code, File and Line are additive to the JSON
// contract.
type Finding struct {
	Resource Resource `json:"resource"`
	Field    string   `json:"field"`
	Level    Level    `json:"level"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix"`
	// Code is the translator's diagnostic code, or a migration check's name.
	Code string `json:"code,omitempty"`
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// NamespaceReport is the analysis of one namespace.
type NamespaceReport struct {
	Name     string    `json:"name"`
	Verdict  Verdict   `json:"verdict"`
	Findings []Finding `json:"findings"`
	// Inventory, Calls and CalledBy are additive to the contract.
	Inventory NamespaceInventory `json:"inventory"`
	Calls     []string           `json:"calls,omitempty"`
	CalledBy  []string           `json:"calledBy,omitempty"`
}

// NamespaceInventory says how a namespace is meshed today.
type NamespaceInventory struct {
	// Dataplane is sidecar, nodemesh, ambient or none.
	Dataplane string `json:"dataplane"`
	// Injection is the istio-injection label, Revision the istio.io/rev label.
	Injection   string         `json:"injection,omitempty"`
	Revision    string         `json:"revision,omitempty"`
	Pods        int            `json:"pods"`
	SidecarPods int            `json:"sidecarPods"`
	Workloads   []string       `json:"workloads,omitempty"`
	Resources   map[string]int `json:"resources,omitempty"`
}

// Report is the result of Analyze.
type Report struct {
	Namespaces []NamespaceReport `json:"namespaces"`
	// Order lists the namespaces in the order they can move: each group's
	// namespaces are called only by namespaces of the same or later groups,
	// so servers move before their clients (additive to the contract).
	Order [][]string `json:"order,omitempty"`
}

// Namespace returns the report of a namespace, nil when it was not analysed.
func (r *Report) Namespace(name string) *NamespaceReport {
	for i := range r.Namespaces {
		if r.Namespaces[i].Name == name {
			return &r.Namespaces[i]
		}
	}
	return nil
}

// Blocked reports whether any namespace is blocked.
func (r *Report) Blocked() bool {
	return slices.ContainsFunc(r.Namespaces, func(n NamespaceReport) bool { return n.Verdict == Blocked })
}

func verdictOf(fs []Finding) Verdict {
	v := Ready
	for _, f := range fs {
		switch f.Level {
		case Unsupported:
			return Blocked
		case Changed:
			v = ReadyWithChanges
		}
	}
	return v
}

func sortFindings(fs []Finding) []Finding {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(a.Level.rank(), b.Level.rank()),
			cmp.Compare(a.Resource.Kind, b.Resource.Kind),
			cmp.Compare(a.Resource.Namespace, b.Resource.Namespace),
			cmp.Compare(a.Resource.Name, b.Resource.Name),
			cmp.Compare(a.Field, b.Field),
			cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Message, b.Message),
		)
	})
	return slices.CompactFunc(fs, func(a, b Finding) bool { return a == b })
}

// ErrUnknownFormat is returned for an output format other than table, json
// or yaml.
var ErrUnknownFormat = errors.New("unknown output format: use table, json or yaml")

// Write renders v as JSON or YAML (both from the JSON form, so the field
// names are the same).
func writeData(w io.Writer, v any, format string) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	switch format {
	case "json":
		data = append(data, '\n')
	case "yaml":
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
	default:
		return ErrUnknownFormat
	}
	_, err = w.Write(data)
	return err
}

// Write renders the report: table, json or yaml.
func (r *Report) Write(w io.Writer, format string) error {
	if format != "table" {
		return writeData(w, r, format)
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tDATAPLANE\tPODS\tSIDECARS\tVERDICT\tUNSUPPORTED\tCHANGED\tCALLS")
	for _, n := range r.Namespaces {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\n", n.Name, n.Inventory.Dataplane, n.Inventory.Pods,
			n.Inventory.SidecarPods, n.Verdict, count(n.Findings, Unsupported), count(n.Findings, Changed), orNone(n.Calls))
	}
	tw.Flush()
	if len(r.Order) > 0 {
		var groups []string
		for _, g := range r.Order {
			groups = append(groups, strings.Join(g, ", "))
		}
		fmt.Fprintf(&b, "\nOrder to move (servers before their clients): %s\n", strings.Join(groups, " → "))
	}
	for _, n := range r.Namespaces {
		var shown []Finding
		for _, f := range n.Findings {
			if f.Level != Supported {
				shown = append(shown, f)
			}
		}
		fmt.Fprintf(&b, "\n%s: %s (%d supported", n.Name, n.Verdict, count(n.Findings, Supported))
		if len(shown) == 0 {
			b.WriteString(", nothing changes)\n")
			continue
		}
		b.WriteString(")\n")
		for _, f := range shown {
			loc := ""
			if f.File != "" {
				loc = fmt.Sprintf(" (%s:%d)", f.File, f.Line)
			}
			field := ""
			if f.Field != "" {
				field = " " + f.Field
			}
			fmt.Fprintf(&b, "  %-11s %s%s%s\n", strings.ToUpper(string(f.Level)), f.Resource, field, loc)
			fmt.Fprintf(&b, "              %s\n", f.Message)
			if f.Fix != "" {
				fmt.Fprintf(&b, "              fix: %s\n", f.Fix)
			}
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func count(fs []Finding, l Level) int {
	n := 0
	for _, f := range fs {
		if f.Level == l {
			n++
		}
	}
	return n
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}
