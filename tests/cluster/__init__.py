"""Tests against real local Kubernetes control planes (`pytest -m cluster`)."""
