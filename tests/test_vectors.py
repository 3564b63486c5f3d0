"""The shared test vectors (computed by an independent implementation) against both the plain-NumPy
reference and gsc_core: every SPEC §1–§2 quantity they hold (points, pre-activations, losses,
gradients at points and of Dense parameters, Jacobians and their norms)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import gsc_core
from conftest import FLOOR, assert_close, family_scale
from reference import RefNet

HERE = Path(__file__).resolve().parent
#: a copy of the shared vectors (../shared/vectors) is kept in tests/vectors so that a clean checkout
#: runs them; GSC_CORE_VECTORS points elsewhere
VECTORS = Path(os.environ.get("GSC_CORE_VECTORS", HERE / "vectors")).resolve()
NAMES = sorted(p.stem for p in VECTORS.glob("*.json")) if VECTORS.is_dir() else []
RTOL = 1e-10

pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"test vector directory {VECTORS} is absent")


def test_vectors_present():
    assert set(NAMES) >= {"mlp_tanh", "resnet_ln", "mlp_bn"}


def build_layer(spec: dict, arrays):
    def arr(key):
        name = spec.get(key)
        return None if name is None else arrays[name]

    kind = spec["type"]
    if kind == "Dense":
        return gsc_core.Dense(arr("weight"), arr("bias"))
    if kind == "Activation":
        return gsc_core.Activation(spec["name"], **spec.get("params", {}))
    if kind in ("LayerNorm", "BatchNorm"):
        cls = gsc_core.LayerNorm if kind == "LayerNorm" else gsc_core.BatchNorm
        return cls(eps=spec["eps"], weight=arr("weight"), bias=arr("bias"))
    if kind == "Residual":
        shortcut = None if spec.get("shortcut") is None else build_layer(spec["shortcut"], arrays)
        return gsc_core.Residual([build_layer(s, arrays) for s in spec["body"]], alpha=spec["alpha"], shortcut=shortcut)
    raise AssertionError(f"unknown layer type {kind} in vectors")


class Vector:
    def __init__(self, name: str) -> None:
        self.name = name
        self.spec = json.loads((VECTORS / f"{name}.json").read_text())
        with np.load(VECTORS / f"{name}.npz") as z:
            self.z = {k: z[k] for k in z.files}
        self.layers = [build_layer(s, self.z) for s in self.spec["layers"]]
        self.n_points = self.spec["points"]
        self.x = self.z["x"]
        self.y = self.z["y"]
        self.loss = self.spec["loss"]

    def series(self, prefix: str) -> list:
        out, k = [], 0
        while f"{prefix}.{k}" in self.z:
            out.append(self.z[f"{prefix}.{k}"])
            k += 1
        return out


class RefImpl:
    label = "reference"

    def __init__(self, vec: Vector) -> None:
        self.net = RefNet(vec.layers)

    def forward(self, x):
        return self.net.forward(x)

    def loss_and_grad(self, x, y, loss):
        losses, g = self.net.loss_and_grad(x, y, loss)
        return losses, g.points, g.weights, g.biases

    def jacobian(self, x):
        return self.net.jacobian(x)

    def jacobian_norms(self, x):
        return self.net.jacobian_norms(x)


class CoreImpl:
    label = "gsc_core"

    def __init__(self, vec: Vector) -> None:
        self.net = gsc_core.Network(vec.layers)

    def forward(self, x):
        trace = self.net.forward(x)
        return trace.points, trace.pre_activations

    def loss_and_grad(self, x, y, loss):
        losses, g = self.net.loss_and_grad(x, y, loss=loss)
        return losses, g.points, g.weights, g.biases

    def jacobian(self, x):
        return self.net.jacobian(x)

    def jacobian_norms(self, x):
        return gsc_core.jacobian_norms(self.net, x)


@pytest.fixture(scope="module", params=NAMES)
def vec(request) -> Vector:
    return Vector(request.param)


@pytest.fixture(params=[RefImpl, CoreImpl], ids=["reference", "gsc_core"])
def impl(request, vec):
    return request.param(vec)


def test_network_description(vec):
    net = gsc_core.Network(vec.layers)
    assert len(net) == len(vec.spec["layers"]) == vec.n_points - 1
    widths = [p.shape[1] for p in vec.series("points")]
    assert net.point_widths(vec.x.shape[1]) == widths
    assert len(vec.series("points")) == vec.n_points


def test_points(vec, impl):
    points, _ = impl.forward(vec.x)
    expected = vec.series("points")
    assert len(points) == len(expected) == vec.n_points
    for i, (p, e) in enumerate(zip(points, expected)):
        assert_close(p, e, RTOL, f"{impl.label} {vec.name} points[{i}]")


def test_pre_activations(vec, impl):
    _, pre = impl.forward(vec.x)
    expected = vec.series("pre_activations")
    assert len(expected) > 0
    assert len(pre) == len(expected)
    for i, (p, e) in enumerate(zip(pre, expected)):
        assert_close(p, e, RTOL, f"{impl.label} {vec.name} pre_activations[{i}]")


def test_losses(vec, impl):
    losses, *_ = impl.loss_and_grad(vec.x, vec.y, vec.loss)
    assert_close(losses, vec.z["losses"], RTOL, f"{impl.label} {vec.name} losses")


def test_grad_points(vec, impl):
    _, points, _, _ = impl.loss_and_grad(vec.x, vec.y, vec.loss)
    expected = vec.series("grad_points")
    assert len(points) == len(expected) == vec.n_points
    floor = FLOOR["float64"] * family_scale(expected)
    for i, (g, e) in enumerate(zip(points, expected)):
        assert_close(g, e, RTOL, f"{impl.label} {vec.name} grad_points[{i}]", floor)


def test_grad_weights_and_biases(vec, impl):
    _, _, weights, biases = impl.loss_and_grad(vec.x, vec.y, vec.loss)
    expected_w = vec.series("grad_weights")
    assert len(weights) == len(biases) == len(expected_w)
    # a Dense bias feeding a BatchNorm has a zero gradient up to rounding: such arrays are compared
    # against a floor set by the largest parameter gradient (see conftest.FLOOR)
    floor = FLOOR["float64"] * family_scale(expected_w + [vec.z[k] for k in vec.z if k.startswith("grad_biases.")])
    for k, (g, e) in enumerate(zip(weights, expected_w)):
        assert_close(g, e, RTOL, f"{impl.label} {vec.name} grad_weights[{k}]", floor)
    for k, g in enumerate(biases):
        key = f"grad_biases.{k}"
        if key in vec.z:
            assert_close(g, vec.z[key], RTOL, f"{impl.label} {vec.name} grad_biases[{k}]", floor)
        else:
            assert g is None, f"{impl.label} {vec.name} grad_biases[{k}]: Dense without bias must give None"


def test_jacobian(vec, impl):
    if "jacobian" not in vec.z:
        # networks with BatchNorm carry no per-sample Jacobian: it must be refused
        assert vec.spec["has_batchnorm"]
        with pytest.raises(ValueError, match="BatchNorm"):
            impl.jacobian(vec.x)
        return
    assert_close(impl.jacobian(vec.x), vec.z["jacobian"], RTOL, f"{impl.label} {vec.name} jacobian")


def test_jacobian_norms(vec, impl):
    if "jacobian_norms" not in vec.z:
        assert vec.spec["has_batchnorm"]
        with pytest.raises(ValueError, match="BatchNorm"):
            impl.jacobian_norms(vec.x)
        return
    assert_close(impl.jacobian_norms(vec.x), vec.z["jacobian_norms"], RTOL, f"{impl.label} {vec.name} jacobian_norms")
