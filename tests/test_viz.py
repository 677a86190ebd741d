"""Figures of viz.py: each returns a Figure with the expected panels, titles and labels (Agg, no display)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tokencompose import viz  # noqa: E402


def _image(size=8):
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[2:5, 2:5] = (255, 0, 0)
    return image


def _titles(figure):
    return [ax.get_title() for ax in figure.axes]


def test_show_masks_one_panel_per_noun_plus_image():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:5, 2:5] = True
    figure = viz.show_masks(_image(), {"circle": mask, "star": None}, title="a photo of a circle and a star.")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3
    assert _titles(figure) == ["image", "circle", "star"]
    assert figure._suptitle.get_text() == "a photo of a circle and a star."
    # the "no mask" note is written on the panel of the noun without a mask
    assert [t.get_text() for t in figure.axes[2].texts] == ["no mask"]
    # the overlay hides pixels outside the mask: 9 of 64 are shown
    overlay = figure.axes[1].images[1].get_array()
    assert int((~np.ma.getmaskarray(overlay)).sum()) == 9


def test_show_masks_rejects_a_list():
    with pytest.raises(TypeError, match="dict"):
        viz.show_masks(_image(), [np.zeros((8, 8))])


def test_token_heatmap_accepts_flat_tensor_and_checks_square():
    figure = viz.token_heatmap(torch.arange(16.0), title="star (up_16)")
    assert len(figure.axes) == 1
    assert figure.axes[0].get_title() == "star (up_16)"
    assert figure.axes[0].images[0].get_array().shape == (4, 4)
    with pytest.raises(ValueError, match="square"):
        viz.token_heatmap(np.zeros(15))


def test_attention_maps_figure_rows_are_groups_columns_tokens():
    maps = {
        "mid_8": {"circle": torch.rand(8, 8), "star": torch.rand(8, 8)},
        "up_16": {"circle": np.random.rand(16, 16), "star": np.random.rand(16, 16)},
    }
    figure = viz.attention_maps_figure(maps, image=_image(32), title="per token")
    assert len(figure.axes) == 4
    assert _titles(figure) == ["circle", "star", "", ""]
    assert figure.axes[0].get_ylabel() == "mid_8"
    assert figure.axes[2].get_ylabel() == "up_16"
    with_bars = viz.attention_maps_figure({"4 x 4": {"A": np.eye(4), "grad": -np.eye(4)}}, colorbar=True)
    assert len(with_bars.axes) == 4  # two maps, two colour bars
    assert with_bars.axes[1].images[0].get_array().min() == -1.0
    with pytest.raises(ValueError, match="same tokens"):
        viz.attention_maps_figure({"a": {"x": np.zeros((2, 2))}, "b": {"y": np.zeros((2, 2))}})


def test_pos_tags_figure_is_a_table_with_nouns_highlighted():
    figure = viz.pos_tags_figure(["a", "teddy", "bear"], ["DT", "NN", "NN"], title="perceptron")
    assert len(figure.axes) == 1
    assert figure.axes[0].get_title() == "perceptron"
    table = figure.axes[0].tables[0]
    cells = table.get_celld()
    assert cells[(0, 1)].get_text().get_text() == "teddy"
    assert cells[(1, 2)].get_text().get_text() == "NN"
    # "a" (DT) is not highlighted, "teddy" (NN) is
    assert cells[(0, 0)].get_facecolor() != cells[(0, 1)].get_facecolor()
    with pytest.raises(ValueError, match="one tag a token"):
        viz.pos_tags_figure(["a"], [])


def test_sample_grid_removes_empty_cells():
    images = [_image(), torch.rand(3, 8, 8), _image(), _image(), _image()]
    figure = viz.sample_grid(images, titles=list("abcde"), columns=3)
    assert len(figure.axes) == 5
    assert _titles(figure) == list("abcde")
    with pytest.raises(ValueError, match="titles"):
        viz.sample_grid(images, titles=["only one"])


def test_loss_curves_from_series_and_from_csv(tmp_path):
    figure = viz.loss_curves({"loss": [3.0, 2.0, 1.0], "token": ([0, 10, 20], [0.5, 0.4, 0.3])})
    assert len(figure.axes) == 2
    assert _titles(figure) == ["loss", "token"]
    assert figure.axes[1].get_xlabel() == "step"
    assert list(figure.axes[1].lines[0].get_xdata()) == [0, 10, 20]

    for run, values in (("base", "1.0,0.5"), ("tokencompose", "0.9,0.4")):
        (tmp_path / run).mkdir()
        first, second = values.split(",")
        (tmp_path / run / "log.csv").write_text(f"step,loss\n0,{first}\n5,{second}\n", encoding="utf-8")
    paths = [tmp_path / "base" / "log.csv", tmp_path / "tokencompose" / "log.csv"]
    figure = viz.loss_curves(paths)
    assert len(figure.axes) == 1
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert labels == ["base", "tokencompose"]
    assert list(figure.axes[0].lines[1].get_ydata()) == [0.9, 0.4]
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        viz.loss_curves(tmp_path / "missing.csv")


def test_to_numpy_image_channels_first_and_uint8():
    chw = torch.zeros(3, 4, 5)
    chw[0] = 1.0
    image = viz.to_numpy_image(chw)
    assert image.shape == (4, 5, 3)
    assert image[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert viz.to_numpy_image(np.full((2, 2, 3), 255, dtype=np.uint8)).max() == 1.0


def test_attention_comparison_rows_are_models_columns_image_then_nouns():
    prompts = [(_image(32), {"circle": torch.rand(32, 32), "star": np.random.rand(32, 32)}),
               (_image(32), {"ring": torch.rand(32, 32)})]
    figure = viz.attention_comparison({"base": prompts, "both": prompts}, title="before / after")
    assert len(figure.axes) == 2 * (3 + 2)
    assert _titles(figure)[:5] == ["image", "circle", "star", "image", "ring"]
    assert _titles(figure)[5:] == [""] * 5  # nouns named once, on the first row
    assert figure.axes[0].get_ylabel() == "base" and figure.axes[5].get_ylabel() == "both"
    with pytest.raises(ValueError, match="same prompts and nouns"):
        viz.attention_comparison({"base": prompts, "both": prompts[:1]})
    with pytest.raises(ValueError, match="rows is empty"):
        viz.attention_comparison({})
