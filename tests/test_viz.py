"""Figures of viz.py: each returns a Figure with the expected panels, titles and labels (Agg, no display)."""

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

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
    assert len(figure.axes) == 2  # the map and its colour bar
    assert figure.axes[0].images[0].colorbar is not None
    assert len(viz.token_heatmap(torch.arange(16.0), colorbar=False).axes) == 1
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
    assert len(figure.axes) == 5  # four maps, then the one colour bar of their shared scale
    assert _titles(figure)[:4] == ["circle", "star", "", ""]
    assert figure.axes[0].get_ylabel() == "mid_8"
    assert figure.axes[2].get_ylabel() == "up_16"
    assert len(viz.attention_maps_figure(maps, colorbar=False).axes) == 4
    with_bars = viz.attention_maps_figure({"4 x 4": {"A": np.eye(4), "grad": -np.eye(4)}}, colorbar=True,
                                          scale="panel")
    assert len(with_bars.axes) == 4  # two maps, a colour bar each (scale="panel")
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
    assert len(figure.axes) == 2 * (3 + 2) + 1  # the panels, then one colour bar
    assert _is_colorbar(figure.axes[-1], figure)
    assert _titles(figure)[:5] == ["image", "circle", "star", "image", "ring"]
    assert _titles(figure)[5:10] == [""] * 5  # nouns named once, on the first row
    assert figure.axes[0].get_ylabel() == "base" and figure.axes[5].get_ylabel() == "both"
    with pytest.raises(ValueError, match="same prompts and nouns"):
        viz.attention_comparison({"base": prompts, "both": prompts[:1]})
    with pytest.raises(ValueError, match="rows is empty"):
        viz.attention_comparison({})


# --------------------------------------------------------------------------------------------------
# the shared style: one colour scale for compared panels, colour bars, colormaps, mask outlines, sizes
# --------------------------------------------------------------------------------------------------

def _mask(size=8, start=2, stop=5):
    mask = np.zeros((size, size), dtype=bool)
    mask[start:stop, start:stop] = True
    return mask


def _map_images(figure):
    """The images of the attention maps (the colormapped ones), panel by panel, colour bars left out."""
    return [image for ax in figure.axes for image in ax.images
            if image.get_cmap().name in (viz.STYLE.map_cmap, viz.STYLE.signed_cmap)]


def _is_colorbar(ax, figure):
    return any(getattr(image, "colorbar", None) is not None and image.colorbar.ax is ax
               for other in figure.axes for image in other.images)


def _colorbars(figure):
    return [ax for ax in figure.axes if _is_colorbar(ax, figure)]


def _contours(ax):
    return [c for c in ax.collections if isinstance(c, ContourSet)]


def _every_figure(folder):
    prompts = [(_image(32), {"circle": torch.rand(16, 16), "star": 2 * np.random.rand(16, 16)})]
    logs = []
    for run in ("base", "tokencompose"):
        (folder / run).mkdir()
        logs.append(folder / run / "log.csv")
        logs[-1].write_text("step,ldm,token\n0,1.0,0.5\n5,0.8,0.3\n", encoding="utf-8")
    return {
        "show_masks": viz.show_masks(_image(), {"circle": _mask(), "star": None}, title="a caption"),
        "token_heatmap": viz.token_heatmap(np.random.rand(8, 8) * 1e-3, title="t", mask=_mask()),
        "attention_maps_figure": viz.attention_maps_figure(
            {"mid_8": {"circle": np.random.rand(8, 8), "star": np.random.rand(8, 8)},
             "grad": {"circle": np.random.randn(8, 8), "star": np.random.randn(8, 8)}},
            image=_image(32), masks={"circle": _mask()}, title="maps", scale="row"),
        "attention_comparison": viz.attention_comparison({"base model": prompts, "fine-tuned": prompts},
                                                         title="before / after"),
        "pos_tags_figure": viz.pos_tags_figure(["a", "teddy", "bear"], ["DT", "NN", "NN"], title="tags"),
        "sample_grid": viz.sample_grid([_image(), np.random.rand(8, 8)], titles=["a long caption " * 3, "b"],
                                       title="samples"),
        "loss_curves": viz.loss_curves({"ldm": [3.0, 2.0], "token": ([0, 10], [1e-4, 5e-5])}, log_y=True),
        "loss_curves_legend": viz.loss_curves(logs, title="two runs"),
    }


def test_every_figure_is_100_dpi_with_9_point_text_and_no_jet(tmp_path):
    figures = _every_figure(tmp_path)
    assert figures["loss_curves_legend"].axes[0].get_legend() is not None  # the legend's text is checked too
    for name, figure in figures.items():
        assert figure.dpi >= 100, name
        figure.savefig(io.BytesIO(), format="png")  # draws: tick labels, legends and colour bars exist now
        texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text()]
        texts += [cell.get_text() for ax in figure.axes for table in ax.tables for cell in table.get_celld().values()]
        assert texts, name
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 9]
        assert not small, f"{name}: text under 9 pt: {small}"
        mappables = [m for ax in figure.axes for m in (*ax.images, *ax.collections)
                     if m.get_array() is not None and not isinstance(m, ContourSet)]  # outlines: one colour
        colormaps = {m.get_cmap().name for m in mappables}
        assert "jet" not in colormaps, name
        assert colormaps <= {viz.STYLE.map_cmap, viz.STYLE.signed_cmap, viz.STYLE.image_cmap, "mask"}, \
            f"{name}: {colormaps}"
        for ax in figure.axes:
            for outline in _contours(ax):
                assert outline.get_edgecolor().tolist() == [[1.0, 1.0, 1.0, 1.0]], name  # white


def test_compared_maps_share_one_colour_scale_and_one_colorbar():
    low, high = np.full((4, 4), 0.1), np.full((4, 4), 0.1)
    high[0, 0] = 0.8
    figure = viz.attention_maps_figure({"mid_8": {"circle": low, "star": high},
                                        "up_16": {"circle": torch.rand(8, 8) * 0.5, "star": np.zeros((8, 8))}})
    images = _map_images(figure)
    assert len(images) == 4
    assert [image.get_clim() for image in images] == [pytest.approx((0.0, 0.8))] * 4  # from 0 to the largest value
    assert {image.get_cmap().name for image in images} == {"viridis"}
    bars = _colorbars(figure)
    assert len(bars) == 1
    assert bars[0].get_ylim() == pytest.approx((0.0, 0.8))
    # per-panel scales only when asked
    apart = viz.attention_maps_figure({"row": {"circle": low, "star": high * 0.5}}, scale="panel")
    assert [image.get_clim()[1] for image in _map_images(apart)] == pytest.approx([0.1, 0.4])
    assert len(_colorbars(apart)) == 2
    with pytest.raises(ValueError, match="scale must be one of"):
        viz.attention_maps_figure({"row": {"circle": low}}, scale="token")


def test_column_scale_shares_within_a_token_across_rows():
    maps = {"a": {"start": np.full((4, 4), 0.9), "circle": np.full((4, 4), 0.02)},
            "b": {"start": np.full((4, 4), 0.6), "circle": np.full((4, 4), 0.05)}}
    figure = viz.attention_maps_figure(maps, scale="column")
    clims = [image.get_clim()[1] for image in _map_images(figure)]  # row by row: a.start, a.circle, b.start, ...
    assert clims == pytest.approx([0.9, 0.05, 0.9, 0.05])
    assert len(_colorbars(figure)) == 2


def test_signed_maps_get_a_diverging_colormap_symmetric_around_zero():
    gradient = np.linspace(-0.2, 0.5, 16).reshape(4, 4)
    figure = viz.attention_maps_figure({"4 x 4": {"grad": gradient, "A": np.eye(4) * 0.1}})
    for image in _map_images(figure):
        low, high = image.get_clim()
        assert low == pytest.approx(-high) and high == pytest.approx(0.5)
        assert image.get_cmap().name == "RdBu_r"
    single = viz.token_heatmap(-gradient)
    assert single.axes[0].images[0].get_clim() == pytest.approx((-0.5, 0.5))
    assert viz.map_scale([np.eye(2)], signed=True) == (-1.0, 1.0, "RdBu_r")
    assert viz.map_scale([np.eye(2) * 3]) == (0.0, 3.0, "viridis")
    assert viz.map_scale([np.zeros((2, 2))]) == (0.0, 1.0, "viridis")  # nothing to see: a scale all the same


def test_masks_are_outlined_on_the_attention_maps_they_belong_to():
    maps = {"mid_8": {"circle": np.random.rand(8, 8), "star": np.random.rand(8, 8)},
            "up_16": {"circle": np.random.rand(16, 16), "star": np.random.rand(16, 16)}}
    figure = viz.attention_maps_figure(maps, image=_image(32), masks={"circle": _mask(), "star": None})
    circle, star = [figure.axes[0], figure.axes[2]], [figure.axes[1], figure.axes[3]]
    assert all(len(_contours(ax)) == 1 for ax in circle)
    assert not any(_contours(ax) for ax in star)
    # the 8 x 8 mask's pixels 2..4 over the 32 x 32 image: the outline follows pixels 8..19's edges
    vertices = np.concatenate([path.vertices for path in _contours(circle[0])[0].get_paths()])
    assert vertices.min(axis=0) == pytest.approx([7.5, 7.5])
    assert vertices.max(axis=0) == pytest.approx([19.5, 19.5])
    assert circle[0].get_xlim() == pytest.approx((-0.5, 31.5))  # the outline leaves the view on the image
    assert _contours(circle[0])[0].get_edgecolor()[0].tolist() == [1.0, 1.0, 1.0, 1.0]  # white
    no_masks = viz.attention_maps_figure(maps)
    assert not any(_contours(ax) for ax in no_masks.axes)
    # without an image the outline is in the map's own pixels; a mask at the border is closed along it
    border = viz.token_heatmap(np.random.rand(4, 4), mask=_mask(8, 0, 4))
    vertices = np.concatenate([path.vertices for path in _contours(border.axes[0])[0].get_paths()])
    assert vertices.min(axis=0) == pytest.approx([-0.5, -0.5])
    assert vertices.max(axis=0) == pytest.approx([1.5, 1.5])
    with pytest.raises(ValueError, match="not among the tokens"):
        viz.attention_maps_figure(maps, masks={"cirle": _mask()})


def test_attention_comparison_shares_a_scale_across_models_and_outlines_masks():
    prompts_a = [(_image(32), {"circle": np.full((8, 8), 0.2), "star": np.full((8, 8), 0.3)})]
    prompts_b = [(_image(32), {"circle": np.full((8, 8), 0.9), "star": np.full((8, 8), 0.1)})]
    figure = viz.attention_comparison({"base": prompts_a, "tuned": prompts_b}, masks=[{"star": _mask()}])
    images = _map_images(figure)
    assert len(images) == 4
    assert [image.get_clim() for image in images] == [pytest.approx((0.0, 0.9))] * 4
    assert len(_colorbars(figure)) == 1
    stars = [figure.axes[2], figure.axes[5]]
    assert all(len(_contours(ax)) == 1 for ax in stars)
    assert sum(len(_contours(ax)) for ax in figure.axes) == 2
    with pytest.raises(ValueError, match="masks entries for 1 prompts"):
        viz.attention_comparison({"base": prompts_a}, masks=[None, None])


def test_show_masks_outlines_each_mask_and_sample_grid_shares_the_grey_scale():
    figure = viz.show_masks(_image(), {"circle": _mask(), "star": None})
    assert len(_contours(figure.axes[1])) == 1 and not _contours(figure.axes[2])
    grid = viz.sample_grid([np.full((4, 4), 0.2), np.full((4, 4), 0.6)])
    assert [ax.images[0].get_clim() for ax in grid.axes] == [(0.0, 1.0), (0.0, 1.0)]


def test_score_bars_one_panel_per_split_one_bar_per_series_and_intervals():
    panels = {"unseen": {"a": [(10, 5, 15), (4, 2, 6)], "b": [(20, 10, 30), (8, 6, 10)]},
              "seen": {"a": [(30, 25, 35), (9, 8, 10)], "b": [(40, 35, 45), (12, 10, 14)]}}
    figure = viz.score_bars(panels, ["MG1", "MG2"], ylabel="%")
    axes = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["unseen", "seen"]
    heights = sorted(round(p.get_height()) for p in axes[0].patches)
    assert heights == [4, 8, 10, 20]
    assert axes[0].get_ylim() == axes[1].get_ylim()  # shared y: the splits compare
    assert figure.dpi >= 100
    with pytest.raises(ValueError, match="3 values for 2 categories"):
        viz.score_bars({"x": {"a": [(1, 0, 2)] * 3}}, ["MG1", "MG2"])


def test_early_place_figure_marks_missing_nouns_and_outlines_drawn_objects():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), dtype=bool)
    region[4:12, 4:12] = True
    example = {"image": image, "nouns": ["circle", "star"], "drawn": [True, False],
               "early": np.random.default_rng(0).random((2, 32, 32)), "regions": {"circle": region}}
    figure = viz.early_place_figure({"L_LDM only": example, "grounded": {**example, "nouns": ["circle", "star", "ring"],
                                                                         "drawn": [True, False, True],
                                                                         "early": np.ones((3, 32, 32))}})
    titles = [ax.get_title() for ax in figure.axes]
    assert "star: MISSING" in titles and "circle: drawn" in titles and "ring: drawn" in titles
    # one colour bar a row, and the drawn object outlined on every map (a contour per map panel)
    assert sum(1 for ax in figure.axes if ax.get_label() == "<colorbar>") == 2
    map_panels = [ax for ax in figure.axes if ax.get_title().endswith(("drawn", "MISSING"))]
    assert len(map_panels) == 5 and all(ax.collections for ax in map_panels)
    with pytest.raises(ValueError, match="no rows"):
        viz.early_place_figure({})
