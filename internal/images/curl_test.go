package images

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/api"
)

// TestCurlImageLinks: every library curl and its libraries need is in the
// image, where the loader looks (its default directories: the image has no
// ld.so.cache), and the loader curl names is there; the labels name the
// Debian packages with their versions.
func TestCurlImageLinks(t *testing.T) {
	imgs, _ := buildAll(t)
	b := find(t, imgs, api.CurlImage)
	hdrs, data := files(t, b.Image)
	libDirs := []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib", "/lib64"}
	resolve := func(p string) []byte {
		for range 10 {
			h, ok := hdrs[p]
			if !ok {
				return nil
			}
			if h.Typeflag != tar.TypeSymlink {
				return data[p]
			}
			if path.IsAbs(h.Linkname) {
				p = h.Linkname
			} else {
				p = path.Join(path.Dir(p), h.Linkname)
			}
		}
		return nil
	}
	queue := []string{"/usr/bin/curl", "/bin/sh"}
	seen := map[string]bool{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		content := resolve(p)
		if content == nil {
			t.Errorf("%s is not in the image", p)
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(content))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				interp := make([]byte, prog.Filesz)
				if _, err := prog.ReadAt(interp, 0); err != nil {
					t.Fatal(err)
				}
				queue = append(queue, strings.TrimRight(string(interp), "\x00"))
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		for _, lib := range needed {
			found := ""
			for _, d := range libDirs {
				if resolve(d+"/"+lib) != nil {
					found = d + "/" + lib
					break
				}
			}
			if found == "" {
				t.Errorf("%s needs %s: not in the image's library directories", p, lib)
				continue
			}
			queue = append(queue, found)
		}
	}
	cf, err := b.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []string{"curl", "libcurl4", "busybox-static", "libc6"} {
		if v := cf.Config.Labels["io.nodemesh.debian."+pkg]; v == "" {
			t.Errorf("no label with the Debian version of %s: %v", pkg, cf.Config.Labels)
		}
	}
	if !strings.Contains(cf.Config.Labels["io.nodemesh.debian.packages"], "curl=") {
		t.Errorf("packages label %q", cf.Config.Labels["io.nodemesh.debian.packages"])
	}
}

// TestCurlImageRuns (root): the image's file system, extracted, runs curl
// and the shell scripts of the check's clients and the migration probe
// (chroot into it, no other file of the machine visible).
func TestCurlImageRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chroot into the curl image's file system needs root")
	}
	imgs, _ := buildAll(t)
	b := find(t, imgs, api.CurlImage)
	root := t.TempDir()
	hdrs, data := files(t, b.Image)
	for p, h := range hdrs {
		dst := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(dst, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, dst)
		case tar.TypeReg:
			err = os.WriteFile(dst, data[p], os.FileMode(h.Mode))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]struct {
		cmd  []string
		want string
	}{
		"curl --version": {cmd: []string{"/usr/bin/curl", "--version"}, want: "curl 7"},
		// The check's client loop (sleep is busybox's) and the probe's
		// parameter expansions.
		"the check's shell": {cmd: []string{"/bin/sh", "-c", `trap 'exit 0' TERM; i=0; while [ $i -lt 2 ]; do sleep 0; i=$((i+1)); done; echo $i`}, want: "2"},
		"the probe's shell": {cmd: []string{"/bin/sh", "-c", `nl='
'; resp="body${nl}200"; echo "${resp##*"$nl"}"`}, want: "200"},
		"curl from sh, refused": {cmd: []string{"sh", "-c", `curl -s -o /dev/null -w '%{http_code}' --connect-timeout 2 http://127.0.0.1:1/; echo " $?"`}, want: "000 7"},
	}
	for n, tc := range cases {
		t.Run(n, func(t *testing.T) {
			cmd := exec.Command("chroot", append([]string{root}, tc.cmd...)...)
			cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
			out, err := cmd.CombinedOutput()
			if err != nil && n != "curl from sh, refused" {
				t.Fatalf("%v: %v\n%s", tc.cmd, err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("%v printed %q, want %q", tc.cmd, out, tc.want)
			}
		})
	}
}
