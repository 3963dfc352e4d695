"""Convolutional layers (images NHWC, NLC, NDHWC): Conv, pooling, readouts (Flatten, global pooling).

The kernel lives on the pixel-pair grid; the layout planner (:mod:`._inputs`) reads the layers' declared
spatial needs and keeps the full grid only where pooling needs it (same-position pairs for Flatten).
"""
