package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Platform of every image.
var Platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// epoch is every file's and the config's time: the same inputs give the
// same digests.
var epoch = time.Unix(0, 0).UTC()

// File is one entry of an image's layer.
type File struct {
	// Path in the image, absolute.
	Path string
	// Mode is the permission bits (0o755 for programs).
	Mode int64
	// Source is the host file whose content it has (symlinks followed), or
	// Data is the content; Link makes it a symbolic link to Link instead.
	Source string
	Data   []byte
	Link   string
}

// Spec is one image: its files (one layer) and its configuration.
type Spec struct {
	// Name is the image's name (api.ControllerImage, …).
	Name  string
	Files []File
	// Entrypoint and Cmd as in the OCI image configuration.
	Entrypoint, Cmd []string
	// User: "65532" for the components that run unprivileged, "" (root)
	// for the agent.
	User   string
	Env    []string
	Labels map[string]string
}

// Image assembles the spec into an OCI image.
func (s Spec) Image() (v1.Image, error) {
	layerTar, err := s.layer()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Name, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", s.Name, err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "nodemesh make images", Comment: s.Name},
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Name, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Name, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = Platform.OS, Platform.Architecture
	cf.Created = v1.Time{Time: epoch}
	cf.Config = v1.Config{Entrypoint: s.Entrypoint, Cmd: s.Cmd, User: s.User, Env: s.Env, Labels: s.Labels}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", s.Name, err)
	}
	return img, nil
}

// layer is the spec's files as an uncompressed tar, in path order, with
// their parent directories, owned by root, at epoch.
func (s Spec) layer() ([]byte, error) {
	files := map[string]File{}
	dirs := map[string]bool{}
	for _, f := range s.Files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("file %q: want an absolute path", f.Path)
		}
		if _, dup := files[p]; dup {
			return nil, fmt.Errorf("file %s twice", p)
		}
		files[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		if f, ok := files[d]; ok {
			return nil, fmt.Errorf("%s is a file and a directory (of %s)", d, f.Path)
		}
	}
	names := make([]string, 0, len(files)+len(dirs))
	for p := range files {
		names = append(names, p)
	}
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		hdr := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: epoch, Format: tar.FormatPAX}
		f, isFile := files[p]
		var data []byte
		switch {
		case !isFile:
			hdr.Typeflag, hdr.Mode, hdr.Name = tar.TypeDir, 0o755, hdr.Name+"/"
		case f.Link != "":
			hdr.Typeflag, hdr.Mode, hdr.Linkname = tar.TypeSymlink, 0o777, f.Link
		default:
			data = f.Data
			if f.Source != "" {
				var err error
				if data, err = os.ReadFile(f.Source); err != nil {
					return nil, fmt.Errorf("file %s: %w", p, err)
				}
			}
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, f.Mode, int64(len(data))
			if hdr.Mode == 0 {
				hdr.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
