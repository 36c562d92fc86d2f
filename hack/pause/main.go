// Command pause is the pod sandbox process of the local cluster's kubelets
// (the pause image that 'make images' builds, named by the kubelet's
// --pod-infra-container-image): it holds the pod's namespaces and does what
// Kubernetes' pause (build/pause/linux/pause.c) does — sleeps until SIGINT
// or SIGTERM, then exits 0, and reaps the zombies reparented to it when it
// is PID 1 of a pod that shares its process namespace.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set by make images, like every nodemesh binary's.
var version = "dev"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println("pause", version, "(nodemesh)")
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "usage: pause [-v]: sleep until SIGINT or SIGTERM, reaping zombies")
		os.Exit(2)
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %s\n", sig)
		os.Exit(0)
	}
}

// reap waits for every child that has ended; signals coalesce, so one
// SIGCHLD may stand for several.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
