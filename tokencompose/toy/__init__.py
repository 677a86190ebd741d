"""The toy world: the offline, CPU-sized world every stage of the method runs in (DESIGN.md, "The toy world").

It sits above the method and uses it; no module of the method imports it (``tests/test_layout.py``).

- ``world``: categories, scenes with exact masks, captions, the dataset on disk, training scenes (``scene_batches``);
- ``detector``: its colour-and-shape detector and the reference masks for segmentation transfer;
- ``pretrain``: the base models' pre-training (L_LDM only) and their cards;
- ``probes``: what a base can do (routing, specificity, composition gates);
- ``ablation``, ``jobs``: the controlled ablation (L_LDM only vs the paper's losses, seeds, sweeps);
- ``demo``: ``make demo``'s main job.
"""
