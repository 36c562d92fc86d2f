// Package install puts nodemesh on a cluster and proves it works: the
// embedded Helm chart (chart/, also usable with plain helm), values merging
// and schema validation with messages that name the key, client-side
// rendering (what 'nodemesh install --dry-run' prints), install, upgrade and
// uninstall through the Helm SDK with Secret storage, preflight checks, live
// readiness progress and status. The connectivity check is install/check.
//
// It may import api, translate and internal leaves; never agent, bpf, xds or
// a command line (internal/archtest enforces it).
// Like the other libraries it does not log: progress goes to an injected
// io.Writer, and errors are returned wrapped.
package install
