"""The network builders of SPEC §5, lightly: layer structure, widths, determinism for a seed (also
across thread counts), and the statistics of every initialiser."""

from __future__ import annotations

import numpy as np
import pytest

import gsc_core
from conftest import dense_layers


def kinds(layers) -> list[str]:
    return [type(layer).__name__ for layer in layers]


def weights_of(net) -> list[np.ndarray]:
    out = []
    for d in dense_layers(net.layers):
        out.append(np.asarray(d.weight))
        if d.bias is not None:
            out.append(np.asarray(d.bias))
    return out


def excess_kurtosis(a: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    return float(np.mean(a**4) / np.mean(a**2) ** 2 - 3.0)


# ---------------------------------------------------------------------------------------------
# structure


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("norm, norm_cls", [(None, None), ("layer", "LayerNorm"), ("batch", "BatchNorm")])
def test_mlp_structure(depth, norm, norm_cls):
    net = gsc_core.mlp(depth=depth, width=6, in_dim=3, out_dim=2, activation="selu", norm=norm, seed=1)
    hidden = ["Dense"] + ([norm_cls] if norm_cls else []) + ["Activation"]
    assert kinds(net.layers) == hidden * (depth - 1) + ["Dense"]
    assert len(net) == len(net.layers)
    assert all(a.name == "selu" for a in net.layers if isinstance(a, gsc_core.Activation))
    assert len(dense_layers(net.layers)) == depth
    widths = net.point_widths()
    assert widths[0] == 3 and widths[-1] == 2
    assert all(w == 6 for w in widths[1:-1])
    assert net.in_dim == 3
    assert net.dtype == np.float64
    x = np.random.default_rng(0).normal(size=(4, 3))
    assert net.forward(x).output.shape == (4, 2)


def test_mlp_defaults():
    net = gsc_core.mlp(depth=3, width=5)
    assert net.point_widths()[0] == 5 and net.point_widths()[-1] == 5
    assert all(a.name == "tanh" for a in net.layers if isinstance(a, gsc_core.Activation))


@pytest.mark.parametrize("blocks", [0, 1, 3])
@pytest.mark.parametrize("block_depth", [1, 2])
@pytest.mark.parametrize("norm, norm_cls", [(None, None), ("layer", "LayerNorm"), ("batch", "BatchNorm")])
def test_resnet_structure(blocks, block_depth, norm, norm_cls):
    net = gsc_core.resnet(blocks=blocks, width=6, in_dim=3, out_dim=2, activation="tanh", norm=norm, block_depth=block_depth, alpha=0.25, seed=2)
    pre = [norm_cls] if norm_cls else []
    assert kinds(net.layers) == ["Dense"] + ["Residual"] * blocks + pre + ["Activation", "Dense"]
    first, last = net.layers[0], net.layers[-1]
    assert first.weight.shape == (6, 3) and last.weight.shape == (2, 6)
    for block in net.layers[1 : 1 + blocks]:
        assert block.alpha == 0.25
        assert block.shortcut is None
        assert kinds(block.body) == (pre + ["Activation", "Dense"]) * block_depth
        assert all(d.weight.shape == (6, 6) for d in dense_layers(block.body))
        assert all(a.name == "tanh" for a in block.body if isinstance(a, gsc_core.Activation))
    assert net.point_widths() == [3] + [6] * (1 + blocks + len(pre) + 1) + [2]
    assert len(dense_layers(net.layers)) == 2 + blocks * block_depth


def test_resnet_biases_are_zero():
    net = gsc_core.resnet(blocks=2, width=5, seed=0)
    for d in dense_layers(net.layers):
        assert d.bias is None or np.all(d.bias == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_builder_dtype(dtype):
    for net in (gsc_core.mlp(depth=2, width=4, dtype=dtype), gsc_core.resnet(blocks=1, width=4, dtype=dtype)):
        assert net.dtype == np.dtype(dtype)
        assert all(w.dtype == np.dtype(dtype) for w in weights_of(net))
        assert net.forward(np.ones((2, 4), dtype=dtype)).output.dtype == np.dtype(dtype)


# ---------------------------------------------------------------------------------------------
# determinism


@pytest.mark.parametrize("init", gsc_core.INITS)
def test_same_seed_same_network(init):
    act = "relu" if init == "looks_linear" else "tanh"
    a = gsc_core.mlp(depth=3, width=8, in_dim=4, out_dim=4, activation=act, init=init, seed=123)
    b = gsc_core.mlp(depth=3, width=8, in_dim=4, out_dim=4, activation=act, init=init, seed=123)
    c = gsc_core.mlp(depth=3, width=8, in_dim=4, out_dim=4, activation=act, init=init, seed=124)
    wa, wb, wc = weights_of(a), weights_of(b), weights_of(c)
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc))
    # layers are drawn independently: no two Dense layers of the same shape share a weight
    hidden = [d.weight for d in dense_layers(a.layers) if d.weight.shape == (8, 8)]
    assert all(not np.array_equal(hidden[0], h) for h in hidden[1:])


def test_resnet_same_seed_same_network():
    a, b = gsc_core.resnet(blocks=2, width=6, seed=5), gsc_core.resnet(blocks=2, width=6, seed=5)
    c = gsc_core.resnet(blocks=2, width=6, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(weights_of(a), weights_of(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(weights_of(a), weights_of(c)))


def test_builders_do_not_depend_on_thread_count(restore_threads):
    gsc_core.set_num_threads(1)
    one = weights_of(gsc_core.mlp(depth=3, width=64, init="orthogonal", seed=9)) + weights_of(gsc_core.resnet(blocks=2, width=64, seed=9))
    gsc_core.set_num_threads(2)
    two = weights_of(gsc_core.mlp(depth=3, width=64, init="orthogonal", seed=9)) + weights_of(gsc_core.resnet(blocks=2, width=64, seed=9))
    assert all(np.array_equal(x, y) for x, y in zip(one, two))


def test_float32_builder_matches_float64_values():
    a = gsc_core.mlp(depth=3, width=6, seed=3, sigma_b=0.1)
    b = gsc_core.mlp(depth=3, width=6, seed=3, sigma_b=0.1, dtype="float32")
    for x, y in zip(weights_of(a), weights_of(b)):
        assert np.allclose(x, y, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# initialiser statistics (one big first layer: fan_in = in_dim, fan_out = width)

FAN_IN, FAN_OUT = 300, 400


def first_layer(init, **kw):
    net = gsc_core.mlp(depth=2, width=FAN_OUT, in_dim=FAN_IN, out_dim=3, init=init, seed=kw.pop("seed", 0), **kw)
    return dense_layers(net.layers)[0]


@pytest.mark.parametrize(
    "init, kw, var, gaussian",
    [
        ("gaussian", {"sigma_w": 1.7}, 1.7**2 / FAN_IN, True),
        ("gaussian", {"sigma_w": 0.5}, 0.5**2 / FAN_IN, True),
        ("lecun", {}, 1.0 / FAN_IN, True),
        ("he", {}, 2.0 / FAN_IN, True),
        ("glorot_normal", {}, 2.0 / (FAN_IN + FAN_OUT), True),
        ("glorot_uniform", {}, 2.0 / (FAN_IN + FAN_OUT), False),
        ("pytorch_default", {}, 1.0 / (3 * FAN_IN), False),
    ],
)
def test_init_variance(init, kw, var, gaussian):
    w = first_layer(init, **kw).weight
    assert w.shape == (FAN_OUT, FAN_IN)
    n = w.size
    assert abs(w.mean()) < 5 * np.sqrt(var / n)
    assert abs(w.var() / var - 1) < 0.03  # the relative sd of the estimate is ~0.4%
    k = excess_kurtosis(w)
    if gaussian:
        assert abs(k) < 0.1
    else:
        assert abs(k + 1.2) < 0.1  # uniform: excess kurtosis -6/5


@pytest.mark.parametrize("init, bound", [("glorot_uniform", np.sqrt(6.0 / (FAN_IN + FAN_OUT))), ("pytorch_default", 1.0 / np.sqrt(FAN_IN))])
def test_uniform_init_bounds(init, bound):
    w = first_layer(init).weight
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound


def test_pytorch_default_biases():
    b = first_layer("pytorch_default").bias
    bound = 1.0 / np.sqrt(FAN_IN)
    assert b is not None and b.shape == (FAN_OUT,)
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
    assert abs(b.var() / (bound**2 / 3) - 1) < 0.25


@pytest.mark.parametrize("init", ["lecun", "he", "gaussian", "orthogonal", "glorot_normal"])
def test_biases_default_zero_and_sigma_b(init):
    b0 = first_layer(init).bias
    assert b0 is None or np.all(b0 == 0)
    net = gsc_core.mlp(depth=6, width=FAN_OUT, in_dim=4, init=init, sigma_b=0.3, seed=1)
    biases = np.concatenate([d.bias for d in dense_layers(net.layers)])
    assert biases.size == 6 * FAN_OUT
    assert abs(biases.std() / 0.3 - 1) < 0.05
    assert abs(biases.mean()) < 5 * 0.3 / np.sqrt(biases.size)
    assert abs(excess_kurtosis(biases)) < 0.3


@pytest.mark.parametrize("gain", [None, 1.0, 2.5])
@pytest.mark.parametrize("shape", [(16, 16), (8, 16), (16, 8)])
def test_orthogonal(gain, shape):
    d_out, d_in = shape
    kw = {} if gain is None else {"sigma_w": gain}
    g = 1.0 if gain is None else gain
    net = gsc_core.mlp(depth=2, width=d_out, in_dim=d_in, out_dim=5, init="orthogonal", seed=4, **kw)
    w = dense_layers(net.layers)[0].weight
    assert w.shape == shape
    if d_out <= d_in:
        assert np.allclose(w @ w.T, g**2 * np.eye(d_out), atol=1e-12)
    else:
        assert np.allclose(w.T @ w, g**2 * np.eye(d_in), atol=1e-12)


def test_orthogonal_is_haar_like():
    """QR with the sign fix gives Haar-distributed matrices: the diagonal has no sign bias."""
    diag = np.concatenate([dense_layers(gsc_core.mlp(depth=2, width=32, init="orthogonal", seed=s).layers)[0].weight.diagonal() for s in range(40)])
    assert abs(np.mean(diag > 0) - 0.5) < 0.1
    assert abs(diag.mean()) < 0.05


@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("half", [2, 5])
def test_looks_linear_is_an_orthogonal_linear_map_for_relu(depth, half):
    net = gsc_core.mlp(depth=depth, width=2 * half, in_dim=half, out_dim=half, activation="relu", init="looks_linear", seed=7)
    ws = [d.weight for d in dense_layers(net.layers)]
    assert ws[0].shape == (2 * half, half)
    u = ws[0][:half]
    assert np.array_equal(ws[0][half:], -u)  # first layer [U; -U]
    assert np.allclose(u @ u.T, np.eye(half), atol=1e-12)
    for w in ws[1:-1]:  # hidden [[U, -U], [-U, U]]
        v = w[:half, :half]
        assert np.array_equal(w, np.block([[v, -v], [-v, v]]))
    assert np.array_equal(ws[-1][:, half:], -ws[-1][:, :half])  # last [U, -U]
    x = np.random.default_rng(0).normal(size=(6, half)) * 3
    jac = net.jacobian(x)
    j0 = jac[0]
    assert np.allclose(jac, j0, atol=1e-12)  # the same linear map for every sample
    assert np.allclose(j0.T @ j0, np.eye(half), atol=1e-12)  # orthogonal
    assert np.allclose(net.forward(x).output, x @ j0.T, atol=1e-12)  # output = J x
    assert np.allclose(gsc_core.jacobian_spectrum(net, x), 1.0, atol=1e-12)


def test_he_resnet_init():
    net = gsc_core.resnet(blocks=1, width=256, in_dim=200, seed=0)
    w0 = dense_layers(net.layers)[0].weight
    assert abs(w0.var() / (2.0 / 200) - 1) < 0.05
    wb = dense_layers(net.layers)[1].weight
    assert abs(wb.var() / (2.0 / 256) - 1) < 0.05


# ---------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize(
    "call",
    [
        lambda: gsc_core.mlp(depth=2, width=4, init="xavier"),
        lambda: gsc_core.mlp(depth=2, width=4, norm="group"),
        lambda: gsc_core.mlp(depth=2, width=4, activation="swish"),
        lambda: gsc_core.mlp(depth=0, width=4),
        lambda: gsc_core.mlp(depth=2, width=0),
        lambda: gsc_core.mlp(depth=2, width=5, activation="relu", init="looks_linear"),
        lambda: gsc_core.mlp(depth=2, width=4, sigma_b=-1.0),
        lambda: gsc_core.mlp(depth=2, width=4, dtype="int8"),
        lambda: gsc_core.resnet(blocks=-1, width=4),
        lambda: gsc_core.resnet(blocks=1, width=4, block_depth=0),
        lambda: gsc_core.resnet(blocks=1, width=4, init="nope"),
    ],
)
def test_builder_errors(call):
    with pytest.raises(ValueError):
        call()
