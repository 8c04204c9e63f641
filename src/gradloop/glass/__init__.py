"""The glass box: everything the loop computes, shown, explained and checked.

``explain`` writes an epoch of the chapter's loop out with its numbers (and ``ExplainEpoch`` does
it during a run); ``network`` a network's step layer by layer with one sample's numbers;
``gradcheck`` checks every backward against central differences; ``lrfind`` sweeps the learning
rate and leaves the model as it was. They call the chapter's functions and the layers' own
forward and backward: none holds a second copy of the maths.
"""
