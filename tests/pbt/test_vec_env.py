"""The batched panning environment against plain recomputations: masks from step_mask on each lane's own
indices, flow sparsity against the path-counting network's effective sparsity (equal without biases), the masked
loss and gradient norm from a copy of the model with masked weights; the stable-baselines3 VecEnv contract; the
curriculum."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env
from torch import nn

from panning import data, models
from panning.connectivity import effective_sparsity
from panning.criteria import lanes as criteria_lanes
from panning.masks import Masks
from panning.pbt.panning import step_mask
from panning.pbt.rl.env import Curriculum, PanningEnv, PanningLanes
from panning.pbt.rl.vec_env import PanningVecEnv
from panning.sparsity import schedule

SHAPE = (1, 16)


@pytest.fixture(scope="module")
def bundle():
    return data.load("synthetic", num_classes=3, input_shape=SHAPE, n_train=60, n_test=30)


def cnn(seed=0):
    torch.manual_seed(seed)
    return models.build("cnn1d", SHAPE, 3, width=0.2)


def cnn_bn(seed=0):
    """A net the lanes cannot lower (BatchNorm buffers): the environment takes SynFlow per lane."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 4, 3, stride=2, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(28, 3, bias=False))


def lanes(bundle, count, net=cnn, **options):
    return PanningLanes(net(), bundle.train, SHAPE, count, **{"iterations": 6, "per_class": 3, "batches": 3,
                                                              "temperature": 200.0, **options})


def test_single_env_passes_the_gymnasium_checker(bundle):
    check_env(PanningEnv(cnn(), bundle.train, SHAPE, iterations=4, per_class=3, batches=2), skip_render_check=True)


@pytest.mark.parametrize("net", [cnn, cnn_bn])
def test_lanes_match_plain_recomputation(bundle, net, monkeypatch):
    """Both SynFlow paths: the plain stack's lanes together (panning.criteria.lanes.flows, once a step), the
    BatchNorm net's one lane at a time."""
    together = []
    flows = criteria_lanes.flows
    monkeypatch.setattr(criteria_lanes, "flows", lambda *args: together.append(1) or flows(*args))
    core = lanes(bundle, 4, net, curriculum=Curriculum.fixed(0.9, 0.99))
    for b in range(4):
        core.reset_lane(b)
    previous = core.masks.clone()
    rng = np.random.default_rng(0)
    for e in range(6):
        actions = rng.uniform(-1, 1, (4, 3))
        observations, rewards, terminated, infos = core.step(actions)
        for b in range(4):
            k = schedule(core.numel, float(core.sparsity[b]), 6).counts[e]
            expected = step_mask(core.indices(e, previous[b]), actions[b] + 1.0, k)
            assert torch.equal(core.masks[b], expected)
            masks = Masks.from_flat(core.arena, core.masks[b])
            assert infos[b]["flow_sparsity"] == pytest.approx(effective_sparsity(core.model, masks, SHAPE))
            assert observations[b, 4] == pytest.approx(infos[b]["flow_sparsity"])
            assert terminated[b] == (e == 5)
        previous = core.masks.clone()
    assert len(together) == (6 if net is cnn else 0)


def test_masked_loss_and_gradnorm_match_a_masked_copy(bundle):
    """Each lane's d_loss and d_gradnorm are |masked - dense| of its network on the step's batch over the running
    ranges' spans (gtg: / 5 more), the ranges taking the lanes' values in lane order; the masked values from a
    copy of the model with masked weights."""
    core = lanes(bundle, 3, curriculum=Curriculum.fixed(0.95, 0.95))
    ones = torch.ones(core.numel, dtype=torch.bool)
    dense = [plain_loss_gtg(core, ones, core.indices.batch(k)) for k in range(3)]
    low, high = [min(d[i] for d in dense) for i in range(2)], [max(d[i] for d in dense) for i in range(2)]
    for b in range(3):
        core.reset_lane(b)
    _, _, _, infos = core.step(np.random.default_rng(1).uniform(-1, 1, (3, 3)))
    for b in range(3):
        masked = plain_loss_gtg(core, core.masks[b], core.indices.batch(0))
        for i in range(2):
            low[i], high[i] = min(low[i], dense[0][i], masked[i]), max(high[i], dense[0][i], masked[i])
        expected = [abs(masked[0] - dense[0][0]) / (high[0] - low[0]),
                    abs(masked[1] - dense[0][1]) / (high[1] - low[1]) / 5]
        assert [infos[b]["d_loss"], infos[b]["d_gradnorm"]] == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_vec_env_contract_and_auto_reset(bundle):
    env = PanningVecEnv(cnn(), bundle.train, SHAPE, 3, iterations=4, per_class=3, batches=2)
    env.seed(5)
    observations = env.reset()
    assert observations.shape == (3, 7) and observations.dtype == np.float32
    assert all(env.observation_space.contains(o) for o in observations)
    for _ in range(4):
        observations, rewards, dones, infos = env.step(np.zeros((3, 3), dtype=np.float32))
        assert rewards.shape == (3,) and dones.shape == (3,) and len(infos) == 3
    assert dones.all()
    for info, observation in zip(infos, observations):
        assert info["episode"]["l"] == 4 and info["terminal_observation"][6] == pytest.approx(3 / 4)
        assert observation[6] == 0.0 and observation[4] == 0.0  # the lane started a new episode
    assert env.get_attr("iterations") == [4, 4, 4] and env.env_is_wrapped(object) == [False] * 3


def test_seeded_vec_env_repeats_itself(bundle):
    def run():
        env = PanningVecEnv(cnn(), bundle.train, SHAPE, 2, iterations=3, per_class=3, batches=2)
        env.seed(7)
        out = [env.reset()]
        for _ in range(5):
            out.append(env.step(np.full((2, 3), 0.3, dtype=np.float32))[0])
        return np.stack(out), env.core.sparsity.copy()

    (a, sa), (b, sb) = run(), run()
    assert np.array_equal(a, b) and np.array_equal(sa, sb)


def test_curriculum_follows_the_authors_schedule():
    rng = np.random.default_rng(0)
    curriculum = Curriculum()
    early = [curriculum.draw(rng, 9_999) for _ in range(2000)]
    late = [curriculum.draw(rng, 10_000) for _ in range(4000)]
    assert min(early) >= 0.8 and max(early) < 1.0 and min(early) < 0.81
    assert min(late) >= 0.9 and min(late) < 0.91
    above = np.mean(np.array(late) >= 0.98)
    assert 0.5 + 0.5 * 0.2 - 0.05 < above < 0.5 + 0.5 * 0.2 + 0.05  # half from U(0.98, 1), a fifth of the rest
    with pytest.raises(ValueError, match="curriculum.early"):
        Curriculum(early=(0.5, 1.5))


def plain_loss_gtg(core, mask, batch):
    """Loss of logits / 200 and its squared gradient norm over the prunable weights, on a masked copy."""
    net = copy.deepcopy(core.model).train()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, m in core.arena.split(mask).items():
            params[name].mul_(m)
    loss = F.cross_entropy(net(batch[0]) / 200.0, batch[1])
    grads = torch.autograd.grad(loss, [params[name] for name in core.arena.names])
    return loss.detach().item(), float(sum(g.double().square().sum() for g in grads))


def test_observation_is_normalized_by_running_ranges_as_the_authors(bundle):
    """Ranges start from the dense values of the first batches, then take every dense and masked value seen;
    observation = (dense - low) / span, |masked - dense| / span (gtg: / 5 more)."""
    core = lanes(bundle, 1, curriculum=Curriculum.fixed(0.97, 0.97))
    ones = torch.ones(core.numel, dtype=torch.bool)
    dense = [plain_loss_gtg(core, ones, core.indices.batch(k)) for k in range(3)]
    low = [min(d[i] for d in dense) for i in range(2)]
    high = [max(d[i] for d in dense) for i in range(2)]
    observation, _ = core.reset_lane(0)
    assert observation[0] == pytest.approx((dense[0][0] - low[0]) / (high[0] - low[0]), abs=1e-6)
    assert observation[1] == pytest.approx((dense[0][1] - low[1]) / (high[1] - low[1]), abs=1e-6)
    for e in range(6):
        observations, _, _, _ = core.step(np.array([[0.2, -0.4, 0.6]]))
        masked = plain_loss_gtg(core, core.masks[0], core.indices.batch(e))
        d = dense[e % 3]
        for i in range(2):
            low[i], high[i] = min(low[i], d[i], masked[i]), max(high[i], d[i], masked[i])
        span = [high[i] - low[i] for i in range(2)]
        expected = [(d[0] - low[0]) / span[0], (d[1] - low[1]) / span[1], abs(masked[0] - d[0]) / span[0],
                    abs(masked[1] - d[1]) / span[1] / 5, e / 6]
        got = [observations[0, 0], observations[0, 1], observations[0, 2], observations[0, 3], observations[0, 6]]
        assert got == pytest.approx(expected, abs=1e-5)
