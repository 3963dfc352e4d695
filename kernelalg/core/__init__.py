"""kernelalg.core."""
