"""omniseg.evaluation: the ``evaluate`` command and analyses of a model's outputs.

Modules (imported on demand): ``evaluate`` (evaluate_records, evaluate_path, the JSON/CSV
reports), ``predict`` (one patch -> probability map), ``bootstrap`` (intervals over images,
paired model comparisons), ``head_health`` (dead dynamic heads), ``cross_task`` (every head on
every patch), ``output_quality`` (outline, seam and glass checks of a slide result) and
``mosaic`` (a real-patch test slide). Scores themselves live in :mod:`omniseg.scoring`, the
predictor in :mod:`omniseg.runtime`.
"""
