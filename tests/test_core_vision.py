"""Detection, quality checks and image reading on real photos."""

import cv2
import numpy as np
import pytest
from helpers import LFW, OMNIGLOT, lfw_photo, needs_lfw

from kiosk.detection import HaarFaceDetector, choose_primary
from kiosk.errors import ImageReadError
from kiosk.imageio import read_image
from kiosk.preprocess import InputSpec, crop_face, preprocess_face
from kiosk.quality import NO_FACE, SEVERAL_FACES, TOO_DARK, TOO_SMALL, assess_quality

PEOPLE = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Serena_Williams", "Gloria_Macapagal_Arroyo"]


@pytest.fixture(scope="module")
def detector():
    return HaarFaceDetector()


@needs_lfw
def test_face_found_in_lfw_photos(detector):
    found = 0
    for person in PEOPLE:
        for n in (1, 2, 3, 4):
            image = read_image(lfw_photo(person, n))
            detection = detector.detect(image)
            if detection.primary is not None:
                x, y, w, h = detection.primary
                # LFW centres the labelled face: the chosen box must cover the image centre.
                assert x < 125 < x + w and y < 125 < y + h
                found += 1
    assert found >= 18  # of 20 photos


@needs_lfw
def test_non_face_image_gives_no_face(detector):
    if not OMNIGLOT.is_dir():
        pytest.skip(f"Omniglot not found at {OMNIGLOT}")
    character = next((OMNIGLOT / "images_background" / "Latin").rglob("*.png"))
    image = cv2.resize(read_image(character), (320, 320))
    report = assess_quality(image, detector.detect(image))
    assert report.reasons == [NO_FACE]


@needs_lfw
def test_two_faces_side_by_side_give_several_faces(detector):
    left, right = read_image(lfw_photo("Colin_Powell", 1)), read_image(lfw_photo("Tony_Blair", 1))
    composite = np.hstack([left, right])
    detection = detector.detect(composite)
    assert detection.count >= 2
    assert SEVERAL_FACES in assess_quality(composite, detection).reasons
    single = assess_quality(left, detector.detect(left))
    assert SEVERAL_FACES not in single.reasons


@needs_lfw
def test_small_and_dark_faces_are_reported(detector):
    image = read_image(lfw_photo("Tony_Blair", 1))
    # A 640x480 frame with the face about 65 px wide: found, but the person must come closer.
    small = cv2.copyMakeBorder(cv2.resize(image, (140, 140)), 170, 170, 250, 250, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    assert TOO_SMALL in assess_quality(small, detector.detect(small)).reasons
    dark = (image * 0.12).astype(np.uint8)
    box = detector.detect(image).primary
    from kiosk.detection import Detection
    assert TOO_DARK in assess_quality(dark, Detection([box], box, dark.shape[:2])).reasons


def test_choose_primary_prefers_large_central_face():
    boxes = [(0, 0, 60, 60), (100, 100, 80, 80), (300, 10, 90, 90)]
    assert choose_primary(boxes, (400, 400)) == (100, 100, 80, 80)
    assert choose_primary([], (400, 400)) is None


@needs_lfw
def test_corrupt_and_truncated_files_give_clear_errors(tmp_path):
    data = lfw_photo("Colin_Powell", 1).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image" * 20)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, words in ((truncated, "truncated"), (garbage, "not a readable image"), (empty, "empty"),
                        (tmp_path / "missing.jpg", "no such file")):
        with pytest.raises(ImageReadError, match=words) as info:
            read_image(path)
        assert str(path) in str(info.value)


@needs_lfw
def test_preprocessing_gives_the_network_input(detector):
    image = read_image(lfw_photo("Serena_Williams", 1))
    box = detector.detect(image).primary
    spec = InputSpec()
    x = preprocess_face(image, box, spec)
    assert x.shape == (1, 3, spec.size, spec.size) and x.dtype == np.float32
    assert -1.0 <= x.min() < x.max() <= 1.0
    grey = crop_face(image, box, InputSpec(channels=1))
    assert grey.shape == (spec.size, spec.size, 1)
    # The crop is centred on the face: its centre is skin-toned, not the black funnelling border.
    assert crop_face(image, box, spec)[28:36, 28:36].mean() > 60


def test_lfw_folder_present_or_skipped():
    """Document in the test output where the datasets were looked for."""
    if not LFW.is_dir():
        pytest.skip(f"datasets absent at {LFW}")
    assert any(LFW.iterdir())


@needs_lfw
def test_a_crop_depends_only_on_the_face_surroundings(detector):
    """A face pasted into two different 640x480 frames, at different places, gives the same crop as the
    photo itself: shrinking only the region around the face keeps the crop where it belongs, and what
    lies elsewhere in the frame does not matter."""
    photo = read_image(lfw_photo("Serena_Williams", 1))
    box = detector.detect(photo).primary
    spec = InputSpec()
    rng = np.random.default_rng(0)
    crops = []
    for (x, y), background in zip([(40, 30), (300, 200)], [0, 255]):
        frame = np.full((480, 640, 3), background, np.uint8)
        frame[:, :, 1] = rng.integers(0, 256, (480, 640), dtype=np.uint8)  # busy, different elsewhere
        frame[y:y + 250, x:x + 250] = photo
        crops.append(crop_face(frame, (box[0] + x, box[1] + y, box[2], box[3]), spec).astype(int))
    assert np.abs(crops[0] - crops[1]).mean() < 2.0
    assert np.abs(crops[0] - crop_face(photo, box, spec)).mean() < 2.0


@needs_lfw
def test_searching_near_faces_first_changes_no_outcome(detector):
    """Skipping the small-face search when the near faces settle it gives the same face to verify and the
    same quality verdict as searching every size: for a close face, and for a smaller face near the centre
    beside a larger one in the corner (it is the face to verify, or a second person in the way)."""
    full = HaarFaceDetector(near_face_fraction=0.0)
    blair, bush = read_image(lfw_photo("Tony_Blair", 1)), read_image(lfw_photo("George_W_Bush", 1))
    close = np.full((480, 640, 3), 90, np.uint8)
    close[100:420, 160:480] = cv2.resize(blair, (320, 320))
    frames = [close, blair]
    for side in (170, 200):
        two = np.full((480, 640, 3), 90, np.uint8)
        two[240:480, 400:640] = cv2.resize(bush, (240, 240))
        top, left = 240 - side // 2, 260 - side // 2
        two[top:top + side, left:left + side] = cv2.resize(blair, (side, side))
        frames.append(two)
    for frame in frames:
        near_found, all_found = detector.detect(frame), full.detect(frame)
        assert near_found.primary is not None and near_found.primary == all_found.primary
        assert assess_quality(frame, near_found).reasons == assess_quality(frame, all_found).reasons
    assert SEVERAL_FACES in assess_quality(frames[2], detector.detect(frames[2])).reasons
