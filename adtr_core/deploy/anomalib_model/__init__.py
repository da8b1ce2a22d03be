"""ADTR inside anomalib: the model class anomalib's Engine, CLI and export run.

- :mod:`.torch_model`: :class:`AdtrModel`, the package's backbone, reconstructor and scoring
  as one torch module with anomalib's output contract;
- :mod:`.lightning_model`: :class:`Adtr`, the ``AnomalibModule`` that trains it;
- :mod:`.benchmark`: ADTR beside anomalib's PaDiM and PatchCore in one table.

Use it as ``anomalib fit --model adtr_core.deploy.anomalib_model.Adtr`` or
``Engine().fit(model=Adtr(...), datamodule=...)``; see ``docs/anomalib.md``.
"""

from adtr_core.deploy.anomalib_model.lightning_model import Adtr, adtr_config
from adtr_core.deploy.anomalib_model.torch_model import AdtrModel

__all__ = ["Adtr", "AdtrModel", "adtr_config"]
