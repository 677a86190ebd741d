"""Figures for the notebooks: masks over images, attention heat maps, POS tags, sample grids, loss curves.

Every function builds a new ``matplotlib.figure.Figure`` (no ``pyplot`` state, no global settings) and
returns it; a notebook shows it by leaving it as the cell's last value, a script saves it with
``fig.savefig(path)``. Figures are few panels, so notebooks committed with their outputs stay small.

Every figure is made for a projector, with the choices written once in ``STYLE`` and applied by the same
helpers (``new_figure``, ``style_axes``, ``finish_figure``, ``map_scale``, ``add_colorbar``,
``outline_mask``), never per function:

- maps that are compared share ONE colour scale (``scale="figure"``: every panel; or per row / column /
  panel when those are what is compared), with a colour bar for it;
- a perceptually uniform colormap (``viridis``) for maps, from 0 to the largest value, and a diverging one
  (``RdBu_r``), centred on 0 with symmetric limits, for signed values (gradients, differences);
- the object's mask outlined (white contour at 0.5) on every attention map it is given for;
- 100 dpi, every title, label, tick label, table cell and legend at 9 pt or more.

Usage::

    from tokencompose import viz
    fig = viz.show_masks(scene.image, scene.masks)                 # one panel per noun, mask over image
    fig = viz.attention_maps_figure({"up_16": {"circle": m, ...}},  # rows = layer groups, columns = tokens
                                    masks=scene.masks)              # the nouns' masks outlined
"""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colorbar import Colorbar
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

__all__ = [
    "STYLE",
    "FigureStyle",
    "add_colorbar",
    "attention_comparison",
    "attention_maps_figure",
    "finish_figure",
    "loss_curves",
    "map_scale",
    "new_figure",
    "outline_mask",
    "pos_tags_figure",
    "sample_grid",
    "score_bars",
    "show_masks",
    "style_axes",
    "to_numpy_image",
    "token_heatmap",
]


@dataclass(frozen=True)
class FigureStyle:
    """The choices every figure of this module shares, so that it reads when projected in a lecture room."""

    #: dots per inch of every figure (and of ``savefig``, which uses the figure's): >= 100.
    dpi: int = 100
    #: titles, axis labels, tick labels, colour bar ticks, table cells and notes, in points: >= 9.
    font_size: float = 9.0
    #: the figure's title (``suptitle``), in points.
    title_size: float = 10.0
    #: legend entries, in points: >= 9.
    legend_size: float = 9.0
    #: perceptually uniform colormap for maps of non-negative values (attention, heat maps), from 0 up.
    map_cmap: str = "viridis"
    #: diverging colormap for signed values (gradients, differences), centred on 0 with symmetric limits.
    signed_cmap: str = "RdBu_r"
    #: single-channel pictures (masks shown as images, grey backgrounds under heat maps), from 0 to 1.
    image_cmap: str = "gray"
    #: the object's mask outlined on an attention map: a contour at 0.5 in this colour and width.
    outline_colour: str = "white"
    outline_width: float = 1.0
    #: colour of a mask filled over its (dimmed, grey) image in ``show_masks``.
    mask_colour: str = "#00e5ff"
    #: side of one panel, in inches.
    panel: float = 1.8


#: The one style of every figure here (immutable: pass a figure function's arguments to change a figure).
STYLE = FigureStyle()
#: Default resolution of every figure (dots per inch).
DPI = STYLE.dpi
#: Side of one panel in inches.
PANEL = STYLE.panel
#: Colour of a mask drawn over its image (shown dimmed and in grey, so the mask is the only colour).
MASK_COLOUR = STYLE.mask_colour
#: How maps that are compared share a colour scale: one for the figure, a row, a column, or each panel.
SCALES = ("figure", "row", "column", "panel")


def _as_array(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (detached, on CPU) or a PIL image."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def to_numpy_image(image: Any) -> np.ndarray:
    """An image as ``[H, W, 3]`` float in [0, 1] or ``[H, W]``, ready for ``imshow``.

    Accepts a PIL image, an ``[H, W, 3]`` uint8 / float array, or a ``[3, H, W]`` tensor / array
    (channels first, as in a training batch). Float values are clipped to [0, 1]; images in [-1, 1]
    (SD's range) must be mapped with ``(x + 1) / 2`` first.
    """
    array = _as_array(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # [3, H, W] -> [H, W, 3]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"expected an image [H, W], [H, W, 3] or [3, H, W], got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# the shared style: every figure below is made and finished by these helpers
# --------------------------------------------------------------------------------------------------

def new_figure(rows: int, cols: int, panel: float | tuple[float, float] = PANEL, dpi: int = DPI,
               extra_height: float = 0.3, extra_width: float = 0.0, **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A Figure of ``rows x cols`` panels (constrained layout, ``dpi``) and its axes as a ``[rows, cols]`` array.

    Args:
        panel: side of one panel in inches, or ``(width, height)``.
        extra_height / extra_width: inches added for titles / colour bars.
        subplot_kw: passed to ``Figure.subplots`` (e.g. ``sharey=True``).
    """
    width, height = (panel, panel) if isinstance(panel, (int, float)) else panel
    figure = Figure(figsize=(width * cols + extra_width, height * rows + extra_height), dpi=dpi,
                    layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, cols, squeeze=False, **subplot_kw))
    return figure, axes


def style_axes(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
               blank: bool = False):
    """Sets ``ax``'s title and labels (when given) and its tick labels, offset text and legend in the style's sizes.

    ``blank`` removes the ticks (pictures and maps). Returns ``ax``.
    """
    size = STYLE.font_size
    if title is not None:
        ax.set_title(title, fontsize=size)
    if xlabel is not None:
        ax.set_xlabel(xlabel, fontsize=size)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=size)
    if blank:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.tick_params(labelsize=size)
    for axis in (ax.xaxis, ax.yaxis):
        axis.get_offset_text().set_fontsize(size)  # the "1e-3" of small values (colour bars of gradients)
    legend = ax.get_legend()
    if legend is not None:
        for text in legend.get_texts():
            text.set_fontsize(STYLE.legend_size)
        if legend.get_title().get_text():
            legend.get_title().set_fontsize(STYLE.legend_size)
    return ax


def finish_figure(figure: Figure, title: str | None = None) -> Figure:
    """Gives ``figure`` its title (when given) and the style's text sizes on every axes, colour bars included.

    Every figure function ends here, so no axes of a figure escapes the style. Returns ``figure``.
    """
    for ax in figure.axes:
        style_axes(ax)
        for table in ax.tables:
            table.auto_set_font_size(False)
            table.set_fontsize(STYLE.font_size)
        for text in ax.texts:  # notes written on a panel ("no mask")
            text.set_fontsize(max(text.get_fontsize(), STYLE.font_size))
    if title:
        figure.suptitle(title, fontsize=STYLE.title_size)
    return figure


def map_scale(maps: Sequence[Any], signed: bool | None = None) -> tuple[float, float, str]:
    """``(vmin, vmax, cmap)``: the one colour scale of maps that are compared.

    Signed maps (``signed=True``, or any value below 0 when ``signed`` is None) get the diverging colormap,
    centred on 0 with symmetric limits ``(-m, m)``, ``m`` the largest absolute value; other maps get the
    perceptually uniform colormap from 0 to their largest value (0 is "no attention" in every panel).
    """
    finite = [values[np.isfinite(values)] for values in (_as_array(m).astype(np.float64) for m in maps)]
    finite = [values for values in finite if values.size]
    low = min((float(v.min()) for v in finite), default=0.0)
    high = max((float(v.max()) for v in finite), default=1.0)
    if signed is None:
        signed = low < 0
    if signed:
        limit = max(abs(low), abs(high)) or 1.0
        return -limit, limit, STYLE.signed_cmap
    return 0.0, (high if high > 0 else 1.0), STYLE.map_cmap


def add_colorbar(figure: Figure, mappable, axes, location: str = "right", shrink: float = 1.0) -> Colorbar:
    """One colour bar for ``mappable``'s scale beside ``axes`` (an axes or a list: the panels sharing it)."""
    bar = figure.colorbar(mappable, ax=axes, location=location, shrink=shrink,
                          fraction=0.08 if location in ("left", "right") else 0.06, aspect=15)
    style_axes(bar.ax)
    return bar


def outline_mask(ax, mask: Any, frame: tuple[int, int] | None = None):
    """Outlines ``mask`` (``[h, w]`` bool / 0-1) on ``ax``: a contour at 0.5 in the style's outline colour.

    Args:
        frame: ``(H, W)`` of the picture already drawn on ``ax`` (its pixel ``(i, j)`` at ``x = j, y = i``, as
            ``imshow`` places it); the mask is stretched over it. Default: the mask's own size.

    Returns:
        The ``ContourSet``, or None when the mask is empty or full (nothing to outline).
    """
    values = _as_array(mask).astype(np.float32)
    if values.ndim != 2:
        raise ValueError(f"a mask must be 2-D [H, W], got shape {values.shape}")
    if values.size == 0 or values.min() == values.max():
        return None
    height, width = values.shape
    frame_height, frame_width = frame if frame is not None else values.shape
    padded = np.pad(values, 1)  # zeros around, so an object touching the border gets a closed outline
    # centres of the mask's pixels (and of the padding) in the frame's coordinates
    xs = -0.5 + (np.arange(-1, width + 1) + 0.5) * frame_width / width
    ys = -0.5 + (np.arange(-1, height + 1) + 0.5) * frame_height / height
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    contour = ax.contour(xs, ys, padded, levels=[0.5], colors=STYLE.outline_colour,
                         linewidths=STYLE.outline_width)
    ax.set_xlim(xlim)  # the padding reaches half a pixel past the picture: keep the picture's view
    ax.set_ylim(ylim)
    return contour


def _map_array(attention: Any) -> np.ndarray:
    """An attention map as ``[H, W]`` float: ``[H, W]`` as is, ``[H*W]`` reshaped to a square."""
    values = _as_array(attention).astype(np.float32)
    if values.ndim == 1:
        side = math.isqrt(values.size)
        if side * side != values.size:
            raise ValueError(f"a flat attention map must have a square number of pixels, got {values.size}")
        values = values.reshape(side, side)
    if values.ndim != 2:
        raise ValueError(f"attention must be [H, W] or [H*W], got shape {values.shape}")
    return values


def _draw_map(ax, values: np.ndarray, image: Any | None, mask: Any | None, vmin: float, vmax: float, cmap: str,
              alpha: float = 0.6):
    """Draws one ``[H, W]`` map on ``ax`` (over the grey image when given, mask outlined); returns its image."""
    extent = None
    frame = values.shape
    if image is not None:
        picture = to_numpy_image(image)
        grey = picture.mean(axis=-1) if picture.ndim == 3 else picture  # grey, so the map's colours stand out
        ax.imshow(grey, interpolation="nearest", cmap=STYLE.image_cmap, vmin=0, vmax=1)
        frame = picture.shape[:2]
        extent = (-0.5, frame[1] - 0.5, frame[0] - 0.5, -0.5)
    heat = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha if image is not None else 1.0,
                     interpolation="nearest", extent=extent)
    if mask is not None:
        outline_mask(ax, mask, frame)
    style_axes(ax, blank=True)
    return heat


def _check_masks(masks: Mapping[str, Any] | None, names: Sequence[str], what: str) -> Mapping[str, Any]:
    if masks is None:
        return {}
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{{what}: [H, W] mask}}, got {type(masks).__name__}")
    unknown = [name for name in masks if name not in names]
    if unknown:
        raise ValueError(f"masks for {unknown}, which are not among the {what}s {list(names)}: "
                         f"key the masks by the {what}s of the maps")
    return masks


def _draw_map_grid(figure: Figure, cells: Mapping[tuple[int, int], tuple[Any, np.ndarray, Any, Any]], scale: str,
                   colorbar: bool, signed: bool | None, alpha: float = 0.6) -> None:
    """Draws maps ``{(row, col): (ax, [H, W] values, image or None, mask or None)}``, one colour scale a group.

    The groups are set by ``scale`` (see ``SCALES``); each gets one ``map_scale`` and, with ``colorbar``, one
    colour bar beside its panels (right of a figure / row / panel, under a column).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    groups: dict[Any, list[tuple[int, int]]] = {}
    for row, col in cells:
        key = {"figure": 0, "row": row, "column": col, "panel": (row, col)}[scale]
        groups.setdefault(key, []).append((row, col))
    for positions in groups.values():
        vmin, vmax, cmap = map_scale([cells[p][1] for p in positions], signed)
        heat = None
        for position in positions:
            ax, values, image, mask = cells[position]
            heat = _draw_map(ax, values, image, mask, vmin, vmax, cmap, alpha)
        if colorbar and heat is not None:
            axes = [cells[p][0] for p in positions]
            add_colorbar(figure, heat, axes if len(axes) > 1 else axes[0],
                         location="bottom" if scale == "column" else "right",
                         shrink=0.9 if scale == "panel" else 1.0)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


# --------------------------------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------------------------------

def show_masks(image: Any, masks: Mapping[str, Any], title: str | None = None, alpha: float = 0.75,
               dpi: int = DPI) -> Figure:
    """The image, then one panel per noun with its mask filled in cyan and outlined over the image (dimmed, grey).

    Args:
        image: the image (PIL, ``[H, W, 3]`` or ``[3, H, W]``).
        masks: ``{noun: [H, W] bool / 0-1 mask, or None}`` (``None``: the noun has no mask, as ``null`` in
            ``metadata.jsonl``; its panel says so). Masks of another size than the image are drawn
            stretched over it.
        title: the figure's title (e.g. the caption).
        alpha: opacity of the mask colour.

    Returns:
        A Figure with ``1 + len(masks)`` axes; panel titles are "image" and the nouns.
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{noun: mask}}, got {type(masks).__name__}")
    picture = to_numpy_image(image)
    height, width = picture.shape[:2]
    figure, axes = new_figure(1, 1 + len(masks), dpi=dpi)
    axes = axes[0]
    axes[0].imshow(picture, interpolation="nearest", cmap=STYLE.image_cmap, vmin=0, vmax=1)
    style_axes(axes[0], title="image", blank=True)
    mask_colour = ListedColormap([STYLE.mask_colour], name="mask")
    grey = picture.mean(axis=-1) if picture.ndim == 3 else picture
    for ax, (noun, mask) in zip(axes[1:], masks.items(), strict=True):
        ax.imshow(grey * 0.5, interpolation="nearest", cmap=STYLE.image_cmap, vmin=0, vmax=1)  # dimmed, no colour
        if mask is None:
            ax.text(0.5, 0.5, "no mask", color="white", ha="center", va="center", transform=ax.transAxes,
                    fontsize=STYLE.font_size)
        else:
            mask_array = _as_array(mask).astype(np.float32)
            if mask_array.ndim != 2:
                raise ValueError(f"the mask of {noun!r} must be 2-D [H, W], got shape {mask_array.shape}")
            overlay = np.ma.masked_where(mask_array <= 0, mask_array)
            ax.imshow(overlay, cmap=mask_colour, alpha=alpha, vmin=0, vmax=1, interpolation="nearest",
                      extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            outline_mask(ax, mask_array, (height, width))
        style_axes(ax, title=str(noun), blank=True)
    return finish_figure(figure, title)


def token_heatmap(attention: Any, image: Any | None = None, title: str = "", ax=None, alpha: float = 0.6,
                  colorbar: bool | None = None, dpi: int = DPI, *, mask: Any | None = None,
                  vmin: float | None = None, vmax: float | None = None, signed: bool | None = None) -> Figure:
    """One token's attention map as a heat map, over the image (in grey) when given, its object's mask outlined.

    The colours follow ``map_scale``: ``viridis`` from 0 to the map's largest value, or ``RdBu_r`` centred on 0
    with symmetric limits when the map has negative values (a gradient) or ``signed`` is True.

    Args:
        attention: ``[H, W]`` map, or ``[H*W]`` (a square is assumed).
        image: optional image drawn underneath (the map is stretched to its size).
        title: the panel's title (e.g. ``"star (up_16)"``).
        ax: draw into this axes instead of a new figure (returns the axes' figure).
        colorbar: add a colour bar with the map's values (one more axes); default: yes for a new figure,
            no when drawing into ``ax`` (a grid adds one bar for the panels that share a scale).
        mask: the object's ``[h, w]`` mask, outlined on the map (stretched to the map's / image's size).
        vmin, vmax: the colour scale (e.g. one shared with other panels); default: the map's own.
        signed: force the diverging (True) or the sequential (False) colormap; default: from the values.

    Returns:
        The Figure (one axes when ``ax`` is None and ``colorbar`` is False, two with the colour bar).
    """
    values = _map_array(attention)
    low, high, cmap = map_scale([values], signed)
    low = low if vmin is None else vmin
    high = high if vmax is None else vmax
    if signed is None and vmin is not None and vmax is not None:
        cmap = STYLE.signed_cmap if vmin < 0 else STYLE.map_cmap
    own_figure = ax is None
    if own_figure:
        figure, axes = new_figure(1, 1, dpi=dpi, extra_width=0.4 if colorbar is not False else 0.0)
        ax = axes[0, 0]
        colorbar = True if colorbar is None else colorbar
    else:
        figure = ax.figure
    heat = _draw_map(ax, values, image, mask, low, high, cmap, alpha)
    if colorbar:
        add_colorbar(figure, heat, ax, shrink=0.9)
    style_axes(ax, title=title)
    return finish_figure(figure) if own_figure else figure


def attention_maps_figure(maps: Mapping[str, Mapping[str, Any]], image: Any | None = None,
                          title: str | None = None, colorbar: bool = True, dpi: int = DPI, *,
                          masks: Mapping[str, Any] | None = None, scale: str = "figure",
                          signed: bool | None = None) -> Figure:
    """A grid of attention heat maps: one row per layer group, one column per token, on one colour scale.

    Every map is drawn with the same ``vmin`` / ``vmax`` and colormap (``scale="figure"``), so a brighter
    panel is more attention; one colour bar shows the scale. Pass ``scale="column"`` to compare each token
    across rows only (e.g. a start token that takes most of the attention beside the nouns), ``"row"``
    to compare within rows, ``"panel"`` for panels of different quantities (a map beside its gradients).
    Signed maps (gradients) get a diverging colormap centred on 0 (``map_scale``).

    Args:
        maps: ``{group: {token: [H, W] map}}``, e.g. ``{"mid_8": {"circle": m1, "star": m2}, "up_16": ...}``
            (maps of one token averaged over heads and layers, a torch tensor or numpy array each). Every
            row must have the same tokens.
        image: optional image drawn under every map.
        title: the figure's title.
        colorbar: one colour bar for each shared scale (beside the figure / a row / a panel, under a column).
        masks: optional ``{token: [h, w] mask or None}``: each token's object outlined on its maps in every row
            (stretched to the map's or the image's size).
        scale: which panels share a colour scale: ``"figure"``, ``"row"``, ``"column"`` or ``"panel"``.
        signed: force the diverging (True) or the sequential (False) colormap; default: from the values.

    Returns:
        A Figure with ``len(maps) * n_tokens`` map axes first (row by row), then the colour bars; titled
        ``"<token>"`` on the first row; each row's first axes carries the group as its y label.
    """
    if not maps:
        raise ValueError("maps is empty: pass {group: {token: [H, W] map}}")
    groups = list(maps)
    tokens = list(maps[groups[0]])
    if not tokens:
        raise ValueError(f"group {groups[0]!r} has no token maps")
    for group in groups[1:]:
        if list(maps[group]) != tokens:
            raise ValueError(f"every group needs the same tokens: {groups[0]!r} has {tokens}, "
                             f"{group!r} has {list(maps[group])}")
    masks = _check_masks(masks, tokens, "token")
    bars_right = colorbar and scale in ("figure", "row", "panel")
    figure, axes = new_figure(len(groups), len(tokens), panel=1.6, dpi=dpi,
                              extra_width=0.5 * (len(tokens) if scale == "panel" else 1) if bars_right else 0.0,
                              extra_height=0.3 + (0.4 if colorbar and scale == "column" else 0.0))
    cells = {(row, col): (axes[row, col], _map_array(maps[group][token]), image, masks.get(token))
             for row, group in enumerate(groups) for col, token in enumerate(tokens)}
    _draw_map_grid(figure, cells, scale, colorbar, signed)
    for col, token in enumerate(tokens):
        style_axes(axes[0, col], title=str(token))
    for row, group in enumerate(groups):
        style_axes(axes[row, 0], ylabel=group)
    return finish_figure(figure, title)


def attention_comparison(rows: Mapping[str, Sequence[tuple[Any, Mapping[str, Any]]]], title: str | None = None,
                         dpi: int = DPI, *, masks: Sequence[Mapping[str, Any] | None] | None = None,
                         colorbar: bool = True, scale: str = "figure", signed: bool | None = None) -> Figure:
    """Models side by side: one row per model; per prompt, its generated image then each noun's heat map over it.

    Every heat map shares one colour scale (``scale="figure"``), shown by one colour bar, so the models'
    maps compare directly; ``scale`` as in ``attention_maps_figure`` (a column is one prompt's noun).

    Args:
        rows: ``{model label: [(image, {noun: [H, W] map}), ...]}``, one ``(image, maps)`` per prompt, the same
            number of prompts and nouns in every row (e.g. the base model and fine-tuned variants).
        title: the figure's title.
        masks: optional, one ``{noun: [h, w] mask or None}`` (or None) per prompt: the objects outlined on the
            maps of every row (e.g. a segmentation of the base model's image).
        colorbar: one colour bar for each shared scale.
        scale: which maps share a colour scale: ``"figure"``, ``"row"``, ``"column"`` or ``"panel"``.
        signed: force the diverging (True) or the sequential (False) colormap; default: from the values.

    Returns:
        A Figure with ``len(rows)`` rows and ``sum over prompts (1 + nouns)`` columns of axes first (row by
        row), then the colour bars; each row's first axes carries the model label as its y label, the first
        row names the nouns.
    """
    if not rows:
        raise ValueError("rows is empty: pass {model label: [(image, {noun: map}), ...]}")
    labels = list(rows)
    layout = [list(maps) for _, maps in rows[labels[0]]]
    for label in labels[1:]:
        if [list(maps) for _, maps in rows[label]] != layout:
            raise ValueError(f"every row needs the same prompts and nouns: {labels[0]!r} has {layout}, "
                             f"{label!r} has {[list(maps) for _, maps in rows[label]]}")
    if masks is None:
        masks = [None] * len(layout)
    if len(masks) != len(layout):
        raise ValueError(f"got {len(masks)} masks entries for {len(layout)} prompts: pass one dict (or None) "
                         "a prompt")
    prompt_masks = [_check_masks(m, nouns, "noun") for m, nouns in zip(masks, layout, strict=True)]
    columns = sum(1 + len(nouns) for nouns in layout)
    bars_right = colorbar and scale in ("figure", "row", "panel")
    figure, axes = new_figure(len(labels), columns, panel=1.4, dpi=dpi,
                              extra_width=0.5 * (columns - len(layout) if scale == "panel" else 1) if bars_right
                              else 0.0,
                              extra_height=0.3 + (0.4 if colorbar and scale == "column" else 0.0))
    cells = {}
    for row, label in enumerate(labels):
        col = 0
        for (image, maps), nouns_masks in zip(rows[label], prompt_masks, strict=True):
            ax = axes[row, col]
            ax.imshow(to_numpy_image(image), interpolation="nearest", cmap=STYLE.image_cmap, vmin=0, vmax=1)
            style_axes(ax, title="image" if row == 0 else None, blank=True)
            col += 1
            for noun, heat in maps.items():
                cells[(row, col)] = (axes[row, col], _map_array(heat), image, nouns_masks.get(noun))
                if row == 0:
                    style_axes(axes[row, col], title=noun)
                col += 1
        style_axes(axes[row, 0], ylabel=_wrap(label, 14))
    _draw_map_grid(figure, cells, scale, colorbar, signed)
    return finish_figure(figure, title)


def pos_tags_figure(tokens: Sequence[str], tags: Sequence[str], highlight: Sequence[bool] | None = None,
                    title: str | None = None, dpi: int = DPI) -> Figure:
    """A two-row table: the caption's tokens and their part-of-speech tags, nouns highlighted.

    Args:
        tokens: the tokens (``nouns.tokenize``).
        tags: one Penn Treebank tag per token.
        highlight: which columns to colour; default: tags containing "NN" (the authors' noun test).
        title: the figure's title (e.g. the tagger's name).

    Returns:
        A Figure with one axes holding the table (its title is the axes' title).
    """
    tokens, tags = list(tokens), list(tags)
    if len(tokens) != len(tags):
        raise ValueError(f"one tag a token: got {len(tokens)} tokens and {len(tags)} tags")
    if not tokens:
        raise ValueError("no tokens to show")
    if highlight is None:
        highlight = ["NN" in tag for tag in tags]
    characters = [max(len(token), len(tag), 2) + 1 for token, tag in zip(tokens, tags, strict=True)]
    inches_a_character = 0.0105 * STYLE.font_size  # about the width of a character at the style's font size
    width = max(3.0, 0.6 + inches_a_character * sum(characters))
    figure, axes = new_figure(1, 1, panel=(width, 0.8), dpi=dpi, extra_height=0.3 if title else 0.0)
    ax = axes[0, 0]
    ax.axis("off")
    colours = [["#ffd27f" if h else "white" for h in highlight] for _ in range(2)]
    ax.table(cellText=[tokens, tags], rowLabels=["token", "tag"], cellColours=colours,
             colWidths=[c / sum(characters) for c in characters], cellLoc="center", loc="center")
    style_axes(ax, title=title)
    return finish_figure(figure)


def sample_grid(images: Sequence[Any], titles: Sequence[str] | None = None, columns: int | None = None,
                title: str | None = None, dpi: int = DPI) -> Figure:
    """Images in a grid (generated samples, dataset examples), one title each.

    Single-channel images (masks) share one grey scale from 0 to 1, so equal values look equal in every panel.

    Args:
        images: images (PIL, ``[H, W, 3]``, ``[3, H, W]``), or a ``[N, H, W, 3]`` / ``[N, 3, H, W]`` batch.
        titles: one per image (long captions are wrapped).
        columns: images a row (default: all in one row, at most 6).
        title: the figure's title.

    Returns:
        A Figure with one axes per image (empty cells of the last row are removed).
    """
    images = list(images)
    if not images:
        raise ValueError("no images to show")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    columns = columns or min(len(images), 6)
    rows = math.ceil(len(images) / columns)
    figure, axes = new_figure(rows, columns, panel=1.7, dpi=dpi, extra_height=0.4 * rows)
    for index, ax in enumerate(axes.flat):
        if index >= len(images):
            figure.delaxes(ax)
            continue
        ax.imshow(to_numpy_image(images[index]), interpolation="nearest", cmap=STYLE.image_cmap, vmin=0, vmax=1)
        style_axes(ax, title=_wrap(titles[index], 20) if titles is not None else None, blank=True)
    return finish_figure(figure, title)


def _read_csv_series(path: str | Path, x_column: str) -> dict[str, tuple[list[float], list[float]]]:
    """Numeric columns of a CSV log as ``{column: (steps, values)}``; empty cells are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"loss log {path} not found; pass the CSV a training run wrote")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or x_column not in reader.fieldnames:
            raise ValueError(f"{path}: no {x_column!r} column (columns: {reader.fieldnames}); "
                             "pass x_column= the name of the step column")
        series: dict[str, tuple[list[float], list[float]]] = {}
        for row in reader:
            try:
                step = float(row[x_column])
            except (TypeError, ValueError):
                continue
            for column, cell in row.items():
                if column == x_column or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                steps, values = series.setdefault(column, ([], []))
                steps.append(step)
                values.append(value)
    return series


def loss_curves(source: Mapping[str, Any] | str | Path | Sequence[str | Path], keys: Sequence[str] | None = None,
                x_column: str = "step", log_y: bool = False, title: str | None = None,
                dpi: int = DPI) -> Figure:
    """Loss curves, one panel per loss name, one line per run (named in a legend when there are several).

    Args:
        source: either ``{name: values}`` / ``{name: (steps, values)}`` series (one run), or one or more
            CSV logs with a ``x_column`` column and one column per loss (one run per file, labelled by the
            file's parent folder name, or its stem when runs share a folder).
        keys: the loss names to draw (default: every series / numeric column).
        x_column: the step column of the CSV files.
        log_y: logarithmic y axis.
        title: the figure's title.

    Returns:
        A Figure with one axes per loss name, x label ``x_column`` and the loss name as title.
    """
    runs: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    if isinstance(source, Mapping):
        run: dict[str, tuple[list[float], list[float]]] = {}
        for name, value in source.items():
            if isinstance(value, tuple) and len(value) == 2:
                steps, values = (list(np.ravel(_as_array(v))) for v in value)
            else:
                values = list(np.ravel(_as_array(value)))
                steps = list(range(len(values)))
            if len(steps) != len(values):
                raise ValueError(f"series {name!r}: {len(steps)} steps but {len(values)} values")
            run[str(name)] = (steps, values)
        runs[""] = run
    else:
        paths = [Path(source)] if isinstance(source, (str, Path)) else [Path(p) for p in source]
        if not paths:
            raise ValueError("no CSV files given")
        parents = [p.parent.name for p in paths]
        for path in paths:
            label = path.parent.name if parents.count(path.parent.name) == 1 else path.stem
            runs[label] = _read_csv_series(path, x_column)
    names = list(keys) if keys is not None else list(dict.fromkeys(k for run in runs.values() for k in run))
    if not names:
        raise ValueError("no series to draw")
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure, axes = new_figure(rows, columns, panel=2.4, dpi=dpi)
    for index, ax in enumerate(axes.flat):
        if index >= len(names):
            figure.delaxes(ax)
            continue
        name = names[index]
        for label, run in runs.items():
            if name in run:
                steps, values = run[name]
                ax.plot(steps, values, label=label or None, linewidth=1.5)
        if not any(name in run for run in runs.values()):
            raise ValueError(f"no series named {name!r}; available: {sorted({k for r in runs.values() for k in r})}")
        if log_y:
            ax.set_yscale("log")
        if len(runs) > 1:
            ax.legend(fontsize=STYLE.legend_size)
        style_axes(ax, title=name, xlabel=x_column if not isinstance(source, Mapping) else "step")
    return finish_figure(figure, title)


def score_bars(panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]], categories: Sequence[str],
               ylabel: str = "%", title: str | None = None, ylim: tuple[float, float] | None = None) -> Figure:
    """Grouped bars with error bars: one panel per entry of ``panels`` (e.g. "unseen", "seen"), one group per
    category (e.g. ``MG1`` .. ``MG4``), one bar per series (model) with ``(mean, low, high)`` (an interval, or
    mean -+ std). The panels share the y axis, so their bars compare."""
    if not panels:
        raise ValueError("no panels to draw")
    figure, axes = new_figure(1, len(panels), panel=(1.1 + 0.9 * len(categories), 3.0), sharey=True)
    positions = np.arange(len(categories))
    for ax, (panel, series) in zip(axes.flat, panels.items(), strict=True):
        width = 0.8 / max(1, len(series))
        for index, (label, values) in enumerate(series.items()):
            if len(values) != len(categories):
                raise ValueError(f"{panel} / {label}: {len(values)} values for {len(categories)} categories")
            means = np.array([v[0] for v in values], dtype=float)
            errors = np.array([[v[0] - v[1] for v in values], [v[2] - v[0] for v in values]], dtype=float)
            ax.bar(positions + (index - (len(series) - 1) / 2) * width, means, width, yerr=errors, capsize=2,
                   label=label)
        ax.set_xticks(positions, list(categories))
        if ylim is not None:
            ax.set_ylim(*ylim)
        style_axes(ax, title=panel, ylabel=ylabel if ax is axes.flat[0] else None)
    axes.flat[0].legend(fontsize=STYLE.legend_size)
    return finish_figure(figure, title)


def early_place_figure(rows: Mapping[str, Mapping[str, Any]], title: str | None = None, dpi: int = DPI) -> Figure:
    """Where each noun's attention sits early in sampling, and which objects were drawn: one row a model.

    Args:
        rows: ``{row label: example}``, each example as ``toy.probes.place_examples`` gives it (``image``,
            ``nouns``, ``drawn``, ``early`` ``[nouns, H, W]``, ``regions`` of the drawn objects).

    Each row shows the final image, then every noun's early map over it (grey), with the outline of every drawn
    object's final region; a missing noun's title says so. The maps of a row share one colour scale and bar.
    """
    if not rows:
        raise ValueError("no rows to draw")
    columns = 1 + max(len(example["nouns"]) for example in rows.values())
    figure, axes = new_figure(len(rows), columns, dpi=dpi, extra_width=0.6, extra_height=0.3 * len(rows))
    cells = {}
    for r, (label, example) in enumerate(rows.items()):
        image = to_numpy_image(example["image"])
        axes[r, 0].imshow(image, interpolation="nearest")
        style_axes(axes[r, 0], title=_wrap(label, 22), blank=True)
        drawn_union = None
        for region in example["regions"].values():
            region = _as_array(region).astype(bool)
            drawn_union = region if drawn_union is None else drawn_union | region
        for c in range(1, 1 + len(example["nouns"])):
            cells[(r, c)] = (axes[r, c], _map_array(example["early"][c - 1]), image, drawn_union)
        for c in range(1 + len(example["nouns"]), columns):
            figure.delaxes(axes[r, c])
    _draw_map_grid(figure, cells, "row", colorbar=True, signed=False)
    for (r, c), (ax, _, _, _) in cells.items():
        example = list(rows.values())[r]
        noun = example["nouns"][c - 1]
        style_axes(ax, title=f"{noun}: {'drawn' if example['drawn'][c - 1] else 'MISSING'}")
    return finish_figure(figure, title)
