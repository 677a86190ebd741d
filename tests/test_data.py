"""data.py: the authors' metadata.jsonl format, validation with file:line problems, tensors, collate, CLI.

Every expectation below is worked out by hand from the fixture's geometry (resize the shorter side to R, cut
the centre square) or from CLIP's published token ids, never read back from the code.
"""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokencompose import data
from tokencompose.config import REFERENCE_DIR
from tokencompose.data import (
    DatasetError,
    Problem,
    Record,
    TokenComposeDataset,
    cli,
    collate,
    encode_example,
    read_metadata,
    validate_dataset,
)
from tokencompose.tokens import PhraseNotFoundError, noun_token_positions

REFERENCE = REFERENCE_DIR / "coco_gsam_metadata.jsonl"
R = 10
START, END, CAT = 49406, 49407, 2368  # CLIP ids of <|startoftext|>, <|endoftext|>, "cat</w>"


# --------------------------------------------------------------------------------------------------
# fixture datasets
# --------------------------------------------------------------------------------------------------

def rect(width, height, x0, x1, y0, y1):
    """uint8 [H, W]: 255 in columns [x0, x1) and rows [y0, y1), 0 elsewhere."""
    array = np.zeros((height, width), np.uint8)
    array[y0:y1, x0:x1] = 255
    return array


def save(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def red_image(mask: np.ndarray) -> np.ndarray:
    """Black RGB image, red where ``mask``."""
    image = np.zeros((*mask.shape, 3), np.uint8)
    image[..., 0] = mask
    return image


# landscape 40 x 20: R = 10 -> resized 20 x 10, crop left = 5. Cat at x [20, 30), y [4, 12)
#   -> resized x [10, 15), y [2, 6) -> cropped columns 5..9, rows 2..5.
CAT_BOX = (20, 30, 4, 12)
# portrait 20 x 40: -> resized 10 x 20, crop top = 5. Teddy bear at x [0, 10), y [10, 20) -> rows 0..4,
#   columns 0..4; bench at x [10, 20), y [20, 30) -> rows 5..9, columns 5..9.
TEDDY_BOX, BENCH_BOX = (0, 10, 10, 20), (10, 20, 20, 30)


def expected_mask(rows, cols):
    mask = torch.zeros(R, R)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return mask


def good_records(root: Path) -> list[dict]:
    """Writes the files of three good records into ``root``; returns their metadata lines."""
    cat = rect(40, 20, *CAT_BOX)
    save(root / "0001.png", red_image(cat))
    save(root / "seg/0001/mask_cat.png", cat)
    teddy, bench = rect(20, 40, *TEDDY_BOX), rect(20, 40, *BENCH_BOX)
    save(root / "0002.png", red_image(np.maximum(teddy, bench)))
    save(root / "seg/0002/mask_teddy_bear.png", teddy)
    save(root / "seg/0002/mask_bench.png", bench)
    save(root / "0003.png", np.full((12, 12, 3), 255, np.uint8))
    return [
        {"file_name": "0001.png", "text": "a photo of a cat and a kite.",
         "attn_list": [["cat", "seg/0001/mask_cat.png"], ["kite", None]]},
        {"file_name": "0002.png", "text": "a teddy bear on a bench.",
         "attn_list": [["teddy bear", "seg/0002/mask_teddy_bear.png"], ["bench", "seg/0002/mask_bench.png"]]},
        {"file_name": "0003.png", "text": "a white wall.", "attn_list": [["wall", None]]},
    ]


def write_metadata(root: Path, lines) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    (root / "metadata.jsonl").write_text(text, encoding="utf-8")
    return root / "metadata.jsonl"


@pytest.fixture
def good_dir(tmp_path):
    root = tmp_path / "ds"
    write_metadata(root, good_records(root))
    return root


def with_bad_line_2(tmp_path, make_bad):
    """A folder whose line 2 is ``make_bad(root, good_line_2)`` (a dict or a raw string); lines 1, 3 good."""
    root = tmp_path / "ds"
    lines = good_records(root)
    lines[1] = make_bad(root, lines[1])
    write_metadata(root, lines)
    return root


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------

def test_good_dataset_shapes_ranges_and_alignment(good_dir, tokenizer):
    dataset = TokenComposeDataset(good_dir, tokenizer, R)
    assert len(dataset) == 3 and validate_dataset(good_dir, tokenizer) == []

    cat = dataset[0]
    assert cat["pixel_values"].shape == (3, R, R) and cat["pixel_values"].dtype == torch.float32
    assert cat["input_ids"].shape == (77,) and cat["input_ids"].dtype == torch.int64
    assert cat["pixel_values"].min() >= -1 and cat["pixel_values"].max() <= 1
    # the kite has no mask: dropped from nouns, masks and positions
    assert cat["nouns"] == ["cat"] and cat["text"] == "a photo of a cat and a kite."
    assert cat["masks"].shape == (1, R, R) and cat["masks"].dtype == torch.float32
    assert torch.equal(cat["masks"][0], expected_mask((2, 6), (5, 10)))
    # the image went through the same resize + crop: its red square is where the mask is
    assert torch.equal((cat["pixel_values"][0] > 0).float(), cat["masks"][0])
    assert torch.all(cat["pixel_values"][1:] == -1)  # no green, no blue anywhere
    assert cat["pixel_values"][0, 0, 0] == -1  # black, far from the square
    # <sot> a photo of a cat ... : "cat" is token 5; 10 tokens + <eot>, then padding with <eot>
    assert cat["positions"] == [[5]]
    assert cat["input_ids"][0] == START and cat["input_ids"][5] == CAT
    assert torch.all(cat["input_ids"][10:] == END)

    teddy = dataset[1]  # portrait image: cropped top and bottom
    assert teddy["nouns"] == ["teddy bear", "bench"]
    assert teddy["positions"] == [[2, 3], [6]]  # <sot> a teddy bear on a bench .
    assert torch.equal(teddy["masks"][0], expected_mask((0, 5), (0, 5)))
    assert torch.equal(teddy["masks"][1], expected_mask((5, 10), (5, 10)))
    assert torch.equal((teddy["pixel_values"][0] > 0).float(), teddy["masks"][0] + teddy["masks"][1])

    wall = dataset[2]  # white image, no noun with a mask
    assert wall["masks"].shape == (0, R, R) and wall["positions"] == [] and wall["nouns"] == []
    assert torch.all(wall["pixel_values"] == 1)


def test_value_range_of_the_toy_preset(good_dir, tokenizer):
    example = TokenComposeDataset(good_dir, tokenizer, R, value_range=(0.0, 1.0))[0]
    assert example["pixel_values"][1:].abs().max() == 0  # black = 0
    assert example["pixel_values"].min() >= 0 and example["pixel_values"].max() <= 1
    assert torch.equal((example["pixel_values"][0] > 0.5).float(), example["masks"][0])


def test_collate_batch_of_two_with_different_noun_counts(good_dir, tokenizer):
    dataset = TokenComposeDataset(good_dir, tokenizer, R)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (2, 3, R, R) and batch["input_ids"].shape == (2, 77)
    assert [m.shape for m in batch["masks"]] == [(1, R, R), (2, R, R)]
    assert batch["positions"] == [[[5]], [[2, 3], [6]]]
    assert batch["nouns"] == [["cat"], ["teddy bear", "bench"]]
    assert batch["text"] == ["a photo of a cat and a kite.", "a teddy bear on a bench."]


def test_encode_example_in_memory(tokenizer):
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 3), dtype=np.float32)  # already R x R: resize and crop change nothing
    cat = np.zeros((8, 8), bool)
    cat[1:3, 4:7] = True
    example = encode_example(image, "a cat and a kite", ["cat", "kite"], [cat, None], tokenizer, 8, (0.0, 1.0))
    assert torch.allclose(example["pixel_values"], torch.from_numpy(image).permute(2, 0, 1), atol=1e-6)
    assert torch.equal(example["masks"][0], torch.from_numpy(cat).float())
    assert example["nouns"] == ["cat"] and example["positions"] == [[2]]  # <sot> a cat
    # uint8 and PIL inputs give the same values
    as_uint8 = (image * 255).round().astype(np.uint8)
    from_array = encode_example(as_uint8, "a cat", ["cat"], [cat], tokenizer, 8)
    from_pil = encode_example(Image.fromarray(as_uint8), "a cat", ["cat"], [Image.fromarray(cat)], tokenizer, 8)
    assert torch.equal(from_array["pixel_values"], from_pil["pixel_values"])
    assert torch.equal(from_array["masks"], from_pil["masks"])


def test_encode_example_errors(tokenizer):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="'cat'.*4x8"):
        encode_example(image, "a cat", ["cat"], [np.ones((8, 4))], tokenizer, 8)
    with pytest.raises(PhraseNotFoundError, match="dog"):
        encode_example(image, "a cat", ["dog"], [np.ones((8, 8))], tokenizer, 8)
    with pytest.raises(ValueError, match="float image must lie in"):
        encode_example(np.full((8, 8, 3), 2.0), "a cat", [], [], tokenizer, 8)
    with pytest.raises(ValueError, match="channels last"):
        encode_example(np.zeros((3, 8, 8), np.uint8), "a cat", [], [], tokenizer, 8)


def test_long_caption_is_truncated_to_77(tokenizer):
    text = "a cat" + " and a cat" * 40  # 2 + 3 * 40 = 122 words
    example = encode_example(np.zeros((4, 4, 3), np.uint8), text, [], [], tokenizer, 4)
    assert example["input_ids"].shape == (77,) and example["input_ids"][-1] == END


# --------------------------------------------------------------------------------------------------
# validation: one fixture per problem, each at line 2
# --------------------------------------------------------------------------------------------------

def broken_file(root, name):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(b"this is not an image")
    return name


def set_mask(line, path):
    line["attn_list"][0][1] = path
    return line


BAD_LINES = {
    "malformed_json": lambda root, line: json.dumps(line)[:-5],
    "not_an_object": lambda root, line: "[1, 2]",
    "missing_keys": lambda root, line: {"file_name": line["file_name"], "text": line["text"]},
    "bad_value": lambda root, line: {**line, "attn_list": [["teddy bear"]]},
    "missing_image": lambda root, line: {**line, "file_name": "0099.png"},
    "unreadable_image": lambda root, line: {**line, "file_name": broken_file(root, "broken.png")},
    "missing_mask": lambda root, line: set_mask(line, "seg/0002/nope.png"),
    "unreadable_mask": lambda root, line: set_mask(line, broken_file(root, "seg/broken.png")),
    "empty_mask": lambda root, line: set_mask(line, save(root / "seg/empty.png", np.zeros((40, 20), np.uint8))
                                              and "seg/empty.png"),
    "mask_size_mismatch": lambda root, line: set_mask(line, save(root / "seg/wide.png", rect(30, 40, 0, 5, 0, 5))
                                                      and "seg/wide.png"),
    "noun_not_in_caption": lambda root, line: {**line, "text": "a teddy on a bench."},
    "caption_too_long": lambda root, line: {**line, "text": "a teddy bear on a bench" + ", on a bench" * 30},
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_each_problem_is_reported_at_its_line(tmp_path, tokenizer, kind):
    root = with_bad_line_2(tmp_path, BAD_LINES[kind])
    problems = validate_dataset(root, tokenizer)
    assert [(p.kind, p.line) for p in problems] == [(kind, 2)], problems
    problem = problems[0]
    assert problem.file == str(root / "metadata.jsonl") and problem.message and problem.fix
    assert str(problem).startswith(f"{root / 'metadata.jsonl'}:2: ")


def test_every_problem_of_a_record_is_reported(tmp_path, tokenizer):
    root = tmp_path / "ds"
    lines = good_records(root)
    lines[1] = {"file_name": "0099.png", "text": "a cat.", "attn_list": [["dog", "seg/0001/mask_cat.png"],
                                                                          ["cow", "seg/none.png"]]}
    write_metadata(root, ["", *lines])  # a blank first line: line numbers stay physical
    problems = validate_dataset(root, tokenizer)
    assert sorted((p.line, p.kind) for p in problems) == [(3, "missing_image"), (3, "missing_mask"),
                                                          (3, "noun_not_in_caption"), (3, "noun_not_in_caption")]
    assert "'dog'" in problems[-2].message + problems[-1].message
    assert "'cow'" in problems[-2].message + problems[-1].message


def test_missing_metadata(tmp_path, tokenizer):
    (tmp_path / "empty").mkdir()
    problems = validate_dataset(tmp_path / "empty", tokenizer)
    assert [(p.kind, p.line) for p in problems] == [("missing_metadata", None)]


# --------------------------------------------------------------------------------------------------
# paths that leave the folder are rejected and never read
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def opened(monkeypatch):
    """Every path PIL opens during the test, resolved."""
    paths = []
    real_open = Image.open

    def spy(path, *args, **kwargs):
        paths.append(Path(path).resolve())
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(data.Image, "open", spy)
    return paths


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink_file", "symlink_dir", "image_dotdot"])
def test_paths_leaving_the_folder_are_rejected_unread(tmp_path, tokenizer, opened, how):
    outside = tmp_path / "outside"
    # a perfectly good mask and image outside: only the path check can reject them
    save(outside / "mask.png", rect(20, 40, *TEDDY_BOX))
    save(outside / "image.png", red_image(rect(20, 40, *TEDDY_BOX)))

    def make_bad(root, line):
        if how == "dotdot":
            return set_mask(line, "../outside/mask.png")
        if how == "absolute":
            return set_mask(line, str(outside / "mask.png"))
        if how == "symlink_file":
            os.symlink(outside / "mask.png", root / "seg/link.png")
            return set_mask(line, "seg/link.png")
        if how == "symlink_dir":
            os.symlink(outside, root / "seg/linked_dir")
            return set_mask(line, "seg/linked_dir/mask.png")
        return {**line, "file_name": "../outside/image.png"}

    root = with_bad_line_2(tmp_path, make_bad)
    problems = validate_dataset(root, tokenizer)
    assert [(p.kind, p.line) for p in problems] == [("path_leaves_folder", 2)]
    assert not [path for path in opened if path.is_relative_to(outside.resolve())]
    with pytest.raises(DatasetError):
        TokenComposeDataset(root, tokenizer, R)
    dataset = TokenComposeDataset(root, tokenizer, R, skip_bad=True)
    _ = [dataset[i] for i in range(len(dataset))]
    assert not [path for path in opened if path.is_relative_to(outside.resolve())]


def test_symlink_inside_the_folder_is_fine(tmp_path, tokenizer):
    def make(root, line):
        os.symlink(root / "seg/0002/mask_teddy_bear.png", root / "seg/alias.png")
        return set_mask(line, "seg/alias.png")

    assert validate_dataset(with_bad_line_2(tmp_path, make), tokenizer) == []


# --------------------------------------------------------------------------------------------------
# the Dataset refuses bad folders unless told to skip
# --------------------------------------------------------------------------------------------------

def test_dataset_error_lists_ten_problems_and_says_what_to_do(tmp_path, tokenizer):
    root = tmp_path / "ds"
    lines = good_records(root)
    bad = [{"file_name": f"missing_{i}.png", "text": "a cat.", "attn_list": []} for i in range(12)]
    write_metadata(root, [*lines, *bad])
    with pytest.raises(DatasetError) as error:
        TokenComposeDataset(root, tokenizer, R)
    message = str(error.value)
    assert isinstance(error.value, ValueError)
    assert "12 problem(s)" in message and "and 2 more" in message
    assert "missing_9.png" in message and "missing_10.png" not in message  # lines 4..13: first ten shown
    assert f"run python -m tokencompose validate {root}" in message
    assert "pass skip_bad=True to skip these records" in message


def test_skip_bad_drops_and_logs_each_bad_record(tmp_path, tokenizer, caplog):
    root = tmp_path / "ds"
    lines = good_records(root)
    lines.insert(1, {"file_name": "0001.png", "text": "a photo of a dog.", "attn_list": [["cat", "seg/0001/mask_cat.png"]]})
    lines.append("{not json")
    write_metadata(root, lines)
    with caplog.at_level(logging.WARNING, logger="tokencompose.data"):
        dataset = TokenComposeDataset(root, tokenizer, R, skip_bad=True)
    assert [record.line for record in dataset.records] == [1, 3, 4]
    skipped = [r.getMessage() for r in caplog.records if "skipping record" in r.getMessage()]
    assert len(skipped) == 2
    assert "metadata.jsonl:2:" in skipped[0] and "'cat'" in skipped[0]
    assert "metadata.jsonl:5:" in skipped[1] and "malformed JSON" in skipped[1]
    assert dataset[1]["nouns"] == ["teddy bear", "bench"]


def test_nothing_usable_left_is_an_error(tmp_path, tokenizer):
    root = tmp_path / "ds"
    root.mkdir()
    write_metadata(root, ["{oops"])
    with pytest.raises(DatasetError, match="no usable record"):
        TokenComposeDataset(root, tokenizer, R, skip_bad=True)
    # problems of the whole folder cannot be skipped
    with pytest.raises(DatasetError, match="dataset folder not found") as error:
        TokenComposeDataset(tmp_path / "nowhere", tokenizer, R, skip_bad=True)
    assert "skip_bad" not in str(error.value)
    (tmp_path / "no_metadata").mkdir()
    with pytest.raises(DatasetError, match="no metadata.jsonl"):
        TokenComposeDataset(tmp_path / "no_metadata", tokenizer, R, skip_bad=True)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------

def test_cli_good_and_bad(tmp_path, good_dir, capsys):
    assert cli([str(good_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["3 records, 0 problems"]

    bad = with_bad_line_2(tmp_path / "b", BAD_LINES["missing_image"])
    assert cli([str(bad)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[-1] == "3 records, 1 problems"
    assert out[0].startswith(f"{bad / 'metadata.jsonl'}:2: image '0099.png' not found")


# --------------------------------------------------------------------------------------------------
# the authors' files
# --------------------------------------------------------------------------------------------------

def test_authors_layout_trains_unchanged(tmp_path, tokenizer):
    """``coco_gsam_img/train/metadata.jsonl`` + images there; masks ``seg/<id>/...`` in ``../coco_gsam_seg``."""
    images, segs = tmp_path / "coco_gsam_img" / "train", tmp_path / "coco_gsam_seg"
    cat = rect(40, 20, *CAT_BOX)
    save(images / "000000000142.png", red_image(cat))
    save(segs / "000000000142" / "mask_000000000142_cat.png", cat)
    write_metadata(images, [{"file_name": "000000000142.png", "text": "A cat and a kite.",
                             "attn_list": [["cat", "seg/000000000142/mask_000000000142_cat.png"], ["kite", None]]}])
    dataset = TokenComposeDataset(tmp_path / "coco_gsam_img", tokenizer, R)
    example = dataset[0]
    assert example["nouns"] == ["cat"] and example["positions"] == [[2]]
    assert torch.equal(example["masks"][0], expected_mask((2, 6), (5, 10)))


def test_authors_reference_metadata_parses(tokenizer):
    items = list(read_metadata(REFERENCE))
    problems = [item for item in items if isinstance(item, Problem)]
    assert problems == []
    first, second = items[0], items[1]
    assert isinstance(first, Record) and first.line == 1 and first.file_name == "000000000142.jpg"
    assert first.attn_list[0] == ("piece", "seg/000000000142/mask_000000000142_piece.png")
    assert len(first.attn_list) == 7
    assert ("piece", None) in second.attn_list and ("camera", None) in second.attn_list
    assert second.masked_nouns == ["girl", "broccoli"]
    # their nouns are found in their captions (first 200 records)
    for record in items[:200]:
        noun_token_positions(record.text, record.masked_nouns, tokenizer)


def test_repeated_noun_takes_its_next_occurrence(tmp_path, tokenizer):
    root = tmp_path / "ds"
    left, right = rect(40, 20, 0, 10, 0, 20), rect(40, 20, 20, 30, 0, 20)
    save(root / "two.png", red_image(np.maximum(left, right)))
    save(root / "left.png", left)
    save(root / "right.png", right)
    write_metadata(root, [{"file_name": "two.png", "text": "a cat next to a cat.",
                           "attn_list": [["cat", "left.png"], ["cat", "right.png"]]}])
    example = TokenComposeDataset(root, tokenizer, R)[0]
    assert example["positions"] == [[2], [6]]  # <sot> a cat next to a cat .
    # 40 x 20 -> 20 x 10, crop keeps resized columns 5..14: the left cat (x [0, 10) -> [0, 5)) is cut away
    # and its mask survives as empty (as in the authors' code); the right one (x [20, 30) -> [10, 15)) is
    # cropped columns 5..9
    assert example["masks"][0].sum() == 0
    assert torch.equal(example["masks"][1], expected_mask((0, 10), (5, 10)))


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
def test_a_plane_already_at_the_resolution_is_what_pil_would_return(resample):
    # _resize_crop skips PIL when the plane is R x R (a toy scene every step): the result must be PIL's own
    plane = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    image = Image.fromarray(plane).resize((12, 12), resample=resample).crop((0, 0, 12, 12))
    assert np.array_equal(data._resize_crop(plane, 12, resample), np.asarray(image, dtype=np.float32))
    other = data._resize_crop(plane, 6, resample)  # a real resize still goes through PIL
    assert other.shape == (6, 6) and not np.array_equal(other, plane[::2, ::2])
