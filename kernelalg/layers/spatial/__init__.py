"""kernelalg.layers.spatial."""
