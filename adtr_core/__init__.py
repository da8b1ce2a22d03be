"""adtr_core: a reproduction of ADTR (You et al., 2022), Anomaly Detection Transformer
with Feature Reconstruction.

Stages, each a separate module: ``backbone`` (frozen multi-scale features) →
``model`` / ``baselines`` (reconstruction) → ``scoring`` (score maps, image scores) →
``metrics`` (AUROC, AU-PRO). ``losses`` holds eqs. 1, 6-9; ``train`` the one
model-agnostic trainer; ``experiment`` wires a config to a results folder;
``toy`` the "identical mapping" analysis of Sec. 3.2; ``data`` the datasets.
"""

import warnings

__version__ = "0.1.0"

# Our progress bars are tqdm's plain ones (they work in a terminal and a notebook alike);
# libraries we import (huggingface_hub, via timm) load tqdm.auto, which warns in every
# Jupyter kernel without ipywidgets that it cannot draw a widget. That warning is not ours.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
