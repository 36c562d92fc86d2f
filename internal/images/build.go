package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/nodemesh/nodemesh/api"
)

// Options of a build.
type Options struct {
	// Version is every image's tag and what the binaries print.
	Version string
	// ModuleDir is nodemesh's module root; OutDir gets the archives and the
	// layout (created if missing).
	ModuleDir, OutDir string
	// Go is the go command ("go" when empty).
	Go string
	// NoCurl leaves the curl image out (a machine that is not Debian).
	NoCurl bool
}

// LayoutDir is the OCI layout of all images, under OutDir.
const LayoutDir = "oci"

// Built is one image written.
type Built struct {
	Name, Ref, Archive string
	Digest             v1.Hash
	// Image is read back from the layout written.
	Image v1.Image
}

// Build builds every image and writes OutDir/<name>.tar for each and the
// layout OutDir/oci with all of them.
func Build(ctx context.Context, o Options) ([]Built, error) {
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	var curl *DebianFiles
	if !o.NoCurl {
		var err error
		if curl, err = Curl(ctx); err != nil {
			return nil, fmt.Errorf("the %s image: %w (--no-curl leaves it out)", api.CurlImage, err)
		}
	}
	binDir, err := os.MkdirTemp("", "nodemesh-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir)
	bins, err := GoBuild{Go: o.Go, ModuleDir: o.ModuleDir, Version: o.Version}.Build(ctx, binDir)
	if err != nil {
		return nil, err
	}
	specs, err := Specs(o.Version, bins, curl)
	if err != nil {
		return nil, err
	}
	var out []Built
	all := map[string]v1.Image{}
	for _, s := range specs {
		img, err := s.Image()
		if err != nil {
			return nil, err
		}
		b := Built{Name: s.Name, Ref: api.ImageRef(s.Name, o.Version), Archive: filepath.Join(o.OutDir, s.Name+".tar"), Image: img}
		if b.Digest, err = img.Digest(); err != nil {
			return nil, err
		}
		if err := WriteArchive(b.Archive, b.Ref, img); err != nil {
			return nil, err
		}
		all[b.Ref] = img
		out = append(out, b)
	}
	dir := filepath.Join(o.OutDir, LayoutDir)
	if err := WriteLayout(dir, all); err != nil {
		return nil, err
	}
	// The images returned are read back from what was written.
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Image, err = lp.Image(out[i].Digest); err != nil {
			return nil, fmt.Errorf("read %s back: %w", out[i].Ref, err)
		}
	}
	return out, nil
}
