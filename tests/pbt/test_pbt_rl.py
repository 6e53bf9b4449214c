"""RL panning: the environment passes gymnasium's checker and follows the authors' environment (docs/agent.md);
a tiny TD3 run, deterministic rollout, save/load and panning.prune(method="rl_panning")."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import panning.criteria
from panning import data, models, prune
from panning.pbt.rl.agent import load_agent, make_agent, rollout, save_agent, train_agent
from panning.pbt.rl.env import Curriculum, PanningEnv
from panning.pbt.rl.vec_env import PanningVecEnv
from panning.sparsity import keep_count, schedule


@pytest.fixture(scope="module")
def bundle():
    return data.load("synthetic", num_classes=3, input_shape=(8,), n_train=60, n_test=30)


def make_env(bundle, env=PanningEnv, **options):
    torch.manual_seed(0)
    model = models.build("mlp", (8,), 3, width=0.1)
    return env(model, bundle.train, (8,), **{"iterations": 5, "per_class": 4, "batches": 2, **options})


def test_env_passes_the_gymnasium_checker(bundle):
    check_env(make_env(bundle), skip_render_check=True)


def test_env_follows_the_specification(bundle):
    env = make_env(bundle)
    observation, info = env.reset(seed=3, options={"sparsity": 0.9})
    assert observation.shape == (7,) and observation.dtype == np.float32
    assert (observation[2:] == 0).all()  # dense: no difference, nothing pruned, step 0 (the authors' first state)
    counts = schedule(env.arena.numel, 0.9, 5).counts
    for e in range(5):
        observation, reward, terminated, truncated, info = env.step(np.array([0.5, -1.0, 0.0]))
        assert int(env.mask.sum()) == counts[e]
        assert info["sparsity"] == pytest.approx(1 - 0.1 ** ((e + 1) / 5), abs=1e-12)  # the formula, not 1 - k / N
        expected = -100 * abs(info["sparsity"] - info["flow_sparsity"]) - info["d_loss"] - info["d_gradnorm"]
        assert reward == pytest.approx(expected) and not truncated
        assert observation[2] == pytest.approx(info["d_loss"]) and observation[3] == pytest.approx(info["d_gradnorm"])
        assert info["d_gradnorm"] <= 0.2 + 1e-9  # the authors divide the normalized gtg difference by 5
        assert observation[4] == pytest.approx(info["flow_sparsity"])
        assert observation[5] == pytest.approx(info["sparsity"])
        assert observation[6] == pytest.approx(e / 5)
        assert terminated == (e == 4)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3))


def test_env_ends_with_a_penalty_when_the_network_dies(bundle):
    env = make_env(bundle)
    env.reset(seed=0, options={"sparsity": 1.0})
    _, reward, terminated, _, info = env.step(np.zeros(3))
    assert info["dead"] and terminated and info["flow_sparsity"] == 1.0
    # scheduled sparsity of step 0 is 1 - 0^(1/5) = 1: no sparsity penalty; death costs (1 - 0/5) * 5 as the authors'
    assert reward == pytest.approx(-5.0 - info["d_loss"] - info["d_gradnorm"])


def test_env_draws_target_sparsity_per_episode_and_caches_dense_indices(bundle, monkeypatch):
    calls = []
    original = panning.criteria.passes.gradient_pass
    monkeypatch.setattr(panning.criteria.passes, "gradient_pass", lambda *a, **k: calls.append(1) or original(*a, **k))
    env = make_env(bundle, curriculum=Curriculum.fixed(0.9, 0.99))
    targets = []
    for episode in range(3):
        _, info = env.reset(seed=episode if episode == 0 else None)
        targets.append(info["sparsity"])
        terminated = False
        while not terminated:
            _, _, terminated, _, _ = env.step(env.action_space.sample())
    assert all(0.9 <= t <= 0.99 for t in targets) and len(set(targets)) == 3
    assert len(calls) == 2  # 2 batches, scored once each (when the environment is made) over 3 episodes of 5 steps


@pytest.mark.slow
def test_tiny_td3_run_rollout_save_and_load(bundle, tmp_path):
    env = make_env(bundle)
    agent = train_agent(make_env(bundle, PanningVecEnv, lanes=1), 200, learning_starts=50, batch_size=32)
    assert agent.num_timesteps == 200
    mask = rollout(agent, env, 0.9)
    assert int(mask.sum()) == keep_count(env.arena.numel, 0.9)
    # deterministic: from the same environment state (a fresh one: the observation's running ranges carry over
    # from episode to episode, as in the authors' environment) the same mask
    assert torch.equal(rollout(agent, make_env(bundle), 0.9), mask)
    save_agent(agent, tmp_path / "agent")
    loaded = load_agent(tmp_path / "agent", env)
    assert torch.equal(rollout(loaded, make_env(bundle), 0.9), mask)
    model = models.build("mlp", (8,), 3, width=0.1)
    masks = prune(model, "rl_panning", 0.95, bundle, agent=tmp_path / "agent", iterations=5, per_class=4)
    assert masks.kept == keep_count(masks.numel, 0.95)


def test_agent_and_env_check_arguments(bundle):
    env = make_env(bundle)
    with pytest.raises(ValueError, match="algorithm"):
        make_agent(env, "sac")
    with pytest.raises(ValueError, match=r"^settings: ppo does not accept \['tau'\]"):
        make_agent(env, "ppo", tau=0.1)
    with pytest.raises(ValueError, match="^timesteps: expected a positive int, got 0"):
        train_agent(make_env(bundle, PanningVecEnv, lanes=1), 0)
    with pytest.raises(ValueError, match="curriculum.early"):
        make_env(bundle, curriculum=Curriculum.fixed(0.9, 0.8))
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"target": 0.5})
    with pytest.raises(ValueError, match="agent: .*panning agent"):
        prune(env.model, "rl_panning", 0.5, bundle)
