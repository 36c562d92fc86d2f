package cli

import "github.com/nodemesh/nodemesh/internal/clibase"

// KubeFlags are kubectl's connection flags (shared with nodemesh-agent).
type KubeFlags = clibase.KubeFlags

func init() { clibase.UserAgent = "nodemesh/" + Version }
