"""Real local Kubernetes control planes for gpuparley (build, start, stop). See cli.py."""
