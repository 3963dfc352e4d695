"""kernelalg.layers.recurrent."""
