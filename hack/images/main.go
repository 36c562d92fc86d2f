// Command images builds nodemesh's container images offline ('make images'):
// see internal/images.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/nodemesh/nodemesh/internal/images"
)

func main() {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go run ./hack/images --version=VERSION [--out=_output/images] [--no-curl]

Builds nodemesh's images offline (static binaries on an empty base; curl from
this machine's Debian packages) as OCI archives OUT/<name>.tar, which
'ctr -n k8s.io images import' and 'crane push' read, and the OCI layout OUT/oci.

Flags:
`)
		fs.PrintDefaults()
	}
	version := fs.String("version", "", "the images' tag and the binaries' version (required; make images passes git describe)")
	out := fs.String("out", "_output/images", "output directory")
	noCurl := fs.Bool("no-curl", false, "leave out the curl image (it needs a Debian machine with curl and busybox-static)")
	binary := fs.String("binary", "", "REF=PATH: instead, build only an image of this one static program (entrypoint /NAME, user 65532) as OUT/NAME.tar — the local cluster's CoreDNS")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *binary != "" {
		if err := binaryImage(*binary, *out); err != nil {
			fmt.Fprintln(os.Stderr, "images:", err)
			os.Exit(1)
		}
		return
	}
	if *version == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "images: --version is required and there are no arguments (see --help)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	built, err := images.Build(ctx, images.Options{Version: *version, ModuleDir: wd, OutDir: *out, NoCurl: *noCurl})
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tARCHIVE")
	for _, b := range built {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", b.Ref, b.Digest, b.Archive)
	}
	tw.Flush()
	fmt.Printf("OCI layout with all images: %s/%s\n", *out, images.LayoutDir)
}

// binaryImage writes OUT/NAME.tar: one static program on an empty base.
func binaryImage(spec, out string) error {
	ref, path, ok := strings.Cut(spec, "=")
	if !ok || ref == "" || path == "" {
		return fmt.Errorf("--binary %q: want REF=PATH", spec)
	}
	name := filepath.Base(path)
	img, err := images.Spec{Name: name, Files: []images.File{{Path: "/" + name, Mode: 0o755, Source: path}},
		Entrypoint: []string{"/" + name}, User: "65532"}.Image()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	archive := filepath.Join(out, name+".tar")
	if err := images.WriteArchive(archive, ref, img); err != nil {
		return err
	}
	fmt.Println(ref, archive)
	return nil
}
