"""Communication between GPUs, and what it costs in wall time.

Data parallelism (ring collectives; volume per GPU per optimizer step, bytes, n GPUs):

- plain DP and ZeRO-1 all-reduce the gradients: ``2 (n-1)/n · G``;
- ZeRO-2 reduce-scatters the gradients and all-gathers the updated parameters: the same volume;
- ZeRO-3 / FSDP also all-gathers every layer's weights in forward and again in backward:
  ``(n-1)/n · (G + 2 W)`` (Rajbhandari et al. 2020, section 7: 1.5x the DP volume for a
  fully trained model).

G counts only trained parameters (a frozen base sends no gradients), W the weights as stored.
Inside a node the collective runs at the GPU's NVLink/PCIe bandwidth; across nodes at the cluster
network's bandwidth per GPU (``tables/interconnect.csv``). Gradient synchronisation overlaps the
last micro-batch's backward (and ZeRO-3's gathers its forward too); only the rest is exposed.

Tensor parallelism for inference: two all-reduces of the hidden state per layer per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from costplan.tables import number, read_table

NCCL_LATENCY_SECONDS = 8e-6
"""Per-collective latency inside a node (assumption, typical NCCL small-message latency)."""
FALLBACK_NODE_NETWORK_BYTES_PER_S = 100e9 / 8
"""100 Gb/s Ethernet per node, used only where the table lists no cluster network (assumption)."""


@dataclass(frozen=True, slots=True)
class Link:
    intra_bytes_per_s: float
    inter_bytes_per_s: float
    gpus_per_node: int
    described: str

    def bandwidth(self, gpus: int) -> float:
        """Per-GPU bandwidth of a ring over ``gpus``: the slowest hop."""
        if gpus <= self.gpus_per_node:
            return self.intra_bytes_per_s
        return min(self.intra_bytes_per_s, self.inter_bytes_per_s)


def link(gpu_key: str) -> Link:
    for row in read_table("interconnect"):
        if row["gpu"] == gpu_key:
            intra = (number(row, "intra_node_gbps") or 0.0) * 1e9
            per_node = int(number(row, "gpus_per_node") or 1)
            inter = number(row, "inter_node_gbps")
            if inter:
                described = (f"{row['intra_node']} {intra / 1e9:g} GB/s within {per_node}-GPU nodes, "
                             f"{row['inter_node']} {inter:g} GB/s per GPU between nodes")
                return Link(intra, inter * 1e9, per_node, described)
            fallback = FALLBACK_NODE_NETWORK_BYTES_PER_S / per_node
            described = (f"{row['intra_node']} {intra / 1e9:g} GB/s within {per_node}-GPU nodes; no cluster "
                         f"network listed, 100 Gb/s Ethernet per node assumed between nodes")
            return Link(intra, fallback, per_node, described)
    return Link(16e9, FALLBACK_NODE_NETWORK_BYTES_PER_S / 8, 8, "no interconnect listed: PCIe assumed")


def data_parallel_bytes(gradient_bytes: float, weight_bytes: float, gpus: Any, zero: Any) -> Any:
    """Bytes each GPU sends per optimizer step (ring collectives); ``gpus`` and ``zero`` may be
    numpy arrays (the plan search evaluates whole grids with this same formula)."""
    share = (gpus - 1) / gpus  # 0 on one GPU
    stage3 = zero >= 3
    return share * (gradient_bytes * (2 - stage3) + 2 * weight_bytes * stage3)


@dataclass(frozen=True, slots=True)
class StepTiming:
    compute_seconds: float
    """One optimizer step's compute on each GPU."""
    comm_seconds: float
    exposed_seconds: float
    """Communication not hidden behind compute."""

    @property
    def efficiency(self) -> float:
        return self.compute_seconds / (self.compute_seconds + self.exposed_seconds)


def step_timing(*, compute_seconds: float, overlap_seconds: float, comm_bytes: float, bandwidth: float) -> StepTiming:
    comm = comm_bytes / bandwidth if comm_bytes else 0.0
    return StepTiming(compute_seconds, comm, max(0.0, comm - overlap_seconds))


def tensor_parallel_seconds(layers: int, message_bytes: float, gpus: int, bandwidth: float) -> float:
    """Two ring all-reduces of ``message_bytes`` per layer (after attention and after the MLP)."""
    if gpus <= 1:
        return 0.0
    per_collective = 2 * (gpus - 1) / gpus * message_bytes / bandwidth + NCCL_LATENCY_SECONDS
    return 2 * layers * per_collective
