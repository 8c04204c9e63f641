"""Files a run reads and writes: the model file format (``modelfile``: safetensors, JSON metadata,
SHA-256, atomic writes), a model with its features, scaling and labels (``bundle``), a run's
log read back and checked (``runlog``), and every path a run touches, checked before any work
(``paths``).
"""
