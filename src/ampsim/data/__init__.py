"""Data preparation: capture folders and devices, the demo, normalize, validate (checks, alignment,
replicate) and the prepared splits training reads (windows). Imports only ampsim.core."""
