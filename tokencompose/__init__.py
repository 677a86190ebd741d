"""tokencompose: TokenCompose (Wang et al., CVPR 2024) as a small, tested package.

The method, one module a stage (``tokencompose/README.md`` draws the layers):
``nouns`` -> ``grounding`` / ``masks`` -> ``tokens`` -> ``data`` -> ``attention`` + ``losses`` + ``objective``
-> ``train`` -> ``sample`` -> ``evaluate``. ``tokencompose.toy`` is the offline world with exact masks every
stage can run on; it uses the method, and the method never imports it.
"""

__version__ = "0.1.0"
