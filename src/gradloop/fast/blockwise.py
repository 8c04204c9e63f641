"""Full-batch kernels over a data source, block by block: data beyond memory and on Dask.

Each epoch maps a per-block partial-sum function (:mod:`gradloop.fast.blocksums`) over the
source's blocks with an executor (:mod:`gradloop.fast.executors`: threads here, or Dask
workers) and adds the partials in a fixed tree: the same bits whichever executor, however many
threads or workers. :func:`make_source_kernel` picks the kernel through the one chooser,
:func:`gradloop.fast.kernels.choose_mode`.
"""

from __future__ import annotations

import math

import numpy as np

from ..records import HEAD
from .blocksums import (_own_block_gram, dropout_plan, gram_partial, layers_partial, linear_partial, shipping_copy,
                        tree_sum)
from .executors import DaskBlocks, LocalBlocks, executor_for
from .kernels import GramKernel, StreamKernel, _LinearKernel, choose_mode, is_linear_mse

class BlockStreamKernel(_LinearKernel):
    """Linear model + MSE over a source: one read of every block per epoch, partials in a fixed tree."""

    name = "stream"

    def __init__(self, model, source, blocks):
        super().__init__(model, *source.head(HEAD))  # the first rows: the report's heads and the shapes
        self.n, self.k = source.n_rows, source.n_outputs
        self.size, self.scale = self.n * self.k, 2.0 / (self.n * self.k)
        self.blocks = blocks
        self._no_bias = np.zeros(self.k)

    def evaluate(self):
        W, b = self.layer.params["W"], self.layer.params.get("b")
        WT = np.ascontiguousarray(W.T)
        sse, gWT, gb = tree_sum(self.blocks.map(linear_partial, WT, self._no_bias if b is None else b))
        grads = self.layer.grads
        np.multiply(gWT.T, self.scale, out=grads["W"], casting="same_kind")
        if "b" in grads:
            np.multiply(gb, self.scale, out=grads["b"], casting="same_kind")
        return sse / self.size

    def close(self):
        self.blocks.close()


class BlockLayerKernel:
    """Any model and loss over a source: forward, loss and backward per block, gradients summed in a tree."""

    name = "layers"

    def __init__(self, model, loss, source, blocks):
        self.model, self.loss, self.blocks, self.n = model, loss, blocks, source.n_rows
        self.head_X = source.head(HEAD)[0]
        # In this process blocks go one by one: the BLAS already runs a block's products on every core.
        self.parallel = isinstance(blocks, DaskBlocks)

    def evaluate(self):
        model = self.model
        # Each block's pass works on a shipping copy of its own (layers_partial); sent to Dask workers,
        # the model travels without the arrays its last forward pass kept.
        if not self.parallel:  # blocks in order: each Dropout's generator runs on from block to block
            total, grads = tree_sum(self.blocks.map(layers_partial, model, self.loss, parallel=False))
        else:
            plan = dropout_plan(model, self.head_X)
            total, grads = tree_sum(self.blocks.map(layers_partial, shipping_copy(model), self.loss, plan,
                                                    first_rows=True))
            for layer, (_, width) in zip(model.dropouts, plan or ()):
                layer.skip(self.n * width)  # past the pass's masks, as in order
        value = total / self.n
        if math.isfinite(value):
            for g, summed in zip(model.gradients(), grads):
                np.multiply(summed, 1.0 / self.n, out=g, casting="same_kind")
        return value

    def head(self):
        return self.model.predict_raw(self.head_X)

    def close(self):
        self.blocks.close()


def source_loss(model, loss, source, client=None, blocks=None):
    """The loss of the model's weights over a whole source, in evaluation mode (dropout off), in one
    streaming pass; the model's mode is as it was afterwards. ``blocks``: an executor over the source
    to reuse (left open), else one is made for this pass."""
    was_training = model.training
    model.eval()
    executor = blocks or executor_for(source, client)
    try:
        total, _ = tree_sum(executor.map(layers_partial, shipping_copy(model), loss, parallel=False))
    finally:
        if blocks is None:
            executor.close()
        if was_training:
            model.train()
    return total / source.n_rows


def source_gram(blocks):
    """``[X, Y, 1]^T [X, Y, 1]`` of a whole source, float64: one pass, per-block matrices in a tree.

    Kept on the source (whose data does not change): ``lr="auto"``, the Gram kernel and the
    optimum then share the one pass.
    """
    source = blocks.source

    def one_pass():
        if isinstance(blocks, LocalBlocks) and source.random_access:
            return tree_sum(blocks.map_index(lambda i: _own_block_gram(source, i)))
        return tree_sum(blocks.map(gram_partial))

    return source.gram(one_pass)


def make_source_kernel(model, loss, source, mode="auto", epochs=None, client=None):
    """The full-batch kernel over a source: "gram", "stream" or "layers" ("auto": Gram when
    there are more epochs than columns, else stream, for the linear model with MSE; else layers)."""
    mode = choose_mode(mode, is_linear_mse(model, loss), epochs, source.n_features)
    blocks = executor_for(source, client)
    if mode == "layers":
        return BlockLayerKernel(model, loss, source, blocks)
    mapped = source.mapped_arrays()
    if mapped is None:
        stream = BlockStreamKernel(model, source, blocks)
        return stream if mode == "stream" else GramKernel.from_sums(model, stream.X, stream.Y, source_gram(blocks),
                                                                    source.n_rows, stream=stream)
    # Memory maps (X.npy and y.npy): the in-memory stream kernel reads them whole, on row ranges, as
    # train() does a map it is given; block by block the same epoch measured 1.40-1.48x one read of X,
    # whole 1.13-1.16x. The Gram pass stays block by block: its sums are kept on the source.
    stream = StreamKernel(model, *mapped)
    try:
        if mode == "stream":
            return stream
        return GramKernel.from_sums(model, stream.X[:HEAD], stream.Y[:HEAD], source_gram(blocks), source.n_rows,
                                    stream=stream)
    finally:
        blocks.close()
