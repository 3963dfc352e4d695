"""kernelalg.layers."""
