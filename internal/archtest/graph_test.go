package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
)

// pkg is one package of the import graph.
type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string // direct imports, non-test files
	Deps       []string // every package it depends on, transitively
}

// graph is the module's import graph: its own packages and every package
// they depend on.
type graph struct {
	module string
	pkgs   map[string]*pkg
}

// loadGraph runs 'go list -deps' on the whole module.
func loadGraph() (*graph, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	cmd := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Standard,Imports,Deps,Module", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, stderr.String())
	}
	g := &graph{pkgs: map[string]*pkg{}}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			pkg
			Module *struct {
				Path string
				Main bool
			}
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode go list output: %w", err)
		}
		if p.Module != nil && p.Module.Main {
			g.module = p.Module.Path
		}
		g.pkgs[p.ImportPath] = &p.pkg
	}
	if g.module == "" {
		return nil, errors.New("go list found no package of the main module")
	}
	return g, nil
}

// own are the import paths of the module's packages.
func (g *graph) own() []string {
	var out []string
	for path := range g.pkgs {
		if path == g.module || strings.HasPrefix(path, g.module+"/") {
			out = append(out, path)
		}
	}
	return out
}
