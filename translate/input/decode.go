package input

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// docCtx is one object being decoded.
type docCtx struct {
	l    *Loader
	src  *Source
	node *yaml.Node
	json []byte
	ref  ir.ResourceRef
	ok   bool
}

func (d *docCtx) report(sev ir.Severity, code ir.Code, path string, line int, format string, args ...any) {
	if line == 0 {
		line = d.src.LineOf(path)
	}
	d.l.diags = append(d.l.diags, ir.Diagnostic{
		Severity: sev, Code: code, Resource: d.ref, Field: path,
		Message: fmt.Sprintf(format, args...), File: d.src.File, Line: line,
	})
}

// yamlLine extracts the line from a yaml.v3 error ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`line (\d+)`)

func (l *Loader) decodeDocument(file string, doc rawDoc) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc.data, &root); err != nil {
		line := doc.line
		msg := err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			n, _ := strconv.Atoi(m[1])
			line = doc.line + n - 1
			msg = strings.Replace(msg, m[0], "", 1)
			msg = strings.ReplaceAll(msg, "yaml: : ", "")
		}
		msg = strings.TrimPrefix(msg, "yaml: ")
		l.diags = append(l.diags, ir.Diagnostic{Severity: ir.SeverityError, Code: ir.CodeDecode,
			Message: "invalid YAML: " + msg, File: file, Line: line})
		return
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return // empty document or comments only
	}
	shiftLines(&root, doc.line-1)
	l.decodeObject(file, root.Content[0], 0, newBudget())
}

func scalarAt(m *yaml.Node, key string) (string, *yaml.Node) {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return "", nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := deref(m.Content[i+1])
			if v != nil && v.Kind == yaml.ScalarNode {
				return v.Value, v
			}
			return "", v
		}
	}
	return "", nil
}

func (l *Loader) decodeObject(file string, n *yaml.Node, depth int, budget *budget) {
	n = deref(n)
	src := &Source{File: file, Line: n.Line, root: n}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		l.diags = append(l.diags, ir.Diagnostic{Severity: ir.SeverityError, Code: ir.CodeDecode,
			Message: "a manifest must be an object with apiVersion and kind", File: file, Line: n.Line})
		return
	}
	apiVersion, _ := scalarAt(n, "apiVersion")
	kind, _ := scalarAt(n, "kind")
	name, namespace := objectName(n)
	ref := ir.ResourceRef{Kind: kind, Namespace: namespace, Name: name}
	if apiVersion == "" || kind == "" {
		l.diags = append(l.diags, ir.Diagnostic{Severity: ir.SeverityError, Code: ir.CodeDecode, Resource: ref,
			Message: "missing apiVersion or kind", File: file, Line: n.Line})
		return
	}
	group, version := splitAPIVersion(apiVersion)

	// Lists (kubectl get -o yaml) carry their objects in items.
	if strings.HasSuffix(kind, "List") && depth < 3 {
		if _, items := scalarAt(n, "items"); items != nil && items.Kind == yaml.SequenceNode {
			for _, item := range items.Content {
				l.decodeObject(file, item, depth+1, budget)
			}
			return
		}
	}

	info, known := kinds[kind]
	if !known || info.group != group || !info.translated {
		if namespace == "" && !clusterScoped[kind] {
			ref.Namespace = l.DefaultNamespace
		}
		l.ignored = append(l.ignored, ref)
		msg := fmt.Sprintf("%s is not translated by nodemesh; ignored", apiVersion+" "+kind)
		if kind == "AuthorizationPolicy" && info.group == group {
			// Not routing, but not ignored either: with --node its HTTP
			// rules are the inbound listener's RBAC (the agents enforce the rest).
			msg = fmt.Sprintf("%s is not part of routing: it is the RBAC of the node inbound listeners of the pods it applies to (with --node), and the agents' eBPF policy", apiVersion+" "+kind)
		}
		l.diags = append(l.diags, ir.Diagnostic{Severity: ir.SeverityInfo, Code: ir.CodeIgnoredKind, Resource: ref,
			Message: msg, File: file, Line: n.Line})
		if l.KeepIgnored {
			if js, err := toJSON(n, budget); err == nil {
				o := &Object{Ref: ref, APIVersion: apiVersion, JSON: js, Source: src}
				if known && info.group == group {
					// A kind tools read: decoded as strictly as the
					// translator's own, with the same diagnostics.
					o.Typed = l.decodeTyped(info, src, n, ref, apiVersion, version, js)
				}
				l.others = append(l.others, o)
			}
		}
		return
	}
	if info.namespaced && ref.Namespace == "" {
		ref.Namespace = l.DefaultNamespace
	}
	if !info.namespaced {
		ref.Namespace = ""
	}
	d := &docCtx{l: l, src: src, node: n, ref: ref, ok: true}
	if !d.checkVersion(info, apiVersion, version) {
		return
	}
	js, err := toJSON(n, budget)
	if err != nil {
		var ne *nodeError
		line := n.Line
		msg := err.Error()
		if errors.As(err, &ne) {
			line, msg = ne.node.Line, ne.msg
		}
		d.report(ir.SeverityError, ir.CodeDecode, "", line, "%s", msg)
		return
	}
	if obj := d.decode(info, js); obj != nil {
		l.add(ref, obj, src)
	}
}

// decodeTyped decodes a kind the translator does not read (its JSON made
// already); nil when it does not decode, which the diagnostics say.
func (l *Loader) decodeTyped(info kindInfo, src *Source, n *yaml.Node, ref ir.ResourceRef, apiVersion, version string, js []byte) any {
	if !info.namespaced {
		ref.Namespace = ""
	}
	d := &docCtx{l: l, src: src, node: n, ref: ref, ok: true}
	if !d.checkVersion(info, apiVersion, version) {
		return nil
	}
	return d.decode(info, js)
}

// checkVersion reports an apiVersion the kind does not have, and a missing
// name.
func (d *docCtx) checkVersion(info kindInfo, apiVersion, version string) bool {
	if !slices.Contains(info.versions, version) {
		d.report(ir.SeverityError, ir.CodeDecode, "apiVersion", 0, "unsupported apiVersion %q for %s; use %s",
			apiVersion, d.ref.Kind, strings.TrimPrefix(info.group+"/"+info.versions[0], "/"))
		return false
	}
	if d.ref.Name == "" {
		d.report(ir.SeverityError, ir.CodeInvalidValue, "metadata.name", 0, "metadata.name is required")
		return false
	}
	return true
}

// decode decodes an object's JSON strictly into its kind's type; nil when
// it does not decode.
func (d *docCtx) decode(info kindInfo, js []byte) any {
	d.json = js
	obj, ok := info.decode(d)
	if !ok {
		return nil
	}
	if mo, isMeta := obj.(metav1.Object); isMeta {
		mo.SetNamespace(d.ref.Namespace)
	}
	return obj
}

func splitAPIVersion(av string) (group, version string) {
	if i := strings.LastIndexByte(av, '/'); i >= 0 {
		return av[:i], av[i+1:]
	}
	return "", av
}

func objectName(n *yaml.Node) (name, namespace string) {
	_, meta := scalarAt(n, "metadata")
	if meta == nil {
		return "", ""
	}
	name, _ = scalarAt(meta, "name")
	namespace, _ = scalarAt(meta, "namespace")
	return name, namespace
}

// decodeKube decodes a Kubernetes object strictly: unknown and duplicate
// fields are errors with their path.
func (d *docCtx) decodeKube(obj any) bool {
	strictErrs, err := kjson.UnmarshalStrict(d.json, obj, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		d.reportJSONError(err, "")
		return false
	}
	for _, e := range strictErrs {
		d.reportJSONError(e, "")
	}
	return len(strictErrs) == 0
}

func (d *docCtx) reportJSONError(err error, prefix string) {
	var fe kjson.FieldError
	if errors.As(err, &fe) {
		p := fe.FieldPath()
		if prefix != "" {
			p = prefix + "." + p
		}
		msg := strings.TrimPrefix(err.Error(), "json: ")
		code := ir.CodeInvalidValue
		if strings.HasPrefix(msg, "unknown field") {
			code = ir.CodeUnknownField
			msg = fmt.Sprintf("unknown field %q", lastSegment(p))
		}
		d.report(ir.SeverityError, code, p, 0, "%s", msg)
		return
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	path := ""
	if m := typeErrField.FindStringSubmatch(msg); m != nil {
		path = m[1]
		if prefix != "" {
			path = prefix + "." + path
		}
		msg = "expected " + m[2] + ", got " + m[0][len("cannot unmarshal "):strings.Index(m[0], " into")]
	}
	d.report(ir.SeverityError, ir.CodeInvalidValue, path, 0, "%s", msg)
}

// typeErrField picks the field path and type out of encoding/json's
// "cannot unmarshal X into Go struct field T.path of type Y".
var typeErrField = regexp.MustCompile(`cannot unmarshal .* into Go struct field [^.]+\.(\S+) of type (\S+)`)

func lastSegment(p string) string {
	els := ir.ParsePath(p)
	for i := len(els) - 1; i >= 0; i-- {
		if !els[i].IsIndex {
			return els[i].Key
		}
	}
	return p
}

// istioEnvelope is an Istio object with the spec kept raw for the protobuf
// decoder.
type istioEnvelope struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              kjsonRaw `json:"spec"`
	Status            kjsonRaw `json:"status,omitempty"`
}

// kjsonRaw is a raw JSON value.
type kjsonRaw []byte

func (r *kjsonRaw) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

// decodeIstio decodes an Istio object: metadata with Kubernetes strictness,
// the spec against its protobuf schema.
// istioSpec is an istio.io/api message with its generated JSON decoder.
type istioSpec interface {
	proto.Message
	UnmarshalJSON([]byte) error
}

func (d *docCtx) decodeIstio(tm *metav1.TypeMeta, meta *metav1.ObjectMeta, spec istioSpec, specRequired bool) bool {
	var env istioEnvelope
	strictErrs, err := kjson.UnmarshalStrict(d.json, &env, kjson.DisallowUnknownFields, kjson.DisallowDuplicateFields)
	if err != nil {
		d.reportJSONError(err, "")
		return false
	}
	ok := true
	for _, e := range strictErrs {
		d.reportJSONError(e, "")
		ok = false
	}
	_, specNode := scalarAt(d.node, "spec")
	if specNode == nil && !specRequired {
		*tm, *meta = env.TypeMeta, env.ObjectMeta
		return ok // an empty spec
	}
	if specNode == nil {
		d.report(ir.SeverityError, ir.CodeInvalidValue, "spec", 0, "spec is required")
		return false
	}
	for _, p := range checkProto(spec.ProtoReflect().Descriptor(), specNode, "spec") {
		line := 0
		if p.node != nil {
			line = p.node.Line
		}
		d.report(ir.SeverityError, p.code, string(p.path), line, "%s", p.msg)
		ok = false
	}
	if !ok {
		return false
	}
	// The schema check above is stricter than Istio; the value decoding is
	// Istio's own (istio.io/api's UnmarshalJSON, golang/protobuf jsonpb), so
	// that durations, enums and wrappers read exactly as istiod reads them.
	if err := spec.UnmarshalJSON(env.Spec); err != nil {
		d.report(ir.SeverityError, ir.CodeInvalidValue, "spec", 0, "%s", err)
		return false
	}
	*tm = env.TypeMeta
	*meta = env.ObjectMeta
	return true
}
