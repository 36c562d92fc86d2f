// Package cli is the `nodemesh` command tree (cobra). Commands take their
// input and output streams from IO so that tests run them without a terminal
// or a cluster; cmd/nodemesh only wires os.Args and exits with the code
// Execute returns.
//
// Exit codes: 0 success, 1 the command ran but found errors (for translate:
// at least one error diagnostic; valid output is still printed), 2 wrong
// usage (unknown flags, bad flag values, unreadable input paths).
//
// The root command, exit codes, kube and logging flags come from
// internal/clibase, shared with nodemesh-agent (internal/agentcli) and the
// installer's commands (internal/installcli). This package links the
// translator, the xDS server and the migration toolkit, never Helm: the
// nodemesh-controller binary is built from it (internal/archtest).
package cli
