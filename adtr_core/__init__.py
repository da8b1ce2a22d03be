"""adtr_core: a reproduction of ADTR (You et al., 2022), Anomaly Detection Transformer
with Feature Reconstruction.

The package is laid out by role (``docs/architecture.md``): ``method`` is the small core
(backbone → ADTR / baselines → scoring → metrics, and the losses); ``data`` the data sources;
``runs`` a config trained, evaluated and saved in a results folder; ``toy`` the "identical
mapping" analysis of Sec. 3.2; ``figures`` the tables, plots and notebook pipeline;
``deploy`` export, inference engines and the anomalib model; ``cli`` the ``adtr`` command.
``paths`` and ``io`` are shared by all of them.
"""

import warnings

__version__ = "0.1.0"

# Our progress bars are tqdm's plain ones (they work in a terminal and a notebook alike);
# libraries we import (huggingface_hub, via timm) load tqdm.auto, which warns in every
# Jupyter kernel without ipywidgets that it cannot draw a widget. That warning is not ours.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
