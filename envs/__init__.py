"""gpuparley.envs"""
