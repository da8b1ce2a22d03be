"""Figures: what the notebooks call to turn finished runs into the paper's tables and plots.

``reporting`` (one module per table, with the paper's reported numbers), ``plots`` (one
module per figure topic), ``ablations`` (Table 4's variants and table), ``embedding`` (the
t-SNE of Fig. 5), ``params`` (a notebook's parameters, checked), ``outputs`` (saving into
``figures/``) and ``pipeline`` (every notebook run with papermill, the manifest, the book).
"""
