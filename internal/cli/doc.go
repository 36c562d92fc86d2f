// Package cli is the `nodemesh` command tree (cobra). Commands take their
// input and output streams from IO so that tests run them without a terminal
// or a cluster; cmd/nodemesh only wires os.Args and exits with the code
// Execute returns.
//
// Exit codes: 0 success, 1 the command ran but found errors (for translate:
// at least one error diagnostic; valid output is still printed), 2 wrong
// usage (unknown flags, bad flag values, unreadable input paths).
package cli
