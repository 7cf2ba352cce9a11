"""The Siamese network's structure and its weights files."""

import numpy as np
import pytest
import torch

from kiosk.errors import NoTrainedWeightsError, WeightsError
from kiosk.vision.model import KochEncoder, SiameseNet
from kiosk.vision.preprocess import InputSpec
from kiosk.vision.weights import load_weights, save_weights


@pytest.fixture(scope="module")
def face_model():
    """The pretrained twin encoder (from the installed package) with a Koch head."""
    torch.manual_seed(0)
    return SiameseNet("dlib_resnet", {}, "weighted_l1").eval()


@pytest.fixture(scope="module")
def koch_model():
    torch.manual_seed(0)
    return SiameseNet("koch", {"input_size": 105, "width": 0.125, "feature_dim": 32}).eval()


def chips(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, 150, 150)).astype(np.float32))


@pytest.mark.slow
def test_twins_share_one_encoder(face_model):
    x = chips(2)
    with torch.no_grad():
        same = face_model.embed(torch.cat([x[:1], x[:1]]))
        assert torch.equal(same[0], same[1])
        p_ab = torch.sigmoid(face_model(x[:1], x[1:]))
        p_ba = torch.sigmoid(face_model(x[1:], x[:1]))
        p_aa = torch.sigmoid(face_model(x[:1], x[:1]))
    assert torch.allclose(p_ab, p_ba, atol=1e-6)
    # Identical inputs: zero distance, so P(same) is sigmoid(bias) exactly.
    assert torch.allclose(p_aa, torch.sigmoid(face_model.distance_weights.bias), atol=1e-6)
    # One set of encoder parameters only (tied weights), plus the alpha_j and the bias of the head.
    head = sum(p.numel() for p in face_model.distance_weights.parameters())
    assert head == 128 + 1
    assert sum(p.numel() for p in face_model.parameters()) == sum(p.numel() for p in face_model.encoder.parameters()) + head
    # The pretrained encoder is frozen: only the head learns.
    assert [n for n, p in face_model.named_parameters() if p.requires_grad] == ["distance_weights.weight",
                                                                                "distance_weights.bias"]


@pytest.mark.slow
def test_embed_is_separate_from_the_head(face_model):
    x1, x2 = chips(3, 1), chips(3, 2)
    with torch.no_grad():
        direct = torch.sigmoid(face_model(x1, x2))
        via_features = face_model.similarity(face_model.embed(x1), face_model.embed(x2))
    assert torch.allclose(direct, via_features, atol=1e-6)


def test_euclidean_head_is_a_sigmoid_of_the_distance():
    model = SiameseNet("dlib_resnet", {}, "euclidean")
    with torch.no_grad():
        model.distance_weights.weight.fill_(-10.0)
        model.distance_weights.bias.fill_(6.0)
        a, b = torch.zeros(1, 128), torch.zeros(1, 128)
        b[0, 0] = 0.6  # dlib's own threshold distance: P(same) = 0.5 exactly
        assert float(model.similarity(a, b)) == pytest.approx(0.5, abs=1e-6)
        b[0, 1] = 0.8  # distance 1.0: far less alike
        assert float(model.similarity(a, b)) == pytest.approx(1 / (1 + np.exp(4.0)), abs=1e-6)


@pytest.mark.slow
def test_koch_architecture_as_in_the_paper():
    encoder = KochEncoder()
    convs = [m for m in encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(64, (10, 10)), (128, (7, 7)), (128, (4, 4)), (256, (4, 4))]
    x = torch.rand(2, 1, 105, 105, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = encoder(x)
        maps = encoder.features(x)
        expected = torch.sigmoid(encoder.fc(torch.flatten(maps, 1)))  # the paper's sigmoid fully-connected layer
    assert maps.shape == (2, 256, 6, 6) and f.shape == (2, 4096)
    assert torch.allclose(f, expected) and not torch.allclose(f[0], f[1])  # features depend on the drawing
    assert encoder.fc.in_features == 256 * 6 * 6


@pytest.mark.slow
def test_face_weights_hold_the_head_only_and_name_the_encoder_file(tmp_path, face_model):
    path = save_weights(tmp_path / "w.pt", face_model, InputSpec(), {"threshold": 0.7, "note": "test"}, half=False)
    assert path.stat().st_size < 20_000  # 129 numbers and metadata, never a copy of dlib's network
    payload = torch.load(path, weights_only=True)
    assert set(payload["state_dict"]) == {"distance_weights.weight", "distance_weights.bias"}
    assert payload["architecture"]["options"]["source_sha256"] == face_model.encoder.source_sha256
    loaded, spec, meta = load_weights(path)
    assert spec == InputSpec() and meta["threshold"] == 0.7
    x1, x2 = chips(2, 3), chips(2, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x1, x2), face_model(x1, x2), atol=1e-5)


def test_another_encoder_file_is_refused(tmp_path, face_model):
    path = save_weights(tmp_path / "w.pt", face_model, InputSpec(), {"threshold": 0.7}, half=False)
    payload = torch.load(path, weights_only=True)
    payload["architecture"]["options"]["source_sha256"] = "0" * 64
    from kiosk.vision.weights import _described, _digest
    payload["sha256"] = _digest(payload["state_dict"], _described(payload))  # a consistent file, other encoder
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    with pytest.raises(WeightsError, match="expected 0000"):
        load_weights(other)


def test_koch_weights_round_trip(tmp_path, koch_model):
    spec = InputSpec(size=105, channels=1, version=1)
    path = save_weights(tmp_path / "w.pt", koch_model, spec, {"threshold": 0.7})
    loaded, loaded_spec, _ = load_weights(path)
    assert loaded_spec == spec
    x = torch.randn(2, 1, 105, 105)
    with torch.no_grad():  # float16 storage: features agree to half precision
        assert torch.allclose(loaded.embed(x), koch_model.embed(x), atol=5e-2)


def test_damaged_missing_tampered_and_mismatched_weights_are_refused(tmp_path, koch_model):
    spec = InputSpec(size=105, channels=1, version=1)
    path = save_weights(tmp_path / "w.pt", koch_model, spec, {"threshold": 0.7})
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
    # The digest covers the metadata: a lowered threshold in an otherwise intact file is refused.
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["threshold"] = 0.0
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(WeightsError, match="integrity"):
        load_weights(tampered)
    # Weights of one architecture cannot be loaded as another.
    from kiosk.vision.weights import _described, _digest
    payload = torch.load(path, weights_only=True)
    payload["architecture"]["options"] = {"input_size": 105, "width": 0.25, "feature_dim": 32}
    payload["sha256"] = _digest(payload["state_dict"], _described(payload))
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    with pytest.raises(WeightsError, match="do not match"):
        load_weights(other)
    payload["architecture"]["encoder"] = "mystery"
    payload["sha256"] = _digest(payload["state_dict"], _described(payload))
    torch.save(payload, other)
    with pytest.raises(WeightsError, match="unknown encoder"):
        load_weights(other)


@pytest.mark.parametrize("threshold", [0.0, -1.0, 1.5, float("nan"), "0.5", None, True])
def test_metadata_out_of_range_is_refused_even_with_a_matching_digest(tmp_path, face_model, threshold):
    from kiosk.vision.weights import _described, _digest
    path = save_weights(tmp_path / "w.pt", face_model, InputSpec(), {"threshold": 0.7})
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["threshold"] = threshold
    payload["sha256"] = _digest(payload["state_dict"], _described(payload))
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="threshold"):
        load_weights(path)


@pytest.mark.slow
def test_one_chip_at_a_time_gives_the_features_of_a_batch(face_model):
    from kiosk.vision.engine import embed_crops
    crops = np.random.default_rng(0).integers(0, 256, (6, 150, 150, 3), dtype=np.uint8)
    one_by_one = np.concatenate([embed_crops(face_model, crops[i:i + 1], flip_average=True) for i in range(6)])
    assert np.allclose(one_by_one, embed_crops(face_model, crops, flip_average=True), atol=1e-4)
