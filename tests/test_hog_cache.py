"""dlib's frontal detector from the pinned cached copy (kiosk/vision/hog.py): the same boxes as dlib's own,
and a damaged or replaced copy is never used."""

from __future__ import annotations

import cv2
import pytest

dlib = pytest.importorskip("dlib")

from kiosk.vision import hog  # noqa: E402

pytestmark = pytest.mark.skipif(dlib.__version__ not in hog.PINNED,
                                reason=f"no pinned detector digest for dlib {dlib.__version__}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KIOSK_CACHE_DIR", str(tmp_path / "cache"))
    return hog.cached_file(dlib.__version__)


def boxes(detector, image) -> list[tuple[int, int, int, int]]:
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in detector(image, 1)]


def test_the_cached_detector_finds_the_boxes_dlib_finds(cache, lfw_photos):
    assert not cache.exists()
    built = hog.frontal_face_detector()  # the slow path, which writes the copy
    assert hog._digest(cache.read_bytes()) == hog.PINNED[dlib.__version__]
    loaded = hog.frontal_face_detector()  # from the copy
    reference = dlib.get_frontal_face_detector()
    for path in lfw_photos("Colin_Powell")[:4] + lfw_photos("George_W_Bush")[:4]:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        expected = boxes(reference, image)
        assert expected, path
        assert boxes(loaded, image) == boxes(built, image) == expected


def test_a_replaced_copy_is_not_used_and_is_rewritten(cache, lfw_photos):
    hog.frontal_face_detector()
    original = cache.read_bytes()
    cache.write_bytes(original[:-64] + b"0" * 64)  # damaged
    image = cv2.cvtColor(cv2.imread(str(lfw_photos("Colin_Powell")[0])), cv2.COLOR_BGR2RGB)
    detector = hog.frontal_face_detector()
    assert boxes(detector, image) == boxes(dlib.get_frontal_face_detector(), image)
    assert cache.read_bytes() == original  # rewritten from dlib's own


def test_an_unwritable_cache_folder_costs_time_only(tmp_path, monkeypatch, lfw_photos):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("KIOSK_CACHE_DIR", str(blocker))
    detector = hog.frontal_face_detector()
    image = cv2.cvtColor(cv2.imread(str(lfw_photos("Colin_Powell")[0])), cv2.COLOR_BGR2RGB)
    assert boxes(detector, image) == boxes(dlib.get_frontal_face_detector(), image)
