"""The links between GPUs, from ``tables/interconnect.csv``: NVLink/NVSwitch or PCIe inside a node,
the node's NICs between nodes. The collectives priced over them are in ``costplan.engine``."""

from __future__ import annotations

from costplan.record import record
from costplan.tables import number, read_table

FALLBACK_NODE_NETWORK_BYTES_PER_S = 100e9 / 8
"""100 Gb/s Ethernet per node, used only where the table lists no cluster network (assumption)."""


@record
class Link:
    intra_bytes_per_s: float
    """Per-GPU one-way bandwidth to the other GPUs of its node (halved through host memory where
    GPUs cannot reach each other peer to peer)."""
    node_bytes_per_s: float
    """The node's network bandwidth to other nodes, all NICs together."""
    gpus_per_node: int
    described: str
    cluster: bool = True
    """Whether nodes of this GPU are sold as multi-node clusters (a cluster network is listed)."""


def link(gpu_key: str) -> Link:
    for row in read_table("interconnect"):
        if row["gpu"] != gpu_key:
            continue
        intra = (number(row, "intra_node_gbps") or 0.0) * 1e9
        per_node = int(number(row, "gpus_per_node") or 1)
        p2p = row.get("p2p", "true").lower() != "false"
        if not p2p:
            intra /= 2  # each transfer is staged through host memory: device to host, then host to device
        nics, nic_gbps = number(row, "nics_per_node"), number(row, "nic_gbps")
        inside = f"{row['intra_node']} {intra / 1e9:g} GB/s" + ("" if p2p else " (no peer-to-peer: via host memory)")
        if nics and nic_gbps:
            node = nics * nic_gbps * 1e9 / 8
            described = (f"{inside} within {per_node}-GPU nodes, {nics:g} x {nic_gbps:g} Gb/s {row['inter_node']} "
                         "per node between nodes")
            return Link(intra, node, per_node, described)
        described = (f"{inside} within {per_node}-GPU nodes; no cluster network listed, 100 Gb/s Ethernet per "
                     "node assumed between nodes")
        return Link(intra, FALLBACK_NODE_NETWORK_BYTES_PER_S, per_node, described, cluster=False)
    return Link(16e9, FALLBACK_NODE_NETWORK_BYTES_PER_S, 8, "no interconnect listed: PCIe assumed", cluster=False)
