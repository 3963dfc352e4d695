"""kernelalg.finite."""
