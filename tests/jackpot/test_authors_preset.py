"""preset="authors" reproduces the authors' released search step for step (zyxxmu/lottery-jackpots,
utils/conv_type.py and cifar.py, as described in docs/jackpot.md), checked against a plain-torch loop written
here from those formulas:

- budgets: keep int(N (1 - s)) weights overall; the threshold is the kept-th largest |w|; layer l prunes
  int(n_l * f_l) weights, f_l the fraction of its |w| strictly below the threshold (classifier dense);
- scores: 1 on the kept weights, 0.99 on the pruned ones (the layer's smallest |w|); the forward uses W * mask;
- score gradient: dL/dW_eff * W (straight through the mask), for pruned weights too;
- SGD on the scores: momentum 0.9, weight decay 5e-4, lr 0.1 with a cosine stepped per epoch;
- after every step, per layer: t = the prune_num-th smallest score; pruned weights scoring above t come back
  and kept weights scoring at most t go, all of them, when there are equally many (else the layer stays);
- BatchNorm in train mode (running statistics follow the batches), its affine parameters frozen.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from panning.jackpot import search

SPARSITY, EPOCHS, BATCH, SEED = 0.7, 3, 16, 5
N_TRAIN = 40  # batches of 16, 16, 8: three steps per epoch, the last one short


def tiny_net() -> nn.Module:
    torch.manual_seed(11)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():  # BatchNorm affine away from (1, 0), so that freezing it is visible
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def tiny_data() -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (N_TRAIN,), generator=g)
    x = torch.randn(N_TRAIN, 1, 4, 4, generator=g, dtype=torch.float64) + y.view(-1, 1, 1, 1).double()
    return TensorDataset(x, y)


def oracle(net: nn.Module, data: TensorDataset) -> list[dict]:
    """The authors' search written out: per step, the masks and scores of the two searched layers."""
    conv, bn, hidden, classifier = net[0], net[1], net[4], net[6]
    weights = [conv.weight.detach().clone(), hidden.weight.detach().clone()]
    flat = torch.cat([w.reshape(-1) for w in weights]).abs()
    kept = int(flat.numel() * (1 - SPARSITY))
    threshold = torch.sort(flat, descending=True).values[kept - 1]
    prune_num = [int(w.numel() * (int((w.abs() < threshold).sum()) / w.numel())) for w in weights]
    masks, scores = [], []
    for w, p in zip(weights, prune_num):
        smallest = torch.sort(w.abs().reshape(-1)).indices[:p]
        m = torch.ones(w.numel(), dtype=torch.float64)
        m[smallest] = 0
        s = torch.ones(w.numel(), dtype=torch.float64)
        s[smallest] = 0.99
        masks.append(m.view_as(w))
        scores.append(s.view_as(w))
    momentum = [None, None]
    running_mean, running_var = bn.running_mean.clone(), bn.running_var.clone()
    x_all, y_all = data.tensors
    steps_per_epoch = math.ceil(N_TRAIN / BATCH)
    trace = [dict(prune_num=prune_num, masks=[m.clone() for m in masks], scores=[s.clone() for s in scores])]
    for epoch in range(EPOCHS):
        lr = 0.1 * (0.5 * (1 + math.cos(math.pi * epoch / EPOCHS)))  # base lr times the cosine factor
        order = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(SEED + epoch))
        for b in range(steps_per_epoch):
            idx = order[b * BATCH:(b + 1) * BATCH]
            x, y = x_all[idx], y_all[idx]
            effective = [(w * m).requires_grad_() for w, m in zip(weights, masks)]
            h = F.conv2d(x, effective[0], conv.bias, padding=1)
            h = F.batch_norm(h, running_mean, running_var, bn.weight.detach(), bn.bias.detach(), training=True,
                             momentum=0.1, eps=bn.eps)
            h = F.relu(h).flatten(1)
            pre = h @ effective[1].t() + hidden.bias.detach()
            pre.retain_grad()
            loss = F.cross_entropy(F.relu(pre) @ classifier.weight.detach().t() + classifier.bias.detach(), y)
            loss.backward()
            # dL/dW_eff: autograd for the convolution; for the linear layer its formula, dL/dpre^T h.
            grads = [effective[0].grad, pre.grad.t() @ h.detach()]
            for i in range(2):
                # SGD written with add(alpha=): a + alpha * b rounds once there, as in every torch optimizer
                # (a * b + c written out can differ in the last bit).
                grad = (grads[i] * weights[i]).add(scores[i], alpha=5e-4)
                momentum[i] = grad if momentum[i] is None else momentum[i].mul(0.9).add(grad)
                scores[i] = scores[i].add(momentum[i], alpha=-lr)
                s, m = scores[i].reshape(-1), masks[i].reshape(-1).clone()
                t = torch.sort(s).values[prune_num[i] - 1]
                revive = (m == 0) & (s > t)
                remove = (m == 1) & (s <= t)
                if int(revive.sum()) == int(remove.sum()) > 0:
                    m[revive], m[remove] = 1, 0
                masks[i] = m.view_as(weights[i])
            trace.append(dict(masks=[m.clone() for m in masks], scores=[s.clone() for s in scores],
                              running_mean=running_mean.clone()))
    return trace


def test_authors_preset_matches_their_search_step_for_step(tmp_path):
    data = tiny_data()
    original = tiny_net()
    params = {n: p.detach().clone() for n, p in original.named_parameters()}
    expected = oracle(copy.deepcopy(original), data)
    total = EPOCHS * math.ceil(N_TRAIN / BATCH)
    assert len(expected) == total + 1
    settings = dict(sparsity=SPARSITY, epochs=EPOCHS, batch_size=BATCH, seed=SEED, preset="authors",
                    progress=False, checkpoint=tmp_path / "search.pt")
    swaps = 0
    for step in range(1, total + 1):  # stop after every step (checkpointed), compare, go on
        model = copy.deepcopy(original)
        result = search(model, data, max_steps=step, **settings)
        assert result.steps == step
        if step == 1:
            sizes = [expected[0]["masks"][i].numel() for i in range(2)]
            assert list(result.budgets.values()) == [n - p for n, p in zip(sizes, expected[0]["prune_num"])]
        for i, name in enumerate(["0.weight", "4.weight"]):
            assert torch.equal(result.masks[name], expected[step]["masks"][i] != 0), (step, name)
            assert torch.equal(result.scores[name], expected[step]["scores"][i]), (step, name)
            assert int(result.masks[name].sum()) == result.budgets[name]
        assert torch.equal(model[1].running_mean, expected[step]["running_mean"]), step
        for name, p in model.named_parameters():
            if name in params:
                assert torch.equal(p, params[name]), (step, name)  # weights and BatchNorm affine frozen
        swaps += int(sum((expected[step]["masks"][i] != expected[step - 1]["masks"][i]).sum() for i in range(2)))
    assert swaps > 0, "the mask never changed: the test does not exercise the refresh"
    assert result.completed and len(result.history) == EPOCHS


def test_budget_in_steps_is_exact_and_may_end_mid_epoch():
    data = tiny_data()
    result = search(tiny_net(), data, sparsity=SPARSITY, steps=4, batch_size=BATCH, progress=False)
    assert result.steps == 4 and result.completed
    assert len(result.history) == 2  # one full epoch of 3 steps, then the short one the budget ends
    with pytest.raises(ValueError, match="steps"):
        search(tiny_net(), data, sparsity=SPARSITY, steps=4, epochs=1)
