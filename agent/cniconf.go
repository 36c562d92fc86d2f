//go:build linux

package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nodemesh/nodemesh/agent/cni"
)

// CNIConfFile is the name of the conflist the agent writes; "10-" sorts it
// before the usual defaults, as the runtime uses the first file.
const CNIConfFile = "10-nodemesh.conflist"

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
	data, err := ConfList(a.cfg.CNISocket)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(a.cfg.CNIConfDir, CNIConfFile), data, 0o644); err != nil {
		return fmt.Errorf("write CNI configuration: %w", err)
	}
	return nil
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
