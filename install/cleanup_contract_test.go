//go:build linux

package install

import (
	"testing"

	"github.com/nodemesh/nodemesh/agent"
)

// The agent (which does not link Helm) keeps its own copy of the cleanup
// contract's names.
func TestCleanupContractNames(t *testing.T) {
	if CleanupName != agent.CleanupConfigMap || NodeCleanedReason != agent.NodeCleanedReason {
		t.Errorf("installer %q/%q, agent %q/%q", CleanupName, NodeCleanedReason, agent.CleanupConfigMap, agent.NodeCleanedReason)
	}
}
