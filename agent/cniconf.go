//go:build linux

package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/api"
)

// CNIConfFile is the name of the conflist the agent writes (see
// api.CNIConfFile: it sorts first, nodemesh being the node's CNI).
const CNIConfFile = api.CNIConfFile

// legacyCNIConfFiles are names earlier agents wrote; the agent and Cleanup
// remove them (a stale 10-nodemesh.conflist would name the same plugin
// and socket, but nothing should be left that the agent does not own).
var legacyCNIConfFiles = []string{"10-nodemesh.conflist"}

// ConfList is the CNI network configuration list pointing the plugin at
// socket.
func ConfList(socket string) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": cni.SupportedVersions[len(cni.SupportedVersions)-1],
		"name":       "nodemesh",
		"plugins": []map[string]any{{
			"type":        cni.PluginType,
			"agentSocket": socket,
		}},
	}, "", "  ")
}

// installCNI copies the plugin into the CNI bin dir and writes the conflist
// into the conf dir, each atomically (a runtime never reads half a file).
// It runs once the agent is ready, so the node is not reported ready for
// pods before the agent can serve them.
func (a *Agent) installCNI() error {
	if a.cfg.CNIBinDir != "" && a.cfg.CNIPlugin != "" {
		if err := copyFileAtomic(a.cfg.CNIPlugin, filepath.Join(a.cfg.CNIBinDir, cni.PluginType), 0o755); err != nil {
			return fmt.Errorf("install CNI plugin: %w", err)
		}
	}
	if a.cfg.CNIConfDir == "" {
		return nil
	}
	if a.cfg.CNIMode == CNIChained {
		// Not a conflist of its own: nodemesh-cni goes into the primary
		// CNI's (keepChained, started once the agent is ready).
		if err := os.Remove(filepath.Join(a.cfg.CNIConfDir, CNIConfFile)); err == nil {
			a.log.Info("removed nodemesh's own conflist (chained mode)")
		}
		return nil
	}
	if changed, err := unchain(a.cfg.CNIConfDir); err != nil {
		a.log.Warn("remove nodemesh-cni from other conflists (standalone mode)", "error", err)
	} else if len(changed) > 0 {
		a.log.Info("removed nodemesh-cni from other conflists (standalone mode)", "files", changed)
	}
	data, err := ConfList(a.cfg.CNISocket)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(a.cfg.CNIConfDir, CNIConfFile), data, 0o644); err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	for _, f := range legacyCNIConfFiles {
		if err := os.Remove(filepath.Join(a.cfg.CNIConfDir, f)); err == nil {
			a.log.Info("removed the configuration of an earlier agent", "file", f)
		}
	}
	if others := otherConfs(a.cfg.CNIConfDir); len(others) > 0 {
		// Ours sorts first, so the runtime uses it; the others belong to
		// another CNI (the installer's preflight refuses that case).
		a.log.Warn("other CNI configurations in the conf dir: nodemesh's sorts first and is the one the runtime uses; pods set up by the other CNI keep its network", "files", others)
	}
	return nil
}

// otherConfs lists the CNI configurations in dir that are not nodemesh's.
func otherConfs(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == CNIConfFile || strings.HasPrefix(n, ".") {
			continue
		}
		if ext := filepath.Ext(n); ext == ".conflist" || ext == ".conf" || ext == ".json" {
			out = append(out, n)
		}
	}
	return out
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func copyFileAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	return writeFileAtomic(dst, data, mode)
}
