package images

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"
)

// Module is nodemesh's module path.
const Module = "github.com/nodemesh/nodemesh"

// Packages are the Go programs the images carry, by binary name.
var Packages = map[string]string{
	"nodemesh-controller": "./cmd/nodemesh-controller",
	"nodemesh-agent":      "./cmd/nodemesh-agent",
	"nodemesh-cni":        "./cmd/nodemesh-cni",
	"nodemesh-testapp":    "./cmd/nodemesh-testapp",
	"pause":               "./hack/pause",
}

// VersionVars are the variables the version is stamped into: the command
// lines' (clibase, 'nodemesh version'), the test app's and pause's.
var VersionVars = []string{Module + "/internal/clibase.Version", Module + "/internal/testapp.Version", "main.version"}

// LDFlags are the linker flags of every image binary: no symbol table or
// DWARF (smaller images; panics still print their stack), no build ID (the
// same sources give the same bytes), the version stamped.
func LDFlags(version string) string {
	f := []string{"-s", "-w", "-buildid="}
	for _, v := range VersionVars {
		f = append(f, "-X", v+"="+version)
	}
	return strings.Join(f, " ")
}

// GoBuild builds the image binaries.
type GoBuild struct {
	// Go is the go command ("go" when empty).
	Go string
	// ModuleDir is the module's root.
	ModuleDir string
	Version   string
}

// Build compiles every program of Packages into dir, static
// (CGO_ENABLED=0) for Platform, with -trimpath, and returns their paths by
// name. One 'go build' compiles them all: shared packages build once.
func (b GoBuild) Build(ctx context.Context, dir string) (map[string]string, error) {
	if strings.ContainsAny(b.Version, " \t\n'\"") || b.Version == "" {
		return nil, fmt.Errorf("version %q: want a non-empty word (it is an image tag)", b.Version)
	}
	goCmd := b.Go
	if goCmd == "" {
		goCmd = "go"
	}
	args := []string{"build", "-trimpath", "-ldflags", LDFlags(b.Version), "-o", dir + "/"}
	out := map[string]string{}
	for name, pkg := range Packages {
		if path.Base(pkg) != name {
			return nil, fmt.Errorf("package %s builds %s, not %s", pkg, path.Base(pkg), name)
		}
		args = append(args, pkg)
		out[name] = path.Join(dir, name)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = b.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+Platform.OS, "GOARCH="+Platform.Architecture, "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, stderr.String())
	}
	return out, nil
}
