"""The paper's published numbers (Wang et al., TokenCompose, CVPR 2024), kept in one place so that notebooks
print them from code and compute what they say about them (which k gains most, which method is best).

- Table 1, COCO MultiGen: MG_2..MG_5 = % of images in which at least k of the 5 named COCO categories are
  detected (mean over the seed index), 1000 prompts x 10 images, OWLv2;
- Table 1, VISOR object accuracy (OA): % of images of "a {A} {relation} a {B}" in which both A and B are
  detected (OWL-ViT);
- Table 2, the ablation on SD 1.4: VISOR OA of the four fine-tunings (24k steps each).
"""

from __future__ import annotations

from collections.abc import Mapping

#: Table 1, COCO MultiGen, MG_k (k = 2..5), mean over the seed index
TABLE1_MULTIGEN_COCO: dict[str, dict[int, float]] = {
    "SD 1.4": {2: 90.72, 3: 50.74, 4: 11.68, 5: 0.88},
    "Attend-and-Excite": {2: 93.64, 3: 65.10, 4: 28.01, 5: 6.01},
    "TokenCompose": {2: 98.08, 3: 76.16, 4: 28.81, 5: 3.28},
}
#: Table 1, VISOR object accuracy (%)
TABLE1_OBJECT_ACCURACY: dict[str, float] = {"SD 1.4": 29.86, "Attend-and-Excite": 45.13, "TokenCompose": 52.15}
#: Table 2, VISOR object accuracy (%) of the four fine-tunings of SD 1.4 (same steps and data)
TABLE2_OBJECT_ACCURACY: dict[str, float] = {"L_LDM only": 38.02, "+ L_pixel": 37.46, "+ L_token": 49.85,
                                            "+ L_token + L_pixel": 52.15}


def gains(method: str = "TokenCompose", over: str = "SD 1.4",
          table: Mapping[str, Mapping[int, float]] = TABLE1_MULTIGEN_COCO) -> dict[int, float]:
    """Points ``method`` gains over ``over`` at each k of ``table`` (``{k: method - over}``)."""
    for name in (method, over):
        if name not in table:
            raise KeyError(f"{name!r} is not a row of the table (rows: {list(table)})")
    return {k: table[method][k] - table[over][k] for k in table[over]}


def largest_gain(method: str = "TokenCompose", over: str = "SD 1.4",
                 table: Mapping[str, Mapping[int, float]] = TABLE1_MULTIGEN_COCO) -> tuple[int, float]:
    """``(k, points)`` of the k where ``method`` gains most over ``over``."""
    by_k = gains(method, over, table)
    k = max(by_k, key=by_k.get)
    return k, by_k[k]


def best_method(k: int, table: Mapping[str, Mapping[int, float]] = TABLE1_MULTIGEN_COCO) -> str:
    """The row of ``table`` with the highest MG_k."""
    return max(table, key=lambda name: table[name][k])
