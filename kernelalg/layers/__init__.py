"""kernelalg.layers: one module per layer family; a layer file holds only its maths.

Families: dense and branches (:mod:`._dense`), the affine update they share (:mod:`._affine`), activations
with closed-form duals (:mod:`._activations`), any activation (:mod:`._elementwise`), surrogate gradients
(:mod:`._surrogate`), convolutions, pooling and readouts (:mod:`.spatial`), recurrent layers
(:mod:`.recurrent`), graphs (:mod:`.graph`). The architecture language: :func:`parse` (a safe parser of expression strings) and
the catalogue of constructors it accepts (:func:`constructors`).
"""

from kernelalg.layers._activations import activation
from kernelalg.layers._catalogue import constructors
from kernelalg.layers._parse import parse
from kernelalg.layers.recurrent._recurrent import recurrent_step_map
from kernelalg.layers.recurrent._sequences import Sequences

__all__ = ["Sequences", "activation", "constructors", "parse", "recurrent_step_map"]
