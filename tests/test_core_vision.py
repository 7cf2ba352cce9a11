"""Detection, quality checks and image reading on real photos."""

import cv2
import numpy as np
import pytest
from helpers import OMNIGLOT, lfw_photo, needs_lfw

from kiosk.errors import ImageReadError
from kiosk.io.imageio import read_image
from kiosk.vision.detection import HaarFaceDetector, choose_primary
from kiosk.vision.preprocess import FacePreprocessor, InputSpec, to_network_input
from kiosk.vision.quality import NO_FACE, SEVERAL_FACES, TOO_DARK, TOO_SMALL, assess_quality

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
    from kiosk.vision.detection import Detection
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


@pytest.fixture(scope="module")
def preprocessor():  # loads dlib's landmark model (about 0.7 s): its tests are marked slow
    return FacePreprocessor()


@pytest.mark.slow
@needs_lfw
def test_preprocessing_gives_dlibs_aligned_chip(detector, preprocessor):
    """The chip is dlib's own alignment: the same landmarks through dlib's get_face_chip give (almost) the
    same pixels, and the network input is the chip's RGB pixel values."""
    dlib = pytest.importorskip("dlib")
    image = read_image(lfw_photo("Serena_Williams", 1))
    box = detector.detect(image).primary
    chip = preprocessor.chip(image, box)
    spec = InputSpec()
    assert chip.shape == (spec.size, spec.size, 3) and chip.dtype == np.uint8
    x = to_network_input(chip)
    assert x.shape == (1, 3, 150, 150) and x.dtype == np.float32
    assert np.array_equal(x[0], chip.transpose(2, 0, 1).astype(np.float32))  # the chip's pixels, channels first
    landmarks = preprocessor.find_landmarks(image, box)
    shape = dlib.full_object_detection(dlib.rectangle(*box[:2], box[0] + box[2], box[1] + box[3]),
                                       [dlib.point(int(px), int(py)) for px, py in landmarks])
    theirs = dlib.get_face_chip(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), shape, size=150, padding=0.25)
    assert np.abs(theirs.astype(int) - chip.astype(int)).mean() < 1.5
    # The eyes sit where dlib puts them: level, and the outer corners about 74 px apart.
    (rx, ry), (lx, ly) = landmarks[0], landmarks[2]
    assert abs(np.degrees(np.arctan2(ry - ly, rx - lx))) < 20  # a roughly upright face in LFW


@pytest.mark.slow
@needs_lfw
def test_a_rotated_face_gives_an_upright_chip(detector, preprocessor):
    """The similarity transform undoes in-plane rotation: a photo turned by 12 degrees gives nearly the
    chip of the upright photo."""
    photo = read_image(lfw_photo("Colin_Powell", 1))
    upright = preprocessor.chip(photo, detector.detect(photo).primary).astype(int)
    turn = cv2.getRotationMatrix2D((125, 125), 12, 1.0)
    turned = cv2.warpAffine(photo, turn, (250, 250), borderMode=cv2.BORDER_REPLICATE)
    box = detector.detect(turned).primary
    assert box is not None
    chip = preprocessor.chip(turned, box).astype(int)
    assert np.abs(chip - upright)[30:120, 30:120].mean() < 12
    # Without alignment (the same chip rotated back by the turn) it would differ much more.
    unturned = cv2.warpAffine(upright.astype(np.uint8), cv2.getRotationMatrix2D((75, 75), 12, 1.0), (150, 150))
    assert np.abs(unturned.astype(int) - upright)[30:120, 30:120].mean() > 2 * np.abs(chip - upright)[30:120, 30:120].mean()


@pytest.mark.slow
@needs_lfw
def test_a_chip_depends_only_on_the_face_surroundings(detector, preprocessor):
    """A face pasted into two different 640x480 frames, at different places and scales, gives the chip of
    the photo itself: what lies elsewhere in the frame does not matter, nor does shrinking a large face."""
    photo = read_image(lfw_photo("Serena_Williams", 1))
    box = detector.detect(photo).primary
    reference = preprocessor.chip(photo, box).astype(int)
    rng = np.random.default_rng(0)
    for (x, y), background, scale in zip([(40, 30), (300, 200), (10, 5)], [0, 255, 128], [1.0, 1.0, 1.8]):
        frame = np.full((480, 640, 3), background, np.uint8)
        frame[:, :, 1] = rng.integers(0, 256, (480, 640), dtype=np.uint8)  # busy, different elsewhere
        side = int(250 * scale)
        frame[y:y + side, x:x + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
        moved = (int(box[0] * scale) + x, int(box[1] * scale) + y, int(box[2] * scale), int(box[3] * scale))
        assert np.abs(preprocessor.chip(frame, moved).astype(int) - reference)[20:130, 20:130].mean() < 4.0


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
