"""gpuparley.train"""
