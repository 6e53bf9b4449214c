"""The panning agent: seeded training is deterministic and learns (beats random actions), a crashed run resumes
to the same agent bit for bit, nothing is unpickled on load, and an agent refuses another network."""
from __future__ import annotations

import json
import os
from operator import attrgetter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import panning.pbt.rl.agent as agent_module
from panning import data, models
from panning.pbt.rl import checkpoint
from panning.pbt.rl.agent import load_agent, save_agent, train_agent
from panning.pbt.rl.env import Curriculum, PanningEnv
from panning.pbt.rl.vec_env import PanningVecEnv

FAST = dict(learning_starts=40, batch_size=32, checkpoint_every=40)


@pytest.fixture(scope="module")
def bundle():
    return data.load("synthetic", num_classes=3, input_shape=(8,), n_train=60, n_test=30)


def make(bundle, cls=PanningVecEnv, width=0.1, **options):
    torch.manual_seed(0)
    model = models.build("mlp", (8,), 3, width=width)
    settings = {"iterations": 4, "per_class": 4, "batches": 2, "curriculum": Curriculum(switch=60), **options}
    return cls(model, bundle.train, (8,), **settings)


def same_weights(a, b) -> bool:
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_seeded_training_is_deterministic(bundle):
    first = train_agent(make(bundle, lanes=2), 120, seed=3, **FAST)
    second = train_agent(make(bundle, lanes=2), 120, seed=3, **FAST)
    other = train_agent(make(bundle, lanes=2), 120, seed=4, **FAST)
    assert same_weights(first, second) and not same_weights(first, other)


@pytest.mark.slow
def test_a_short_training_run_beats_random_actions(bundle):
    """At a fixed target of 95% on a tiny MLP, 400-step TD3 runs (seeds 0, 1, 2) learn index weights whose
    episodes earn, averaged over the three seeds, more than random actions' by more than three standard errors
    of the random episodes' mean (one seed alone can stay at random's level on a 4-step episode)."""
    fixed = dict(curriculum=Curriculum.fixed(0.95, 0.95))

    def rewards(policy, episodes):
        env = make(bundle, PanningEnv, **fixed)
        env.reset(seed=0)
        found = []
        for _ in range(episodes):
            observation, _ = env.reset()
            total, done = 0.0, False
            while not done:
                observation, reward, done, _, _ = env.step(policy(observation))
                total += reward
            found.append(total)
        return np.array(found)

    rng = np.random.default_rng(0)
    random = rewards(lambda o: rng.uniform(-1, 1, 3), 30)
    learned = []
    for seed in range(3):
        agent = train_agent(make(bundle, lanes=4, **fixed), 400, seed=seed, learning_starts=100, batch_size=64,
                            checkpoint_every=400)
        learned.append(rewards(lambda o: agent.predict(o, deterministic=True)[0], 5).mean())
    margin = 3 * random.std(ddof=1) / np.sqrt(len(random))
    assert np.mean(learned) > random.mean() + margin, (learned, random.mean(), margin)


RESUMABLE = {"td3": dict(learning_starts=40, batch_size=32), "ddpg": dict(learning_starts=40, batch_size=32),
             "ppo": dict(n_steps=20, batch_size=20)}


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(RESUMABLE))
def test_a_crashed_run_resumes_to_the_same_agent_bit_for_bit(bundle, tmp_path, monkeypatch, algorithm):
    options = dict(algorithm=algorithm, seed=1, checkpoint_every=40, **RESUMABLE[algorithm])
    episodes = []
    uninterrupted = train_agent(make(bundle, lanes=2), 160, episodes=episodes, **options)

    class Crash(Exception):
        pass

    real_save = agent_module.save_checkpoint
    saves = []

    def crash_after_second(*args):
        real_save(*args)
        saves.append(1)
        if len(saves) == 2:
            raise Crash

    monkeypatch.setattr(agent_module, "save_checkpoint", crash_after_second)
    with pytest.raises(Crash):
        train_agent(make(bundle, lanes=2), 160, checkpoint=tmp_path / "ck", **options)
    monkeypatch.setattr(agent_module, "save_checkpoint", real_save)
    assert json.loads((tmp_path / "ck" / "latest.json").read_text()) == {"snapshot": "step-000000080"}
    resumed_episodes = []
    resumed = train_agent(make(bundle, lanes=2), 160, checkpoint=tmp_path / "ck", episodes=resumed_episodes,
                          **options)
    assert resumed.num_timesteps == uninterrupted.num_timesteps == 160
    assert same_weights(resumed, uninterrupted)
    for name in resumed._get_torch_save_params()[0][1:]:  # the optimizers
        a = attrgetter(name)(resumed).state_dict()["state"]
        b = attrgetter(name)(uninterrupted).state_dict()["state"]
        assert all(torch.equal(a[p]["exp_avg_sq"], b[p]["exp_avg_sq"]) for p in a)
    if algorithm != "ppo":
        assert np.array_equal(resumed.replay_buffer.observations, uninterrupted.replay_buffer.observations)
    assert resumed_episodes == episodes


def test_a_half_written_snapshot_is_never_loaded(bundle, tmp_path):
    folder = tmp_path / "ck"
    train_agent(make(bundle, lanes=2), 40, seed=1, checkpoint=folder, **FAST)
    (folder / ".step-000000080.123.tmp").mkdir()  # a crash while writing the next snapshot
    (folder / ".step-000000080.123.tmp" / "state.json").write_text("{trunc")
    values, _, _ = checkpoint.load(folder)
    assert values["num_timesteps"] == 40


def test_loading_never_unpickles(bundle, tmp_path):
    env = make(bundle, lanes=1)
    agent = train_agent(env, 40, seed=0, **FAST)
    save_agent(agent, tmp_path / "agent")
    single = make(bundle, PanningEnv)
    load_agent(tmp_path / "agent", single)  # the real thing loads
    weights = load_file(str(tmp_path / "agent.safetensors"))
    del weights["actor.mu.4.bias"]  # a weights file that does not fit the policy its JSON names
    save_file(weights, str(tmp_path / "agent.safetensors"))
    with pytest.raises(ValueError, match=r"agent.safetensors': not a readable safetensors file of agent weights that "
                                         r"fit its policy \(.*Missing key\(s\).*mu.4.bias"):
        load_agent(tmp_path / "agent", single)
    # a pickle payload where the weights should be
    torch.save({"payload": torch.zeros(3)}, tmp_path / "agent.safetensors")
    with pytest.raises(ValueError, match="agent.safetensors"):
        load_agent(tmp_path / "agent", single)
    (tmp_path / "agent.json").write_text("not json")
    with pytest.raises(ValueError, match="agent.json"):
        load_agent(tmp_path / "agent", single)
    # a checkpoint whose buffer holds a pickled object array is refused
    folder = tmp_path / "ck"
    train_agent(make(bundle, lanes=1), 40, seed=0, checkpoint=folder, **FAST)
    snapshot = folder / json.loads((folder / "latest.json").read_text())["snapshot"]
    np.savez(snapshot / "buffer.npz", observations=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="buffer.npz"):
        checkpoint.load(folder)


def test_an_agent_refuses_another_network(bundle, tmp_path):
    agent = train_agent(make(bundle, lanes=1), 40, seed=0, **FAST)
    save_agent(agent, tmp_path / "agent")
    wider = make(bundle, PanningEnv, width=0.2)
    with pytest.raises(ValueError, match="trained for another network: arena"):
        load_agent(tmp_path / "agent", wider)
    spec = json.loads((tmp_path / "agent.json").read_text())
    spec["network"]["model"] = "mlp"
    (tmp_path / "agent.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="model 'mlp' \\(here 'cnn1d'\\)"):
        load_agent(tmp_path / "agent", make(bundle, PanningEnv), network={"model": "cnn1d"})


def test_a_checkpoint_continues_only_with_its_own_settings(bundle, tmp_path):
    """Every setting of the agent and of its environment is recorded; another value of any is refused before a
    step, naming it with both values (another lane count used to fail in numpy's broadcasting)."""
    train_agent(make(bundle, lanes=1), 40, seed=0, checkpoint=tmp_path / "ck", **FAST)
    before = (tmp_path / "ck" / "latest.json").read_text()
    cases = [({"seed": 1}, {}, "seed 0 there, 1 here"), ({"batch_size": 8}, {}, "batch_size 32 there, 8 here"),
             ({}, {"lanes": 2}, "lanes 1 there, 2 here"), ({}, {"iterations": 5}, "iterations 4 there, 5 here"),
             ({}, {"per_class": 3}, "per_class 4 there, 3 here"), ({}, {"batches": 3}, "batches 2 there, 3 here"),
             ({}, {"curriculum": Curriculum(switch=70)}, "curriculum_switch 60 there, 70 here")]
    for run, env, message in cases:
        with pytest.raises(ValueError, match=rf"made with other settings \({message}\); continue with the "
                                             r"checkpoint's, or start afresh with another checkpoint folder"):
            train_agent(make(bundle, **{"lanes": 1, **env}), 80, checkpoint=tmp_path / "ck",
                        **{"seed": 0, **FAST, **run})
    assert (tmp_path / "ck" / "latest.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest.json", "step-000000040"]


def test_a_checkpoint_folder_in_use_by_another_run_is_refused(bundle, tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / ".lock").write_text(str(os.getppid()))  # a live process that is not this one
    with pytest.raises(ValueError, match=rf"^checkpoint: '.*ck' is in use by another run \(process {os.getppid()}"):
        train_agent(make(bundle, lanes=1), 40, seed=0, checkpoint=folder, **FAST)
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]


def test_an_agent_path_with_a_dot_keeps_its_whole_name(bundle, tmp_path):
    agent = train_agent(make(bundle, lanes=1), 40, seed=0, **FAST)
    for width in ("0.5", "0.2"):  # one name per width: the suffix is appended, never swapped in
        save_agent(agent, tmp_path / f"mlp-w{width}", episodes=[])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"mlp-w{w}{s}" for w in ("0.2", "0.5") for s in (".curve.png", ".episodes.csv", ".json",
                                                                       ".safetensors")]
    env = make(bundle, PanningEnv)
    for given in ("mlp-w0.5", "mlp-w0.5.json", "mlp-w0.5.safetensors"):  # a trailing .json / .safetensors is dropped
        loaded = load_agent(tmp_path / given, env)
        assert torch.equal(loaded.actor.mu[0].weight, agent.actor.mu[0].weight)
