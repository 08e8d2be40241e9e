"""omniseg.training stage."""
