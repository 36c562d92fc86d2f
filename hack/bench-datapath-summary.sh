#!/bin/sh
# Summarises `go test -bench` output of the datapath benchmarks: for every
# benchmark and metric, the median of the rounds (NODEMESH_BENCH_ROUNDS) and the spread
# (min–max as ± % of the median), then each pod-to-pod and redirect scenario
# as a ratio to its baseline (no program / direct).
set -eu
awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/#[0-9]+$/, "", name)
	for (i = 3; i + 1 <= NF; i += 2) {
		unit = $(i + 1)
		if (unit == "ns/op") continue
		key = name SUBSEP unit
		if (!(key in n)) { order[++nk] = key }
		v[key, ++n[key]] = $i
	}
}
function median(key,   m, i, j, t, a) {
	m = n[key]
	for (i = 1; i <= m; i++) a[i] = v[key, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	lo[key] = a[1]; hi[key] = a[m]
	return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
END {
	printf "%-44s %-18s %12s %10s %5s %10s\n", "benchmark", "metric", "median", "spread", "runs", "vs base"
	for (k = 1; k <= nk; k++) {
		key = order[k]; split(key, p, SUBSEP)
		med[key] = median(key)
		spread = med[key] ? 100 * (hi[key] - lo[key]) / 2 / med[key] : 0
		base = p[1]
		sub(/\/(nodemesh-10k|iptables-10k-ct|iptables-10k)$/, "/none", base)
		sub(/\/(nodemesh-connect4|iptables-redirect)$/, "/direct", base)
		ratio = ""
		if (base != p[1] && ((base SUBSEP p[2]) in med) && med[base SUBSEP p[2]] > 0)
			ratio = sprintf("%.2fx", med[key] / med[base SUBSEP p[2]])
		printf "%-44s %-18s %12.4g %9s%% %5d %10s\n", p[1], p[2], med[key], sprintf("±%.0f", spread), n[key], ratio
	}
}' "$@"
