"""SPEC §8 for the engine: bad input gets a clear Python exception (ValueError for shapes, widths,
names, non-finite values, empty batches; TypeError for non-numeric arrays), never a crash, a hang
or a silently wrong number."""

from __future__ import annotations

import numpy as np
import pytest

import gsc_core

RNG = np.random.default_rng(0)


def dense(d_out, d_in, bias=True):
    return gsc_core.Dense(RNG.normal(size=(d_out, d_in)), RNG.normal(size=d_out) if bias else None)


@pytest.fixture
def net():
    return gsc_core.Network([dense(4, 3), gsc_core.Activation("tanh"), dense(2, 4)])


@pytest.fixture
def x():
    return RNG.normal(size=(5, 3))


# ---------------------------------------------------------------------------------------------
# widths that do not chain: ValueError naming the layer


@pytest.mark.parametrize(
    "build, where",
    [
        (lambda: [dense(4, 3), gsc_core.Activation("tanh"), dense(2, 5)], r"layers\[2\]"),
        (lambda: [dense(4, 3), dense(2, 3)], r"layers\[1\]"),
        (lambda: [dense(4, 3), gsc_core.Residual([dense(4, 5)])], r"layers\[1\]"),
        (lambda: [dense(4, 3), gsc_core.Residual([dense(3, 4)])], r"layers\[1\]"),  # identity shortcut, width changes
        (lambda: [dense(4, 3), gsc_core.Residual([dense(3, 4)], shortcut=dense(2, 4))], r"layers\[1\]"),
        (lambda: [dense(4, 3), gsc_core.Residual([dense(3, 4)], shortcut=dense(3, 5))], r"layers\[1\]"),
        (lambda: [dense(4, 3), gsc_core.LayerNorm(weight=np.ones(5))], r"layers\[1\]"),
        (lambda: [dense(4, 3), gsc_core.Activation("relu"), gsc_core.BatchNorm(bias=np.ones(3))], r"layers\[2\]"),
        (lambda: [dense(4, 3), gsc_core.Residual([gsc_core.Activation("relu"), gsc_core.Residual([dense(4, 6)])])], r"layers\[1\]"),
    ],
)
def test_widths_that_do_not_chain(build, where):
    with pytest.raises(ValueError, match=where):
        gsc_core.Network(build())


def test_norm_weight_and_bias_shapes_must_agree():
    with pytest.raises(ValueError):
        gsc_core.LayerNorm(weight=np.ones(3), bias=np.ones(4))
    with pytest.raises(ValueError):
        gsc_core.Dense(np.ones((3, 2)), np.ones(2))


@pytest.mark.parametrize("shape", [(3,), (2, 5, 3), (), (5, 4), (5, 2)])
def test_input_shape(net, shape):
    with pytest.raises(ValueError):
        net.forward(np.ones(shape))
    with pytest.raises(ValueError):
        net.loss_and_grad(np.ones(shape))


def test_weight_dimensions():
    with pytest.raises(ValueError):
        gsc_core.Network([gsc_core.Dense(np.ones(3))])
    with pytest.raises(ValueError):
        gsc_core.Network([gsc_core.Dense(np.ones((2, 2, 2)))])
    with pytest.raises(ValueError):
        gsc_core.Network([gsc_core.Dense(np.ones((2, 2)), np.ones((2, 1)))])


# ---------------------------------------------------------------------------------------------
# names


def test_unknown_activation():
    with pytest.raises(ValueError, match="swish"):
        gsc_core.Activation("swish")
    with pytest.raises(ValueError):
        gsc_core.Activation("relu", negative_slope=0.1)  # relu takes no parameters


def test_unknown_loss(net, x):
    with pytest.raises(ValueError, match="hinge"):
        net.loss_and_grad(x, loss="hinge")


@pytest.mark.parametrize("dtype", ["int32", "float16", "complex128", "banana"])
def test_unknown_dtype(dtype):
    with pytest.raises((ValueError, TypeError)):
        gsc_core.Network([dense(2, 2)], dtype=dtype)


# ---------------------------------------------------------------------------------------------
# non-finite values (ValueError, saying where)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(net, x, bad):
    x = x.copy()
    x[2, 1] = bad
    with pytest.raises(ValueError, match="x"):
        net.forward(x)
    with pytest.raises(ValueError, match="x"):
        net.loss_and_grad(x)
    with pytest.raises(ValueError, match="x"):
        net.vjp(x, np.ones((5, 2)))
    with pytest.raises(ValueError, match="x"):
        net.jvp(x, np.ones((5, 3)))
    with pytest.raises(ValueError, match="x"):
        net.jacobian(x)
    with pytest.raises(ValueError):
        gsc_core.jacobian_norms(net, x)
    with pytest.raises(ValueError):
        gsc_core.jacobian_spectrum(net, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize(
    "make, where",
    [
        (lambda w: [dense(4, 3), gsc_core.Dense(w)], r"layers\[1\]"),
        (lambda w: [gsc_core.Dense(np.ones((4, 4)), w[:, 1])], r"layers\[0\]"),
        (lambda w: [dense(4, 3), gsc_core.LayerNorm(weight=w[:, 1])], r"layers\[1\]"),
        (lambda w: [dense(4, 3), gsc_core.BatchNorm(bias=w[:, 1])], r"layers\[1\]"),
        (lambda w: [dense(4, 3), gsc_core.Residual([gsc_core.Activation("relu"), gsc_core.Dense(w)])], r"layers\[1\]"),
        (lambda w: [dense(4, 3), gsc_core.Residual([gsc_core.Dense(np.eye(4))], shortcut=gsc_core.Dense(w))], r"layers\[1\]"),
    ],
)
def test_non_finite_parameters(bad, make, where):
    w = RNG.normal(size=(4, 4))
    w[1, 1] = bad
    with pytest.raises(ValueError, match=where):
        gsc_core.Network(make(w))


def test_non_finite_cotangents_and_targets(net, x):
    with pytest.raises(ValueError):
        net.vjp(x, np.full((5, 2), np.nan))
    with pytest.raises(ValueError):
        net.jvp(x, np.full((5, 3), np.inf))
    with pytest.raises(ValueError):
        net.loss_and_grad(x, np.full((5, 2), np.nan))


@pytest.mark.parametrize("kw", [{"alpha": np.nan}, {"alpha": np.inf}])
def test_non_finite_scalars(kw):
    with pytest.raises(ValueError):
        gsc_core.Residual([gsc_core.Activation("relu")], **kw)
    with pytest.raises(ValueError):
        gsc_core.Activation("elu", **kw)
    with pytest.raises(ValueError):
        gsc_core.LayerNorm(eps=kw["alpha"])


# ---------------------------------------------------------------------------------------------
# empty batches, zero widths


def test_empty_batch(net):
    x0 = np.zeros((0, 3))
    with pytest.raises(ValueError):
        net.forward(x0)
    with pytest.raises(ValueError):
        net.loss_and_grad(x0)
    with pytest.raises(ValueError):
        net.vjp(x0, np.zeros((0, 2)))
    with pytest.raises(ValueError):
        net.jvp(x0, np.zeros((0, 3)))
    with pytest.raises(ValueError):
        net.jacobian(x0)
    with pytest.raises(ValueError):
        gsc_core.jacobian_norms(net, x0)


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_zero_width_dense(shape):
    with pytest.raises(ValueError):
        gsc_core.Network([gsc_core.Dense(np.ones(shape))]).forward(np.ones((2, 3)))


def test_zero_width_input():
    with pytest.raises(ValueError):
        gsc_core.Network([gsc_core.Activation("relu")]).forward(np.ones((2, 0)))


def test_zero_k_cotangent(net, x):
    with pytest.raises(ValueError):
        net.vjp(x, np.ones((5, 0, 2)))
    with pytest.raises(ValueError):
        net.jvp(x, np.ones((5, 0, 3)))


# ---------------------------------------------------------------------------------------------
# non-numeric arrays: TypeError


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((5, 3), dtype=complex),
        np.ones((5, 3), dtype=object),
        np.array([["a", "b", "c"]] * 5),
        np.array([[b"a", b"b", b"c"]] * 5),
        [["a", "b", "c"]] * 5,
    ],
    ids=["complex", "object", "str", "bytes", "list-of-str"],
)
def test_non_numeric_input(net, bad):
    with pytest.raises(TypeError):
        net.forward(bad)
    with pytest.raises(TypeError):
        net.loss_and_grad(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gsc_core.Dense(np.ones((2, 2), dtype=complex)),
        lambda: gsc_core.Dense(np.ones((2, 2)), np.ones(2, dtype=complex)),
        lambda: gsc_core.Dense(np.array([["a", "b"], ["c", "d"]])),
        lambda: gsc_core.Dense(np.ones((2, 2), dtype=object)),
        lambda: gsc_core.LayerNorm(weight=np.ones(2, dtype=complex)),
        lambda: gsc_core.BatchNorm(bias=np.array(["a", "b"])),
    ],
)
def test_non_numeric_parameters(make):
    with pytest.raises(TypeError):
        gsc_core.Network([make()])


def test_non_numeric_cotangents(net, x):
    with pytest.raises(TypeError):
        net.vjp(x, np.ones((5, 2), dtype=complex))
    with pytest.raises(TypeError):
        net.jvp(x, np.ones((5, 3), dtype=object))
    with pytest.raises(TypeError):
        net.loss_and_grad(x, np.ones((5, 2), dtype=complex))


def test_non_layers():
    with pytest.raises(TypeError):
        gsc_core.Network([np.ones((2, 2))])
    with pytest.raises(TypeError):
        gsc_core.Residual([gsc_core.Activation("relu")], shortcut=gsc_core.Activation("relu"))


# ---------------------------------------------------------------------------------------------
# point indices, cotangent shapes


@pytest.mark.parametrize("point", [4, 100, -5, -100])
def test_point_out_of_range(net, x, point):
    with pytest.raises(ValueError, match="out of range"):
        net.vjp(x, np.ones((5, 2)), point=point)
    with pytest.raises(ValueError, match="out of range"):
        net.jvp(x, np.ones((5, 3)), point=point)
    with pytest.raises(ValueError, match="out of range"):
        net.jacobian(x, 0, point)
    with pytest.raises(ValueError, match="out of range"):
        net.jacobian(x, point, 3)
    with pytest.raises(ValueError, match="out of range"):
        gsc_core.jacobian_norms(net, x, point)
    with pytest.raises(ValueError, match="out of range"):
        gsc_core.jacobian_spectrum(net, x, 0, point)


@pytest.mark.parametrize("point", [1.0, "1", None, True])
def test_point_must_be_an_integer(net, x, point):
    with pytest.raises(TypeError):
        net.vjp(x, np.ones((5, 2)), point=point)


def test_start_after_end(net, x):
    with pytest.raises(ValueError):
        net.jacobian(x, 2, 1)
    with pytest.raises(ValueError):
        gsc_core.jacobian_spectrum(net, x, 3, 0)


def test_cotangent_and_tangent_shapes(net, x):
    for bad in (np.ones((5, 3)), np.ones((4, 2)), np.ones(2), np.ones((5, 2, 2, 2)), np.ones((5, 1, 4))):
        with pytest.raises(ValueError):
            net.vjp(x, bad)
    for bad in (np.ones((5, 2)), np.ones((6, 3)), np.ones(3), np.ones((5, 1, 2))):
        with pytest.raises(ValueError):
            net.jvp(x, bad, point=0)
    assert net.vjp(x, np.ones((5, 4)), point=2).points[0].shape == (5, 3)  # point 2 has width 4
    with pytest.raises(ValueError):
        net.vjp(x, np.ones((5, 3)), point=2)


# ---------------------------------------------------------------------------------------------
# targets


@pytest.mark.parametrize("labels", [[0, 1, 2, 0, 1], [0, 1, -1, 0, 1], [0, 1, 10**12, 0, 0]])
def test_cross_entropy_labels_out_of_range(net, x, labels):
    with pytest.raises(ValueError):
        net.loss_and_grad(x, np.array(labels), loss="cross_entropy")


def test_cross_entropy_label_shapes_and_types(net, x):
    with pytest.raises(ValueError):
        net.loss_and_grad(x, np.array([0, 1]), loss="cross_entropy")
    with pytest.raises(ValueError):
        net.loss_and_grad(x, None, loss="cross_entropy")
    with pytest.raises((ValueError, TypeError)):
        net.loss_and_grad(x, np.array([0, 1, 0.5, 0, 1]), loss="cross_entropy")
    with pytest.raises((ValueError, TypeError)):
        net.loss_and_grad(x, np.zeros((5, 2), dtype=np.int64), loss="cross_entropy")


def test_mse_target_shape(net, x):
    for bad in (np.zeros((5, 3)), np.zeros((4, 2)), np.zeros(5)):
        with pytest.raises(ValueError):
            net.loss_and_grad(x, bad)


def test_valid_calls_still_work_after_errors(net, x):
    """Errors leave the network usable (no poisoned state)."""
    before = net.forward(x).output.copy()
    for call in (lambda: net.forward(np.ones((2, 7))), lambda: net.vjp(x, np.ones((5, 9))), lambda: net.loss_and_grad(x, loss="nope")):
        with pytest.raises(ValueError):
            call()
    assert np.array_equal(net.forward(x).output, before)


def test_set_num_threads_rejects_bad_values(restore_threads):
    for bad in (0, -1):
        with pytest.raises(ValueError):
            gsc_core.set_num_threads(bad)
    assert gsc_core.get_num_threads() == restore_threads
