"""Graph networks: ``Aggregate`` (message passing, :mod:`._aggregate`) and graph inputs ``Graphs`` (:mod:`._inputs`).

The kernel lives on the node-pair grid of two graphs (a 1-D image grid without translation structure);
Dense, activations and the readouts of :mod:`kernelalg.layers.spatial` act on it unchanged.
"""
