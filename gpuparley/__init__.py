"""gpuparley: GPU sharing on Kubernetes by negotiation."""

__version__ = "0.1.0"
