"""Bundled scenarios (`scenarios/*.yaml`) and training configs (`train/*.yaml`), package data
found through `gpuparley.envs.resources`."""
