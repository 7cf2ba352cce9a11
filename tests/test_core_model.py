"""The Siamese network's structure and its weights files."""

import pytest
import torch

from kiosk.errors import NoTrainedWeightsError, WeightsError
from kiosk.model import KochEncoder, SiameseNet
from kiosk.preprocess import InputSpec
from kiosk.weights import load_weights, save_weights


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SiameseNet("compact").eval()


def test_twins_share_one_encoder(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        same = model.embed(torch.cat([x[:1], x[:1]]))
        assert torch.equal(same[0], same[1])
        p_ab = torch.sigmoid(model(x[:1], x[1:]))
        p_ba = torch.sigmoid(model(x[1:], x[:1]))
        p_aa = torch.sigmoid(model(x[:1], x[:1]))
    assert torch.allclose(p_ab, p_ba, atol=1e-6)
    # Identical inputs: zero distance, so P(same) is sigmoid(bias) exactly.
    assert torch.allclose(p_aa, torch.sigmoid(model.distance_weights.bias), atol=1e-6)
    # One set of encoder parameters only (tied weights), plus the alpha_j and the bias of the head.
    head = sum(p.numel() for p in model.distance_weights.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.encoder.parameters()) + head


def test_embed_is_separate_from_the_head(model):
    x1, x2 = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        direct = torch.sigmoid(model(x1, x2))
        via_features = model.similarity(model.embed(x1), model.embed(x2))
    assert torch.allclose(direct, via_features, atol=1e-6)


def test_koch_architecture_as_in_the_paper():
    encoder = KochEncoder()
    convs = [m for m in encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(64, (10, 10)), (128, (7, 7)), (128, (4, 4)), (256, (4, 4))]
    with torch.no_grad():
        f = encoder(torch.zeros(2, 1, 105, 105))
    assert f.shape == (2, 4096) and float(f.min()) >= 0 and float(f.max()) <= 1  # sigmoid features
    assert encoder.fc.in_features == 256 * 6 * 6


def test_weights_round_trip(tmp_path, model):
    path = save_weights(tmp_path / "w.pt", model, InputSpec(), {"threshold": 0.7, "note": "test"})
    loaded, spec, meta = load_weights(path)
    assert spec == InputSpec() and meta["threshold"] == 0.7
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # float16 storage: features agree to half precision.
        assert torch.allclose(loaded.embed(x), model.embed(x), atol=5e-2)
    full = save_weights(tmp_path / "w32.pt", model, InputSpec(), half=False)
    with torch.no_grad():
        assert torch.equal(load_weights(full)[0].embed(x), model.embed(x))


def test_damaged_missing_and_mismatched_weights_are_refused(tmp_path, model):
    path = save_weights(tmp_path / "w.pt", model, InputSpec())
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.pt"
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    flipped.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    text = tmp_path / "text.pt"
    text.write_text("not weights")
    for bad in (flipped, truncated, text):
        with pytest.raises(WeightsError) as info:
            load_weights(bad)
        assert str(bad) in str(info.value)
    with pytest.raises(NoTrainedWeightsError, match="no trained weights"):
        load_weights(tmp_path / "absent.pt")
    # Weights of one architecture cannot be loaded as another.
    payload = torch.load(path, weights_only=True)
    payload["architecture"]["options"] = {"widths": [8, 16, 32, 64]}
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    with pytest.raises(WeightsError, match="do not match"):
        load_weights(other)
    payload["architecture"]["encoder"] = "mystery"
    torch.save(payload, other)
    with pytest.raises(WeightsError, match="unknown encoder"):
        load_weights(other)


def test_combined_models_average_their_logits_and_stay_one_tied_network(tmp_path):
    from kiosk.training.ensemble import combine_models
    members = []
    for seed, widths in ((1, [8, 16, 24, 32]), (2, [8, 16, 32, 48])):
        torch.manual_seed(seed)
        members.append(SiameseNet("compact", {"widths": widths, "feature_dim": 16}).eval())
    combined = combine_models(members)
    x1, x2 = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = sum(m(x1, x2) for m in members) / 2
        assert torch.allclose(combined(x1, x2), expected, atol=1e-5)
        assert torch.allclose(combined(x1, x2), combined(x2, x1), atol=1e-6)   # still symmetric
    assert combined.encoder.feature_dim == 32
    # It is an ordinary weights file: saved and loaded back with its architecture.
    loaded, _, _ = load_weights(save_weights(tmp_path / "c.pt", combined, InputSpec(), half=False))
    with torch.no_grad():
        assert torch.equal(loaded(x1, x2), combined(x1, x2))


def test_small_batches_give_the_same_features_and_restore_the_thread_count(model):
    import numpy as np

    from kiosk.engine import embed_crops
    crops = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    before = torch.get_num_threads()
    one_by_one = np.concatenate([embed_crops(model, crops[i:i + 1], flip_average=True) for i in range(6)])
    assert torch.get_num_threads() == before
    assert np.allclose(one_by_one, embed_crops(model, crops, flip_average=True), atol=1e-4)
