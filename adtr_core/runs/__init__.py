"""Runs: one config (``config``) trained (``train``), evaluated (``evaluation``) and saved.

``experiment`` wires the core's stages and a data source into a results folder
(``results_folder`` claims and locks it, ``results`` reads and writes its files,
``checkpoints`` the training state); ``saved_runs`` rebuilds a finished run; ``sweep`` runs
many configs as one resumable batch; ``peers`` fits anomalib's PaDiM and PatchCore instead.
``features`` caches backbone features; ``profiles`` holds the smoke / quick / paper
settings; ``device``, ``precision``, ``threads``, ``memory`` and ``progress`` are how a run
uses the machine; ``flops`` counts what a training step costs.

See Also:
    :mod:`adtr_core.method` (what is run), :mod:`adtr_core.data` (on what).
"""
