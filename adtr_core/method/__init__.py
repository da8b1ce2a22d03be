"""The method, the small core: ADTR's stages as plain torch modules and functions.

``backbone`` (frozen multi-scale features, Sec. 3.1; ``weights`` says where its parameters
come from) → ``model`` (the ADTR transformer) / ``baselines`` (the CNN and mean-image
reconstructions; ``reconstructors`` builds any of them by name) → ``scoring`` (score maps and
image scores, eqs. 2-3) → ``metrics`` (image AUROC, pixel AUROC, AU-PRO). ``losses`` holds
eqs. 1 and 6-9, ``masks`` the rule that brings a pixel mask to the feature grid.

The core imports nothing from the rest of the package (``tests/test_layers.py``): every other
group uses it, it uses none of them.

Example:
    >>> import torch
    >>> from adtr_core.method.model import ADTR, ADTRConfig
    >>> model = ADTR(ADTRConfig(in_channels=8, hidden_dim=16, grid=(4, 4), num_heads=2,
    ...                         num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32))
    >>> model(torch.zeros(2, 8, 4, 4)).shape
    torch.Size([2, 8, 4, 4])

See Also:
    ``docs/architecture.md``: the groups around the core and where to add a new part.
"""
