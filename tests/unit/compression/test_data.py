from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tiergate.compression import DataConfig, DataError, load_splits


def test_digits_splits_are_deterministic_and_disjoint():
    """The same seed gives the same splits, and no image lands in two of them."""
    config = DataConfig(source="digits", calibration_size=100, validation_size=150)
    first, second = load_splits(config), load_splits(config)
    assert first.fingerprint == second.fingerprint
    np.testing.assert_array_equal(first.train.x, second.train.x)
    total = len(first.train) + len(first.calibration) + len(first.validation) + len(first.test)
    assert total == 1797
    rows = {row.tobytes() for part in (first.train, first.calibration, first.validation, first.test)
            for row in part.x}  # fmt: skip
    assert len(rows) >= 1797 - 20  # digits holds a few exact duplicates of its own


def test_another_seed_changes_the_split():
    """The seed decides the split, and so the fingerprint that keys cached artifacts."""
    a = load_splits(DataConfig(source="digits", seed=0))
    b = load_splits(DataConfig(source="digits", seed=1))
    assert not np.array_equal(a.train.y[:50], b.train.y[:50])
    assert a.fingerprint != b.fingerprint


def test_npz_with_labels(tmp_path):
    """An .npz with x (N,C,H,W) and y loads as labelled data of the same shape."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((300, 3, 6, 6), dtype=np.float32), y=rng.integers(0, 4, 300))
    splits = load_splits(DataConfig(source="npz", path=tmp_path / "d.npz"))
    assert splits.labelled and splits.input_shape == (3, 6, 6) and len(splits.classes) == 4


def test_npz_without_labels_is_unlabelled(tmp_path):
    """Without y the splits carry no labels, so the menu must fall back to fidelity."""
    np.savez(tmp_path / "d.npz", x=np.zeros((200, 1, 4, 4), np.float32))
    splits = load_splits(DataConfig(source="npz", path=tmp_path / "d.npz", num_classes=3))
    assert not splits.labelled and splits.test.y is None and len(splits.classes) == 3


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((10, 1, 4, 4))}, "has no array 'x'"),
        ({"x": np.zeros((10, 4, 4))}, "must be (N, C, H, W)"),
        ({"x": np.full((10, 1, 4, 4), np.nan)}, "NaN or infinite"),
        ({"x": np.zeros((10, 1, 4, 4)), "y": np.zeros(9)}, "9 labels for 10 images"),
    ],
)
def test_bad_npz_is_refused_with_a_named_problem(tmp_path, arrays, message):
    """Each malformed .npz fails with a DataError that names what is wrong."""
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_splits(DataConfig(source="npz", path=tmp_path / "bad.npz"))


def test_unreadable_npz(tmp_path):
    """A file that is not an .npz names the path in the error."""
    (tmp_path / "junk.npz").write_text("not numpy")
    with pytest.raises(DataError, match="junk.npz"):
        load_splits(DataConfig(source="npz", path=tmp_path / "junk.npz"))


def _write_folder(root, sizes):
    for label, colour in enumerate(["red", "blue"]):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(40):
            size = sizes[index % len(sizes)]
            Image.new("RGB", size, colour).save(root / f"class{label}" / f"{index}.png")


def test_image_folder_resized_and_normalised(tmp_path):
    """An image folder loads one class per sub-folder, resized and normalised as configured."""
    _write_folder(tmp_path, [(10, 12), (7, 9)])
    config = DataConfig(source="folder", path=tmp_path, image_size=(8, 8), channels=3,
                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # fmt: skip
    splits = load_splits(config)
    assert splits.classes == ("class0", "class1") and splits.input_shape == (3, 8, 8)
    assert splits.test.x.min() >= -1.0 and splits.test.x.max() <= 1.0
    red = splits.test.x[splits.test.y == 0]
    assert np.allclose(red[:, 0], 1.0) and np.allclose(red[:, 2], -1.0)


def test_image_folder_mixed_sizes_needs_image_size(tmp_path):
    """Images of different sizes without data.image_size fail with a hint to set it."""
    _write_folder(tmp_path, [(10, 12), (7, 9)])
    with pytest.raises(DataError, match="set data.image_size"):
        load_splits(DataConfig(source="folder", path=tmp_path))


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    """A missing Fashion-MNIST folder tells the user which package to install."""
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        load_splits(DataConfig(source="fashion-mnist", path=tmp_path))


def test_folder_source_requires_a_path():
    """data.source=folder without data.path is a config error naming the field."""
    with pytest.raises(ValueError, match="data.path is required"):
        DataConfig(source="folder")
