"""omniseg.evaluation stage."""
