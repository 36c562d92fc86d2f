package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/nodemesh/nodemesh/api"
)

const testVersion = "v0.0.0-test.1"

var (
	buildOnce sync.Once
	built     []Built
	outDir    string
	buildErr  error
	curlSkip  string
)

// buildAll runs Build once for the package's tests: every image, as 'make
// images' writes them. The curl image needs a Debian machine with curl and
// busybox-static; without them it is left out, and its tests skip.
func buildAll(t *testing.T) ([]Built, string) {
	t.Helper()
	buildOnce.Do(func() {
		outDir, buildErr = os.MkdirTemp("", "nodemesh-images-test-")
		if buildErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		opts := Options{Version: testVersion, ModuleDir: filepath.Join(filepath.Dir(file), "..", ".."), OutDir: outDir}
		if _, err := Curl(context.Background()); err != nil {
			curlSkip = err.Error()
			opts.NoCurl = true
		}
		built, buildErr = Build(context.Background(), opts)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built, outDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if outDir != "" {
		os.RemoveAll(outDir)
	}
	os.Exit(code)
}

func find(t *testing.T, imgs []Built, n string) Built {
	t.Helper()
	for _, b := range imgs {
		if b.Name == n {
			return b
		}
	}
	if n == api.CurlImage && curlSkip != "" {
		t.Skipf("no curl image on this machine: %s", curlSkip)
	}
	t.Fatalf("no image %s", n)
	return Built{}
}

// files reads an image's file system (its layers flattened): headers and
// contents by absolute path.
func files(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := path.Clean("/" + h.Name)
		hdrs[p] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			data[p] = b
		}
	}
	return hdrs, data
}

// TestImages: every image is valid (go-containerregistry's validate reads
// every blob and checks every digest and size), OCI, linux/amd64, with its
// entrypoint in its layer, executable, a static Go binary that prints the
// tag as its version, and the user it must run as.
func TestImages(t *testing.T) {
	imgs, _ := buildAll(t)
	cases := map[string]struct {
		user string
		// version runs the binary extracted from the image: its output must
		// have the tag. "" for nodemesh-cni, which has no version command.
		versionArgs []string
		static      bool
		// files besides the entrypoint.
		also []string
	}{
		api.ControllerImage: {user: NonRoot, versionArgs: []string{"version"}, static: true},
		api.AgentImage:      {user: "", versionArgs: []string{"version"}, static: true, also: []string{BinDir + "/nodemesh-cni"}},
		api.TestAppImage:    {user: NonRoot, versionArgs: []string{"version"}, static: true},
		api.PauseImage:      {user: PauseUser, versionArgs: []string{"-v"}, static: true},
		api.CurlImage:       {user: NonRoot, also: []string{"/bin/sh", "/bin/sleep", "/lib64/ld-linux-x86-64.so.2"}},
	}
	for n, tc := range cases {
		t.Run(n, func(t *testing.T) {
			b := find(t, imgs, n)
			if err := validate.Image(b.Image); err != nil {
				t.Fatalf("invalid image: %v", err)
			}
			if b.Ref != "ghcr.io/nodemesh/"+n+":"+testVersion {
				t.Errorf("reference %s", b.Ref)
			}
			mt, err := b.Image.MediaType()
			if err != nil || mt != types.OCIManifestSchema1 {
				t.Errorf("manifest media type %s (%v), want OCI", mt, err)
			}
			m, err := b.Image.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
				t.Errorf("config %s, layers %v: want OCI types, one layer", m.Config.MediaType, m.Layers)
			}
			cf, err := b.Image.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != "linux" || cf.Architecture != "amd64" {
				t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
			}
			if cf.Config.User != tc.user {
				t.Errorf("user %q, want %q", cf.Config.User, tc.user)
			}
			if cf.Config.Labels["org.opencontainers.image.version"] != testVersion {
				t.Errorf("labels %v", cf.Config.Labels)
			}
			hdrs, data := files(t, b.Image)
			if len(cf.Config.Entrypoint) == 0 {
				t.Fatal("no entrypoint")
			}
			entry := cf.Config.Entrypoint[0]
			for _, p := range append([]string{entry}, tc.also...) {
				h, ok := hdrs[p]
				if !ok {
					t.Errorf("%s is not in the image", p)
					continue
				}
				if h.Typeflag == tar.TypeReg && h.Mode&0o111 != 0o111 {
					t.Errorf("%s: mode %o, want it executable by everyone", p, h.Mode)
				}
				if h.Uid != 0 || h.Gid != 0 || (h.Typeflag != tar.TypeSymlink && h.Mode&0o022 != 0) {
					t.Errorf("%s: owner %d:%d mode %o: only root may change it", p, h.Uid, h.Gid, h.Mode)
				}
			}
			if !tc.static {
				return
			}
			for p, h := range hdrs {
				if h.Typeflag != tar.TypeReg {
					continue
				}
				f, err := elf.NewFile(bytes.NewReader(data[p]))
				if err != nil {
					t.Errorf("%s: not ELF: %v", p, err)
					continue
				}
				if !staticELF(f) {
					t.Errorf("%s has a program interpreter: not static (CGO_ENABLED=0?)", p)
				}
				if f.Machine != elf.EM_X86_64 {
					t.Errorf("%s: machine %s", p, f.Machine)
				}
			}
			bin := filepath.Join(t.TempDir(), path.Base(entry))
			if err := os.WriteFile(bin, data[entry], 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, tc.versionArgs...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", entry, tc.versionArgs, err, out)
			}
			if f := strings.Fields(string(out)); len(f) < 2 || f[1] != testVersion {
				t.Errorf("%s %v printed %q, want version %s (the tag)", entry, tc.versionArgs, out, testVersion)
			}
		})
	}
}

// TestArchives: each archive reads back as the same image in both of its
// forms — the OCI layout containerd imports (named by its annotation) and
// Docker's manifest.json that crane push and docker load read — and the
// layout directory holds every image under its reference.
func TestArchives(t *testing.T) {
	imgs, out := buildAll(t)
	for _, b := range imgs {
		t.Run(b.Name, func(t *testing.T) {
			m, err := b.Image.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			// Docker's form, as crane push FILE reads it.
			tag, err := name.NewTag(b.Ref)
			if err != nil {
				t.Fatal(err)
			}
			timg, err := tarball.ImageFromPath(b.Archive, &tag)
			if err != nil {
				t.Fatalf("read as a docker archive: %v", err)
			}
			if err := validate.Image(timg); err != nil {
				t.Fatalf("docker archive: %v", err)
			}
			tcfg, _ := timg.ConfigName()
			tlayers, _ := timg.Layers()
			if tcfg != m.Config.Digest || len(tlayers) != 1 {
				t.Errorf("docker archive: config %s, %d layers; want %s, 1", tcfg, len(tlayers), m.Config.Digest)
			} else if d, _ := tlayers[0].Digest(); d != m.Layers[0].Digest {
				t.Errorf("docker archive: layer %s, want %s", d, m.Layers[0].Digest)
			}
			// The OCI layout, as containerd reads it.
			dir := t.TempDir()
			untar(t, b.Archive, dir)
			got := imageFromLayout(t, dir, b.Ref)
			if d, _ := got.Digest(); d != b.Digest {
				t.Errorf("oci layout: digest %s, want %s", d, b.Digest)
			}
			// And the layout of all images.
			got = imageFromLayout(t, filepath.Join(out, LayoutDir), b.Ref)
			if d, _ := got.Digest(); d != b.Digest {
				t.Errorf("layout of all images: digest %s, want %s", d, b.Digest)
			}
		})
	}
}

// imageFromLayout finds the image annotated with ref in the OCI layout at
// dir, and validates it.
func imageFromLayout(t *testing.T, dir, ref string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read oci layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Annotations[AnnotationImageName] != ref {
			continue
		}
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" {
			t.Errorf("descriptor platform %v", d.Platform)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatalf("image %s in the layout: %v", ref, err)
		}
		return img
	}
	t.Fatalf("no manifest annotated %s=%s in %s", AnnotationImageName, ref, dir)
	return nil
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("archive entry %q leaves the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
