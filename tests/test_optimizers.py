"""Tests for gradloop.optimizers: updates against torch.optim, by hand, and through state dicts.

SGD is the reference: its plain update is the chapter's ``w -= lr * g`` bit
for bit. Every optimizer runs 200 steps next to its torch.optim twin, fed the
same gradients, and must stay within 1e-8 (float64).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradloop.errors import ConfigError, GradloopError
from gradloop.optimizers import (
    OPTIMIZER_TYPES,
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    CosineLR,
    ExponentialLR,
    StepLR,
    clip_grad_norm,
    get_optimizer,
)

SHAPES = [(4, 3), (3,), (1, 1)]
STEPS = 200
TORCH_TOL = 1e-8

# (id, gradloop optimizer, torch optimizer) with the same hyperparameters.
CONFIGS = [
    ("sgd", lambda: SGD(0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    ("momentum", lambda: SGD(0.05, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    ("nesterov", lambda: SGD(0.05, momentum=0.9, nesterov=True),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd-wd", lambda: SGD(0.05, weight_decay=0.1), lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=0.1)),
    ("momentum-wd", lambda: SGD(0.05, momentum=0.8, weight_decay=0.05),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, weight_decay=0.05)),
    ("nesterov-wd", lambda: SGD(0.02, momentum=0.5, nesterov=True, weight_decay=0.2),
     lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.2)),
    ("adam", lambda: Adam(0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    ("adam-betas", lambda: Adam(0.02, betas=(0.8, 0.99), eps=1e-6),
     lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    ("adam-wd", lambda: Adam(0.01, weight_decay=0.1), lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1)),
    ("adamw", lambda: AdamW(0.01), lambda ps: torch.optim.AdamW(ps, lr=0.01)),
    ("adamw-wd", lambda: AdamW(0.01, weight_decay=0.3), lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.3)),
]
CONFIG_IDS = [c[0] for c in CONFIGS]


# ------------------------------------------------------------ helpers


def start_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def gradient_sequence(n, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(n)]


class Quadratic:
    """f(p) = sum_i 0.5 * h_i * (p_i - c_i)**2 with h_i in [0.5, 3]: gradients depend on the parameters."""

    def __init__(self, seed=2):
        rng = np.random.default_rng(seed)
        self.h = [rng.uniform(0.5, 3.0, s) for s in SHAPES]
        self.c = [rng.standard_normal(s) for s in SHAPES]

    def grads(self, params):
        return [h * (p - c) for h, p, c in zip(self.h, params, self.c)]


def torch_run(make_torch, params, grad_fn, steps, dtype=torch.float64):
    """Parameters after each step of a torch optimizer fed ``grad_fn(step, current params)``."""
    tensors = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in params]
    opt = make_torch(tensors)
    history = []
    for k in range(steps):
        grads = grad_fn(k, [x.detach().numpy() for x in tensors])
        for x, g in zip(tensors, grads):
            x.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        history.append([x.detach().numpy().copy() for x in tensors])
    return history


def ours_run(opt, params, grad_fn, steps):
    history = []
    for k in range(steps):
        opt.step(params, grad_fn(k, params))
        history.append([p.copy() for p in params])
    return history


def max_deviation(history_a, history_b):
    return max(float(np.max(np.abs(a - b))) for step_a, step_b in zip(history_a, history_b)
               for a, b in zip(step_a, step_b))


# ------------------------------------------------------------ against torch.optim


@pytest.mark.parametrize(("name", "make", "make_torch"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_on_a_fixed_gradient_sequence(name, make, make_torch):
    seq = gradient_sequence(STEPS)
    ours = ours_run(make(), start_params(), lambda k, _: [g.copy() for g in seq[k]], STEPS)
    ref = torch_run(make_torch, start_params(), lambda k, _: seq[k], STEPS)
    assert max_deviation(ours, ref) < TORCH_TOL
    assert max_deviation(ours[:1], [start_params()]) > 1e-4  # the parameters did move


@pytest.mark.parametrize(("name", "make", "make_torch"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_on_a_quadratic(name, make, make_torch):
    quad = Quadratic()
    ours = ours_run(make(), start_params(), lambda k, p: quad.grads(p), STEPS)
    ref = torch_run(make_torch, start_params(), lambda k, p: quad.grads(p), STEPS)
    assert max_deviation(ours, ref) < TORCH_TOL


@pytest.mark.parametrize(("name", "make", "make_torch"), CONFIGS, ids=CONFIG_IDS)
def test_step_updates_in_place_and_leaves_gradients_alone(name, make, make_torch):
    params = start_params()
    ids = [id(p) for p in params]
    before = [p.copy() for p in params]
    grads = gradient_sequence(1)[0]
    grads0 = [g.copy() for g in grads]
    opt = make()
    for _ in range(3):
        opt.step(params, grads)
    assert [id(p) for p in params] == ids
    assert all(not np.array_equal(p, b) for p, b in zip(params, before))
    for g, g0 in zip(grads, grads0):
        np.testing.assert_array_equal(g, g0)
    assert opt.steps == 3


def test_adam_float32_keeps_dtype_and_matches_torch():
    params = start_params(dtype=np.float32)
    seq = gradient_sequence(20, dtype=np.float32)
    opt = Adam(0.01, weight_decay=0.05)
    ours = ours_run(opt, params, lambda k, _: seq[k], 20)
    ref = torch_run(lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.05), start_params(dtype=np.float32),
                    lambda k, _: seq[k], 20, dtype=torch.float32)
    assert all(p.dtype == np.float32 for p in params)
    assert all(a.dtype == np.float32 for v in opt.state.values() for a in v)
    for a, b in zip(ours[-1], ref[-1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9), lambda: AdamW(0.01)], ids=["momentum", "adamw"])
def test_float32_steps_keep_float32(make):
    params = start_params(dtype=np.float32)
    opt = make()
    for grads in gradient_sequence(3, dtype=np.float32):
        opt.step(params, grads)
    assert all(p.dtype == np.float32 for p in params)
    assert all(a.dtype == np.float32 for v in opt.state.values() for a in v)


# ------------------------------------------------------------ by hand


def test_plain_sgd_is_the_chapters_update_bit_for_bit():
    rng = np.random.default_rng(3)
    for dtype in (np.float64, np.float32):
        w = rng.standard_normal((5, 1)).astype(dtype)
        expected = w.copy()
        opt = SGD(0.01)
        for _ in range(5):
            g = rng.standard_normal((5, 1)).astype(dtype)
            expected -= 0.01 * g
            opt.step([w], [g])
            np.testing.assert_array_equal(w, expected)
        assert w.dtype == dtype
    w, g = np.array([1.0]), np.array([0.5])
    SGD(0.1).step([w], [g])
    assert w[0] == 1.0 - 0.1 * 0.5


def test_sgd_momentum_and_nesterov_by_hand():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    lr, mu = 0.1, 0.9
    w = np.array([1.0, 1.0])
    opt = SGD(lr, momentum=mu)
    opt.step([w], [g1])
    np.testing.assert_array_equal(w, 1.0 - lr * g1)  # first step: buffer = g
    opt.step([w], [g2])
    np.testing.assert_array_equal(w, 1.0 - lr * g1 - lr * (mu * g1 + g2))
    np.testing.assert_array_equal(opt.state["momentum_buffer"][0], mu * g1 + g2)

    w = np.array([1.0, 1.0])
    opt = SGD(lr, momentum=mu, nesterov=True)
    opt.step([w], [g1])
    np.testing.assert_array_equal(w, 1.0 - lr * (g1 + mu * g1))
    opt.step([w], [g2])
    np.testing.assert_array_equal(w, 1.0 - lr * (g1 + mu * g1) - lr * (g2 + mu * (mu * g1 + g2)))


def test_sgd_weight_decay_by_hand():
    w, g = np.array([2.0, -1.0]), np.array([0.5, 0.5])
    SGD(0.1, weight_decay=0.01).step([w], [g])
    np.testing.assert_array_equal(w, np.array([2.0, -1.0]) - 0.1 * (g + 0.01 * np.array([2.0, -1.0])))


def test_adam_first_step_by_hand():
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-8
    w0 = np.array([1.0, -2.0, 0.5, 3.0])
    g = np.array([0.3, -4.0, 1e-3, 0.0])
    w = w0.copy()
    opt = Adam(lr, betas=(b1, b2), eps=eps)
    opt.step([w], [g])
    m, v = (1 - b1) * g, (1 - b2) * g * g
    expected = w0 - lr / (1 - b1) * m / (np.sqrt(v) / math.sqrt(1 - b2) + eps)
    np.testing.assert_allclose(w, expected, rtol=1e-15, atol=0)
    # Bias correction makes step 1 move every parameter with a gradient by about lr against its sign.
    np.testing.assert_allclose(w[:3], w0[:3] - lr * np.sign(g[:3]), rtol=1e-6)
    assert w[3] == w0[3]
    np.testing.assert_allclose(opt.state["exp_avg"][0], m, rtol=1e-15)
    np.testing.assert_allclose(opt.state["exp_avg_sq"][0], v, rtol=1e-15)


def test_adam_and_adamw_weight_decay_differ_as_documented():
    w0, g = np.array([2.0]), np.array([0.0])
    w = w0.copy()
    AdamW(0.1, weight_decay=0.5).step([w], [g])
    np.testing.assert_allclose(w, w0 * (1 - 0.1 * 0.5), rtol=1e-15)  # decoupled: zero gradient, pure shrink
    w = w0.copy()
    Adam(0.1, weight_decay=0.5).step([w], [g])
    np.testing.assert_allclose(w, w0 - 0.1, rtol=1e-7)  # L2 in the gradient: a normalised step of size lr


# ------------------------------------------------------------ state dicts


@pytest.mark.parametrize(("name", "make", "make_torch"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_continues_bit_for_bit(name, make, make_torch):
    seq = gradient_sequence(100, seed=5)
    a = make()
    pa = start_params()
    for grads in seq[:50]:
        a.step(pa, grads)
    state = a.state_dict()
    b = type(a)(lr=123.0)  # fresh, other hyperparameters: the state must bring its own
    b.load_state_dict(state)
    assert b.hyperparameters() == a.hyperparameters() and b.steps == a.steps == 50
    pb = [p.copy() for p in pa]
    for grads in seq[50:]:
        a.step(pa, grads)
        b.step(pb, grads)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)
    assert set(a.state) == set(b.state)
    for key in a.state:
        for x, y in zip(a.state[key], b.state[key]):
            np.testing.assert_array_equal(x, y)
            assert x is not y


def test_state_dict_is_a_copy():
    opt = Adam(0.01)
    params = start_params()
    opt.step(params, gradient_sequence(1)[0])
    state = opt.state_dict()
    saved = [a.copy() for a in state["state"]["exp_avg"]]
    opt.step(params, gradient_sequence(1, seed=9)[0])
    for x, y in zip(state["state"]["exp_avg"], saved):
        np.testing.assert_array_equal(x, y)
    assert state["steps"] == 1 and state["name"] == "adam"
    fresh = Adam()
    fresh.load_state_dict(state)
    state["state"]["exp_avg"][0][...] = 99.0  # the loaded optimizer owns its arrays
    assert not np.any(fresh.state["exp_avg"][0] == 99.0)


@pytest.mark.parametrize(("target", "source"), [
    (SGD(0.1), Adam(0.1)), (Adam(0.1), SGD(0.1)), (Adam(0.1), AdamW(0.1)), (AdamW(0.1), Adam(0.1)),
    (SGD(0.1), AdamW(0.1)),
], ids=["sgd<-adam", "adam<-sgd", "adam<-adamw", "adamw<-adam", "sgd<-adamw"])
def test_load_state_dict_refuses_another_optimizers_state(target, source):
    with pytest.raises(ConfigError) as info:
        target.load_state_dict(source.state_dict())
    message = str(info.value)
    assert repr(target.name) in message and repr(source.name) in message


@pytest.mark.parametrize("state", [
    None, [], "adam",
    {"name": "adam", "state": {"momentum_buffer": []}},
    {"name": "adam", "state": {"exp_avg": [np.zeros(2)], "exp_avg_sq": []}},
], ids=["none", "list", "str", "foreign-key", "ragged"])
def test_load_state_dict_refuses_malformed_states(state):
    with pytest.raises(ConfigError):
        Adam().load_state_dict(state)


def test_state_for_other_parameter_shapes_is_refused_at_step():
    opt = Adam(0.01)
    opt.step([np.zeros(3)], [np.ones(3)])
    other = Adam()
    other.load_state_dict(opt.state_dict())
    with pytest.raises(ConfigError, match=r"\(3,\).*\(4,\)"):
        other.step([np.zeros(4)], [np.ones(4)])


# ------------------------------------------------------------ bad hyperparameters

NAN, INF = float("nan"), float("inf")

BAD_HYPERPARAMETERS = [
    # (build, pattern naming the argument and the value received)
    (lambda: SGD(0), r"learning rate: 0"),
    (lambda: SGD(-0.1), r"learning rate: -0\.1"),
    (lambda: SGD(NAN), r"learning rate: nan"),
    (lambda: SGD(INF), r"learning rate: inf"),
    (lambda: SGD("0.1"), r"learning rate: '0\.1'"),
    (lambda: SGD(None), r"learning rate: None"),
    (lambda: SGD(True), r"learning rate: True"),
    (lambda: SGD([0.1]), r"learning rate: \[0\.1\]"),
    (lambda: SGD(0.1, momentum=-0.1), r"momentum: -0\.1"),
    (lambda: SGD(0.1, momentum=1.0), r"momentum: 1\.0"),
    (lambda: SGD(0.1, momentum=1.5), r"momentum: 1\.5"),
    (lambda: SGD(0.1, momentum=NAN), r"momentum: nan"),
    (lambda: SGD(0.1, momentum="0.9"), r"momentum: '0\.9'"),
    (lambda: SGD(0.1, momentum=None), r"momentum: None"),
    (lambda: SGD(0.1, nesterov=True), r"nesterov.*momentum.*0"),
    (lambda: SGD(0.1, momentum=0.0, nesterov=True), r"nesterov.*momentum.*0"),
    (lambda: SGD(0.1, weight_decay=-1e-3), r"weight_decay: -0\.001"),
    (lambda: SGD(0.1, weight_decay=NAN), r"weight_decay: nan"),
    (lambda: SGD(0.1, weight_decay=INF), r"weight_decay: inf"),
    (lambda: SGD(0.1, weight_decay="x"), r"weight_decay: 'x'"),
    (lambda: Adam(0.0), r"learning rate: 0"),
    (lambda: Adam(-1e-3), r"learning rate: -0\.001"),
    (lambda: Adam(NAN), r"learning rate: nan"),
    (lambda: Adam(betas=(1.0, 0.999)), r"beta1: 1\.0"),
    (lambda: Adam(betas=(-0.1, 0.999)), r"beta1: -0\.1"),
    (lambda: Adam(betas=(0.9, 1.0)), r"beta2: 1\.0"),
    (lambda: Adam(betas=(0.9, NAN)), r"beta2: nan"),
    (lambda: Adam(betas=("a", 0.999)), r"beta1: 'a'"),
    (lambda: Adam(betas=(0.9,)), r"betas: \(0\.9,\)"),
    (lambda: Adam(betas=0.9), r"betas: 0\.9"),
    (lambda: Adam(betas=(0.9, 0.99, 0.999)), r"betas: \(0\.9, 0\.99, 0\.999\)"),
    (lambda: Adam(eps=-1e-8), r"eps: -1e-08"),
    (lambda: Adam(weight_decay=-0.1), r"weight_decay: -0\.1"),
    (lambda: AdamW(weight_decay=-0.01), r"weight_decay: -0\.01"),
    (lambda: AdamW(lr=INF), r"learning rate: inf"),
]


@pytest.mark.parametrize(("build", "pattern"), BAD_HYPERPARAMETERS, ids=[p for _, p in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_raise_config_error_naming_argument_and_value(build, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        build()
    assert isinstance(info.value, GradloopError) and isinstance(info.value, ValueError)


def test_boundary_hyperparameters_are_accepted():
    assert SGD(1e-12, momentum=0.0, weight_decay=0.0).momentum == 0.0
    assert SGD(3, momentum=0.999999, nesterov=True).lr == 3.0
    assert Adam(betas=(0.0, 0.0), eps=0.0).betas == (0.0, 0.0)
    assert AdamW().weight_decay == 0.01 and Adam().weight_decay == 0.0


def test_get_optimizer_by_name():
    expected = {"sgd": (SGD, 0.0, False), "momentum": (SGD, 0.9, False), "nesterov": (SGD, 0.9, True)}
    for name, (cls, mu, nesterov) in expected.items():
        opt = get_optimizer(name, 0.1, weight_decay=0.01)
        assert type(opt) is cls and opt.momentum == mu and opt.nesterov is nesterov and opt.weight_decay == 0.01
    assert type(get_optimizer("adam", 0.1)) is Adam and type(get_optimizer("adamw", 0.1, 0.2)) is AdamW
    assert set(OPTIMIZER_TYPES) == {"sgd", "adam", "adamw"}
    with pytest.raises(ConfigError, match="'rmsprop'") as info:
        get_optimizer("rmsprop", 0.1)
    for name in OPTIMIZERS:
        assert name in str(info.value)


# ------------------------------------------------------------ schedules


def torch_schedule(make_scheduler, base_lr, epochs):
    """The learning rate after 0, 1, ..., epochs scheduler steps."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(epochs):
        opt.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


@pytest.mark.parametrize(("ours", "make_scheduler"), [
    (StepLR(10, 0.1), lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.1)),
    (StepLR(7, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
    (StepLR(1, 0.9), lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.9)),
    (ExponentialLR(0.95), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.95)),
    (ExponentialLR(0.5), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5)),
    (CosineLR(30), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30)),
    (CosineLR(30, min_lr=1e-3), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=1e-3)),
    (CosineLR(45, min_lr=0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=45, eta_min=0.01)),
], ids=["step10", "step7", "step1", "exp0.95", "exp0.5", "cos30", "cos30-min", "cos45-min"])
@pytest.mark.parametrize("base_lr", [0.1, 0.03])
def test_schedules_match_torch_over_30_epochs(ours, make_scheduler, base_lr):
    expected = torch_schedule(make_scheduler, base_lr, 30)
    got = [ours.lr(base_lr, epoch) for epoch in range(31)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert got[0] == base_lr


def test_cosine_stays_at_min_lr_after_its_last_epoch():
    # Design choice: clamped at min_lr (torch's CosineAnnealingLR would rise again after T_max).
    schedule = CosineLR(10, min_lr=0.01)
    assert schedule.lr(0.1, 10) == pytest.approx(0.01, abs=1e-15)
    assert all(schedule.lr(0.1, e) == schedule.lr(0.1, 10) for e in range(11, 30))


@pytest.mark.parametrize(("build", "pattern"), [
    (lambda: StepLR(0), r"step_size.*0"),
    (lambda: CosineLR(0), r"total_epochs.*0"),
])
def test_bad_schedules_raise_config_error(build, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build()


# ------------------------------------------------------------ gradient clipping


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
    grads = [g * 2 for g in gradient_sequence(1, seed=6)[0]]
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for x, g in zip(tensors, grads):
        x.grad = torch.tensor(g)
    ref_total = torch.nn.utils.clip_grad_norm_(tensors, max_norm).item()
    ids = [id(g) for g in grads]
    before = [g.copy() for g in grads]
    total = clip_grad_norm(grads, max_norm)
    assert [id(g) for g in grads] == ids
    np.testing.assert_allclose(total, ref_total, rtol=1e-13)
    for g, x in zip(grads, tensors):
        np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-13, atol=1e-16)
    new_norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    if total > max_norm:
        assert new_norm == pytest.approx(max_norm, rel=1e-6)
    else:
        for g, b in zip(grads, before):
            np.testing.assert_array_equal(g, b)


def test_clip_grad_norm_of_zero_gradients():
    grads = [np.zeros(3), np.zeros((2, 2))]
    assert clip_grad_norm(grads, 1.0) == 0.0
    assert all(not g.any() for g in grads)
