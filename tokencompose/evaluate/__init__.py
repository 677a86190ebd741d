"""Evaluation (paper Sec. 4): MultiGen MG1-5, VISOR object accuracy, latency, segmentation transfer, FID.

``detectors`` holds the interface every detector implements (``Detection``, ``Detector``) and the OWL
detectors; the toy world's colour-and-shape detector is ``tokencompose.toy.detector.ToyDetector``. ``cli`` is
the ``evaluate`` command line, the one module here that names the toy world.
"""

from tokencompose.evaluate.detectors import Detection, Detector

__all__ = ["Detection", "Detector"]
