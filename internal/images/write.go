package images

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Annotations of an image in an OCI layout's index: containerd names an
// imported image after AnnotationImageName (so 'ctr images import' needs no
// --base-name), other tools after the OCI tag.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// WriteLayout writes the images, by reference, into a new OCI image layout
// at dir (replacing what is there), each annotated with its reference.
func WriteLayout(dir string, imgs map[string]v1.Image) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout %s: %w", dir, err)
	}
	refs := make([]string, 0, len(imgs))
	for r := range imgs {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	for _, r := range refs {
		ann, err := annotations(r)
		if err != nil {
			return err
		}
		if err := lp.AppendImage(imgs[r], layout.WithAnnotations(ann), layout.WithPlatform(Platform)); err != nil {
			return fmt.Errorf("oci layout %s: %s: %w", dir, r, err)
		}
	}
	return nil
}

func annotations(ref string) (map[string]string, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	return map[string]string{AnnotationImageName: tag.Name(), AnnotationRefName: tag.TagStr()}, nil
}

// dockerManifest is one entry of Docker's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// WriteArchive writes one image as a tar that is an OCI image layout
// (oci-layout, index.json, blobs/sha256/…) with Docker's manifest.json
// beside it naming the same blobs — the form 'docker save' writes since
// Docker 25. containerd ('ctr images import') reads the OCI layout and names
// the image from the index's AnnotationImageName; go-containerregistry's
// tarball reader ('crane push FILE REF') and 'docker load' read
// manifest.json. The entries are in a fixed order with fixed times, so the
// archive's bytes depend only on the image.
func WriteArchive(path, ref string, img v1.Image) error {
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := WriteLayout(tmp, map[string]v1.Image{ref: img}); err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	dm := []dockerManifest{{Config: blob(m.Config.Digest), RepoTags: []string{ref}}}
	for _, l := range m.Layers {
		dm[0].Layers = append(dm[0].Layers, blob(l.Digest))
	}
	dmJSON, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	var names []string
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(tmp, p)
		names = append(names, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	werr := func() error {
		// ggcr's layout keeps every blob in blobs/sha256.
		for _, d := range []string{"blobs/", "blobs/sha256/"} {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		for _, n := range names {
			if err := addFile(tw, n, filepath.Join(tmp, n)); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "manifest.json", Mode: 0o644, Size: int64(len(dmJSON)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(dmJSON); err != nil {
			return err
		}
		return tw.Close()
	}()
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}

func addFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: st.Size(), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
