"""Recurrent layers on sequences (NLC arrays or :class:`~kernelalg.Sequences` of different lengths): the
kernel recursion runs on the time-pair grid inside one ``lax.scan``."""
