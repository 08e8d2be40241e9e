"""Slide readers, ROI parsers and result writers."""
