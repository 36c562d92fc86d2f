// Package installcli is the installer's part of the nodemesh command line:
// install, upgrade, uninstall, status and check. It is a package of its own
// so that nodemesh-controller, built from internal/cli, does not link the
// Helm SDK; cmd/nodemesh adds these commands to the nodemesh root.
//
// It imports install, install/check, internal/cli and internal/clibase (the
// shared flags, exit codes and streams); never the agent or the xDS server.
package installcli
