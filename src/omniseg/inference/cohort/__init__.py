"""Cohorts: many slides, in this process or on a Dask cluster (``segment --workers/--scheduler``).

One slide is one task. Per-slide outputs are the pipeline's own (atomic, resumable), so a
killed worker's slide is simply run again elsewhere and continues from its finished tiles; the
cohort table (``cohort.csv``) is rewritten atomically as slides finish.
"""

from omniseg.inference.cohort.listing import SlideJob, read_slide_list
from omniseg.inference.cohort.runner import ClusterSettings, CohortResult, run_cohort

__all__ = ["ClusterSettings", "CohortResult", "SlideJob", "read_slide_list", "run_cohort"]
