"""kernelalg.scale."""
