package installcli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/internal/cli"
)

// run runs the nodemesh command line with the installer's commands, as
// cmd/nodemesh does.
func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli.Execute(args, cli.IO{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}, Commands)
	return code, out.String(), errOut.String()
}
