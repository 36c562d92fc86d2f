package images

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestDockerfile: build/Dockerfile (for users with docker; it cannot be run
// here) stays in step with make images: the Go version of go.mod, every
// version variable, every program, an image target each.
func TestDockerfile(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	df, err := os.ReadFile(filepath.Join(root, "build", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	gm, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gm)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	text := string(df)
	if !strings.Contains(text, "ARG GO_VERSION="+string(goLine[1])+"\n") {
		t.Errorf("build/Dockerfile's GO_VERSION is not go.mod's go %s", goLine[1])
	}
	for _, v := range VersionVars {
		if !strings.Contains(text, "-X "+v+"=${VERSION}") {
			t.Errorf("build/Dockerfile does not stamp %s", v)
		}
	}
	for _, pkg := range Packages {
		if !strings.Contains(text, " "+pkg) {
			t.Errorf("build/Dockerfile does not build %s", pkg)
		}
	}
	for _, target := range []string{"controller", "agent", "testapp", "curl", "pause"} {
		if !regexp.MustCompile(`(?m)^FROM \S+ AS ` + target + `$`).MatchString(text) {
			t.Errorf("build/Dockerfile has no target %s", target)
		}
	}
}
