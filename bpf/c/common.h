// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Shared by every nodemesh BPF program. Only uapi headers and libbpf's
 * bpf_helpers.h / bpf_endian.h are used, so no vmlinux.h is needed. */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Keep clang from merging two adjacent context stores into one wider store the
 * verifier rejects (seen with ctx->optlen / ctx->retval in cgroup/getsockopt). */
#define barrier() asm volatile("" ::: "memory")
