package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// DebianFiles are the files of a Debian host that make up an image, and the
// Debian packages (name → version) they come from.
type DebianFiles struct {
	Files    []File
	Packages map[string]string
}

// Curl collects the curl image's files from the machine's Debian packages:
// curl with exactly the shared libraries ldd lists and the dynamic loader,
// at the paths ldd gives, and busybox-static as /bin/busybox with a link per
// applet (sh, sleep, … in /bin), the shell the check's clients and the
// migration probe run.
func Curl(ctx context.Context) (*DebianFiles, error) {
	for _, tool := range []string{"ldd", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("the curl image is made of the machine's Debian packages: %s not found (%w)", tool, err)
		}
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		return nil, fmt.Errorf("curl not found (apt-get install curl): %w", err)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox not found (apt-get install busybox-static): %w", err)
	}
	if static, err := isStatic(bb); err != nil || !static {
		return nil, fmt.Errorf("%s is not a static busybox (apt-get install busybox-static): %v", bb, err)
	}
	libs, err := lddPaths(ctx, curl)
	if err != nil {
		return nil, err
	}
	d := &DebianFiles{Packages: map[string]string{}}
	add := func(image, host string, mode int64) error {
		pkg, err := debianPackage(ctx, host)
		if err != nil {
			return err
		}
		d.Packages[pkg.name] = pkg.version
		d.Files = append(d.Files, File{Path: image, Source: host, Mode: mode})
		return nil
	}
	if err := add("/usr/bin/curl", curl, 0o755); err != nil {
		return nil, err
	}
	for _, l := range libs {
		if err := add(l, l, 0o755); err != nil {
			return nil, err
		}
	}
	if err := add("/bin/busybox", bb, 0o755); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		// busybox's own wget and others stay; its curl-less applets never
		// shadow /usr/bin/curl (busybox has no curl).
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		d.Files = append(d.Files, File{Path: "/bin/" + applet, Link: "busybox"})
	}
	return d, nil
}

// lddPaths lists what ldd says the program loads: its shared libraries and
// the dynamic loader, by the paths the loader finds them at.
func lddPaths(ctx context.Context, prog string) ([]string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ldd", prog)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", prog, err, stderr.String())
	}
	var paths []string
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "linux-vdso") {
			continue
		}
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", prog, line)
		}
		target := line
		if _, after, ok := strings.Cut(line, "=>"); ok {
			target = after
		}
		f := strings.Fields(target)
		if len(f) == 0 || !filepath.IsAbs(f[0]) {
			return nil, fmt.Errorf("ldd %s: cannot read %q", prog, line)
		}
		paths = append(paths, f[0])
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("ldd %s: no library (a static program?)", prog)
	}
	sort.Strings(paths)
	return paths, nil
}

type debPkg struct{ name, version string }

// debianPackage is the package that installed path. dpkg records a file at
// the path its package ships it at, which after Debian's merged /usr may
// differ from the path it is found by (/lib/… vs /usr/lib/…), and a library
// by its soname link or its real name: each is tried.
func debianPackage(ctx context.Context, p string) (debPkg, error) {
	candidates := []string{p}
	if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
		candidates = append(candidates, real)
	}
	for _, c := range append([]string(nil), candidates...) {
		if rest, ok := strings.CutPrefix(c, "/usr"); ok {
			candidates = append(candidates, rest)
		} else {
			candidates = append(candidates, "/usr"+c)
		}
	}
	var errs []error
	for _, c := range candidates {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-S", c).Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("dpkg-query -S %s: %w", c, err))
			continue
		}
		// "libcurl4:amd64: /usr/lib/x86_64-linux-gnu/libcurl.so.4"
		name, _, ok := strings.Cut(strings.SplitN(string(out), "\n", 2)[0], ": ")
		if !ok || strings.Contains(name, ",") {
			errs = append(errs, fmt.Errorf("dpkg-query -S %s: %q", c, out))
			continue
		}
		v, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", name).Output()
		if err != nil {
			return debPkg{}, fmt.Errorf("version of %s: %w", name, err)
		}
		name, _, _ = strings.Cut(name, ":")
		return debPkg{name: name, version: strings.TrimSpace(string(v))}, nil
	}
	return debPkg{}, fmt.Errorf("no Debian package installed %s: %w", p, errors.Join(errs...))
}
