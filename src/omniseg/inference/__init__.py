"""omniseg.inference stage."""
