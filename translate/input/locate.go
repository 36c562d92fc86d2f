package input

import (
	"gopkg.in/yaml.v3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Source says where an object was read from.
type Source struct {
	File string
	// Line is the line of the object's first key.
	Line int
	root *yaml.Node
}

// LineOf returns the line of the field at path, or of its deepest ancestor
// present in the document, or the object's own line.
func (s *Source) LineOf(path string) int {
	if s == nil {
		return 0
	}
	if s.root == nil || path == "" {
		return s.Line
	}
	n := s.root
	line := s.Line
	for _, e := range ir.ParsePath(path) {
		n = deref(n)
		if n == nil {
			break
		}
		var next *yaml.Node
		switch {
		case e.IsIndex && n.Kind == yaml.SequenceNode:
			if e.Index >= 0 && e.Index < len(n.Content) {
				next = n.Content[e.Index]
				line = next.Line
			}
		case !e.IsIndex && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == e.Key {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

// shiftLines adds delta to every node's line so that positions are relative
// to the file rather than to the document.
func shiftLines(n *yaml.Node, delta int) {
	if delta == 0 || n == nil {
		return
	}
	stack := []*yaml.Node{n}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		c.Line += delta
		stack = append(stack, c.Content...)
	}
}
