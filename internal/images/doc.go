// Package images builds nodemesh's container images offline ('make images',
// whose main is hack/images): static Go binaries — CGO off, -trimpath, the
// version stamped as 'nodemesh version' prints it — each in one layer on an
// empty base, and a curl image assembled from the Debian packages of the
// machine that builds it. Images are OCI (media types, linux/amd64),
// assembled with go-containerregistry, and reproducible: the same sources
// and version give the same digests.
//
// Each image is written as an archive that both 'ctr images import' and
// 'crane push' / 'docker load' read (an OCI image layout with Docker's
// manifest.json beside it, as 'docker save' writes since Docker 25), and all
// of them into one OCI layout directory.
//
// It is build tooling: no nodemesh binary links it (internal/archtest
// enforces it). It imports api for the images' names.
package images
