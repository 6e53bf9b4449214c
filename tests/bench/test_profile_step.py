"""bench/profile_step.py: a training step's operator time, grouped by what the operators do."""
from __future__ import annotations

import re

import pytest

from bench import profile_step

pytestmark = pytest.mark.slow  # a network's training steps under the profiler


def test_the_groups_cover_the_profiled_step(capsys):
    assert profile_step.main(["--network", "linear", "--variant", "compressed", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("linear 98% compressed, 1 thread(s), load average ")
    total = float(re.search(r"([\d.]+) ms in operators", lines[0]).group(1))
    groups = {m.group(1).strip(): (float(m.group(2)), float(m.group(3))) for m in
              (re.match(r"  (.+?)\s+([\d.]+) ms\s+([\d.]+)%", line) for line in lines[1:])}
    assert groups["sparse kernels"][0] > 0  # the compressed Linear's forward and backward
    assert "dense conv / matmul" not in groups  # nothing runs the dense layer
    assert abs(sum(ms for ms, _ in groups.values()) - total) < 0.1 * len(groups)
    assert abs(sum(share for _, share in groups.values()) - 100) < 0.1 * len(groups)
