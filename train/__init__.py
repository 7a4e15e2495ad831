"""gpuparley.train: turn the market environment into a learned negotiator.

`config` (validated YAML configs), `vec_env` (parameter-sharing VecEnv over the ParallelEnv),
`opponents` (scripted registry, snapshots, seat draws), `trainer` ((Maskable)PPO runs and
checkpoints), `evaluate`, `checkpoint`, `weights` and `export` (ONNX); on Ray (the `ray`
extra): `ray_cluster` (attach or start), `rllib_env`/`rllib_module`/`rllib_backend` (RLlib
training) and `tune` (Tune sweeps).
"""
