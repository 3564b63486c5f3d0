"""Peer implementations of the three canonical workloads of ``benches/compare.py``.

Every peer module exposes

- ``NAME`` and ``available() -> (bool, note)``;
- ``prepare(workload, weights, biases, x, y, dtype) -> callable``: converts the inputs once (not
  timed) and returns a no-argument function that runs the whole workload and returns NumPy arrays
  (timed, including the copy back to host):

  - ``"W1"`` -> ``{"gsc": (N+1,), "pre_activation_std": (A,), "sign_diversity": (A,),
    "weight_gradient_ratio": (L,)}`` (GSC to the loss in sample mode, SPEC §3/§4);
  - ``"W2"`` -> ``(N+1, B)`` per-sample ``||d out / d p_i||_F``;
  - ``"W3"`` -> ``(N+1, N+1)`` sample-mode GSC matrix (1 on the diagonal, NaN below).

The networks are tanh MLPs: ``z_k = h_{k-1} W_k^T + b_k``, ``h_k = tanh(z_k)``, no activation
after the last Dense. Points: ``p_0 = x``, then ``z_1, h_1, z_2, h_2, ..., z_L``.
"""

import importlib

PEERS = ("numpy", "jax", "torch")


def load(name):
    return importlib.import_module(f"peers.{name}_peer")
