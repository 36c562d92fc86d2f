package api

// CNIConfFile is the name of the CNI configuration the agent writes into
// the nodes' CNI conf dir. nodemesh is the nodes' CNI (standalone): the
// runtime uses the first file of the directory in lexical order, and
// "00-" sorts before every CNI's we know of (05-cilium, 10-calico,
// 10-flannel, 10-kindnet, 10-weave, 10-aws, 15-azure, 87-podman…). The
// installer's preflight names it when it finds another CNI.
const CNIConfFile = "00-nodemesh.conflist"
