"""`panning demo` end to end on a tiny budget (cnn1d width 0.2, one epoch, two pruning steps): the table, the
report and plots, the numbers of report.md against the cell files and against recounts, the RL row with an
agent or skipped in plain sight, and a resume that reuses the finished cells."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

import panning.cli.demo_run as demo_run
from panning import data, models
from panning.cli import main
from panning.masks import Masks

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--width", "0.2", "--epochs", "1", "--iterations", "2", "--jackpot-epochs", "1", "--threads", "1",
        "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"


def cell(out: Path, name: str) -> dict:
    return json.loads((out / "cells" / f"{name}.json").read_text())


def report_rows(out: Path) -> dict[str, list[str]]:
    """The table of report.md: method label -> its other four columns."""
    rows = {}
    for line in (out / "report.md").read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            label, *rest = [c.strip() for c in line.strip("|").split("|")]
            rows[label] = rest
    return rows


def pct(x: float, digits: int) -> str:
    return f"{100 * x:.{digits}f}%"


@pytest.mark.slow
def test_demo_end_to_end_table_report_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", *TINY, "--quick", "--methods", "panning,rl_panning,synflow,random", "--sparsity", "0.8",
                 "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    for word in ("method", "effective sparsity", "test accuracy", "time", "dense", "Panning", "SynFlow", "random",
                 "lottery jackpot", "magnitude + BN"):
        assert word in printed
    # the shipped agent is for width 4 (or not there): the RL row is skipped, in the table and in one line
    assert re.search(r"RL Panning\s.*skipped", printed)
    assert "RL Panning skipped: " in printed and "RL Panning skipped" in captured.err

    report = (out / "report.md").read_text()
    assert "Quick run (`--quick`)" in report.splitlines()[2]
    rows = report_rows(out)
    dense = cell(out, "dense")
    assert rows["dense"] == ["0.00%", "0.00%", pct(dense["test_acc"], 1), f"{dense['train_seconds']:.1f} s"]
    for method, label in (("panning", "Panning"), ("synflow", "SynFlow"), ("random", "random")):
        c = cell(out, method)
        masks = Masks.load(out / "masks" / f"{method}.safetensors")
        assert masks.sparsity == pytest.approx(0.8, abs=1e-3) and c["sparsity"] == masks.sparsity
        assert c["effective_sparsity"] >= c["sparsity"] - 1e-9
        assert rows[label][:3] == [pct(masks.sparsity, 2), pct(c["effective_sparsity"], 2), pct(c["test_acc"], 1)]
        assert round(1000 * c["test_acc"]) == pytest.approx(1000 * c["test_acc"])  # a count of 1000 test samples
        assert pct(c["test_acc"], 1) in printed
    assert rows["RL Panning"] == ["-", "-", "skipped", "-"]

    # the jackpot rows against a recount: the magnitude mask on the trained dense weights, evaluated by hand
    jackpot = cell(out, "jackpot")
    bundle = data.load("mnist1d")
    dense_model = models.load_weights(models.build("cnn1d", bundle.input_shape, bundle.num_classes, width=0.2),
                                      out / "checkpoints" / dense["checkpoint"])
    magnitude = Masks.load(out / "masks" / "jackpot" / "magnitude.safetensors")
    with torch.no_grad():
        x, y = bundle.test.tensors
        weights = {n: p * magnitude[n] if n in magnitude else p for n, p in dense_model.named_parameters()}
        logits = torch.func.functional_call(dense_model, weights, (x,))
    assert round(1000 * jackpot["magnitude"]["test_acc"]) == (logits.argmax(1) == y).sum().item()
    searched = Masks.load(out / "masks" / "jackpot" / "masks.safetensors")
    assert searched.keys() == magnitude.keys() and searched.kept == magnitude.kept  # the search keeps its budgets
    assert abs(searched.kept - 0.1 * searched.numel) <= len(searched) / 2  # 90% up to per-layer rounding
    assert rows["magnitude, trained weights"][:3] == [pct(searched.sparsity, 2),
                                                      pct(jackpot["magnitude"]["effective_sparsity"], 2),
                                                      pct(jackpot["magnitude"]["test_acc"], 1)]
    assert rows["lottery jackpot (1 epochs)"][2] == pct(jackpot["jackpot"]["test_acc"], 1)
    assert jackpot["jackpot"]["test_acc"] == jackpot["history"][-1]["test_acc"]
    # cnn1d has no BatchNorm: the re-estimation changes nothing, and the row says so
    assert jackpot["magnitude_bn"]["test_acc"] == jackpot["magnitude"]["test_acc"]
    assert "(no BatchNorm: = magnitude)" in report

    results = json.loads((out / "results.json").read_text())
    assert [r["key"] for r in results["rows"]] == ["dense", "panning", "rl_panning", "synflow", "random",
                                                   "magnitude", "magnitude_bn", "jackpot"]
    for name in demo_run.PLOTS:
        assert (out / name).read_bytes()[:8] == PNG and f"({name})" in report


@pytest.mark.slow
def test_rl_panning_row_with_an_agent(tmp_path, monkeypatch, capsys):
    agent = tmp_path / "agents" / "tiny"
    assert main(["agent", "--action", "train", "--data", "mnist1d", "--model", "cnn1d", "--width", "0.2",
                 "--iterations", "2", "--per-class", "3", "--batches", "2", "--timesteps", "8", "--lanes", "2",
                 "--learning-starts", "4", "--batch-size", "4", "--checkpoint-every", "8", "--threads", "1",
                 "--out", str(agent), "--no-progress"]) == 0
    monkeypatch.setattr(demo_run, "SHIPPED_AGENT", agent)  # as if the package shipped this one
    out = tmp_path / "demo"
    assert main(["demo", *TINY, "--methods", "rl_panning", "--sparsity", "0.9", "--out", str(out)]) == 0
    assert "skipped" not in capsys.readouterr().out
    rl = cell(out, "rl_panning")
    masks = Masks.load(out / "masks" / "rl_panning.safetensors")
    assert masks.kept == round(0.1 * masks.numel) and rl["sparsity"] == masks.sparsity
    assert report_rows(out)["RL Panning"][2] == pct(rl["test_acc"], 1)

    # an agent given explicitly must fit the network: refused before any work, nothing written
    other = tmp_path / "other"
    assert main(["demo", *TINY, "--width", "0.4", "--agent", str(agent), "--out", str(other)]) == 2
    assert "width 0.2 (here 0.4)" in capsys.readouterr().err
    assert not other.exists()
    # the shipped agent that does not fit is skipped instead, saying why
    assert main(["demo", *TINY, "--width", "0.4", "--methods", "rl_panning,random", "--out", str(other)]) == 0
    printed = capsys.readouterr().out
    assert "RL Panning skipped: the agent " in printed and "width 0.2 (here 0.4)" in printed
    assert report_rows(other)["RL Panning"] == ["-", "-", "skipped", "-"]


@pytest.mark.slow
def test_an_interrupted_demo_resumes_and_reuses_finished_cells(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    args = ["demo", *TINY, "--methods", "magnitude,random,snip", "--sparsity", "0.8", "--out", str(out)]
    trained = []
    real_train = demo_run.train

    def interrupted_at_the_third_training(*a, **k):
        trained.append(k.get("masks") is not None)
        if len(trained) == 3:
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr(demo_run, "train", interrupted_at_the_third_training)
    assert main(args) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert sorted(p.stem for p in (out / "cells").glob("*.json")) == ["dense", "magnitude"]
    finished = {name: cell(out, name)["finished"] for name in ("dense", "magnitude")}

    def counted(*a, **k):
        trained.append(k.get("masks") is not None)
        return real_train(*a, **k)

    monkeypatch.setattr(demo_run, "train", counted)
    trained.clear()
    assert main(args) == 0
    assert trained == [True, True]  # random and snip only: dense and magnitude were not trained again
    assert {name: cell(out, name)["finished"] for name in finished} == finished
    assert capsys.readouterr().err.count("finished in an earlier run: reused") == 2

    # other settings do not reuse a cell: a new sparsity recomputes the pruned cells, not the dense training
    trained.clear()
    assert main([*args[:-4], "--sparsity", "0.7", "--out", str(out)]) == 0
    assert trained == [True, True, True] and cell(out, "dense")["finished"] == finished["dense"]
    assert cell(out, "random")["settings"]["sparsity"] == 0.7


@pytest.mark.slow
def test_the_dense_training_resumes_from_its_checkpoint_to_the_same_result(tmp_path, monkeypatch):
    """Stopped after its first epoch, the dense training continues from train's checkpoint on the rerun and ends
    where an uninterrupted demo ends."""
    import panning.train

    options = [*TINY, "--epochs", "2", "--methods", "random", "--sparsity", "0.8"]
    assert main(["demo", *options, "--out", str(tmp_path / "straight")]) == 0
    real_evaluate, calls = panning.train.evaluate, []

    def stopped_at_the_second_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(panning.train, "evaluate", stopped_at_the_second_epoch)
    out = tmp_path / "stopped"
    assert main(["demo", *options, "--out", str(out)]) == 130
    assert not (out / "cells" / "dense.json").exists() and len(list((out / "checkpoints").glob("dense-*.pt"))) == 1
    def counted(*a, **k):
        calls.append(1)
        return real_evaluate(*a, **k)

    monkeypatch.setattr(panning.train, "evaluate", counted)
    calls.clear()
    assert main(["demo", *options, "--out", str(out)]) == 0
    assert len(calls) == 1 + 2  # the dense training's second epoch only, then the two epochs of random's
    resumed, straight = cell(out, "dense"), cell(tmp_path / "straight", "dense")
    assert resumed["curve"] == straight["curve"] and len(straight["curve"]) == 2
    assert cell(out, "random")["test_acc"] == cell(tmp_path / "straight", "random")["test_acc"]


@pytest.mark.parametrize("flags, message", [
    (["--methods", "random,psychic"], "--methods: expected distinct methods of random, magnitude, snip, "),
    (["--methods", "random,random"], "--methods: expected distinct methods of random, magnitude, snip, "),
    (["--sparsity", "1"], "--sparsity: expected a number in [0, 1)"),
    (["--jackpot-sparsity", "1.5"], "--jackpot-sparsity: expected a number in [0, 1)"),
    (["--jackpot-epochs", "0"], "--jackpot-epochs: expected a positive int, got 0"),
    (["--epochs", "0"], "--epochs: expected a positive int, got 0"),
    (["--iterations", "0"], "--iterations: expected a positive int, got 0"),
    (["--agent", "no/such/agent"], "--agent: 'no/such/agent.json': not a saved panning agent"),
    (["--agent", str(demo_run.SHIPPED_AGENT), "--width", "-1"], "--width: expected a number in (0, inf], got -1.0"),
])
def test_demo_checks_every_option_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", *flags, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["demo", "--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    for flag in ("--sparsity", "--methods", "--agent", "--jackpot-sparsity", "--quick", "--epochs", "--iterations",
                 "--jackpot-epochs", "--width", "--seed", "--out", "--threads", "--progress"):
        assert flag in printed


def test_the_demo_runs_the_protocol_of_the_pbt_experiment():
    """The demo's model width and recipe are those of experiments/pbt_results.py on MNIST-1D (the full budget),
    and the --help of the budgets states the demo's values."""
    spec = importlib.util.spec_from_file_location("pbt_results", ROOT / "experiments" / "pbt_results.py")
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    setup = experiment.SETUPS["mnist1d"]
    assert (setup["model"], setup["width"], setup["recipe"]) == ("cnn1d", demo_run.WIDTH, demo_run.RECIPE)
    assert demo_run.BUDGETS["full"]["epochs"] == setup["recipe"]["epochs"]
    assert demo_run.BUDGETS["full"]["iterations"] == experiment.ROWS["panning"][1]["iterations"]
    from panning.cli import demo as command

    helps = {opt.dest: opt.help for opt in command.OPTIONS}
    for key, full in demo_run.BUDGETS["full"].items():
        assert f"default: {full} ({demo_run.BUDGETS['quick'][key]} with --quick)" in helps[key]
    assert demo_run.SHIPPED_AGENT == ROOT / "panning" / "pbt" / "rl" / "agents" / "cnn1d-w4-mnist1d"


def _before_training(**accuracy: float) -> list[dict]:
    """A demo table of the dense row and rows pruned before training with the given accuracies (fractions)."""
    labels = demo_run.NAMES
    return ([dict(key="dense", label="dense", kind="dense", acc=0.9, sparsity=0.0)]
            + [dict(key=key, label=labels[key], kind="before training", acc=acc, sparsity=0.98)
               for key, acc in accuracy.items()])


@pytest.mark.parametrize("accuracy, expected", [
    # RL Panning first: it leads SynFlow (the best other method), and the two Panning variants are compared once.
    (dict(panning=0.30, rl_panning=0.32, synflow=0.25, random=0.10),
     ["RL Panning leads the best of the other methods, SynFlow, by 7.0 points at this seed.",
      "RL Panning against hand-scheduled Panning: +2.0 points at this seed."]),
    # Panning first, RL Panning last.
    (dict(panning=0.40, rl_panning=0.20, synflow=0.35),
     ["Panning leads the best of the other methods, SynFlow, by 5.0 points at this seed.",
      "RL Panning against hand-scheduled Panning: -20.0 points at this seed."]),
    # Another method first: each Panning variant below it, then against each other.
    (dict(panning=0.30, rl_panning=0.20, synflow=0.35),
     ["Panning is 5.0 points below SynFlow at this seed.", "RL Panning is 15.0 points below SynFlow at this seed.",
      "RL Panning against hand-scheduled Panning: -10.0 points at this seed."]),
    # Without RL Panning: no comparison between the two.
    (dict(panning=0.30, synflow=0.35), ["Panning is 5.0 points below SynFlow at this seed."]),
])
def test_findings_state_each_comparison_once(accuracy, expected):
    sentences = demo_run.findings(_before_training(**accuracy), {"sparsity": 0.98})
    assert sentences[0].startswith("Pruned before training to 98%, from most to least accurate: ")
    assert sentences[1:] == expected


def test_the_plots_keep_every_text_inside_the_image(tmp_path, monkeypatch):
    import matplotlib.text

    outside = {}

    def check(fig, path, **_):  # stands in for io.save_figure: lay out, draw, measure every text
        fig.tight_layout()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        width, height = fig.bbox.width, fig.bbox.height
        hidden = {id(label) for ax in fig.axes for axis, (low, high) in ((0, ax.get_xlim()), (1, ax.get_ylim()))
                  for label in (ax.get_xticklabels() if axis == 0 else ax.get_yticklabels())
                  if not min(low, high) <= label.get_position()[axis] <= max(low, high)}  # ticks not drawn
        for text in fig.findobj(matplotlib.text.Text):
            if text.get_visible() and text.get_text() and id(text) not in hidden:
                box = text.get_window_extent(renderer)
                if box.x0 < -1 or box.x1 > width + 1 or box.y0 < -1 or box.y1 > height + 1:
                    outside.setdefault(Path(path).name, []).append(text.get_text())

    monkeypatch.setattr(demo_run, "save_figure", check)
    table = _before_training(panning=0.30, rl_panning=0.32, synflow=0.25) + [
        dict(key="magnitude_bn", label="magnitude + BN re-estimation (no BatchNorm: = magnitude)", kind="jackpot",
             acc=0.35, sparsity=0.9)]
    rows = {"dense": {"curve": [0.5, 0.9]}, "panning": {"curve": [0.2, 0.3]}}
    demo_run._plots(tmp_path, rows, table, {"width": 4.0, "sparsity": 0.98, "jackpot_sparsity": 0.9})
    assert outside == {}
