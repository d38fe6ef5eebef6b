"""The ground every layer stands on: errors, params.yaml, audio I/O, metrics, knob vectors and MLflow tracking.
Imports nothing from the other subpackages."""
