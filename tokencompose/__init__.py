"""tokencompose: TokenCompose (Wang et al., CVPR 2024) as a small, tested package.

The pipeline, one module a stage (see DESIGN.md):
``nouns`` -> ``masks`` -> ``tokens`` -> ``data`` -> ``attention`` + ``losses`` -> ``train`` -> ``sample``
-> ``evaluate``. ``toyworld`` is the offline world with exact masks every stage can run on.
"""

__version__ = "0.1.0"
