"""Command groups of the `gpuparley` CLI, one module each, registered by `gpuparley.cli`."""
