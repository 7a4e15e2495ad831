"""gpuparley.agents: central schedulers (the incumbents) and market negotiators."""
