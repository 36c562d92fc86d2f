package check

import (
	"context"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/testapp"
)

// TestDefaultImages: the check runs nodemesh's own images of its version
// (make images builds them; no registry needed), and the flags' values win.
func TestDefaultImages(t *testing.T) {
	o := Options{Version: "v0.4.0"}
	o.defaults()
	if o.ClientImage != api.ImageRef(api.CurlImage, "v0.4.0") || o.EchoImage != api.ImageRef(api.TestAppImage, "v0.4.0") {
		t.Errorf("defaults: client %s, echo %s", o.ClientImage, o.EchoImage)
	}
	o = Options{ClientImage: "registry.example.com/curl:8", EchoImage: "registry.example.com/agnhost:2.53"}
	o.defaults()
	if o.ClientImage != "registry.example.com/curl:8" || o.EchoImage != "registry.example.com/agnhost:2.53" {
		t.Errorf("overridden: client %s, echo %s", o.ClientImage, o.EchoImage)
	}
}

// TestEchoServerContract: the echo container's command line is the test
// app's, and the requests the tests make — its readiness probe, curlStatus
// and curlLoop, run by real curl — get what their expectations want from
// the test app's netexec.
func TestEchoServerContract(t *testing.T) {
	s := &Suite{opts: Options{}}
	s.opts.defaults()
	echo := s.deployment(workload{name: "echo-same-node", echo: true}).Spec.Template.Spec.Containers[0]
	if echo.Image != DefaultEchoImage("dev") {
		t.Errorf("echo image %s", echo.Image)
	}
	var out, errb strings.Builder
	// The container's arguments parse as the test app's (--help stops
	// before it serves).
	if code := testapp.Main(context.Background(), append(append([]string(nil), echo.Args...), "--help"), &out, &errb); code != 0 {
		t.Fatalf("nodemesh-testapp %v: exit %d: %s", echo.Args, code, errb.String())
	}
	if echo.Args[0] != "netexec" || echo.Args[1] != "--http-port=8080" {
		t.Errorf("echo args %v", echo.Args)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl to run the tests' requests with")
	}
	srv := httptest.NewServer(testapp.NetexecHandler("echo-same-node-5d8f"))
	defer srv.Close()
	probe := echo.ReadinessProbe.HTTPGet
	run := func(cmd []string) Result {
		c := exec.Command(cmd[0], cmd[1:]...)
		var o, e strings.Builder
		c.Stdout, c.Stderr = &o, &e
		err := c.Run()
		return Result{Stdout: o.String(), Stderr: e.String(), Err: err}
	}
	if err := expectStatus(200)(run(curlStatus(srv.URL + probe.Path))); err != nil {
		t.Errorf("readiness probe %s: %v", probe.Path, err)
	}
	if err := expectStatus(200)(run(curlStatus(srv.URL + "/hostname"))); err != nil {
		t.Errorf("curlStatus /hostname: %v", err)
	}
	if err := expectShare("echo-same-node", 1, 0, 3)(run(curlLoop(srv.URL+"/hostname", 3, "-H", CheckHeader+": v2"))); err != nil {
		t.Errorf("curlLoop /hostname: %v", err)
	}
}
