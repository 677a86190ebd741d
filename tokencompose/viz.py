"""Figures for the notebooks: masks over images, attention heat maps, POS tags, sample grids, loss curves.

Every function builds a new ``matplotlib.figure.Figure`` (no ``pyplot`` state, no global settings) and
returns it; a notebook shows it by leaving it as the cell's last value, a script saves it with
``fig.savefig(path)``. Figures are small on purpose (``dpi`` 80 by default, few panels), so notebooks
committed with their outputs stay small.

Usage::

    from tokencompose import viz
    fig = viz.show_masks(scene.image, scene.masks)                 # one panel per noun, mask over image
    fig = viz.attention_maps_figure({"up_16": {"circle": m, ...}})  # rows = layer groups, columns = tokens
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

__all__ = [
    "attention_comparison",
    "attention_maps_figure",
    "loss_curves",
    "pos_tags_figure",
    "sample_grid",
    "show_masks",
    "to_numpy_image",
    "token_heatmap",
]

#: Default resolution of every figure (dots per inch): small PNGs in committed notebooks.
DPI = 80
#: Side of one panel in inches.
PANEL = 1.8
#: Colour of a mask drawn over its image (shown dimmed and in grey, so the mask is the only colour).
MASK_COLOUR = "#00e5ff"


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


def _new_figure(rows: int, cols: int, panel: float = PANEL, dpi: int = DPI,
                extra_height: float = 0.3) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(panel * cols, panel * rows + extra_height), dpi=dpi, layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, cols, squeeze=False))
    return figure, axes


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def show_masks(image: Any, masks: Mapping[str, Any], title: str | None = None, alpha: float = 0.75,
               dpi: int = DPI) -> Figure:
    """The image, then one panel per noun with its mask drawn in cyan over the image (dimmed, grey).

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
    figure, axes = _new_figure(1, 1 + len(masks), dpi=dpi)
    axes = axes[0]
    axes[0].imshow(picture, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    mask_colour = ListedColormap([MASK_COLOUR])
    grey = picture.mean(axis=-1) if picture.ndim == 3 else picture
    for ax, (noun, mask) in zip(axes[1:], masks.items(), strict=True):
        ax.imshow(grey * 0.5, interpolation="nearest", cmap="gray", vmin=0, vmax=1)  # dimmed, without colour
        if mask is None:
            ax.text(0.5, 0.5, "no mask", color="white", ha="center", va="center", transform=ax.transAxes)
        else:
            mask_array = _as_array(mask).astype(np.float32)
            if mask_array.ndim != 2:
                raise ValueError(f"the mask of {noun!r} must be 2-D [H, W], got shape {mask_array.shape}")
            overlay = np.ma.masked_where(mask_array <= 0, mask_array)
            ax.imshow(overlay, cmap=mask_colour, alpha=alpha, vmin=0, vmax=1, interpolation="nearest",
                      extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        ax.set_title(str(noun), fontsize=9)
    for ax in axes:
        _blank(ax)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def token_heatmap(attention: Any, image: Any | None = None, title: str = "", ax=None, alpha: float = 0.6,
                  colorbar: bool = False, dpi: int = DPI) -> Figure:
    """One token's attention map as a heat map, over the image (in grey) when given.

    Args:
        attention: ``[H, W]`` map, or ``[H*W]`` (a square is assumed).
        image: optional image drawn underneath (the map is stretched to its size).
        title: the panel's title (e.g. ``"star (up_16)"``).
        ax: draw into this axes instead of a new figure (returns the axes' figure).
        colorbar: add a colour bar with the map's values (one more axes).

    Returns:
        The Figure (one axes when ``ax`` is None, two with ``colorbar``).
    """
    values = _as_array(attention).astype(np.float32)
    if values.ndim == 1:
        side = math.isqrt(values.size)
        if side * side != values.size:
            raise ValueError(f"a flat attention map must have a square number of pixels, got {values.size}")
        values = values.reshape(side, side)
    if values.ndim != 2:
        raise ValueError(f"attention must be [H, W] or [H*W], got shape {values.shape}")
    if ax is None:
        figure, axes = _new_figure(1, 1, dpi=dpi)
        ax = axes[0, 0]
    else:
        figure = ax.figure
    extent = None
    if image is not None:
        picture = to_numpy_image(image)
        grey = picture.mean(axis=-1) if picture.ndim == 3 else picture  # grey, so the heat colours stand out
        ax.imshow(grey, interpolation="nearest", cmap="gray", vmin=0, vmax=1)
        extent = (-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5)
    heat = ax.imshow(values, cmap="jet", alpha=alpha if image is not None else 1.0, interpolation="nearest",
                     extent=extent)
    if colorbar:
        bar = figure.colorbar(heat, ax=ax, shrink=0.8)
        bar.ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=8)
    _blank(ax)
    return figure


def attention_maps_figure(maps: Mapping[str, Mapping[str, Any]], image: Any | None = None,
                          title: str | None = None, colorbar: bool = False, dpi: int = DPI) -> Figure:
    """A grid of attention heat maps: one row per layer group, one column per token.

    Args:
        maps: ``{group: {token: [H, W] map}}``, e.g. ``{"mid_8": {"circle": m1, "star": m2}, "up_16": ...}``
            (maps of one token averaged over heads and layers, a torch tensor or numpy array each). Every
            row must have the same tokens.
        image: optional image drawn under every map.
        title: the figure's title.
        colorbar: a colour bar beside every map (each map has its own scale); doubles the axes.

    Returns:
        A Figure with ``len(maps) * n_tokens`` axes (plus as many colour bars), titled ``"<token>"`` on the first row; each row's
        first axes carries the group as its y label.
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
    figure, axes = _new_figure(len(groups), len(tokens), panel=1.9 if colorbar else 1.5, dpi=dpi)
    for row, group in enumerate(groups):
        for col, token in enumerate(tokens):
            ax = axes[row, col]
            token_heatmap(maps[group][token], image=image, title=str(token) if row == 0 else "", ax=ax,
                          colorbar=colorbar)
        axes[row, 0].set_ylabel(group, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def attention_comparison(rows: Mapping[str, Sequence[tuple[Any, Mapping[str, Any]]]], title: str | None = None,
                         dpi: int = DPI) -> Figure:
    """Models side by side: one row per model; per prompt, its generated image then each noun's heat map over it.

    Args:
        rows: ``{model label: [(image, {noun: [H, W] map}), ...]}``, one ``(image, maps)`` per prompt, the same
            number of prompts and nouns in every row (e.g. the base model and fine-tuned variants).
        title: the figure's title.

    Returns:
        A Figure with ``len(rows)`` rows and ``sum over prompts (1 + nouns)`` columns; each row's first axes
        carries the model label as its y label, the first row names the nouns.
    """
    if not rows:
        raise ValueError("rows is empty: pass {model label: [(image, {noun: map}), ...]}")
    labels = list(rows)
    layout = [list(maps) for _, maps in rows[labels[0]]]
    for label in labels[1:]:
        if [list(maps) for _, maps in rows[label]] != layout:
            raise ValueError(f"every row needs the same prompts and nouns: {labels[0]!r} has {layout}, "
                             f"{label!r} has {[list(maps) for _, maps in rows[label]]}")
    columns = sum(1 + len(nouns) for nouns in layout)
    figure, axes = _new_figure(len(labels), columns, panel=1.2, dpi=dpi)
    for row, label in enumerate(labels):
        col = 0
        for image, maps in rows[label]:
            ax = axes[row, col]
            ax.imshow(to_numpy_image(image), interpolation="nearest")
            _blank(ax)
            if row == 0:
                ax.set_title("image", fontsize=7)
            col += 1
            for noun, heat in maps.items():
                token_heatmap(heat, image=image, title=noun if row == 0 else "", ax=axes[row, col])
                col += 1
        axes[row, 0].set_ylabel(_wrap(label, 16), fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def pos_tags_figure(tokens: Sequence[str], tags: Sequence[str], highlight: Sequence[bool] | None = None,
                    title: str | None = None, dpi: int = DPI) -> Figure:
    """A two-row table: the caption's tokens and their part-of-speech tags, nouns highlighted.

    Args:
        tokens: the tokens (``nouns.tokenize``).
        tags: one Penn Treebank tag per token.
        highlight: which columns to colour; default: tags containing "NN" (the authors' noun test).
        title: the figure's title (e.g. the tagger's name).

    Returns:
        A Figure with one axes holding the table.
    """
    tokens, tags = list(tokens), list(tags)
    if len(tokens) != len(tags):
        raise ValueError(f"one tag a token: got {len(tokens)} tokens and {len(tags)} tags")
    if not tokens:
        raise ValueError("no tokens to show")
    if highlight is None:
        highlight = ["NN" in tag for tag in tags]
    characters = [max(len(token), len(tag), 2) + 1 for token, tag in zip(tokens, tags, strict=True)]
    width = max(3.0, 0.5 + 0.085 * sum(characters))  # inches: about 0.085 in a character at font size 8
    figure = Figure(figsize=(width, 0.8 + (0.3 if title else 0.0)), dpi=dpi, layout="constrained")
    ax = figure.add_subplot()
    ax.axis("off")
    colours = [["#ffd27f" if h else "white" for h in highlight] for _ in range(2)]
    table = ax.table(cellText=[tokens, tags], rowLabels=["token", "tag"], cellColours=colours,
                     colWidths=[c / sum(characters) for c in characters], cellLoc="center", loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    if title:
        ax.set_title(title, fontsize=9)
    return figure


def sample_grid(images: Sequence[Any], titles: Sequence[str] | None = None, columns: int | None = None,
                title: str | None = None, dpi: int = DPI) -> Figure:
    """Images in a grid (generated samples, dataset examples), one title each.

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
    figure, axes = _new_figure(rows, columns, panel=1.6, dpi=dpi, extra_height=0.3 * rows)
    for index, ax in enumerate(axes.flat):
        if index >= len(images):
            figure.delaxes(ax)
            continue
        ax.imshow(to_numpy_image(images[index]), interpolation="nearest", cmap="gray")
        if titles is not None:
            ax.set_title(_wrap(titles[index], 22), fontsize=7)
        _blank(ax)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


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
    """Loss curves, one panel per loss name, one line per run.

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
    figure, axes = _new_figure(rows, columns, panel=2.4, dpi=dpi)
    for index, ax in enumerate(axes.flat):
        if index >= len(names):
            figure.delaxes(ax)
            continue
        name = names[index]
        for label, run in runs.items():
            if name in run:
                steps, values = run[name]
                ax.plot(steps, values, label=label or None, linewidth=1)
        if not any(name in run for run in runs.values()):
            raise ValueError(f"no series named {name!r}; available: {sorted({k for r in runs.values() for k in r})}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_column if not isinstance(source, Mapping) else "step", fontsize=8)
        ax.tick_params(labelsize=7)
        if log_y:
            ax.set_yscale("log")
        if len(runs) > 1:
            ax.legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
