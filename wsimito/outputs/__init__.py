"""Writers for wsimito's outputs; each writes under a temporary name and renames when complete."""
