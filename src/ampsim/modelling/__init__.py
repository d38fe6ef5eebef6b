"""Modelling: the architectures (one module each), the Keras model helpers, losses and the training loop.
Imports ampsim.core and ampsim.data."""
