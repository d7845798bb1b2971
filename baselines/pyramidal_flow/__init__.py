"""Pyramidal Flow (Jin et al., arXiv 2410.05954) re-implemented for images: see ORIGIN.md."""
