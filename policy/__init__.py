"""gpuparley.policy: negotiation policies as data, without the training stack.

The torch-free runtime of exported policies (ONNX read and write, a numpy forward pass), the
check that a policy was trained for the current encoder, the learned negotiator over such a
policy, and the one registry of policy specs that evaluation, training opponents and the cluster
negotiator all use.
"""
