package bpf

// The generated *_bpfel.go and *_bpfel.o files are committed, so building and
// testing never needs clang. Regenerate after changing anything under c/ with
// `make bpf-generate` (clang, llvm-strip and libbpf-dev headers; the committed
// objects were built with Debian bookworm's clang 14.0.6), and check with
// hack/check-bpf-generated.sh that the committed files match the sources.

//go:generate go tool bpf2go -tags linux -target bpfel -no-global-types -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" policy c/policy.c
//go:generate go tool bpf2go -tags linux -target bpfel -no-global-types -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" redirect c/redirect.c
//go:generate go tool bpf2go -tags linux -target bpfel -no-global-types -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" masq c/masq.c
