"""kernelalg.scale: Gram matrices of any size -- tiles with bounded memory on every local device,
resumable zarr stores with per-tile records and checksums, and Dask scheduling of tiles.

* :func:`gram`, :func:`plan_gram` -> :class:`GramPlan`; :class:`GramStore`, :func:`open_gram`.
"""

from kernelalg.scale._gram import GramPlan, gram, plan_gram
from kernelalg.scale._store import GramStore, open_gram

__all__ = ["GramPlan", "GramStore", "gram", "open_gram", "plan_gram"]
