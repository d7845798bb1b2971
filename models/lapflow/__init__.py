"""LapFlow: Laplacian multi-scale flow matching (METHODS.md section 1); see README.md here."""
