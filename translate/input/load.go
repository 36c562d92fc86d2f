package input

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Loader reads manifests into a Bag with `kubectl apply` semantics: a later
// document with the same kind, namespace and name replaces an earlier one.
type Loader struct {
	// DefaultNamespace is given to namespaced objects without one ("default"
	// when empty), like kubectl's current namespace.
	DefaultNamespace string

	// KeepIgnored keeps the JSON of objects of kinds the translator does not
	// read (Bag.Other), for tools that look at more than translation does
	// (the migration analyzer reads AuthorizationPolicies, Deployments, …).
	KeepIgnored bool

	objects map[ir.ResourceRef]*loaded
	order   []ir.ResourceRef
	diags   ir.Diagnostics
	ignored []ir.ResourceRef
	others  []*Object
}

type loaded struct {
	obj any
	src *Source
}

// NewLoader returns a Loader for the given default namespace.
func NewLoader(defaultNamespace string) *Loader {
	if defaultNamespace == "" {
		defaultNamespace = "default"
	}
	return &Loader{DefaultNamespace: defaultNamespace, objects: map[ir.ResourceRef]*loaded{}}
}

// manifestExts are the file name endings a directory walk picks up.
var manifestExts = []string{".yaml", ".yml", ".json"}

// LoadPath reads a file, or every manifest file under a directory
// (recursively, in lexical order). The error is for paths that cannot be read
// at all; problems inside files become diagnostics.
func (l *Loader) LoadPath(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if !info.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		l.LoadBytes(path, data)
		return nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != path && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if slices.Contains(manifestExts, strings.ToLower(filepath.Ext(p))) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", path, err)
	}
	slices.Sort(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read %s: %w", f, err)
		}
		l.LoadBytes(f, data)
	}
	return nil
}

// LoadReader reads a stream (stdin) under a display name.
func (l *Loader) LoadReader(name string, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	l.LoadBytes(name, data)
	return nil
}

// LoadBytes decodes a (multi-document) YAML or JSON stream.
func (l *Loader) LoadBytes(name string, data []byte) {
	for _, doc := range splitDocuments(data) {
		l.decodeDocument(name, doc)
	}
}

// add records a decoded object, replacing an earlier one with the same identity.
func (l *Loader) add(ref ir.ResourceRef, obj any, src *Source) {
	if prev, ok := l.objects[ref]; ok {
		l.diags = append(l.diags, ir.Diagnostic{
			Severity: ir.SeverityInfo, Code: ir.CodeDuplicate, Resource: ref,
			Message: fmt.Sprintf("replaces the definition at %s:%d (kubectl apply semantics: the last one wins)", prev.src.File, prev.src.Line),
			File:    src.File, Line: src.Line,
		})
		prev.obj, prev.src = obj, src
		return
	}
	l.objects[ref] = &loaded{obj: obj, src: src}
	l.order = append(l.order, ref)
}

// Diagnostics returns what decoding found.
func (l *Loader) Diagnostics() ir.Diagnostics { return l.diags }

// Bag returns the decoded objects, sorted.
func (l *Loader) Bag() *Bag {
	b := &Bag{Sources: make(map[ir.ResourceRef]*Source, len(l.objects))}
	for _, ref := range l.order {
		o := l.objects[ref]
		b.Add(o.obj)
		b.Sources[ref] = o.src
	}
	b.Ignored = append(b.Ignored, l.ignored...)
	last := map[ir.ResourceRef]int{} // kubectl apply semantics: the last one wins
	for i, o := range l.others {
		last[o.Ref] = i
	}
	for i, o := range l.others {
		if last[o.Ref] != i {
			continue
		}
		if _, dup := b.Sources[o.Ref]; !dup {
			b.Sources[o.Ref] = o.Source
		}
		b.Other = append(b.Other, o)
	}
	b.Sort()
	return b
}
