"""Reusable experiments the evaluation CLI runs (FGD's inflation experiment, ...)."""
