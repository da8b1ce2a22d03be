"""Deployment: a trained run used on new images, exported, or run inside anomalib.

``export`` writes one ONNX graph (images → score maps and image scores), ``engines`` scores
batches with torch or ONNX Runtime, ``predict`` is ``adtr predict``; ``anomalib_model`` is
ADTR as an anomalib model (Engine, CLI, export) and its benchmark beside PaDiM and PatchCore.
"""
