"""omniseg.export stage."""
