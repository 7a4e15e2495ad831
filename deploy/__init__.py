"""gpuparley.deploy"""
