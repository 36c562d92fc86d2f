//go:build linux

package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodemesh/nodemesh/internal/testapp"
)

// prober sends one request after another from a pod (kubectl exec of a
// shell loop running curl) while something else happens — a migration —
// and keeps every answer: which pod answered, or that none did.
type prober struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	answers []probeAnswer
}

// probeAnswer is one request's outcome: the chain service's answer, or
// the failure line curl printed.
type probeAnswer struct {
	at       time.Time
	response *testapp.ChainResponse
	failure  string
}

// probeMark separates curl's answers in the loop's output: the body of a
// chain service (indented JSON), or curl's failure on stderr (merged).
const probeMark = "--probe--"

// startProber runs the loop in pod ns/pod against url until stop.
func startProber(t *testing.T, ns, pod, url string) *prober {
	t.Helper()
	kubectl := filepath.Join(kubeBin(t), "kubectl")
	// Bounded, so that a loop the exec session leaves behind ends too.
	loop := "trap 'exit 0' TERM INT; end=$(( $(date +%s) + 900 )); while [ $(date +%s) -lt $end ]; do curl -sS --connect-timeout 1 --max-time 2 " + url + " 2>&1; echo; echo " + probeMark + "; sleep 0.2; done"
	cmd := exec.Command(kubectl, "-n", ns, "exec", pod, "--", "sh", "-c", loop)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(root, "_output/cluster/kubeconfig"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &prober{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		var lines []string
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != probeMark {
				if line != "" {
					lines = append(lines, line)
				}
				continue
			}
			a := probeAnswer{at: time.Now(), failure: strings.Join(lines, " ")}
			var r testapp.ChainResponse
			if json.Unmarshal([]byte(strings.Join(lines, "\n")), &r) == nil && r.Service != "" {
				a.response, a.failure = &r, ""
			}
			lines = lines[:0]
			p.mu.Lock()
			p.answers = append(p.answers, a)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// count is how many requests have been answered (or have failed) so far.
func (p *prober) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.answers)
}

// waitFor waits until n more requests than now have completed.
func (p *prober) waitFor(t *testing.T, n int) {
	t.Helper()
	want := p.count() + n
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for p.count() < want {
		select {
		case <-ctx.Done():
			t.Fatalf("the prober completed %d requests in a minute, want %d", p.count(), want)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop ends the loop (the kubectl process this test started, by its PID)
// and returns every answer.
func (p *prober) stop() []probeAnswer {
	if p.cmd.ProcessState == nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		_ = p.cmd.Wait()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]probeAnswer(nil), p.answers...)
}
