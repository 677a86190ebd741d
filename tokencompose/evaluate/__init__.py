"""Evaluation (paper Sec. 4): MultiGen MG1-5, VISOR object accuracy, latency, segmentation transfer.

``detectors`` holds the interface every detector implements (``Detection``, ``Detector``); the toy world's
colour-and-shape detector is ``tokencompose.evaluate.toy_detector.ToyDetector``.
"""

from tokencompose.evaluate.detectors import Detection, Detector

__all__ = ["Detection", "Detector"]
