//go:build linux

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/bpf"
)

// endpointRecord is what the agent knows about one pod interface; it is
// written to the state directory before ADD returns and removed by DEL.
type endpointRecord struct {
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
	Netns       string     `json:"netns"`
	Namespace   string     `json:"namespace"`
	Name        string     `json:"name"`
	UID         string     `json:"uid,omitempty"`
	HostIfName  string     `json:"hostIfName"`
	HostIfindex int        `json:"hostIfindex"`
	IP          netip.Addr `json:"ip"`
	NetnsCookie uint64     `json:"netnsCookie"`
	// Chained: another CNI made the veth and the address (chained mode);
	// the agent neither deletes the veth nor holds an address lease.
	Chained bool `json:"chained,omitempty"`

	// From the pod object, refreshed when it changes.
	ServiceAccount string             `json:"serviceAccount,omitempty"`
	Labels         map[string]string  `json:"labels,omitempty"`
	Ports          []policy.NamedPort `json:"ports,omitempty"`
	Sidecar        bool               `json:"sidecar,omitempty"`
	Identity       bpf.Identity       `json:"identity"`
	IdentityHash   string             `json:"identityHash"`

	// gone: the host veth disappeared while the agent was not looking (the
	// record stays until DEL, which releases the address).
	gone bool
}

func recordKey(containerID, ifName string) string { return containerID + "/" + ifName }

func (r *endpointRecord) key() string { return recordKey(r.ContainerID, r.IfName) }

type recordStore struct{ dir string }

func (s recordStore) path(hostIfName string) string { return filepath.Join(s.dir, hostIfName+".json") }

func (s recordStore) save(r *endpointRecord) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path(r.HostIfName) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("save endpoint %s: %w", r.key(), err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save endpoint %s: %w", r.key(), err)
	}
	if err := os.Rename(tmp, s.path(r.HostIfName)); err != nil {
		return fmt.Errorf("save endpoint %s: %w", r.key(), err)
	}
	return nil
}

func (s recordStore) remove(r *endpointRecord) error {
	if err := os.Remove(s.path(r.HostIfName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove endpoint record %s: %w", r.key(), err)
	}
	return nil
}

func (s recordStore) load() ([]*endpointRecord, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read endpoint records: %w", err)
	}
	var out []*endpointRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		r := &endpointRecord{}
		if err := json.Unmarshal(data, r); err != nil {
			return nil, fmt.Errorf("endpoint record %s: %w", e.Name(), err)
		}
		out = append(out, r)
	}
	return out, nil
}
