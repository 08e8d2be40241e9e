"""omniseg.evaluation: score a model on labelled patches.

Modules (imported on demand, so ``import omniseg.evaluation.devices`` stays light):
``devices`` (resolve_device), ``metrics`` (pure numpy scores), ``predict`` (the one
image -> probability path shared with whole-slide segmentation), ``aggregate`` (per-task and
per-stain means), ``bootstrap`` (intervals over images, paired model comparisons) and
``evaluate`` (evaluate_records, evaluate_path, EvaluationResult).
"""
