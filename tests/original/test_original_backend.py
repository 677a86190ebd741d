"""masks_original (``backend="original"``) against the authors' real packages, built offline with random weights.

The packages need torchvision, which the main environment does not have: run these with
``bash scripts/test_original_masks.sh``, which builds ``.venv-original``. In the main suite they are skipped.

GroundingDINO is built by its own ``build_model`` from the SwinT OGC config shipped in groundingdino-py, made small
(1 encoder / 2 decoder layers, 10 queries, 1 sampling point; ``hidden_dim`` stays 256, which its text position
embedding hard-codes), with a tiny random BERT and a WordPiece vocabulary saved to a folder as its
``text_encoder_type``; its random weights are saved as a ``.pth`` checkpoint and loaded back the way real ones are.
SAM and SAM-HQ are the packages' own ``Sam`` with a 64-pixel ViT (and one test of ``sam_model_registry``'s ViT-B
through a saved checkpoint). The masks are meaningless; shapes, types, file format and plumbing are real.
"""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("torchvision", reason="the original packages need torchvision: run scripts/test_original_masks.sh")
pytest.importorskip("groundingdino.models", reason="groundingdino-py is not installed: run scripts/test_original_masks.sh")
pytest.importorskip("segment_anything_hq", reason="segment-anything-hq is not installed: run scripts/test_original_masks.sh")
pytest.importorskip("segment_anything", reason="segment-anything is not installed: run scripts/test_original_masks.sh")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tokencompose import masks_original  # noqa: E402
from tokencompose.grounding import GroundedSegmenter  # noqa: E402
from tokencompose.masks import GroundedSAM, ModelLoadError, save_mask  # noqa: E402
from tokencompose.masks_original import (  # noqa: E402
    OriginalGroundedSAM,
    build_original_detector,
    build_original_segmenter,
    packaged_detector_config,
)

NOUNS = ["cat", "kite"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "-", "cat", "kite", "dog"]
SIDE = 64  # image side of the tiny SAM ViT and of Grounding DINO's resize in these tests
SMALL = {"enc_layers = 6": "enc_layers = 1", "dec_layers = 6": "dec_layers = 2", "num_queries = 900": "num_queries = 10",
         "dim_feedforward = 2048": "dim_feedforward = 64", "nheads = 8": "nheads = 2",
         "enc_n_points = 4": "enc_n_points = 1", "dec_n_points = 4": "dec_n_points = 1",
         "use_checkpoint = True": "use_checkpoint = False", "use_transformer_ckpt = True": "use_transformer_ckpt = False"}


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    """A folder with a tiny random BertModel and a WordPiece tokenizer over VOCAB (built offline)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def detector_config(tmp_path_factory):
    """groundingdino-py's own GroundingDINO_SwinT_OGC.py, made small (SMALL)."""
    source = packaged_detector_config("GroundingDINO_SwinT_OGC.py").read_text(encoding="utf-8")
    for old, new in SMALL.items():
        assert old in source, f"the packaged config changed: no {old!r}"
        source = source.replace(old, new)
    path = tmp_path_factory.mktemp("config") / "tiny_swint_ogc.py"
    path.write_text(source, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory, detector_config, text_encoder):
    """Random GroundingDINO weights saved as the authors' checkpoints are: ``{"model": state_dict}``."""
    torch.manual_seed(0)
    model = build_original_detector(detector_config, None, text_encoder)
    path = tmp_path_factory.mktemp("checkpoints") / "tiny_groundingdino.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def tiny_sam(kind: str, seed: int = 0):
    """The package's own ``Sam`` (SAM-HQ: its ``MaskDecoderHQ``) with a 64-pixel, 2-layer ViT."""
    package = __import__(masks_original.SAM_PACKAGES[kind][0] + ".modeling", fromlist=["Sam"])
    torch.manual_seed(seed)
    vit_dim, prompt_dim, patch = 16, 32, 8
    decoder_kwargs = dict(transformer_dim=prompt_dim, num_multimask_outputs=3, iou_head_depth=1,
                          iou_head_hidden_dim=16,
                          transformer=package.TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64,
                                                                num_heads=2))
    decoder = (package.MaskDecoderHQ(vit_dim=vit_dim, **decoder_kwargs) if kind == "sam_hq"
               else package.MaskDecoder(**decoder_kwargs))
    return package.Sam(
        image_encoder=package.ImageEncoderViT(img_size=SIDE, patch_size=patch, embed_dim=vit_dim, depth=2,
                                              num_heads=2, out_chans=prompt_dim, use_rel_pos=True, window_size=2,
                                              global_attn_indexes=[1],
                                              norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=package.PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(SIDE // patch, SIDE // patch),
                                             input_image_size=(SIDE, SIDE), mask_in_chans=4),
        mask_decoder=decoder, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def photo(width: int = 80, height: int = 60) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def original(kind: str, detector_checkpoint, detector_config, text_encoder, **kwargs) -> OriginalGroundedSAM:
    settings = "authors" if kind == "sam_hq" else "grounded-sam-script"
    return GroundedSAM.from_pretrained(str(detector_checkpoint), None, device="cpu", backend="original",
                                       settings=settings, detector_config=detector_config, text_encoder=text_encoder,
                                       segmenter=tiny_sam(kind), image_size=SIDE, max_size=SIDE, **kwargs)


@pytest.mark.parametrize("kind", ["sam_hq", "sam"])
def test_masks_for_nouns_has_the_transformers_backends_format(kind, detector_checkpoint, detector_config, text_encoder,
                                                              tmp_path):
    """Thresholds 0: every query is kept and its phrase is the whole prompt, which ``match_phrase`` gives to the
    first noun, "cat" (in both backends, whatever the random weights): {"cat": bool [H, W], "kite": None}."""
    gsam = original(kind, detector_checkpoint, detector_config, text_encoder, box_threshold=0.0, text_threshold=0.0)
    assert isinstance(gsam, OriginalGroundedSAM) and isinstance(gsam, GroundedSegmenter)
    assert gsam.segmenter_kind == kind and gsam.settings.detector_id == str(detector_checkpoint)
    image = photo()
    masks = gsam.masks_for_nouns(image, NOUNS)

    reference = GroundedSAM.random_tiny(VOCAB, box_threshold=0.0, text_threshold=0.0,
                                        settings="authors" if kind == "sam_hq" else "grounded-sam-script")
    expected = reference.masks_for_nouns(image, NOUNS)
    assert list(masks) == list(expected) == NOUNS
    for noun in NOUNS:
        assert (masks[noun] is None) == (expected[noun] is None), noun
    mask = masks["cat"]
    assert isinstance(mask, np.ndarray) and mask.dtype == expected["cat"].dtype == np.bool_
    assert mask.shape == expected["cat"].shape == (image.height, image.width)
    assert masks["kite"] is None

    # it is the union of SAM's masks for every detected box, and it is written as the pipeline writes masks
    detections = gsam.detect(image, NOUNS)
    assert len(detections) == 10  # every query
    np.testing.assert_array_equal(mask, gsam.segment(image, [d.box for d in detections]).any(axis=0))
    written = np.asarray(Image.open(save_mask(mask, tmp_path / "mask_cat.png")))
    assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 255}


def test_detect_reads_boxes_and_phrases_as_gen_mask_does(detector_checkpoint, detector_config, text_encoder):
    gsam = original("sam_hq", detector_checkpoint, detector_config, text_encoder, box_threshold=0.0,
                    text_threshold=0.0)
    image = photo(80, 60)
    detections = gsam.detect(image, NOUNS)
    for detection in detections:
        x0, y0, x1, y1 = detection.box
        assert x0 <= x1 and y0 <= y1 and 0.0 < detection.score <= 1.0
        assert "cat" in detection.phrase and "kite" in detection.phrase  # all tokens beat threshold 0
    # the box threshold filters queries by their highest token probability
    highest = max(d.score for d in detections)
    gsam.box_threshold = highest
    assert gsam.detect(image, NOUNS) == []
    with pytest.raises(ValueError, match="st bernard"):
        gsam.detect(image, ["st. bernard"])


@pytest.mark.parametrize("kind", ["sam_hq", "sam"])
def test_segment_returns_one_mask_a_box_at_image_resolution(kind, detector_checkpoint, detector_config, text_encoder):
    gsam = original(kind, detector_checkpoint, detector_config, text_encoder)
    image = photo(90, 50)
    masks = gsam.segment(image, [(0, 0, 45, 25), (10.5, 5, 89, 49)])
    assert masks.dtype == np.bool_ and masks.shape == (2, 50, 90)
    assert gsam.segment(image, []).shape == (0, 50, 90)
    with pytest.raises(ValueError, match="x0, y0, x1, y1"):
        gsam.segment(image, [(0, 0, 1)])


def test_checkpoint_loads_the_saved_weights(detector_checkpoint, detector_config, text_encoder):
    gsam = original("sam_hq", detector_checkpoint, detector_config, text_encoder)
    saved = torch.load(detector_checkpoint, map_location="cpu")["model"]
    for name, value in gsam.detector.state_dict().items():
        torch.testing.assert_close(value, saved[name], msg=name)


def test_sam_registry_checkpoint_round_trip(tmp_path):
    """``sam_model_registry["vit_b"](checkpoint=None)`` (random weights), saved, loaded by build_original_segmenter
    the way sam_vit_h_4b8939.pth is; a file of other weights is refused."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    state = {name: value for name, value in sam_model_registry["vit_b"](checkpoint=None).state_dict().items()
             if name.startswith(("mask_decoder", "prompt_encoder"))}  # a partial file: the warning path, less disk
    path = tmp_path / "sam_vit_b.pth"
    torch.save(state, path)
    model = build_original_segmenter("sam", path, "vit_b")
    for name, value in state.items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)

    torch.save({"something.else": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ModelLoadError, match="holds no parameter"):
        build_original_segmenter("sam", tmp_path / "wrong.pth", "vit_b")
    with pytest.raises(ValueError, match="vit_h"):
        build_original_segmenter("sam", None, "vit_x")


def test_missing_checkpoints_name_the_files(tmp_path, detector_config, text_encoder):
    with pytest.raises(ModelLoadError, match="groundingdino_swint_ogc.pth") as caught:
        GroundedSAM.from_pretrained(backend="original", device="cpu")
    assert "sam_hq_vit_h.pth" in str(caught.value) and "GroundingDINO_SwinT_OGC.py" in str(caught.value)
    with pytest.raises(ModelLoadError, match="no Grounding DINO checkpoint at") as caught:
        GroundedSAM.from_pretrained(str(tmp_path / "absent.pth"), None, backend="original", device="cpu",
                                    detector_config=detector_config, text_encoder=text_encoder,
                                    segmenter=tiny_sam("sam_hq"))
    assert "IDEA-Research/GroundingDINO/releases" in str(caught.value)
    with pytest.raises(ModelLoadError, match="groundingdino_swinb_cogcoor.pth"):
        GroundedSAM.from_pretrained(backend="original", device="cpu", settings="grounded-sam-script")


def test_prepare_writes_the_authors_dataset_format_with_this_backend(detector_checkpoint, detector_config,
                                                                     text_encoder, tmp_path):
    """``prepare_dataset`` takes the original backend as it takes the transformers one (thresholds 0: the first
    noun of each caption gets a mask, the others null)."""
    import json

    from tokencompose.prepare import prepare_dataset

    images = tmp_path / "images"
    images.mkdir()
    captions = [{"file_name": "a.png", "text": "a cat and a kite"}, {"file_name": "b.png", "text": "the kite"}]
    for index, record in enumerate(captions):
        photo(70 + index, 50).save(images / record["file_name"])
    captions_file = tmp_path / "captions.jsonl"
    captions_file.write_text("".join(json.dumps(record) + "\n" for record in captions), encoding="utf-8")
    gsam = original("sam_hq", detector_checkpoint, detector_config, text_encoder, box_threshold=0.0,
                    text_threshold=0.0)
    report = prepare_dataset(images, captions_file, tmp_path / "dataset", gsam, progress=False,
                             tagger=lambda tokens: ["NN" if token in ("cat", "kite") else "DT" for token in tokens])
    assert report.written == 2
    records = [json.loads(line) for line in (tmp_path / "dataset" / "metadata.jsonl").read_text().splitlines()]
    assert [record["attn_list"] for record in records] == [[["cat", "seg/a/mask_cat.png"], ["kite", None]],
                                                           [["kite", "seg/b/mask_kite.png"]]]
    with Image.open(tmp_path / "dataset" / "seg" / "b" / "mask_kite.png") as png:
        assert png.size == (71, 50) and png.mode == "L" and set(np.unique(np.asarray(png))) <= {0, 255}
