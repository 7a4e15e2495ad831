"""Shipped checkpoints, package data found through `gpuparley.envs.resources` (`default`: the
learned negotiator `gpuparley demo` plays)."""
