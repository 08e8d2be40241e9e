"""Local web viewer of segmentation results (`omniseg view`)."""
