"""The speed machinery: how the loop's arithmetic is made fast, not what it is.

A reader of the glass box may skip this package. ``kernels`` holds the full-batch
executors (through the layers, fused, a compiled one-pass stream over the rows, the Gram
form), each proven bit for bit or within 1e-12 of the layers' plain formulas;
``rowloop`` the streaming executor's compiled row loop; ``columns`` the Gram sums of
separate columns (a Parquet row group's, where Arrow keeps them); ``blocksums`` a block's
partial sums (the loss and gradients, the Gram matrix, the moments), pure functions added in a
fixed tree; ``executors`` what maps them over a source's blocks, threads here or Dask workers;
``blockwise`` the full-batch kernels over a source built from the two; ``silent`` a silent full-batch
run of the linear model, every epoch in one compiled call; ``jit`` the numba glue that
compiles such plain Python loops on first use.
"""
