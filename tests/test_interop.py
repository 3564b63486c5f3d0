"""Network.from_arrays (always) and Network.from_torch (against torch autograd when PyTorch is
installed; those tests skip with the reason otherwise)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import gsc_core
from gsc_core import torch_interop

# ---------------------------------------------------------------------------------------------- from_arrays


def test_from_arrays_is_the_mlp_it_describes():
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(8, 5)), rng.normal(size=(8, 8)), rng.normal(size=(3, 8))]
    bs = [rng.normal(size=8), None, rng.normal(size=3)]
    net = gsc_core.Network.from_arrays(ws, bs, activation="tanh")
    hand = gsc_core.Network([gsc_core.Dense(ws[0], bs[0]), gsc_core.Activation("tanh"), gsc_core.Dense(ws[1]), gsc_core.Activation("tanh"), gsc_core.Dense(ws[2], bs[2])])
    x = rng.normal(size=(7, 5))
    assert [repr(l) for l in net.layers] == [repr(l) for l in hand.layers]
    np.testing.assert_array_equal(net.forward(x).output, hand.forward(x).output)
    # (d_in, d_out) kernels, per-layer activations, float32
    net2 = gsc_core.Network.from_arrays([w.T for w in ws], bs, activation=["relu", gsc_core.Activation("leaky_relu", negative_slope=0.2)], layout="in_out", dtype="float32")
    assert net2.dtype == np.float32 and net2.point_widths() == [5, 8, 8, 8, 8, 3]
    assert [l.name for l in net2.layers if isinstance(l, gsc_core.Activation)] == ["relu", "leaky_relu"]
    np.testing.assert_array_equal(net2.layers[0].weight, ws[0].astype(np.float32))
    # one layer: no activation at all
    assert [type(l).__name__ for l in gsc_core.Network.from_arrays([ws[0]]).layers] == ["Dense"]
    # the module-level function is the same thing
    assert repr(torch_interop.from_arrays(ws, bs, activation="tanh")) == repr(net)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(weights=[np.ones((4, 3)), np.ones((2, 5))]), ValueError, r"weights\[1\] has shape \(2, 5\): it takes inputs of width 5 but weights\[0\] outputs width 4"),
        (dict(weights=[np.ones((4, 3)), np.ones((4, 2))], layout="in_out"), ValueError, r"weights\[1\] has shape \(4, 2\).*width 4 but weights\[0\] outputs width 3"),
        (dict(weights=[np.ones((4, 3)), np.ones((2, 5))]), ValueError, "layout='in_out'"),
        (dict(weights=[]), ValueError, "empty"),
        (dict(weights=np.ones((2, 2))), TypeError, "list of 2-D weight matrices"),
        (dict(weights=[np.ones(3)]), ValueError, r"weights\[0\] must be 2-D"),
        (dict(weights=[np.ones((2, 2))], biases=[None, None]), ValueError, "biases has 2 entries but there are 1"),
        (dict(weights=[np.ones((2, 2))], biases=[np.ones(3)]), ValueError, "layer 0: Dense bias has shape"),
        (dict(weights=[np.ones((2, 2))] * 3, activation=["relu"]), ValueError, "need 2"),
        (dict(weights=[np.ones((2, 2))] * 2, activation="nope"), ValueError, "unknown activation"),
        (dict(weights=[np.ones((2, 2))] * 2, activation=3), TypeError, "activation must be"),
        (dict(weights=[np.ones((2, 2))], layout="cols"), ValueError, "layout must be"),
        (dict(weights=[np.array([[1.0, np.nan]])]), ValueError, "NaN"),
    ],
)
def test_from_arrays_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        gsc_core.Network.from_arrays(**kwargs)


def test_from_torch_without_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails as if not installed
    with pytest.raises(ImportError, match=r"pip install \"gsc-core\[torch\]\""):
        gsc_core.Network.from_torch(object())


# ---------------------------------------------------------------------------------------------- from_torch

try:
    import torch
except ImportError:  # the from_arrays tests above still run
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: the from_torch tests against torch autograd need it (pip install 'gsc-core[torch]')")
nn = torch.nn if torch is not None else None
Residual = torch_interop.Residual if torch is not None else None

ACTIVATION_MODULES = [
    (lambda: nn.ReLU(), "relu"),
    (lambda: nn.LeakyReLU(0.2), "leaky_relu"),
    (lambda: nn.LeakyReLU(), "leaky_relu"),
    (lambda: nn.ELU(alpha=1.5), "elu"),
    (lambda: nn.SELU(), "selu"),
    (lambda: nn.GELU(), "gelu"),
    (lambda: nn.SiLU(), "silu"),
    (lambda: nn.Tanh(), "tanh"),
    (lambda: nn.Sigmoid(), "sigmoid"),
    (lambda: nn.Softplus(), "softplus"),
    (lambda: nn.Identity(), "identity"),
]


def _flat(module):
    """The top-level modules as from_torch sees them (nested Sequentials flattened)."""
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flat(child)]
    return [module]


def _linears(module):
    """Linear layers in gsc_core's depth-first order: a Residual's body, then its shortcut."""
    out = []
    for m in _flat(module):
        if isinstance(m, nn.Linear):
            out.append(m)
        elif isinstance(m, Residual):
            out += _linears(m.body)
            if m.shortcut is not None:
                out.append(m.shortcut)
    return out


def _check_against_autograd(model, x, loss="mse", y=None, rtol=1e-10):
    """Forward at every point, per-point input gradients and all parameter gradients."""
    net = gsc_core.Network.from_torch(model)
    assert len(net.layers) == len(_flat(model))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    outs, h = [xt], xt
    for m in _flat(model):
        h = m(h)
        h.retain_grad()
        outs.append(h)
    if loss == "mse":
        target = torch.zeros_like(h) if y is None else torch.tensor(y)
        total = 0.5 * ((h - target) ** 2).sum()
    else:
        total = torch.nn.functional.cross_entropy(h, torch.tensor(y), reduction="sum")
    model.zero_grad()
    total.backward()
    trace = net.forward(x)
    losses, grads = net.loss_and_grad(x, y, loss=loss)
    np.testing.assert_allclose(losses.sum(), total.item(), rtol=rtol)
    for i, (p, t) in enumerate(zip(trace.points, outs)):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=rtol, atol=1e-12, err_msg=f"point {i}")
        np.testing.assert_allclose(grads.points[i], t.grad.numpy(), rtol=rtol, atol=1e-12, err_msg=f"gradient at point {i}")
    linears = _linears(model)
    assert len(grads.weights) == len(linears)
    for k, lin in enumerate(linears):
        np.testing.assert_allclose(grads.weights[k], lin.weight.grad.numpy(), rtol=rtol, atol=1e-12, err_msg=f"dW of Linear {k}")
        if lin.bias is None:
            assert grads.biases[k] is None
        else:
            np.testing.assert_allclose(grads.biases[k], lin.bias.grad.numpy(), rtol=rtol, atol=1e-12, err_msg=f"db of Linear {k}")
    return net


@requires_torch
@pytest.mark.parametrize("make, name", ACTIVATION_MODULES, ids=[n for _, n in ACTIVATION_MODULES[:2]] + ["leaky_relu_default"] + [n for _, n in ACTIVATION_MODULES[3:]])
def test_each_activation_against_autograd(make, name):
    torch.manual_seed(0)
    act = make()
    model = nn.Sequential(nn.Linear(6, 9), act, nn.Linear(9, 4)).double()
    x = np.random.default_rng(1).normal(size=(11, 6)) * 1.5
    net = _check_against_autograd(model, x)
    converted = net.layers[1]
    assert converted.name == name
    if isinstance(act, nn.LeakyReLU):
        assert converted.params["negative_slope"] == act.negative_slope
    if isinstance(act, nn.ELU):
        assert converted.params["alpha"] == 1.5


@requires_torch
def test_norms_residuals_and_nesting_against_autograd():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Linear(5, 12),
        nn.LayerNorm(12),
        nn.Tanh(),
        Residual(nn.LayerNorm(12), nn.ReLU(), nn.Linear(12, 12), alpha=0.5),
        Residual(nn.Sequential(nn.SiLU(), nn.Linear(12, 7, bias=False)), shortcut=nn.Linear(12, 7), alpha=-1.3),
        nn.Sequential(nn.ELU(), nn.Sequential(nn.Linear(7, 7), nn.Sigmoid())),
        nn.Linear(7, 4),
    ).double()
    with torch.no_grad():  # non-trivial affine parameters
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    x = np.random.default_rng(3).normal(size=(9, 5))
    y = np.random.default_rng(4).integers(0, 4, size=9)
    net = _check_against_autograd(model, x, loss="cross_entropy", y=y)
    kinds = [type(l).__name__ for l in net.layers]
    assert kinds == ["Dense", "LayerNorm", "Activation", "Residual", "Residual", "Activation", "Dense", "Activation", "Dense"]
    assert net.layers[4].alpha == -1.3 and net.layers[4].shortcut is not None
    _check_against_autograd(model, x, loss="mse", y=np.random.default_rng(5).normal(size=(9, 4)))


@requires_torch
def test_batchnorm_in_training_mode_against_autograd():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 10), nn.BatchNorm1d(10), nn.ReLU(), Residual(nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 10)), nn.Linear(10, 3)).double()
    with torch.no_grad():
        model[1].weight.normal_(1.0, 0.3)
        model[1].bias.normal_(0.0, 0.3)
    model.train()
    x = np.random.default_rng(6).normal(size=(16, 4))
    net = _check_against_autograd(model, x)
    assert isinstance(net.layers[1], gsc_core.BatchNorm)
    # the report of a converted BatchNorm net needs the whole-batch mode, as for gsc_core's own
    report = gsc_core.analyze(net, x, mode="batch")
    assert report.spectrum is None and np.all(np.isfinite(report.gsc))
    # without running statistics BatchNorm1d uses batch statistics in eval mode too
    plain = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False), nn.Linear(6, 2)).double().eval()
    _check_against_autograd(plain, x)


@requires_torch
def test_dtype_follows_the_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert gsc_core.Network.from_torch(model).dtype == np.float32
    assert gsc_core.Network.from_torch(model.double()).dtype == np.float64
    assert gsc_core.Network.from_torch(model, dtype="float32").dtype == np.float32
    half = nn.Sequential(nn.Linear(3, 4)).to(torch.bfloat16)
    net = gsc_core.Network.from_torch(half)
    assert net.dtype == np.float32
    np.testing.assert_array_equal(net.layers[0].weight, half[0].weight.float().detach().numpy())


@requires_torch
def test_parameters_are_copied():
    model = nn.Sequential(nn.Linear(3, 3)).double()
    net = gsc_core.Network.from_torch(model)
    before = net.layers[0].weight.copy()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    np.testing.assert_array_equal(net.layers[0].weight, before)


@requires_torch
def test_a_single_module_converts():
    lin = nn.Linear(3, 2).double()
    net = gsc_core.Network.from_torch(lin)
    np.testing.assert_array_equal(net.layers[0].weight, lin.weight.detach().numpy())


@requires_torch
def test_unsupported_modules_are_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Sequential(nn.ReLU6(), nn.Linear(4, 4)), Residual(nn.Conv1d(1, 1, 1)))
    with pytest.raises(ValueError) as exc:
        gsc_core.Network.from_torch(model)
    text = str(exc.value)
    for where in ("module[1] (Dropout)", "module[2][0] (ReLU6)", "module[3].body[0] (Conv1d)"):
        assert where in text
    assert "Supported:" in text and "leave it out" in text


@requires_torch
@pytest.mark.parametrize(
    "module, message",
    [
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.GELU(approximate="tanh")), "approximate='tanh'"),
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.Softplus(beta=2.0)), "beta=2.0"),
        (lambda: nn.Sequential(nn.LayerNorm((2, 3))), r"normalises over \(2, 3\)"),
        (lambda: nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).eval(), "call model.train"),
        (lambda: nn.Sequential(), "no layers"),
    ],
)
def test_refused_configurations(module, message):
    with pytest.raises(ValueError, match=message):
        gsc_core.Network.from_torch(module())


@requires_torch
def test_type_errors():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        gsc_core.Network.from_torch([nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="shortcut must be None"):
        Residual(nn.Linear(2, 2), shortcut=nn.ReLU())


@requires_torch
def test_residual_wrapper_is_a_module():
    block = Residual(nn.Linear(4, 4), nn.Tanh(), alpha=0.25)
    assert isinstance(block, nn.Module) and "alpha=0.25" in repr(block)
    assert torch_interop.Residual is Residual and Residual.__module__ == "gsc_core.torch_interop"
    x = torch.randn(3, 4)
    expected = x + 0.25 * torch.tanh(block.body[0](x))
    torch.testing.assert_close(block(x), expected)
    with pytest.raises(AttributeError):
        torch_interop.Nope  # noqa: B018


@requires_torch
def test_analyze_a_torch_model_like_a_native_one():
    """The report of a converted nn.Sequential equals the report of the same gsc_core network."""
    native = gsc_core.mlp(depth=5, width=12, in_dim=6, out_dim=3, activation="tanh", seed=0)
    model = nn.Sequential()
    for layer in native.layers:
        if isinstance(layer, gsc_core.Dense):
            lin = nn.Linear(layer.in_features, layer.out_features).double()
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.array(layer.weight)))
                lin.bias.copy_(torch.from_numpy(np.array(layer.bias)))
            model.append(lin)
        else:
            model.append(nn.Tanh())
    x = np.random.default_rng(0).normal(size=(20, 6))
    a = gsc_core.analyze(gsc_core.Network.from_torch(model), x)
    b = gsc_core.analyze(native, x)
    np.testing.assert_array_equal(a.gsc, b.gsc)
    np.testing.assert_array_equal(a.spectrum, b.spectrum)
