r"""FID, the paper's photorealism column (Table 1: SD 1.4 20.88 -> TokenCompose 20.19 on COCO).

The Fréchet Inception Distance between Inception-v3 pool features of real and generated images,

.. math::

    \mathrm{FID} = \lVert \mu_r - \mu_g \rVert^2 + \operatorname{tr}\big(\Sigma_r + \Sigma_g - 2 (\Sigma_r \Sigma_g)^{1/2}\big),

as the authors computed it: 10k captions of COCO 2017 val (``captions_val2017.json``, drawn with a seed),
one image each at the model's resolution, against the corresponding real images.

Features come from torchmetrics' ``FrechetInceptionDistance`` (the standard TF-Inception weights through
torch-fidelity, downloaded from GitHub on first use). Without them (offline, as on this project's machines)
``fid`` stops with a message saying what to install and that the weights must be reachable once. On the toy
world FID is not meaningful: Inception features of 32 px synthetic shapes say nothing about photorealism
(notebook 06 explains); the toy evaluation is MultiGen with the exact detector.

Usage::

    python -m tokencompose evaluate fid --real DIR --generated DIR
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import linalg

from ..cli_args import ArgumentParser, InputFileError, input_folder
from ..images import open_rgb

logger = logging.getLogger(__name__)


class FIDUnavailableError(RuntimeError):
    """torchmetrics / torch-fidelity or the Inception weights are not available here."""


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the formula above)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: nudge the diagonals, as the reference code does
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def coco_captions(annotation_file: str | Path, n: int = 10_000, seed: int = 0) -> list[dict]:
    """``n`` (image_id, caption) pairs from COCO's ``captions_val2017.json``, one caption per image, seeded."""
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: download COCO 2017 annotations "
                                "(annotations_trainval2017.zip from cocodataset.org) and pass captions_val2017.json")
    data = json.loads(path.read_text())
    by_image: dict[int, str] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], annotation["caption"].strip())
    ids = sorted(by_image)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ids), size=min(n, len(ids)), replace=False)
    return [{"image_id": ids[i], "caption": by_image[ids[i]]} for i in sorted(chosen)]


def _metric(device: str):
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance  # lazy: optional, only for FID
    except ImportError as error:
        raise FIDUnavailableError(
            "FID needs torchmetrics with its image extra: pip install 'torchmetrics[image]' (adds torch-fidelity)"
        ) from error
    try:
        return FrechetInceptionDistance(feature=2048, normalize=False).to(device)
    except Exception as error:  # noqa: BLE001 - the download of the Inception weights fails offline
        raise FIDUnavailableError(
            "could not load the Inception weights FID uses (torch-fidelity downloads "
            "pt_inception-2015-12-05 from GitHub on first use): run once where GitHub is reachable, or copy "
            f"the file into torch's hub cache. ({type(error).__name__}: {error})"
        ) from error


def _batches(paths: list[Path], size: int) -> Iterable:
    for start in range(0, len(paths), size):
        arrays = [np.asarray(open_rgb(p).resize((299, 299), Image.BICUBIC)) for p in paths[start:start + size]]
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # uint8 [B, 3, 299, 299]


def fid(real_dir: str | Path, generated_dir: str | Path, device: str = "cpu", batch_size: int = 32) -> float:
    """FID between the PNG/JPEG images of two folders (raises ``FIDUnavailableError`` offline)."""
    if Path(real_dir).resolve() == Path(generated_dir).resolve():
        raise InputFileError(f"--real and --generated are the same folder ({real_dir}): FID would compare the "
                             "images with themselves (0); pass the real images and the generated ones")
    real = sorted(p for p in Path(real_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    fake = sorted(p for p in Path(generated_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(real) < 2 or len(fake) < 2:
        raise InputFileError(f"FID needs at least 2 images (.png, .jpg, .jpeg) in each folder: found {len(real)} in "
                             f"{real_dir} (--real) and {len(fake)} in {generated_dir} (--generated); pass the folders "
                             "that hold the images (e.g. sample's --out)")
    metric = _metric(device)
    for batch in _batches(real, batch_size):
        metric.update(batch.to(device), real=True)
    for batch in _batches(fake, batch_size):
        metric.update(batch.to(device), real=False)
    return float(metric.compute())


def cli(argv: list[str]) -> int:
    """``python -m tokencompose evaluate fid --real DIR --generated DIR [--device cuda]``."""
    parser = ArgumentParser(prog="tokencompose evaluate fid", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, type=input_folder, help="folder of real images")
    parser.add_argument("--generated", required=True, type=input_folder, help="folder of generated images")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        value = fid(args.real, args.generated, args.device)
    except FIDUnavailableError as error:
        logger.error("%s", error)
        return 1
    print(f"FID {value:.2f}")
    return 0
