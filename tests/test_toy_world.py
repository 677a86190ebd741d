"""toy/world.py: categories, shapes, exact masks, captions, excluded pairs, the dataset on disk, the CLI."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from tokencompose.toy.world import (
    EXCLUDED_PAIRS,
    SHAPES,
    TOY_CATEGORIES,
    Category,
    ToyScenes,
    caption_for,
    cli,
    default_object_size,
    degrade,
    get_category,
    make_toy_dataset,
    random_scene,
    render_scene,
    sample_categories,
    scene_batch,
    shape_mask,
)

NAMES = [c.name for c in TOY_CATEGORIES]


def as_text(mask):
    return ["".join("#" if v else "." for v in row) for row in mask]


# -- categories ---------------------------------------------------------------------------------------------


def test_default_world_has_ten_distinct_categories():
    assert len(TOY_CATEGORIES) == 10
    assert len(set(NAMES)) == 10
    assert len({c.shape for c in TOY_CATEGORIES}) == 10
    assert len({c.rgb for c in TOY_CATEGORIES}) == 10
    # colours on the grid {0, 128, 255}: any two differ by >= 127 in some channel
    for a, b in itertools.combinations(TOY_CATEGORIES, 2):
        assert max(abs(x - y) for x, y in zip(a.rgb, b.rgb, strict=True)) >= 127, (a, b)


def test_category_names_are_single_clip_tokens():
    pytest.importorskip("tokencompose.tokens", reason="tokencompose.tokens (the offline CLIP tokenizer) missing")
    from tokencompose.tokens import clip_tokenizer

    try:
        tokenizer = clip_tokenizer()
    except Exception as error:  # noqa: BLE001 - no tokenizer files here (offline, not set up)
        pytest.skip(f"offline CLIP tokenizer unavailable: {error}")
    for name in NAMES:
        ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids) == [name + "</w>"], name
        # and inside the caption the noun is one token too
        caption_ids = tokenizer(caption_for([name]), add_special_tokens=False)["input_ids"]
        assert ids[0] in caption_ids and len(caption_ids) == 6  # a photo of a <noun> .


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="Circle", rgb=(255, 0, 0), shape="circle"), "lowercase"),
        (dict(name="circle", rgb=(255, 0), shape="circle"), "rgb"),
        (dict(name="circle", rgb=(300, 0, 0), shape="circle"), "rgb"),
        (dict(name="circle", rgb=(100, 0, 0), shape="circle"), "too dark"),
        (dict(name="blob", rgb=(255, 0, 0), shape="blob"), "unknown shape"),
    ],
)
def test_bad_category_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Category(**kwargs)


def test_get_category_and_unknown_name():
    assert get_category("ring").shape == "ring"
    with pytest.raises(KeyError, match="unknown toy category 'cat'"):
        get_category("cat")


def test_world_with_colours_too_close_is_rejected():
    world = [Category("circle", (255, 0, 0), "circle"), Category("square", (250, 20, 0), "square")]
    with pytest.raises(ValueError, match="too close"):
        sample_categories(np.random.default_rng(0), 1, world)


# -- captions -------------------------------------------------------------------------------------------


def test_captions_follow_multigen_template():
    assert caption_for(["circle"]) == "a photo of a circle."
    assert caption_for(["circle", "ring"]) == "a photo of a circle and a ring."
    assert caption_for(["circle", "square", "ring"]) == "a photo of a circle, a square and a ring."
    assert caption_for(["arrow", "star", "heart", "bar"]) == "a photo of an arrow, a star, a heart and a bar."
    assert caption_for([get_category("ring"), get_category("arrow")]) == "a photo of a ring and an arrow."
    with pytest.raises(ValueError):
        caption_for([])


# -- shapes ---------------------------------------------------------------------------------------------


def test_shape_masks_by_hand():
    assert shape_mask("square", 3, 4).all()
    # 5 x 5 grid on [-1, 1]: half a pixel = 0.25, so the disc keeps r <= 1.25: all but the corners (r = 1.41)
    assert as_text(shape_mask("circle", 5, 5)) == [".###.", "#####", "#####", "#####", ".###."]
    # triangle (0,-1), (1,1), (-1,1): (+-0.5, -0.5) is 0.5/sqrt(5) = 0.22 <= 0.25 from an edge, (0.5, -1) 0.45
    assert as_text(shape_mask("triangle", 5, 5)) == ["..#..", ".###.", ".###.", "#####", "#####"]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_fills_its_box(shape):
    for side in range(4, 30):
        height, width = (side, max(2, round(side * 0.35))) if shape == "bar" else (side, side)
        mask = shape_mask(shape, height, width)
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any(), (shape, side)
        assert 0.3 < mask.mean() <= 1.0


def test_ring_has_a_hole_at_the_smallest_size():
    ring = shape_mask("ring", 8, 8)
    assert not ring[3:5, 3:5].any() and ring[0, 3:5].all()


# -- rendering ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_masks_are_exact_and_objects_do_not_touch(size):
    rng = np.random.default_rng(0)
    low, high = default_object_size(size)
    for _ in range(200):
        k = int(rng.integers(1, 5))
        categories = sample_categories(rng, k)
        scene = render_scene(categories, rng, size=size)
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        assert scene.names == tuple(c.name for c in categories)
        union = np.zeros((size, size), dtype=bool)
        for category in categories:
            mask = scene.masks[category.name]
            # the mask is exactly where the category's colour is
            assert np.array_equal(mask, (scene.image == category.rgb).all(axis=2))
            assert not (union & mask).any()
            union |= mask
            rows, cols = np.nonzero(mask)
            x0, y0, x1, y1 = scene.boxes[category.name]
            assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert low <= max(x1 - x0, y1 - y0) <= high
        assert not scene.image[~union].any()  # black background
        for a, b in itertools.combinations(scene.names, 2):  # >= 1 black pixel between boxes
            ax0, ay0, ax1, ay1 = scene.boxes[a]
            bx0, by0, bx1, by1 = scene.boxes[b]
            assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0, (a, b)


def test_render_scene_errors():
    rng = np.random.default_rng(0)
    circle = get_category("circle")
    with pytest.raises(ValueError, match="distinct"):
        render_scene([circle, circle], rng)
    with pytest.raises(ValueError, match="size"):
        render_scene([circle], rng, size=8)
    with pytest.raises(RuntimeError, match="could not place"):
        render_scene(TOY_CATEGORIES[:6], rng, size=16, object_size=(10, 12))


# -- category sampling and excluded pairs --------------------------------------------------------------------


def test_excluded_pairs_are_documented_and_valid():
    assert len(EXCLUDED_PAIRS) == 5
    members = [n for pair in EXCLUDED_PAIRS for n in pair]
    assert set(members) <= set(NAMES) and len(members) == len(set(members))  # each category in one pair


def test_excluded_pairs_never_co_occur_but_all_other_pairs_do():
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(1500):
        scene = random_scene(rng, objects=(2, 4))
        assert len(set(scene.names)) == len(scene.names)
        seen |= {frozenset(p) for p in itertools.combinations(scene.names, 2)}
    excluded = {frozenset(p) for p in EXCLUDED_PAIRS}
    assert not seen & excluded
    assert seen == {frozenset(p) for p in itertools.combinations(NAMES, 2)} - excluded  # 45 - 5 = 40 pairs
    assert len(seen) == 40


def test_sample_categories_errors_and_custom_world():
    rng = np.random.default_rng(0)
    world = TOY_CATEGORIES[:3]  # circle, square, triangle
    with pytest.raises(ValueError, match="k=4"):
        sample_categories(rng, 4, world)
    impossible = [("circle", "square"), ("square", "triangle"), ("circle", "triangle")]
    with pytest.raises(ValueError, match="avoid the excluded pairs"):
        sample_categories(rng, 2, world, impossible)
    with pytest.raises(ValueError, match="unknown"):
        sample_categories(rng, 1, world, [("circle", "unicorn")])
    # pairs outside the world are ignored: (circle, triangle) is the only one inside the first 3
    for _ in range(50):
        names = {c.name for c in sample_categories(rng, 2, world)}
        assert names != {"circle", "triangle"}


def test_first_six_categories_make_a_world():
    rng = np.random.default_rng(0)
    world = TOY_CATEGORIES[:6]
    names = {n for _ in range(200) for n in random_scene(rng, world).names}
    assert names == {c.name for c in world}


# -- in-memory batches ------------------------------------------------------------------------------------


def test_scene_batch_and_toy_scenes():
    batch = scene_batch(np.random.default_rng(0), 6, objects=(1, 2), size=32)
    assert batch.images.shape == (6, 32, 32, 3) and batch.images.dtype == np.float32
    assert batch.images.min() == 0.0 and batch.images.max() == 1.0
    for image, caption, masks in zip(batch.images, batch.captions, batch.masks, strict=True):
        assert caption == caption_for([name for name, _ in masks]) and 1 <= len(masks) <= 2
        for name, mask in masks:
            assert np.allclose(image[mask], np.array(get_category(name).rgb) / 255.0)
    first, second = iter(ToyScenes(batch_size=3, seed=7)), iter(ToyScenes(batch_size=3, seed=7))
    for _ in range(2):
        a, b = next(first), next(second)
        assert a.captions == b.captions and np.array_equal(a.images, b.images)


def test_toy_scenes_batch_jumps_to_any_step():
    scenes = ToyScenes(batch_size=4, seed=7)
    stream = iter(scenes)
    drawn = [next(stream) for _ in range(4)]
    third = scenes.batch(3)  # what a run resumed at step 3 draws, without drawing 0-2
    assert third.captions == drawn[3].captions and np.array_equal(third.images, drawn[3].images)
    assert not np.array_equal(drawn[0].images, drawn[1].images)
    other_seed = ToyScenes(batch_size=4, seed=8).batch(3)
    assert not np.array_equal(other_seed.images, third.images)
    with pytest.raises(ValueError, match=">= 0"):
        scenes.batch(-1)


def test_object_weights():
    rng = np.random.default_rng(0)
    counts = [len(random_scene(rng, object_weights=[0.5, 0.5, 0, 0]).names) for _ in range(300)]
    assert set(counts) == {1, 2}
    with pytest.raises(ValueError, match="object_weights"):
        random_scene(rng, object_weights=[1.0, 0.0])
    with pytest.raises(ValueError, match="distinct categories"):
        random_scene(rng, TOY_CATEGORIES[:2], objects=(1, 3))


# -- the dataset on disk ------------------------------------------------------------------------------------


def read_dataset(folder):
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_make_toy_dataset_format_and_exact_masks(tmp_path):
    out = make_toy_dataset(tmp_path / "toy", 12, seed=3)
    records = read_dataset(out)
    assert len(records) == 12
    assert records[0]["file_name"] == "images/00000.png"
    for i, record in enumerate(records):
        assert set(record) == {"file_name", "text", "attn_list"}
        image = np.asarray(Image.open(out / record["file_name"]))
        assert image.shape == (32, 32, 3)
        nouns = [noun for noun, _ in record["attn_list"]]
        assert record["text"] == caption_for(nouns)
        covered = np.zeros((32, 32), dtype=bool)
        for noun, mask_path in record["attn_list"]:
            assert mask_path == f"seg/{i:05d}/mask_{noun}.png"
            mask = np.asarray(Image.open(out / mask_path))
            assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask == 255, (image == get_category(noun).rgb).all(axis=2))
            covered |= mask == 255
        assert not image[~covered].any()


def test_make_toy_dataset_is_deterministic(tmp_path):
    a = make_toy_dataset(tmp_path / "a", 10, seed=0)
    b = make_toy_dataset(tmp_path / "b", 10, seed=0)
    c = make_toy_dataset(tmp_path / "c", 10, seed=1)
    prefix = make_toy_dataset(tmp_path / "prefix", 4, seed=0)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for path in files:
        assert (a / path).read_bytes() == (b / path).read_bytes(), path
    assert read_dataset(a) != read_dataset(c)
    images_a = [(a / r["file_name"]).read_bytes() for r in read_dataset(a)]
    images_c = [(c / r["file_name"]).read_bytes() for r in read_dataset(c)]
    assert sum(x != y for x, y in zip(images_a, images_c, strict=True)) >= 9
    assert read_dataset(prefix) == read_dataset(a)[:4]  # scene i depends on (seed, i) only


def test_make_toy_dataset_refuses_to_overwrite(tmp_path):
    from tokencompose.provenance import OutputFolderError

    make_toy_dataset(tmp_path, 2)
    with pytest.raises(OutputFolderError, match="--overwrite"):
        make_toy_dataset(tmp_path, 2)
    make_toy_dataset(tmp_path, 1, seed=5, overwrite=True)
    assert len(read_dataset(tmp_path)) == 1 and len(list((tmp_path / "images").iterdir())) == 1


def test_cli_writes_a_dataset(tmp_path):
    out = tmp_path / "cli"
    assert cli(["--out", str(out), "-n", "5", "--seed", "2", "--min-objects", "2", "--max-objects", "3",
                "--size", "64", "--num-categories", "6"]) == 0
    records = read_dataset(out)
    assert len(records) == 5
    for record in records:
        nouns = [noun for noun, _ in record["attn_list"]]
        assert 2 <= len(nouns) <= 3 and set(nouns) <= set(NAMES[:6])
        assert Image.open(out / record["file_name"]).size == (64, 64)
    from tokencompose.provenance import OutputFolderError

    with pytest.raises(OutputFolderError, match="--overwrite"):
        cli(["--out", str(out), "-n", "5"])  # exists
    with pytest.raises(SystemExit):
        cli(["--out", str(tmp_path / "x"), "-n", "5", "--max-objects", "11"])


# -- degradations -----------------------------------------------------------------------------------------


def test_degrade_by_hand():
    image = np.zeros((9, 9, 3), dtype=np.uint8)
    image[4, 4] = (255, 255, 255)
    tinted = degrade(image, tint=(0.5, 1.0, 0.25))
    assert tinted[4, 4].tolist() == [0.5, 1.0, 0.25] and tinted.sum() == 1.75
    blurred = degrade(image, blur=1.0)
    assert np.isclose(blurred[..., 0].sum(), 1.0)  # a blur keeps the total light (away from the border)
    assert blurred[4, 4, 0] < 1.0 and blurred[4, 3, 0] == blurred[3, 4, 0] == blurred[4, 5, 0] > 0
    noisy = degrade(np.full((64, 64, 3), 0.5), np.random.default_rng(0), noise=0.1)
    assert abs(noisy.std() - 0.1) < 0.005
    with pytest.raises(ValueError, match="rng"):
        degrade(image, noise=0.1)
