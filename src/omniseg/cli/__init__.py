"""Command-line shell over the omniseg Python API."""
