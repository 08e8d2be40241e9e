"""omniseg.scoring: how good a prediction is, with no I/O of reports.

``metrics`` (pure numpy scores per image), ``aggregate`` (per-task and per-stain means) and
``records`` (predict and score labelled patches through a predictor). Training's validation and
the ``evaluate`` command both score through here, so their numbers are the same numbers.
"""
