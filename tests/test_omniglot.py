"""Smoke tests of the Omniglot reproduction (research.omniglot, outside the product package): data,
distortions, pairs, a few training steps, checkpoint resume and the one-shot evaluation, on a few alphabets
with a tiny Koch encoder; and its command line, `python -m research`."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from helpers import OMNIGLOT

from kiosk.errors import KioskError
from kiosk.vision.model import KochEncoder
from kiosk.vision.preprocess import InputSpec
from kiosk.vision.weights import INPUT_VERSIONS, load_weights
from research import OMNIGLOT_WEIGHTS
from research import cli as research_cli
from research import omniglot as om

pytestmark = pytest.mark.skipif(
    not all((OMNIGLOT / d).is_dir() for d in ("images_background", "images_evaluation", "one-shot-runs")),
    reason=f"Omniglot dataset not found at {OMNIGLOT} (set KIOSK_DATASETS to the shared datasets folder)")

TRAIN = ("Latin", "Greek", "Cyrillic")          # 26 + 24 + 33 characters
VALIDATION = ("Futurama",)                       # 26 characters: one 20-way episode
TEST = ("Angelic",)                              # 20 characters
TINY = dict(width=0.125, input_size=72, batch_norm=False, hard_negatives=0, lr=1e-3, warmup_steps=2,
            train_alphabets=TRAIN, validation_alphabets=VALIDATION, test_alphabets=TEST, val_trials=20,
            test_trials=20, official_runs=False, progress=False)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny convolutions: threads only add overhead (and suffer on a busy machine)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def latin():
    return om.load_omniglot("background", alphabets=["Latin", "Greek"])


def test_load_a_few_alphabets(latin):
    assert latin.alphabets == ["Latin", "Greek"]
    assert len(latin.characters) == 26 + 24 and latin.images.shape == (50 * 20, 105, 105)
    assert latin.images.dtype == np.uint8 and set(np.unique(latin.images)) == {0, 1}
    assert 0.02 < latin.images.mean() < 0.2                        # ink is the minority
    assert all(len(rows) == 20 for rows in latin.by_char)
    greek = latin.subset(["Greek"])
    assert greek.characters[0].startswith("Greek/") and len(greek) == 24 * 20


def test_distortions(latin):
    x = latin.images[:6]
    identity = torch.eye(2, 3).expand(6, 2, 3)
    assert torch.allclose(om.network_input(x, 105, identity), om.network_input(x, 105), atol=1e-5)
    theta = om.koch_distortions(6, torch.Generator().manual_seed(1), prob=1.0)
    warped = om.network_input(x, 80, theta)
    assert warped.shape == (6, 1, 80, 80) and 0.0 <= float(warped.min()) and float(warped.max()) <= 1.0
    plain = om.network_input(x, 80)
    ink = warped.sum((1, 2, 3)) / plain.sum((1, 2, 3))
    assert torch.all((ink > 0.5) & (ink < 1.6))                     # mild distortions: strokes stay


def test_centring_moves_the_ink_to_the_middle_wherever_it_was_drawn(latin):
    drawing = latin.images[5]
    moved = np.zeros_like(drawing)
    moved[:-20, 15:] = drawing[20:, :-15]                           # the same character, up and to the right
    both = np.stack([drawing, moved])
    centred = om.network_input(both, 80, centre_ink=True)
    centres = om._ink_centres(centred)
    assert torch.allclose(centres, torch.zeros(2, 2), atol=0.03)   # both now centred (normalised units)
    assert not torch.allclose(om._ink_centres(om.network_input(both, 80)), torch.zeros(2, 2), atol=0.03)
    assert (centred[0] - centred[1]).abs().mean() < 0.25 * centred[0].mean()
    # Weights trained on centred drawings are tested on centred drawings; others are not centred.
    spec = InputSpec(size=80, channels=1, padding=0.0, version=1)
    assert torch.equal(om.DrawingInput.of_weights(spec, {"preset": {"centre_ink": True}})(both), centred)
    assert om.DrawingInput.of_weights(spec, {"preset": {}}) == om.DrawingInput(80, centre_ink=False)


def test_pair_samplers(latin):
    sampler = om.PairSampler(latin, np.random.default_rng(0))
    left, right, same = sampler.sample(64)
    assert same.sum() == 32 and np.all((latin.labels[left] == latin.labels[right]) == same.astype(bool))
    assert not np.any(left == right)
    left, right = sampler.sample_grid(16)
    assert len(set(latin.labels[left])) == 16 and np.all(latin.labels[left] == latin.labels[right])
    assert not np.any(left == right)


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss(latin):
    config = om.OmniglotConfig(**{k: v for k, v in TINY.items() if "alphabets" not in k})
    model = om.build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = om.PairSampler(latin, np.random.default_rng(0))
    held = np.concatenate(sampler.sample_grid(16))
    held_x = om.network_input(latin.images[held], config.input_size)

    def held_loss():
        with torch.no_grad():
            return float(om.pair_loss(model, held_x, 16, config))

    before = held_loss()
    for _ in range(40):
        x = om.network_input(latin.images[np.concatenate(sampler.sample_grid(16))], config.input_size)
        loss = om.pair_loss(model, x, 16, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_loss() < before - 0.02


@pytest.mark.slow
def test_train_resume_and_evaluate(tmp_path):
    kwargs = dict(steps=12, batch_size=12, width=0.125, seed=1, threads=1, eval_every=6, checkpoint_every=4,
                  **{k: v for k, v in TINY.items() if k != "width"})
    straight = om.train_omniglot(tmp_path / "a.pt", checkpoint_dir=tmp_path / "a", **kwargs)
    assert straight["steps_done"] == 12 and straight["trials"] == 20
    assert straight["way20_accuracy"] * 20 == round(straight["way20_accuracy"] * 20)  # a count of the 20 trials

    # Interrupted after step 8's checkpoint, then resumed: the same weights as the uninterrupted run.
    original, calls = om.PairSampler.sample_grid, []

    def interrupt(self, k):
        calls.append(k)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return original(self, k)

    om.PairSampler.sample_grid = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            om.train_omniglot(tmp_path / "b.pt", checkpoint_dir=tmp_path / "b", **kwargs)
    finally:
        om.PairSampler.sample_grid = original
    resumed = om.train_omniglot(tmp_path / "b.pt", checkpoint_dir=tmp_path / "b", **kwargs)
    assert resumed["way20_accuracy"] == straight["way20_accuracy"]
    a = torch.load(tmp_path / "a" / om.CHECKPOINT_NAME, weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / om.CHECKPOINT_NAME, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed" in (tmp_path / "b" / om.LOG_NAME).read_text()
    with pytest.raises(KioskError, match="other settings"):
        om.train_omniglot(tmp_path / "b.pt", checkpoint_dir=tmp_path / "b", **{**kwargs, "lr": 2e-3})

    model, spec, metadata = load_weights(tmp_path / "a.pt")
    assert (spec.size, spec.channels, spec.version) == (72, 1, INPUT_VERSIONS["koch"])
    assert metadata["dataset"] == "omniglot" and metadata["results"]["trials"] == 20
    result = om.evaluate_oneshot(tmp_path / "a.pt", trials=20, seed=0, runs=True)
    assert result["trials"] == 20 and result["way20_accuracy"] * 20 == round(result["way20_accuracy"] * 20)
    assert result["official_runs_items"] == 400
    assert result["official_runs_accuracy"] * 400 == pytest.approx(round(result["official_runs_accuracy"] * 400))


def test_episodes_follow_the_20_way_protocol(latin):
    episodes = om.make_episodes(latin, 50, seed=0)
    assert sum(len(e.queries) for e in episodes) == 50 and len(episodes) == 3
    for e in episodes:
        assert len(e.support) == 20 and len(set(latin.labels[e.support])) == 20
        assert len(set(latin.char_alphabet[latin.labels[e.support]])) == 1        # within one alphabet
        assert np.all(latin.labels[e.queries] == latin.labels[e.support[e.answers]])
        assert not set(e.queries) & set(e.support)
    again = om.make_episodes(latin, 50, seed=0)
    assert all(np.array_equal(x.queries, y.queries) for x, y in zip(episodes, again))


def test_official_runs_load():
    runs = om.load_official_runs()
    assert len(runs) == 20
    assert all(r.support.shape == (20, 105, 105) and sorted(r.answers) == list(range(20)) for r in runs)


def test_preset_encoder():
    if "batch_norm" in inspect.signature(KochEncoder).parameters:
        model = om.build_model(om.PRESET)
        model.eval()
        assert model.embed(torch.zeros(2, 1, om.PRESET.input_size, om.PRESET.input_size)).shape == (2, 4096)
    else:  # the preset needs KochEncoder(batch_norm=...): a clear error, not a crash
        with pytest.raises(KioskError, match="batch_norm"):
            om.build_model(om.PRESET)


@pytest.mark.slow
def test_the_paper_reproduction_gives_its_published_figures(tmp_path, capsys):
    """`python -m research evaluate oneshot` on the shipped weights: the README's and docs/OMNIGLOT.md's figures,
    exactly (seed 0; about 8 s)."""
    out = tmp_path / "oneshot.json"
    assert research_cli.main(["evaluate", "oneshot", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert (result["trials"], result["official_runs_items"]) == (400, 400)
    assert result["way20_accuracy"] == 0.745           # 400 random-drawing 20-way trials
    assert result["official_runs_accuracy"] == 0.905   # Lake's 20 official runs


def test_research_training_never_overwrites_the_shipped_weights(capsys):
    assert research_cli.main(["train", "omniglot", "--out", str(OMNIGLOT_WEIGHTS)]) == 2
    assert "--replace-shipped" in capsys.readouterr().err


def test_the_kiosk_command_line_has_no_research_commands():
    from kiosk.cli import build_parser  # noqa: PLC0415
    for argv in (["evaluate", "oneshot"], ["train", "--preset", "omniglot"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
