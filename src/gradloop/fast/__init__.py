"""The speed machinery: how the loop's arithmetic is made fast, not what it is.

A reader of the glass box may skip this package. ``kernels`` holds the full-batch
executors (through the layers, fused, a compiled one-pass stream over the rows, the Gram
form), each proven bit for bit or within 1e-12 of the layers' plain formulas;
``rowloop`` the streaming executor's compiled row loop; ``columns`` the Gram sums of
separate columns (a Parquet row group's, where Arrow keeps them); ``blockwise`` the same
sums block by block over a source, here or on Dask workers; ``silent`` a silent full-batch
run of the linear model, every epoch in one compiled call; ``jit`` the numba glue that
compiles such plain Python loops on first use.
"""
