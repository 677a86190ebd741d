"""``prepare``: the dataset format, resuming after a crash, unreadable images, caption files, the CLI.

Most tests use ``RectangleSegmenter``, a deterministic stand-in for the segmentation step (noun number i
gets the rows ``[0, 8 * (i + 1))``), so the expected files can be written by hand; the CLI test runs the
real Grounding DINO + SAM architectures (tiny, random weights) loaded from folders.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tokencompose.prepare import (
    Caption,
    cli,
    finished_file_names,
    image_id,
    prepare_dataset,
    read_captions,
)

SIZE = 64
KNOWN_NOUNS = {"cat", "kite", "table", "dog", "bear", "teddy"}
CAPTIONS = {
    "img0.png": "a cat and a kite",
    "img1.png": "a dog on a table",
    "sub/img2.png": "a teddy bear and a cat",
    "img3.png": "the kite",
}
#: nouns of each caption under ``tag_known_nouns`` (consecutive nouns form one phrase)
NOUNS = {
    "img0.png": ["cat", "kite"],
    "img1.png": ["dog", "table"],
    "sub/img2.png": ["teddy bear", "cat"],
    "img3.png": ["kite"],
}


def tag_known_nouns(tokens: Sequence[str]) -> list[str]:
    """A POS tagger for the tests: NN for the known nouns, DT for everything else."""
    return ["NN" if token.lower() in KNOWN_NOUNS else "DT" for token in tokens]


class InjectedCrash(RuntimeError):
    pass


class RectangleSegmenter:
    """Noun i of a caption gets rows [0, 8 * (i + 1)); nouns in ``missing`` get None.

    ``crash_after=k`` raises ``InjectedCrash`` on call k + 1 (a run killed in the middle).
    """

    def __init__(self, missing: Sequence[str] = (), crash_after: int | None = None, shape=None):
        self.missing = set(missing)
        self.crash_after = crash_after
        self.shape = shape
        self.calls: list[list[str]] = []

    def masks_for_nouns(self, image: Image.Image, nouns: list[str]) -> dict[str, np.ndarray | None]:
        if self.crash_after is not None and len(self.calls) == self.crash_after:
            raise InjectedCrash(f"crash injected after {self.crash_after} records")
        self.calls.append(list(nouns))
        result = {}
        for index, noun in enumerate(nouns):
            if noun in self.missing:
                result[noun] = None
                continue
            mask = np.zeros(self.shape or (image.height, image.width), dtype=bool)
            mask[: 8 * (index + 1)] = True
            result[noun] = mask
        return result


def write_inputs(root: Path, captions: dict[str, str] = CAPTIONS) -> tuple[Path, Path]:
    images = root / "images"
    for number, file_name in enumerate(captions):
        path = images / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (SIZE, SIZE), (40 * number, 100, 200)).save(path)
    captions_file = root / "captions.jsonl"
    captions_file.write_text("".join(json.dumps({"file_name": f, "text": t}) + "\n" for f, t in captions.items()))
    return images, captions_file


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    """mtime (ns) and bytes of every file under ``out`` except metadata.jsonl and the list of what prepare wrote
    (``provenance.record_written``: it grows with every record)."""
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in out.rglob("*") if p.is_file() and p.name != "metadata.jsonl"
            and not p.name.startswith("written-")}


def run(images, captions, out, segmenter, **kwargs):
    return prepare_dataset(images, captions, out, segmenter, tagger=tag_known_nouns, progress=False, **kwargs)


# ---- the dataset format -----------------------------------------------------------------------

def test_output_is_the_authors_format(tmp_path):
    images, captions = write_inputs(tmp_path)
    out = tmp_path / "dataset"
    report = run(images, captions, out, RectangleSegmenter(missing=["kite"]))
    assert (report.written, report.already_done, report.failed) == (4, 0, [])
    assert (report.nouns, report.masked) == (7, 5)  # 2 + 2 + 2 + 1 nouns; the 2 kites have no mask

    records = read_records(out)
    assert [r["file_name"] for r in records] == list(CAPTIONS)
    assert [r["text"] for r in records] == list(CAPTIONS.values())
    assert records[0]["attn_list"] == [["cat", "seg/img0/mask_cat.png"], ["kite", None]]
    assert records[1]["attn_list"] == [["dog", "seg/img1/mask_dog.png"], ["table", "seg/img1/mask_table.png"]]
    assert records[2]["attn_list"] == [["teddy bear", "seg/sub_img2/mask_teddy_bear.png"],
                                       ["cat", "seg/sub_img2/mask_cat.png"]]
    assert records[3]["attn_list"] == [["kite", None]]

    for record in records:
        assert set(record) == {"file_name", "text", "attn_list"}
        image_path = (out / record["file_name"]).resolve()
        assert image_path.is_relative_to(out.resolve())
        assert image_path.read_bytes() == (images / record["file_name"]).read_bytes()
        for index, (_noun, mask_path) in enumerate(record["attn_list"]):
            if mask_path is None:
                continue
            assert not Path(mask_path).is_absolute() and ".." not in Path(mask_path).parts
            assert (out / mask_path).resolve().is_relative_to(out.resolve())
            with Image.open(out / mask_path) as png:
                assert png.mode == "L" and png.size == (SIZE, SIZE)
                pixels = np.asarray(png)
            expected = np.zeros((SIZE, SIZE), dtype=np.uint8)
            expected[: 8 * (index + 1)] = 255
            np.testing.assert_array_equal(pixels, expected)


def test_output_passes_the_dataset_validator(tmp_path):
    data = pytest.importorskip("tokencompose.data")
    try:
        from tokencompose.tokens import clip_tokenizer

        tokenizer = clip_tokenizer()
    except Exception as error:  # the offline tokenizer files are set up by `make`
        pytest.skip(f"CLIP tokenizer unavailable: {error}")
    images, captions = write_inputs(tmp_path)
    run(images, captions, tmp_path / "dataset", RectangleSegmenter(missing=["kite"]))
    assert [str(p) for p in data.validate_dataset(tmp_path / "dataset", tokenizer)] == []


def test_empty_mask_and_colliding_names(tmp_path):
    images, captions = write_inputs(tmp_path, {"a.png": "Cat cat"})

    class Segmenter:
        def masks_for_nouns(self, image, nouns):
            assert nouns == ["Cat cat"]  # consecutive nouns form one phrase
            return {"Cat cat": np.ones((SIZE, SIZE), dtype=bool)}

    run(images, captions, tmp_path / "one", Segmenter())
    assert read_records(tmp_path / "one")[0]["attn_list"] == [["Cat cat", "seg/a/mask_Cat_cat.png"]]

    images, captions = write_inputs(tmp_path / "two", {"a.png": "a cat"})

    class EmptySegmenter:
        def masks_for_nouns(self, image, nouns):
            return {noun: np.zeros((SIZE, SIZE), dtype=bool) for noun in nouns}

    run(images, captions, tmp_path / "two" / "out", EmptySegmenter())
    assert read_records(tmp_path / "two" / "out")[0]["attn_list"] == [["cat", None]]  # empty mask -> null


def test_case_variants_get_separate_files(tmp_path):
    images, _ = write_inputs(tmp_path, {"a.png": "x"})
    segmenter = RectangleSegmenter()
    # two nouns whose file names differ only in case must not overwrite each other (case-insensitive disks)
    report = prepare_dataset(images, [Caption("a.png", "Kite and kite")], tmp_path / "out", segmenter,
                             tagger=lambda tokens: ["NN", "CC", "NN"], progress=False)
    assert report.written == 1
    attn = read_records(tmp_path / "out")[0]["attn_list"]
    assert attn == [["Kite", "seg/a/mask_Kite.png"], ["kite", "seg/a/mask_kite_2.png"]]


def test_mask_at_the_wrong_resolution_is_an_error(tmp_path):
    images, captions = write_inputs(tmp_path, {"a.png": "a cat"})
    with pytest.raises(ValueError, match=r"a\.png.*'cat'.*image resolution"):
        run(images, captions, tmp_path / "out", RectangleSegmenter(shape=(32, 32)))


def test_out_dir_may_be_the_images_folder(tmp_path):
    images, captions = write_inputs(tmp_path)
    before = (images / "img0.png").read_bytes()
    report = run(images, captions, images, RectangleSegmenter())
    assert report.written == 4 and (images / "img0.png").read_bytes() == before
    assert sorted(p.name for p in images.iterdir()) == ["img0.png", "img1.png", "img3.png", "metadata.jsonl",
                                                        "seg", "sub", "written-0.json"]  # (what prepare wrote)


# ---- resuming ---------------------------------------------------------------------------------

def test_resume_after_a_crash_never_rewrites_finished_records(tmp_path):
    images, captions = write_inputs(tmp_path)
    out = tmp_path / "dataset"
    with pytest.raises(InjectedCrash):
        run(images, captions, out, RectangleSegmenter(crash_after=2))
    first_lines = (out / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["file_name"] for line in first_lines] == ["img0.png", "img1.png"]
    finished = snapshot(out)
    assert set(finished) == {"img0.png", "img1.png", "seg/img0/mask_cat.png", "seg/img0/mask_kite.png",
                             "seg/img1/mask_dog.png", "seg/img1/mask_table.png"}

    rerun = RectangleSegmenter()
    report = run(images, captions, out, rerun)
    assert (report.written, report.already_done) == (2, 2)
    assert rerun.calls == [NOUNS["sub/img2.png"], NOUNS["img3.png"]]  # only the unfinished records
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert lines[:2] == first_lines
    assert sorted(json.loads(line)["file_name"] for line in lines) == sorted(CAPTIONS)
    after = snapshot(out)
    for path, (mtime, content) in finished.items():
        assert after[path] == (mtime, content), f"{path} was rewritten"

    third = RectangleSegmenter()
    report = run(images, captions, out, third)
    assert (report.written, report.already_done, third.calls) == (0, 4, [])
    assert (out / "metadata.jsonl").read_text().splitlines() == lines


def test_limit_then_continue(tmp_path):
    images, captions = write_inputs(tmp_path)
    out = tmp_path / "dataset"
    assert run(images, captions, out, RectangleSegmenter(), limit=3).written == 3
    assert run(images, captions, out, RectangleSegmenter(), limit=3).written == 1
    assert [r["file_name"] for r in read_records(out)] == list(CAPTIONS)


def test_a_line_cut_by_a_crash_is_dropped_and_redone(tmp_path, caplog):
    images, captions = write_inputs(tmp_path)
    out = tmp_path / "dataset"
    run(images, captions, out, RectangleSegmenter(), limit=1)
    with (out / "metadata.jsonl").open("a") as handle:
        handle.write('{"file_name": "img1.png", "text": "a dog o')  # the process died mid-write
    with caplog.at_level(logging.WARNING):
        assert finished_file_names(out / "metadata.jsonl") == {"img0.png"}
    assert "unfinished last line 2" in caplog.text
    run(images, captions, out, RectangleSegmenter())
    assert [r["file_name"] for r in read_records(out)] == list(CAPTIONS)


def test_a_bad_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "metadata.jsonl"
    path.write_text('{"file_name": "a.png"}\nnot json\n{"file_name": "b.png"}\n')
    with pytest.raises(ValueError, match=r"metadata\.jsonl:2"):
        finished_file_names(path)


# ---- bad input ----------------------------------------------------------------------------------

def test_unreadable_image_is_logged_and_skipped(tmp_path, caplog):
    images, captions = write_inputs(tmp_path)
    (images / "img1.png").write_bytes(b"not a png at all")
    (images / "img3.png").unlink()
    out = tmp_path / "dataset"
    segmenter = RectangleSegmenter()
    with caplog.at_level(logging.WARNING, logger="tokencompose.prepare"):
        report = run(images, captions, out, segmenter)
    assert report.written == 2
    assert [name for name, _ in report.failed] == ["img1.png", "img3.png"]
    assert "img1.png" in caplog.text and "img3.png" in caplog.text
    assert [r["file_name"] for r in read_records(out)] == ["img0.png", "sub/img2.png"]
    assert not (out / "seg" / "img1").exists()

    Image.new("RGB", (SIZE, SIZE)).save(images / "img1.png")  # repaired: the next run picks it up
    report = run(images, captions, out, RectangleSegmenter())
    assert report.written == 1 and [name for name, _ in report.failed] == ["img3.png"]


def test_missing_captions_file_is_a_clear_error(tmp_path, caplog):
    images, _ = write_inputs(tmp_path)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"captions file .*nope\.jsonl.* not found.*file_name"):
        run(images, missing, tmp_path / "out", RectangleSegmenter())
    with caplog.at_level(logging.ERROR):
        status = cli(["--images", str(images), "--captions", str(missing), "--out", str(tmp_path / "out")])
    assert status == 2 and "nope.jsonl" in caplog.text
    assert not (tmp_path / "out").exists()


def test_missing_images_folder_is_a_clear_error(tmp_path):
    _, captions = write_inputs(tmp_path)
    with pytest.raises(FileNotFoundError, match="images folder"):
        run(tmp_path / "elsewhere", captions, tmp_path / "out", RectangleSegmenter())


def test_read_captions_formats(tmp_path):
    (tmp_path / "c.csv").write_text('file_name,text\na.png,"a cat, a kite"\nb/c.jpg,a dog\n')
    (tmp_path / "c.tsv").write_text("file_name\ttext\na.png\ta cat, a kite\n")
    (tmp_path / "c.jsonl").write_text('{"file_name": "a.png", "text": "a cat, a kite", "extra": 1}\n\n')
    assert [(c.file_name, c.text) for c in read_captions(tmp_path / "c.csv")] == [
        ("a.png", "a cat, a kite"), ("b/c.jpg", "a dog")]
    assert [(c.file_name, c.text) for c in read_captions(tmp_path / "c.tsv")] == [("a.png", "a cat, a kite")]
    assert [(c.file_name, c.text) for c in read_captions(tmp_path / "c.jsonl")] == [("a.png", "a cat, a kite")]


@pytest.mark.parametrize("content, match", [
    ('{"file_name": "a.png", "text": "x"}\n{"file_name": "b.png"\n', r"bad\.jsonl:2"),
    ('{"file_name": "a.png"}\n', r"bad\.jsonl:1.*'text'"),
    ('{"file_name": "../a.png", "text": "x"}\n', "relative"),
    ('{"file_name": "/tmp/a.png", "text": "x"}\n', "relative"),
])
def test_read_captions_names_the_bad_line(tmp_path, content, match):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(ValueError, match=match):
        read_captions(tmp_path / "bad.jsonl")


def test_csv_without_header_is_an_error(tmp_path):
    (tmp_path / "c.csv").write_text("a.png,a cat\n")
    with pytest.raises(ValueError, match="header"):
        read_captions(tmp_path / "c.csv")


def test_duplicate_captions_keep_the_first_and_clashing_ids_are_errors(tmp_path):
    images, _ = write_inputs(tmp_path, {"a.png": "x", "a.jpg": "x"})
    segmenter = RectangleSegmenter()
    run(images, [Caption("a.png", "a cat"), Caption("a.png", "a dog")], tmp_path / "out", segmenter)
    assert segmenter.calls == [["cat"]]
    with pytest.raises(ValueError, match="seg/a/"):
        run(images, [Caption("a.png", "a cat"), Caption("a.jpg", "a dog")], tmp_path / "out2", segmenter)
    assert image_id("sub/dir/0001.jpg") == "sub_dir_0001"


# ---- the command line with the real (tiny, random) Grounding DINO + SAM ------------------------

def test_cli_with_tiny_real_models(tmp_path):
    from tokencompose.masks import build_random_tiny_models
    from tokencompose.nouns import TaggerUnavailableError, noun_phrases

    try:
        expected_nouns = {f: noun_phrases(t, tagger="perceptron") for f, t in CAPTIONS.items()}
    except TaggerUnavailableError as error:
        pytest.skip(f"perceptron tagger unavailable: {error}")
    detector, detector_processor, segmenter, segmenter_processor = build_random_tiny_models(sorted(KNOWN_NOUNS))
    detector.save_pretrained(tmp_path / "det")
    detector_processor.save_pretrained(tmp_path / "det")
    segmenter.save_pretrained(tmp_path / "sam")
    segmenter_processor.save_pretrained(tmp_path / "sam")
    images, captions = write_inputs(tmp_path)
    out = tmp_path / "dataset"
    argv = ["--images", str(images), "--captions", str(captions), "--out", str(out), "--tagger", "perceptron",
            "--detector", str(tmp_path / "det"), "--segmenter", str(tmp_path / "sam"), "--device", "cpu",
            "--box-threshold", "0", "--text-threshold", "0", "--no-progress"]
    assert cli(argv) == 0
    records = read_records(out)
    assert [r["file_name"] for r in records] == list(CAPTIONS)
    for record in records:
        nouns = [noun for noun, _ in record["attn_list"]]
        assert nouns == expected_nouns[record["file_name"]]
        if nouns:
            # thresholds 0: every phrase holds the whole prompt, which the containment rule gives to
            # the first noun; the others stay null
            first_path = record["attn_list"][0][1]
            assert first_path == f"seg/{image_id(record['file_name'])}/mask_{nouns[0].replace(' ', '_')}.png"
            with Image.open(out / first_path) as png:
                assert png.size == (SIZE, SIZE) and set(np.unique(np.asarray(png))) <= {0, 255}
            assert all(path is None for _, path in record["attn_list"][1:])
    assert cli(argv) == 0  # a rerun finds everything done
    assert len(read_records(out)) == len(CAPTIONS)

    bad = argv[:]
    bad[bad.index(str(tmp_path / "det"))] = str(tmp_path / "no_weights")
    assert cli(bad) == 1


@pytest.mark.parametrize("extra, settings, box, detector", [
    ([], "authors", None, None),  # the default: the authors' run, every value from the preset
    (["--settings", "grounded-sam-script", "--box-threshold", "0.4", "--detector", "DET"],
     "grounded-sam-script", 0.4, "DET"),
])
def test_cli_passes_the_grounding_settings(tmp_path, monkeypatch, extra, settings, box, detector):
    from tokencompose.masks import GroundedSAM, ModelLoadError

    images, captions = write_inputs(tmp_path)
    seen = {}

    def fake_from_pretrained(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise ModelLoadError("no weights in this test")

    monkeypatch.setattr(GroundedSAM, "from_pretrained", fake_from_pretrained)
    argv = ["--images", str(images), "--captions", str(captions), "--out", str(tmp_path / "out"), *extra]
    assert cli(argv) == 1
    assert seen["args"] == (detector, None)
    assert seen["kwargs"]["settings"] == settings
    assert seen["kwargs"]["box_threshold"] == box and seen["kwargs"]["text_threshold"] is None
