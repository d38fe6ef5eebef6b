"""ampsim: learn a guitar amp or pedal from a dry/wet capture and play it back."""

__version__ = "0.1.0"
