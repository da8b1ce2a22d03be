"""The "identical mapping" analysis of Sec. 3.2: one-layer reconstructors on tokens.

The paper's argument (Sec. 3.2, eqs. 4-5): a fully connected layer ``x_hat = x w + b``
(eq. 4; a 1x1 convolution is the same layer, an n x n convolution can do whatever it does)
trained with MSE on normal tokens ``x+ in R^{K x C}`` may take the shortcut ``w -> I, b -> 0``
and then reconstructs anomalous tokens ``x-`` as well as normal ones, while one attention layer
with a learnable query ``q in R^{K x C}``, ``x_hat = softmax(q x^T / sqrt(C)) x`` (eq. 5, no
value projection), has to tie ``q`` to the normal tokens to make the attention map ~ I, and so
cannot reconstruct ``x-``. This package makes that claim testable; it is the hypothesis, not an
expected output.

One concept per module:

* :mod:`~adtr_core.toy.data`: the tokens (:class:`ToyData`; synthetic ones from
  :func:`make_toy_tokens`, or from feature maps with ``tokens_from_features``; real backbone
  features come through the experiment layer, :func:`adtr_core.toy.feature_tokens.feature_tokens`).
* :mod:`~adtr_core.toy.models`: the FC / conv / attention reconstructors and
  ``build_toy_model``.
* :mod:`~adtr_core.toy.measures`: distance to the identity, attention diagonal mass,
  reconstruction errors, token AUROC (``evaluate_toy``).
* :mod:`~adtr_core.toy.runs`: training through the package's one trainer
  (:func:`run_toy_grid`, ``run_toy``) and sweeps (:func:`sweep_toy`).
* :mod:`~adtr_core.toy.tables`: final-epoch mean ± std over seeds (:func:`mean_std_table`,
  :func:`mean_std_text_table`).

The names re-exported here are the ones notebook 01 uses.
"""

from adtr_core.toy.data import ToyDataConfig, make_toy_tokens
from adtr_core.toy.runs import run_toy_grid, sweep_toy
from adtr_core.toy.tables import mean_std_table, mean_std_text_table

__all__ = [
    "ToyDataConfig",
    "make_toy_tokens",
    "mean_std_table",
    "mean_std_text_table",
    "run_toy_grid",
    "sweep_toy",
]
