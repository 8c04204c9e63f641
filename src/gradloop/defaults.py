"""Every default of a run in one place: the learning rate, the epochs and standardization, for the
command line and for the scikit-learn estimators, and why the two differ where they do.

Learning rate when none is given:

==================  =============================  ===============================
optimizer           ``gradloop train``             estimators (``lr=None``)
==================  =============================  ===============================
sgd, linear model   1/L (MSE); 0.01 (other losses)  1/L of the loss (any loss)
sgd, MLP            0.01                           0.01
momentum, nesterov  0.01                           1/L (linear); 0.001 (MLP)
adam, adamw         0.001                          0.01 (linear); 0.001 (MLP)
==================  =============================  ===============================

Why they differ: the command line prints the step it takes and the stable bound 2/L beside it,
and knows L exactly only for the MSE (:func:`gradloop.lipschitz`), so it takes 1/L there and
the textbook defaults elsewhere. The estimators are used inside model selection, where a
default must be safe on any data: they standardize by default and bound the curvature of every
loss of the linear model (:data:`SMOOTHNESS`), so every non-adaptive linear fit takes 1/L, and
Adam on a linear model can take ten times PyTorch's default step. The epochs (100 on the
command line, 200 for the estimators) differ for the same reason: a command line run is watched,
an estimator's is not. The command line standardizes only when asked (``--standardize``), so that
its report shows the data's own numbers, the chapter's.
"""

from __future__ import annotations

COMMAND_LINE_EPOCHS = 100
ESTIMATOR_EPOCHS = 200
ADAPTIVE = ("adam", "adamw")
# L of each loss relative to the MSE's lipschitz(X), for one output: bounds on the second derivative
# of the loss in the prediction (2 for MSE, 1 for Huber, 1/2 for softmax cross-entropy, 1/4 for the
# logistic loss). MAE has none; it takes Huber's step.
SMOOTHNESS = {"mse": 1.0, "huber": 0.5, "mae": 0.5, "cross-entropy": 0.25, "bce": 0.125}


def command_line_takes_auto(lr, linear_mse, optimizer):
    """Whether ``gradloop train`` trains at 1/L: asked (--lr auto), or no --lr for SGD on the linear model
    with MSE."""
    return lr == "auto" or (lr is None and linear_mse and optimizer == "sgd")


def command_line_lr(optimizer):
    """``gradloop train``'s learning rate without --lr where 1/L is not taken."""
    return 1e-3 if optimizer in ADAPTIVE else 0.01


def estimator_lr(model, optimizer, loss, n_outputs, lipschitz):
    """The estimators' learning rate for ``lr=None``: ``lipschitz()`` gives lipschitz(X) of the training
    rows (called only for the linear model with a non-adaptive optimizer)."""
    if optimizer in ADAPTIVE:
        return 1e-2 if model == "linear" else 1e-3
    if model == "mlp":
        return 1e-2 if optimizer == "sgd" else 1e-3  # momentum 0.9 steps ~10 times further
    per_output = n_outputs if loss.task == "regression" else 1
    return per_output / (lipschitz() * SMOOTHNESS.get(loss.name, 1.0))
